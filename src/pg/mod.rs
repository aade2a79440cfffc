//! PostgreSQL access: connection strings, connections (tokio-postgres + native-tls), and the
//! few catalog queries pgkeep needs.

mod connect;
mod conninfo;
pub mod introspect;
mod passfile;

use std::path::PathBuf;

use tokio_postgres::Client;

pub use connect::Target;
pub use conninfo::{ConnInfo, ConnInfoError, SslMode, libpq_env_vars};

/// Errors talking to PostgreSQL; each names the server or file involved.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error(transparent)]
    ConnInfo(#[from] ConnInfoError),
    #[error("cannot read password_file {path}: {reason}")]
    PasswordFile { path: PathBuf, reason: String },
    #[error("connection settings: {reason}")]
    Config { reason: String },
    #[error("TLS setup: {reason}")]
    Tls { reason: String },
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        target: String,
        reason: String,
        /// The server's SQLSTATE, when it answered (28P01 wrong password, 3D000 no database...).
        code: Option<String>,
    },
    #[error("{what} on {target} failed: {reason}")]
    Query {
        what: &'static str,
        target: String,
        reason: String,
    },
}

impl PgError {
    /// Whether the server said the database does not exist.
    pub fn is_missing_database(&self) -> bool {
        matches!(self, PgError::Connect { code: Some(c), .. } if c == "3D000")
    }

    /// Whether a later attempt may succeed (server starting up, network trouble); wrong
    /// passwords, missing databases and bad settings are permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            PgError::Connect { reason, code, .. } => {
                if code.is_some() {
                    return code.as_deref() == Some("57P03") || code.as_deref() == Some("53300");
                }
                let r = reason.to_ascii_lowercase();
                r.contains("connection refused")
                    || r.contains("timed out")
                    || r.contains("starting up")
                    || r.contains("reset by peer")
                    || r.contains("too many clients")
            }
            _ => false,
        }
    }
}

/// The server's own message when there is one (SQLSTATE text), else the client error chain.
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return db.message().to_string();
    }
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
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
    let query = |e: tokio_postgres::Error| PgError::Query {
        what: "reading the server version",
        target: target.describe(),
        reason: describe_error(&e),
    };
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
        .map_err(|e| PgError::Query {
            what: "listing user tables",
            target: target.describe(),
            reason: describe_error(&e),
        })?;
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
