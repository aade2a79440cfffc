//! Applying migrations: the advisory lock, the tracking table, checksum checks, and one
//! transaction per file; errors located as file:line:column.

use std::fmt;
use std::time::Instant;

use tokio_postgres::Client;
use tokio_postgres::error::ErrorPosition;

use super::discover::check_set;
use super::sql;
use super::{Location, MigrateError, MigrateOptions, MigrateReport, Migration};
use crate::pg::quote_ident;

/// Applies the migrations not yet recorded in the tracking table, in version order, up to
/// `opts.target_version`, holding a session-level advisory lock for the whole run so that
/// concurrent runners take turns (the second then finds nothing to do).
///
/// Each file runs in its own transaction together with its tracking row, so a failing file
/// leaves nothing of itself behind and earlier files stay applied. Files marked
/// `-- pgkeep:no-transaction` run statement by statement outside a transaction.
///
/// # Errors
/// Before anything runs: `Duplicate`/`Gap`/`TransactionControl` for an inconsistent set,
/// `Edited` when an applied file changed, `Missing` when an applied file is gone,
/// `OutOfOrder`, `Table` for a bad table name. While running: `Sql` naming the file and the
/// failing position; `Db` for the tracking table or the lock.
pub async fn apply(
    client: &mut Client,
    migrations: &[Migration],
    opts: &MigrateOptions,
) -> Result<MigrateReport, MigrateError> {
    let mut set = migrations.to_vec();
    set.sort_by(|a, b| a.version.cmp(&b.version).then(a.file.cmp(&b.file)));
    check_set(&set)?;
    let table = TableName::parse(&opts.table)?;
    let key = table.lock_key();
    lock(client, key, &table).await?;
    let result = apply_locked(client, &set, opts, &table).await;
    if let Err(e) = client
        .query_one("SELECT pg_advisory_unlock($1)", &[&key])
        .await
    {
        // The lock goes with the session anyway.
        tracing::warn!(table = %table, error = %crate::pg::describe_error(&e), "releasing the migration lock failed");
    }
    result
}

/// The highest version recorded in `table`; `None` when the table does not exist (or is empty).
///
/// # Errors
/// `Table` for a bad name, `Db` when the table cannot be read.
pub async fn current_version(client: &Client, table: &str) -> Result<Option<i64>, MigrateError> {
    let table = TableName::parse(table)?;
    if !table_exists(client, &table).await? {
        return Ok(None);
    }
    let row = client
        .query_one(&format!("SELECT max(version) FROM {}", table.quoted()), &[])
        .await
        .map_err(db_error("reading the applied version", &table))?;
    Ok(row.get(0))
}

async fn apply_locked(
    client: &mut Client,
    set: &[Migration],
    opts: &MigrateOptions,
    table: &TableName,
) -> Result<MigrateReport, MigrateError> {
    // Schema-qualified from here on: a migration may change the search_path.
    let tracking = ensure_table(client, table).await?;
    let rows = client
        .query(
            &format!("SELECT version, name, checksum FROM {tracking} ORDER BY version"),
            &[],
        )
        .await
        .map_err(db_error("reading the applied migrations", table))?;
    let mut applied_max = None;
    for row in &rows {
        let version: i64 = row.get(0);
        let checksum: String = row.get(2);
        let Some(m) = set.iter().find(|m| m.version == version) else {
            return Err(MigrateError::Missing {
                version,
                name: row.get(1),
                table: table.to_string(),
            });
        };
        if m.checksum != checksum {
            return Err(MigrateError::Edited {
                file: m.file.clone(),
                recorded: checksum,
                current: m.checksum.clone(),
            });
        }
        applied_max = Some(version);
    }
    let pending: Vec<&Migration> = set
        .iter()
        .filter(|m| opts.target_version.is_none_or(|t| m.version <= t))
        .filter(|m| !rows.iter().any(|r| r.get::<_, i64>(0) == m.version))
        .collect();
    if let (Some(first), Some(max)) = (pending.first(), applied_max)
        && first.version < max
    {
        return Err(MigrateError::OutOfOrder {
            file: first.file.clone(),
            applied: max,
        });
    }
    let mut report = MigrateReport {
        applied: Vec::new(),
        version: applied_max,
    };
    if pending.is_empty() {
        tracing::info!(table = %table, version = ?applied_max, "migrations up to date");
    }
    for m in pending {
        let started = Instant::now();
        let insert =
            format!("INSERT INTO {tracking} (version, name, checksum) VALUES ($1, $2, $3)");
        if m.transactional {
            run_in_transaction(client, m, table, &insert).await?;
        } else {
            run_without_transaction(client, m, table, &insert).await?;
        }
        // Each file starts from the session's defaults, as in a fresh psql: settings a file
        // changed for the session (search_path, timeouts) do not leak into the next one.
        client
            .batch_execute("RESET ALL")
            .await
            .map_err(db_error("resetting session settings", table))?;
        tracing::info!(
            version = m.version,
            file = %m.file,
            transactional = m.transactional,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "applied migration"
        );
        report.applied.push((m.version, m.file.clone()));
        report.version = Some(m.version);
    }
    Ok(report)
}

