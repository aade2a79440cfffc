//! Restores: `plan` decides everything that can be decided without touching the target (the
//! backup and its objects checked, the options, the target's state and the role's privileges,
//! for an export the schema archive staged and checked against the manifest), then `apply`
//! builds the restore in a new database beside the target and swaps it in by renaming. A
//! restore that fails leaves the target exactly as it was; one that succeeds leaves exactly
//! the backup's contents. See docs/FORMAT.md and the README's restore section.

mod apply;
mod describe;
mod dump;
mod export;
mod globals;
mod json;
mod load;
mod plan;
mod plan_export;
mod properties;
mod queue;
mod roles;
mod schema;
mod select;
mod stage;
mod target;
mod toc;

use std::time::Duration;

pub use apply::apply;
pub use plan::{Action, Content, RestorePlan, plan};
pub use properties::DbProperties;
pub use roles::{RolesOptions, RolesPlan, RolesReport, globals_sql, plan_roles};
pub use select::{LeftOutKey, Selection};

use crate::pg::PgError;
use crate::process::ChildError;
use crate::repository::ObjectProblem;
use crate::store::StoreError;

/// What the user asked for.
#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
pub struct RestoreOptions {
    /// libpq conninfo of the target database.
    pub target: String,
    /// Parallel sessions: pg_restore jobs for a dump (above 1 the archive is staged to a local
    /// temp file first), table loads for an export.
    pub jobs: u32,
    /// Replace a target that holds data (atomically: built beside it and swapped in).
    pub clean: bool,
    /// Create the target database when it does not exist.
    pub create: bool,
    /// Skip ownership commands (for a target without the source's roles).
    pub no_owner: bool,
    /// Restore straight into the existing, empty target instead of beside it: for a role that
    /// may not create or rename databases. Not atomic.
    pub in_place: bool,
    /// Keep the replaced database (under a printed name) instead of dropping it.
    pub keep_old: bool,
    /// Where archives are staged when pg_restore needs a seekable file; the system temp dir
    /// when `None`.
    pub staging_dir: Option<std::path::PathBuf>,
    /// Export backups: where the schema comes from (default: migrations when the job has a
    /// migrations directory, else the captured schema).
    pub schema_from: Option<SchemaFrom>,
    /// Export backups: the job's migrations (directory and tracking table), if configured.
    pub migrations: Option<crate::config::Migrations>,
    /// Where pg_restore is (the job's `pg_bin_dir`); else the Debian layout, then `PATH`.
    pub pg_bin_dir: Option<std::path::PathBuf>,
    /// Export backups: restore only the data of tables matching these patterns.
    pub tables: Vec<String>,
    /// Export backups: load data even when the migrated schema differs from the captured one.
    pub allow_drift: bool,
    /// Cluster backups: the database to restore (each is restored on its own).
    pub database: Option<String>,
}

/// Where an export restore takes the schema from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFrom {
    /// The schema pg_dump captured in the backup's snapshot.
    Dump,
    /// The application's migrations, up to the backup's recorded migration version.
    Migrations,
}

/// Errors of a restore. Whatever the error, the target is as it was before the restore
/// (`--in-place` aside, see the README).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Repo(crate::repository::RepoError),
    /// An object's bytes are not what its manifest records; the message names the object.
    #[error("{0}")]
    Damaged(std::io::Error),
    #[error("backup {id} cannot be restored: {}", join(.problems))]
    Objects {
        id: String,
        problems: Vec<ObjectProblem>,
    },
    #[error("backup {id} contradicts itself: {}", .problems.join("; "))]
    Inconsistent { id: String, problems: Vec<String> },
    #[error(
        "target database '{database}' is not empty (it has {examples}); refusing to replace it without --clean"
    )]
    TargetNotEmpty { database: String, examples: String },
    #[error(
        "target database '{database}' is one every server has; refusing to replace it with the backup's database '{backup_database}' without --clean (check --target's dbname)"
    )]
    MaintenanceTarget {
        database: String,
        backup_database: String,
    },
    #[error("target database '{database}' does not exist; create it or pass --create")]
    MissingDatabase { database: String },
    #[error("{0}")]
    Privileges(String),
    #[error("backup {id} is a '{kind}' backup, which this version of pgkeep cannot restore")]
    UnsupportedKind { id: String, kind: String },
    #[error("{0}")]
    Usage(String),
    #[error(
        "the schema built by the migrations differs from the backup's:\n{diff}\n(pass --allow-drift to load the data anyway)"
    )]
    Drift { diff: String },
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error("table {table}: loaded {loaded} rows but the backup holds {expected}")]
    RowCount {
        table: String,
        loaded: u64,
        expected: u64,
    },
    #[error("sequence {name} is ({actual}) after the restore but the backup recorded ({expected})")]
    Sequence {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("loading table {table}")]
    Load {
        table: String,
        #[source]
        source: PgError,
    },
    #[error("constraint {constraint} of table {table} does not hold")]
    Constraint {
        table: String,
        constraint: String,
        #[source]
        source: crate::pg::DbError,
    },
    #[error("refreshing materialized views {views}")]
    Refresh {
        views: String,
        #[source]
        source: crate::pg::DbError,
    },
    #[error("{0}")]
    Step(String),
    #[error("putting the restored database in place failed; the target is unchanged")]
    Swap {
        #[source]
        source: PgError,
    },
    #[error(transparent)]
    Interrupted(#[from] crate::error::Interrupted),
}

fn join(problems: &[ObjectProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl RestoreError {
    /// Whether it is a mistake in what was asked for (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, RestoreError::Usage(_))
            || matches!(self, RestoreError::Pg(PgError::ConnInfo(_)))
    }
}

/// What a finished restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub backup: String,
    pub job: String,
    pub database: String,
    pub raw_bytes: u64,
    pub duration: Duration,
    /// What happened to what the target held before, for people.
    pub previous: String,
}
