//! The integration test modules.

mod catalog;
mod catalog_plans;
mod check;
mod config;
mod daemon;
pub mod damage;
mod database_guide;
mod drill;
mod dump;
mod encryption;
mod export;
mod failures;
mod faults;
mod harness;
mod manual_restore;
mod migrate;
mod packaging;
mod pg18;
mod python_client;
mod restore_target;
mod retention;
mod snapshot;
mod store_conformance;
pub mod store_faults;
mod verify;
mod zstd;