async fn run_in_transaction(
    client: &mut Client,
    m: &Migration,
    table: &TableName,
    insert: &str,
) -> Result<(), MigrateError> {
    let tx = client
        .transaction()
        .await
        .map_err(db_error("starting a transaction", table))?;
    if let Err(e) = tx.batch_execute(&m.sql).await {
        let _ = tx.rollback().await;
        let byte = match server_position(&e) {
            Some(p) => Some(sql::char_position_to_byte(&m.sql, p)),
            None => locate(client, m, &e).await,
        };
        return Err(sql_error(m, byte, &e, ""));
    }
    tx.execute(insert, &[&m.version, &m.name, &m.checksum])
        .await
        .map_err(db_error("recording the migration", table))?;
    tx.commit()
        .await
        .map_err(|e| sql_error(m, None, &e, " (at COMMIT)"))
}

async fn run_without_transaction(
    client: &Client,
    m: &Migration,
    table: &TableName,
    insert: &str,
) -> Result<(), MigrateError> {
    for statement in sql::split(&m.sql) {
        if let Err(e) = client.batch_execute(statement.text).await {
            let within =
                server_position(&e).map_or(0, |p| sql::char_position_to_byte(statement.text, p));
            return Err(sql_error(
                m,
                Some(statement.start + within),
                &e,
                "; it runs without a transaction, so its earlier statements stay applied",
            ));
        }
    }
    client
        .execute(insert, &[&m.version, &m.name, &m.checksum])
        .await
        .map_err(db_error("recording the migration", table))?;
    Ok(())
}

/// For an error the server gave no position for (a constraint violation, a division by
/// zero), finds the failing statement: runs the file again one statement at a time in a
/// transaction that is always rolled back, and takes the first statement failing with the
/// same error. `None` when that does not reproduce the error.
async fn locate(
    client: &mut Client,
    m: &Migration,
    original: &tokio_postgres::Error,
) -> Option<usize> {
    let statements = sql::split(&m.sql);
    match statements.len() {
        0 => return None,
        1 => return Some(statements[0].start),
        _ => {}
    }
    let same = |e: &tokio_postgres::Error| match (e.as_db_error(), original.as_db_error()) {
        (Some(a), Some(b)) => a.code() == b.code() && a.message() == b.message(),
        _ => false,
    };
    let tx = client.transaction().await.ok()?;
    let mut found = None;
    for statement in &statements {
        if let Err(e) = tx.batch_execute(statement.text).await {
            if same(&e) {
                let within = server_position(&e)
                    .map_or(0, |p| sql::char_position_to_byte(statement.text, p));
                found = Some(statement.start + within);
            }
            break;
        }
    }
    let _ = tx.rollback().await;
    found
}

fn server_position(e: &tokio_postgres::Error) -> Option<u32> {
    match e.as_db_error()?.position()? {
        ErrorPosition::Original(p) => Some(*p),
        ErrorPosition::Internal { .. } => None,
    }
}

fn sql_error(
    m: &Migration,
    byte: Option<usize>,
    e: &tokio_postgres::Error,
    note: &str,
) -> MigrateError {
    let location = byte.map(|b| {
        let (line, column) = sql::line_col(&m.sql, b);
        Location { line, column }
    });
    let message = match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                s.push_str(" (hint: ");
                s.push_str(hint);
                s.push(')');
            }
            s.push_str(" [SQLSTATE ");
            s.push_str(db.code().code());
            s.push(']');
            s
        }
        None => crate::pg::describe_error(e),
    };
    MigrateError::Sql {
        file: m.file.clone(),
        location,
        message: message + note,
    }
}

async fn lock(client: &Client, key: i64, table: &TableName) -> Result<(), MigrateError> {
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(db_error("taking the migration lock", table))?
        .get(0);
    if !got {
        tracing::info!(table = %table, "another migration runner holds the lock; waiting for it");
        client
            .execute("SELECT pg_advisory_lock($1)", &[&key])
            .await
            .map_err(db_error("waiting for the migration lock", table))?;
    }
    Ok(())
}

async fn table_exists(client: &Client, table: &TableName) -> Result<bool, MigrateError> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.quoted()])
        .await
        .map_err(db_error("looking up the migrations table", table))?;
    Ok(row.get(0))
}

/// Creates the tracking table (and its schema) when missing, and returns its schema-qualified,
/// quoted name. Existence is checked first so that a role without CREATE privileges can run
/// against an existing table.
async fn ensure_table(client: &Client, table: &TableName) -> Result<String, MigrateError> {
    if !table_exists(client, table).await? {
        create_table(client, table).await?;
    }
    let row = client
        .query_one(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.oid = pg_catalog.to_regclass($1)",
            &[&table.quoted()],
        )
        .await
        .map_err(db_error("looking up the migrations table", table))?;
    Ok(row.get(0))
}

