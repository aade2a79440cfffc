//! PostgreSQL access: connection strings, connections (tokio-postgres + native-tls), and the
//! few catalog queries pgkeep needs.

pub mod archive;
mod connect;
mod conninfo;
pub mod introspect;
mod passfile;

use std::path::PathBuf;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

pub use connect::Target;
pub use conninfo::{ConnInfo, ConnInfoError, SslMode, libpq_env_vars};

/// Errors talking to PostgreSQL; each names the server or file involved.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    ConnInfo(#[from] ConnInfoError),
    #[error("cannot read password_file {path}")]
    PasswordFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("connection settings: {reason}")]
    Config { reason: String },
    #[error("TLS setup: {reason}")]
    Tls { reason: String },
    #[error("cannot connect to {target}")]
    Connect {
        target: String,
        #[source]
        source: DbError,
    },
    #[error("{what}{} failed", on(.target))]
    Query {
        what: &'static str,
        target: String,
        #[source]
        source: DbError,
    },
    #[error("{what}{} did not finish within {}s", on(.target), .limit.as_secs())]
    Timeout {
        what: &'static str,
        target: String,
        limit: std::time::Duration,
    },
}

fn on(target: &str) -> String {
    if target.is_empty() {
        String::new()
    } else {
        format!(" on {target}")
    }
}

impl PgError {
    /// A failed query or statement, `what` naming the step.
    pub fn query(what: &'static str, target: &str, e: tokio_postgres::Error) -> PgError {
        PgError::Query {
            what,
            target: target.to_string(),
            source: DbError(e),
        }
    }

    /// Whether the server said the database does not exist.
    pub fn is_missing_database(&self) -> bool {
        matches!(self, PgError::Connect { source, .. } if source.sqlstate() == Some(&SqlState::INVALID_CATALOG_NAME))
    }

    /// The server's SQLSTATE, when it answered with one.
    pub fn sqlstate(&self) -> Option<&SqlState> {
        match self {
            PgError::Connect { source, .. } | PgError::Query { source, .. } => source.sqlstate(),
            _ => None,
        }
    }

    /// Whether a later attempt may succeed (server starting up or shutting down, too many
    /// clients, network trouble, a timeout); wrong passwords, missing databases and bad
    /// settings are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Connect { source, .. } | PgError::Query { source, .. } => {
                source.is_retryable()
            }
            PgError::Timeout { .. } => true,
            _ => false,
        }
    }
}

/// A tokio-postgres error, shown as the server's own message when there is one, else as the
/// client's error chain (each cause once). It is the end of the chain: its `Display` already
/// holds what its sources would add.
#[derive(Debug)]
pub struct DbError(pub tokio_postgres::Error);

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&describe_error(&self.0))
    }
}

impl std::error::Error for DbError {}

impl DbError {
    pub fn sqlstate(&self) -> Option<&SqlState> {
        self.0.code()
    }

    /// From typed facts only: the SQLSTATE class or code the server sent, else the kind of the
    /// I/O error underneath, else whether the connection closed.
    pub fn is_retryable(&self) -> bool {
        if let Some(code) = self.sqlstate() {
            return retryable_sqlstate(code.code());
        }
        if let Some(io) = io_cause(&self.0) {
            return retryable_io(io.kind());
        }
        self.0.is_closed()
    }
}

/// SQLSTATEs worth another attempt: connection exceptions (class 08), the server shutting
/// down, crashing or starting (57P01..57P03), too many connections (53300), resources
/// (53000..53200), serialization failures and deadlocks (40001, 40P01).
pub fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || matches!(
            code,
            "57P01" | "57P02" | "57P03" | "53000" | "53100" | "53200" | "53300" | "40001" | "40P01"
        )
}

/// I/O error kinds of a network that may come back.
pub fn retryable_io(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::TimedOut
            | K::UnexpectedEof
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::NetworkDown
            | K::Interrupted
    )
}

fn io_cause(e: &tokio_postgres::Error) -> Option<&std::io::Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        source = s.source();
    }
    None
}

/// The server's own message when there is one (SQLSTATE text), else the client error chain
/// with each cause once.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    crate::error::report(e)
}

/// What a backup records about the server it read.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`, e.g. `15.18 (Debian 15.18-0+deb12u1)`, trimmed to its number.
    pub version: String,
    /// `server_version_num`, e.g. 150018.
    pub version_num: u32,
    /// The current WAL insert position (or the replay position on a standby).
    pub wal_lsn: Option<String>,
}

impl ServerInfo {
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }
}

/// Reads the server version and WAL position.
///
/// # Errors
/// `PgError::Query` naming the target.
pub async fn server_info(client: &Client, target: &Target) -> Result<ServerInfo, PgError> {
    let query = |e| PgError::query("reading the server version", &target.describe(), e);
    let row = client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text \
                  ELSE pg_current_wal_lsn()::text END",
            &[],
        )
        .await
        .map_err(query)?;
    let version: String = row.get(0);
    let version_num: i32 = row.get(1);
    Ok(ServerInfo {
        version: version.split_whitespace().next().unwrap_or("").to_string(),
        version_num: u32::try_from(version_num).unwrap_or(0),
        wal_lsn: row.get(2),
    })
}

/// Up to `limit` user relations (tables, views, sequences...) in the database, qualified,
/// to decide whether a restore target is empty.
///
/// # Errors
/// `PgError::Query` naming the target.
pub async fn user_relations(
    client: &Client,
    target: &Target,
    limit: i64,
) -> Result<Vec<String>, PgError> {
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','p','v','m','S','f') \
               AND n.nspname NOT IN ('pg_catalog','information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
             ORDER BY 1 LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(|e| PgError::query("listing user tables", &target.describe(), e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Quotes a string literal for SQL (standard_conforming_strings on).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Quotes an identifier for SQL, as `quote_ident` does (always quoted).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_sqlstates_are_the_passing_ones() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "40001", "40P01",
        ] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        // Wrong password, no such database, permission denied, syntax error, unique violation.
        for code in ["28P01", "3D000", "42501", "42601", "23505", "22P02"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn retryable_io_kinds_are_network_ones() {
        use std::io::ErrorKind as K;
        for kind in [
            K::ConnectionRefused,
            K::ConnectionReset,
            K::TimedOut,
            K::BrokenPipe,
        ] {
            assert!(retryable_io(kind), "{kind:?}");
        }
        for kind in [
            K::PermissionDenied,
            K::NotFound,
            K::InvalidData,
            K::InvalidInput,
        ] {
            assert!(!retryable_io(kind), "{kind:?}");
        }
    }

    #[test]
    fn timeouts_are_retryable_and_bad_settings_are_not() {
        let timeout = PgError::Timeout {
            what: "connecting",
            target: "u@h:5432/db".into(),
            limit: std::time::Duration::from_mins(1),
        };
        assert!(timeout.is_retryable());
        assert_eq!(
            timeout.to_string(),
            "connecting on u@h:5432/db did not finish within 60s"
        );
        let settings = PgError::Config {
            reason: "port 'x' is not a number".into(),
        };
        assert!(!settings.is_retryable());
    }
}
