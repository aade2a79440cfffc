//! The SQL migration runner: ordered, checksummed files, each applied in its own transaction
//! under an advisory lock, tracked in a table. Documented in docs/MIGRATIONS.md.

mod apply;
mod discover;
mod sql;

use std::path::PathBuf;

pub use apply::{apply, current_version};
pub use discover::{check_set, discover};

/// The first-line marker that makes a file run outside a transaction, statement by statement
/// (for `CREATE INDEX CONCURRENTLY` and the like).
pub const NO_TRANSACTION_MARKER: &str = "-- pgkeep:no-transaction";

/// One migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The number the file name starts with; files apply in ascending order.
    pub version: i64,
    /// The description part of the file name (`create_users` in `0001_create_users.sql`).
    pub name: String,
    /// The file name, for messages.
    pub file: String,
    /// sha256 of the file's bytes, lowercase hex; an applied file must never change.
    pub checksum: String,
    pub sql: String,
    /// False when the file starts with [`NO_TRANSACTION_MARKER`].
    pub transactional: bool,
}

impl Migration {
    /// A migration from a file name (`NNNN_name.sql`, `V<N>__name.sql`, `<N>_name.up.sql`)
    /// and its content.
    ///
    /// # Errors
    /// `MigrateError::FileName` when the name has none of those forms.
    pub fn new(file: &str, sql: &str) -> Result<Migration, MigrateError> {
        let (version, name) = match discover::parse_file_name(file) {
            Some(Ok(parsed)) => parsed,
            Some(Err(reason)) => {
                return Err(MigrateError::FileName {
                    file: file.to_string(),
                    reason,
                });
            }
            None => {
                return Err(MigrateError::FileName {
                    file: file.to_string(),
                    reason: "not a migration file name".into(),
                });
            }
        };
        Ok(Migration {
            version,
            name,
            file: file.to_string(),
            checksum: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sql.as_bytes())),
            transactional: !has_no_transaction_marker(sql),
            sql: sql.to_string(),
        })
    }
}

fn has_no_transaction_marker(sql: &str) -> bool {
    let first = sql
        .trim_start_matches('\u{feff}')
        .lines()
        .next()
        .unwrap_or("");
    let Some(rest) = first.trim().strip_prefix("--") else {
        return false;
    };
    rest.trim().eq_ignore_ascii_case("pgkeep:no-transaction")
}

/// How to apply a set of migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrateOptions {
    /// The tracking table, optionally schema-qualified (`app.schema_migrations`); created
    /// (with its schema) when missing.
    pub table: String,
    /// Stop after this version.
    pub target_version: Option<i64>,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions {
            table: crate::config::default_migrations_table(),
            target_version: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// The migrations applied by this run: version and file name, in order.
    pub applied: Vec<(i64, String)>,
    /// The highest applied version afterwards; `None` when nothing was ever applied.
    pub version: Option<i64>,
}

/// Where in a file a statement failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

fn at(location: Option<&Location>) -> String {
    location.map_or_else(String::new, |l| format!(":{l}"))
}

/// Migration errors; each names the file (or the table) at fault.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot read the migrations directory {}", .dir.display())]
    Dir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migrations directory {} is not a directory", .dir.display())]
    NotADirectory { dir: PathBuf },
    #[error("cannot read migration {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {} is not valid UTF-8", .path.display())]
    NotText {
        path: PathBuf,
        #[source]
        source: std::string::FromUtf8Error,
    },
    #[error("migration file {file}: {reason}")]
    FileName { file: String, reason: String },
    #[error("migrations {first} and {second} have the same version {version}")]
    Duplicate {
        version: i64,
        first: String,
        second: String,
    },
    #[error("version gap: {before} is followed by {after}; versions must be consecutive")]
    Gap { before: String, after: String },
    #[error(
        "migration {file} contains its own transaction control at line {line} ({statement}); \
         each file already runs in a transaction: remove it, or start the file with \
         `{NO_TRANSACTION_MARKER}`"
    )]
    TransactionControl {
        file: String,
        line: usize,
        statement: String,
    },
    #[error(
        "migration {file} was edited after it was applied (recorded checksum {recorded}, \
         file now {current}); add a new migration instead"
    )]
    Edited {
        file: String,
        recorded: String,
        current: String,
    },
    #[error("version {version} ({name}) is applied in {table} but its migration file is missing")]
    Missing {
        version: i64,
        name: String,
        table: String,
    },
    #[error("migration {file} is older than the applied version {applied} and was never applied")]
    OutOfOrder { file: String, applied: i64 },
    #[error("invalid migrations table name '{table}': {reason}")]
    Table { table: String, reason: String },
    #[error("migration {file}{} failed: {message}", at(.location.as_ref()))]
    Sql {
        file: String,
        location: Option<Location>,
        message: String,
    },
    #[error("{what} (migrations table {table}) failed")]
    Db {
        what: &'static str,
        table: String,
        #[source]
        source: crate::pg::DbError,
    },
}

impl MigrateError {
    /// Whether the error is about how the runner was invoked (a missing directory, a bad
    /// table name): exit code 2. Everything else, including inconsistent migration files, is
    /// a failed run: exit code 1.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            MigrateError::Dir { .. }
                | MigrateError::NotADirectory { .. }
                | MigrateError::Table { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_recognised_on_the_first_line_only() {
        assert!(has_no_transaction_marker(
            "-- pgkeep:no-transaction\nCREATE INDEX CONCURRENTLY i ON t (x);"
        ));
        assert!(has_no_transaction_marker(
            "  --  PGKEEP:no-transaction  \r\n"
        ));
        assert!(!has_no_transaction_marker(
            "\n-- pgkeep:no-transaction\nSELECT 1;"
        ));
        assert!(!has_no_transaction_marker(
            "-- pgkeep:no-transaction please\n"
        ));
    }

    #[test]
    fn sql_errors_name_the_file_and_position() {
        let e = MigrateError::Sql {
            file: "0002_b.sql".into(),
            location: Some(Location { line: 3, column: 7 }),
            message: "relation \"nope\" does not exist".into(),
        };
        assert_eq!(
            e.to_string(),
            "migration 0002_b.sql:3:7 failed: relation \"nope\" does not exist"
        );
    }
}