async fn create_table(client: &Client, table: &TableName) -> Result<(), MigrateError> {
    if let Some(schema) = &table.schema {
        let row = client
            .query_one(
                "SELECT to_regnamespace($1) IS NOT NULL",
                &[&quote_ident(schema)],
            )
            .await
            .map_err(db_error("looking up the migrations schema", table))?;
        if !row.get::<_, bool>(0) {
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {}",
                    quote_ident(schema)
                ))
                .await
                .map_err(db_error("creating the migrations schema", table))?;
        }
    }
    let t = table.quoted();
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (\n\
             \x20   version    bigint      PRIMARY KEY CHECK (version >= 0),\n\
             \x20   name       text        NOT NULL CHECK (name <> ''),\n\
             \x20   checksum   text        NOT NULL CHECK (checksum ~ '^[0-9a-f]{{64}}$'),\n\
             \x20   applied_at timestamptz NOT NULL DEFAULT now()\n\
             );\n\
             COMMENT ON TABLE {t} IS 'pgkeep migrate: one row per applied migration file \
             (checksum = sha256 of the file)';"
        ))
        .await
        .map_err(db_error("creating the migrations table", table))
}

fn db_error<'a>(
    what: &'static str,
    table: &'a TableName,
) -> impl Fn(tokio_postgres::Error) -> MigrateError + 'a {
    move |e| MigrateError::Db {
        what,
        table: table.to_string(),
        source: crate::pg::DbError(e),
    }
}

/// A tracking table name: `table` or `schema.table`, each part an SQL identifier (unquoted
/// parts fold to lower case, as in SQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableName {
    schema: Option<String>,
    table: String,
}

impl TableName {
    pub(super) fn parse(name: &str) -> Result<TableName, MigrateError> {
        let bad = |reason: &str| MigrateError::Table {
            table: name.to_string(),
            reason: reason.to_string(),
        };
        let mut parts = Vec::new();
        let mut rest = name.trim();
        loop {
            let (part, after) = if let Some(quoted) = rest.strip_prefix('"') {
                let mut part = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '"' {
                        if quoted[i + 1..].starts_with('"') {
                            part.push('"');
                            chars.next();
                        } else {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        part.push(c);
                    }
                }
                let end = end.ok_or_else(|| bad("unterminated quoted identifier"))?;
                (part, &quoted[end..])
            } else {
                let len = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
                    .unwrap_or(rest.len());
                let part = &rest[..len];
                if part.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
                    return Err(bad("an identifier cannot start with a digit or `$`"));
                }
                (part.to_ascii_lowercase(), &rest[len..])
            };
            if part.is_empty() {
                return Err(bad("empty name"));
            }
            if part.len() > 63 {
                return Err(bad("a name part is longer than 63 bytes"));
            }
            parts.push(part);
            match after.strip_prefix('.') {
                Some(next) => rest = next,
                None if after.is_empty() => break,
                None => return Err(bad("expected `table` or `schema.table`")),
            }
        }
        match parts.len() {
            1 => Ok(TableName {
                schema: None,
                table: parts.remove(0),
            }),
            2 => {
                let table = parts.remove(1);
                Ok(TableName {
                    schema: Some(parts.remove(0)),
                    table,
                })
            }
            _ => Err(bad("expected `table` or `schema.table`")),
        }
    }

    pub(super) fn quoted(&self) -> String {
        match &self.schema {
            Some(s) => format!("{}.{}", quote_ident(s), quote_ident(&self.table)),
            None => quote_ident(&self.table),
        }
    }

    /// The advisory lock key: fixed for a table name, so runners on the same table exclude
    /// each other and runners on different tables do not.
    pub(super) fn lock_key(&self) -> i64 {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(format!("pgkeep migrate {}", self.quoted()));
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        i64::from_be_bytes(first)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.table),
            None => f.write_str(&self.table),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_parse_like_sql_identifiers() {
        let t = TableName::parse("pgkeep_schema_migrations").unwrap();
        assert_eq!(t.quoted(), "\"pgkeep_schema_migrations\"");
        let t = TableName::parse("App.Schema_Migrations").unwrap();
        assert_eq!(t.quoted(), "\"app\".\"schema_migrations\"");
        assert_eq!(t.to_string(), "app.schema_migrations");
        let t = TableName::parse("\"My App\".\"we\"\"ird\"").unwrap();
        assert_eq!(t.quoted(), "\"My App\".\"we\"\"ird\"");
        for bad in ["", "a.b.c", "a b", "1abc", "\"open", "a.", "x;drop table y"] {
            assert!(TableName::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn lock_keys_are_fixed_per_table() {
        let a = TableName::parse("a.migrations").unwrap().lock_key();
        assert_eq!(a, TableName::parse("A.Migrations").unwrap().lock_key());
        assert_ne!(a, TableName::parse("b.migrations").unwrap().lock_key());
    }
}
