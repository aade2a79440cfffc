//! The integration test modules.

mod dump;
mod failures;
mod harness;
mod manual_restore;
mod store_conformance;
