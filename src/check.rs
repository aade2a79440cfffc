//! `pgkeep check`: diagnoses everything a backup needs, one line per check — the configuration
//! (valid, since it loaded), the store (a probe object written, read back and deleted), and per
//! job the connection and its TLS state, the role's read access to every table, and pg_dump's
//! version against the server's. Checks never stop at the first failure.

use std::fmt::Write as _;

use tokio::io::AsyncReadExt;
use tokio_postgres::Client;

use crate::config::Config;
use crate::pg::{self, PgError, Target};
use crate::store::ObjectStore;

/// How many unreadable tables a failed access check names.
const SHOWN_TABLES: usize = 5;

/// One check's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub ok: bool,
    /// What was checked: `config`, `storage`, `job NAME`.
    pub subject: String,
    pub detail: String,
}

/// Every check, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn push(&mut self, ok: bool, subject: &str, detail: impl Into<String>) {
        self.checks.push(Check {
            ok,
            subject: subject.to_string(),
            detail: detail.into(),
        });
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| !c.ok).count()
    }

    /// One line per check: `ok` or `FAIL`, the subject, the detail.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let verdict = if c.ok { "ok" } else { "FAIL" };
            let _ = writeln!(out, "{verdict:<4} {}: {}", c.subject, c.detail);
        }
        out
    }
}

/// Runs every check against `config`.
pub async fn run(config: &Config) -> Report {
    let mut report = Report::default();
    let scheduled = config
        .jobs
        .values()
        .filter(|j| j.schedule.is_some())
        .count();
    report.push(
        true,
        "config",
        format!(
            "{} is valid: {} jobs, {scheduled} scheduled",
            config.source,
            config.jobs.len()
        ),
    );
    match config.storage.open().await {
        Ok(repo) => {
            let store = repo.store();
            let result = probe_store(store).await;
            let ok = result.is_ok();
            let detail = result.map_or_else(
                |e| format!("{}: {e}", store.describe()),
                |()| {
                    format!(
                        "{}: wrote, read back and deleted a probe object",
                        store.describe()
                    )
                },
            );
            report.push(ok, "storage", detail);
        }
        Err(e) => report.push(false, "storage", crate::error::report(&e)),
    }
    for (name, job) in &config.jobs {
        let subject = format!("job {name}");
        let target = match Target::from_conninfo(&job.database, job.password_file.as_deref()) {
            Ok(t) => t,
            Err(e) => {
                report.push(false, &subject, crate::error::report(&e));
                continue;
            }
        };
        let client = match target.connect().await {
            Ok(c) => c,
            Err(e) => {
                report.push(false, &subject, crate::error::report(&e));
                continue;
            }
        };
        let server = match pg::server_info(&client, &target).await {
            Ok(s) => s,
            Err(e) => {
                report.push(false, &subject, crate::error::report(&e));
                continue;
            }
        };
        let tls = match tls_state(&client).await {
            Ok(Some(version)) => format!("TLS on ({version})"),
            Ok(None) => "TLS off".to_string(),
            Err(e) => format!("TLS unknown ({e})"),
        };
        report.push(
            true,
            &subject,
            format!(
                "connected to {} (PostgreSQL {}), {tls}",
                target.describe(),
                server.version
            ),
        );
        if let Some(cluster) = &job.cluster {
            report_databases(&mut report, &subject, &client, &target, cluster).await;
        }
        match read_access(&client).await {
            Ok(Access::Everything(why)) => {
                report.push(true, &subject, format!("may read every table ({why})"));
            }
            Ok(Access::Missing { count, first }) => report.push(
                false,
                &subject,
                format!(
                    "may not read {count} table(s): {}{}; grant pg_read_all_data (PostgreSQL 14+), or USAGE on their schemas and SELECT on them",
                    first.join(", "),
                    if count > first.len() { ", ..." } else { "" }
                ),
            ),
            Err(e) => report.push(
                false,
                &subject,
                format!("cannot check table access: {}", crate::error::report(&e)),
            ),
        }
        match crate::backup::client_tool("pg_dump", job, &server).await {
            Ok(tool) => report.push(
                true,
                &subject,
                format!(
                    "pg_dump {} ({}) can read PostgreSQL {}",
                    tool.version,
                    tool.path.display(),
                    server.version
                ),
            ),
            Err(e) => report.push(false, &subject, crate::error::report(&e)),
        }
    }
    report
}

