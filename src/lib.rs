//! pgkeep: scheduled, verified PostgreSQL backups to object storage, and their restores.
//!
//! Layers, from the bottom: `store` (objects), `codec`, `transfer` (streams through codec into
//! or out of a store), `process` (child programs), `pg` (connections, catalog queries),
//! `digest` (tables' content digests), `manifest` (the format), `repository` (backups in a store: layout, commit, listing,
//! debris), `schedule`, `retention`, `config`; above them `source`, `backup`, `restore`,
//! `verify`, `drill`, `prune`, `migrate`, `catalog`, `check`, `lock`; then `commands` (one function per
//! CLI command) and `daemon`.

pub mod backup;
pub mod catalog;
pub mod check;
pub mod codec;
pub mod commands;
pub mod config;
pub mod crypt;
pub mod daemon;
pub mod digest;
pub mod drill;
pub mod error;
pub mod human;
pub mod lock;
pub mod malloc;
pub mod manifest;
pub mod marker;
pub mod migrate;
pub mod notify;
pub mod pattern;
pub mod pg;
pub mod process;
pub mod progress;
pub mod prune;
pub mod redact;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod source;
pub mod store;
pub mod transfer;
pub mod verify;

pub use commands::exit_code;
pub use error::UsageError;
