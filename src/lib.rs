//! pgkeep: scheduled, verified PostgreSQL backups to object storage, and their restores.

pub mod backup;
pub mod catalog;
pub mod check;
pub mod codec;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod manifest;
pub mod migrate;
pub mod pattern;
pub mod pg;
pub mod prune;
pub mod redact;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod source;
pub mod store;
pub mod transfer;
pub mod verify;

/// A mistake in how pgkeep was invoked (unknown job, ambiguous choice): exit code 2.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The process exit code for an error: 2 for usage and configuration errors, 1 otherwise.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let usage = error.chain().any(|e| {
        e.downcast_ref::<UsageError>().is_some()
            || e.downcast_ref::<config::ConfigError>().is_some()
            || matches!(
                e.downcast_ref::<restore::RestoreError>(),
                Some(restore::RestoreError::Usage(_))
            )
    });
    if usage { 2 } else { 1 }
}