/// Writes, reads back and deletes an object outside every job's directory.
async fn probe_store(store: &dyn ObjectStore) -> Result<(), String> {
    store
        .preflight()
        .await
        .map_err(|e| crate::error::report(&e))?;
    let key = format!(".pgkeep-check/probe-{:016x}", rand::random::<u64>());
    let body = format!("pgkeep check probe {}\n", chrono::Utc::now().to_rfc3339());
    store
        .put(
            &key,
            Box::pin(std::io::Cursor::new(body.clone().into_bytes())),
        )
        .await
        .map_err(|e| format!("writing {key}: {}", crate::error::report(&e)))?;
    let read = async {
        let mut reader = store
            .get(&key)
            .await
            .map_err(|e| crate::error::report(&e))?;
        let mut back = String::new();
        reader
            .read_to_string(&mut back)
            .await
            .map_err(|e| e.to_string())?;
        if back == body {
            Ok(())
        } else {
            Err("what was read back differs from what was written".to_string())
        }
    }
    .await
    .map_err(|e| format!("reading {key} back: {e}"));
    let deleted = store
        .delete(&key)
        .await
        .map_err(|e| format!("deleting {key}: {}", crate::error::report(&e)));
    read.and(deleted)
}

/// The TLS version of this connection, or `None` without TLS.
async fn tls_state(client: &Client) -> Result<Option<String>, String> {
    let row = client
        .query_opt(
            "SELECT ssl, version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| pg::describe_error(&e))?;
    Ok(row.and_then(|r| {
        r.get::<_, bool>(0)
            .then(|| r.get::<_, Option<String>>(1).unwrap_or_default())
    }))
}

enum Access {
    /// Why the role reads everything: superuser, pg_read_all_data, or grants on each table.
    Everything(String),
    Missing {
        count: usize,
        first: Vec<String>,
    },
}

/// Whether the connected role may read every user table and sequence pg_dump reads.
async fn read_access(client: &Client) -> Result<Access, PgError> {
    let query = |e| PgError::query("checking table privileges", "the job's database", e);
    let row = client
        .query_one(
            "SELECT r.rolsuper, \
                    EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pg_read_all_data') \
                    AND pg_has_role(current_user, 'pg_read_all_data', 'MEMBER') \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[],
        )
        .await
        .map_err(query)?;
    if row.get::<_, bool>(0) {
        return Ok(Access::Everything("superuser".into()));
    }
    if row.get::<_, bool>(1) {
        return Ok(Access::Everything("member of pg_read_all_data".into()));
    }
    let rows = client
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'S') \
               AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
               AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
               AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                               AND d.objid = c.oid AND d.deptype = 'e') \
               AND NOT (has_schema_privilege(n.oid, 'USAGE') \
                        AND has_table_privilege(c.oid, 'SELECT')) \
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(query)?;
    if rows.is_empty() {
        return Ok(Access::Everything("SELECT granted on every table".into()));
    }
    Ok(Access::Missing {
        count: rows.len(),
        first: rows.iter().take(SHOWN_TABLES).map(|r| r.get(0)).collect(),
    })
}

/// A cluster job: which databases a run would back up now, and whether the job's role may
/// connect to each.
async fn report_databases(
    report: &mut Report,
    subject: &str,
    client: &tokio_postgres::Client,
    target: &Target,
    cluster: &crate::config::ClusterSettings,
) {
    let names = match crate::source::cluster::databases(client, target, cluster).await {
        Ok(names) => names,
        Err(e) => {
            report.push(false, subject, crate::error::report(&e));
            return;
        }
    };
    if names.is_empty() {
        report.push(
            false,
            subject,
            "no database of the server matches `databases`: a run would fail".to_string(),
        );
        return;
    }
    let shown: Vec<String> = names.iter().map(|n| crate::human::name(n)).collect();
    report.push(
        true,
        subject,
        format!(
            "would back up {} databases: {}",
            names.len(),
            shown.join(", ")
        ),
    );
    let refused = client
        .query(
            "SELECT datname FROM pg_catalog.pg_database WHERE datname = ANY($1) \
             AND NOT has_database_privilege(datname, 'CONNECT') ORDER BY datname COLLATE \"C\"",
            &[&names],
        )
        .await;
    match refused {
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            let refused: Vec<String> = rows
                .iter()
                .map(|r| crate::human::name(&r.get::<_, String>(0)))
                .collect();
            report.push(
                false,
                subject,
                format!(
                    "may not connect to {}: grant CONNECT on them, or leave them out with exclude_databases",
                    refused.join(", ")
                ),
            );
        }
        Err(e) => report.push(
            false,
            subject,
            format!(
                "cannot check database access: {}",
                crate::pg::describe_error(&e)
            ),
        ),
    }
}
