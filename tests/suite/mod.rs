//! The integration test modules.

mod catalog;
mod check;
mod config;
mod daemon;
mod dump;
mod export;
mod failures;
mod harness;
mod manual_restore;
mod migrate;
mod packaging;
mod retention;
mod snapshot;
mod store_conformance;
mod verify;
