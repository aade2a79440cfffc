//! Restores, drills and verifications in the catalog (`restore_run`, `verification`),
//! recorded when they end. Like backups' records, best effort: a catalog that is not
//! configured, down or slow never fails the operation (a warning says what was not recorded).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use super::{CatalogError, connect, db, prepare, record_backup};
use crate::config::Config;
use crate::manifest::Manifest;

/// How long recording may take before it is given up.
const LIMIT: std::time::Duration = std::time::Duration::from_mins(1);

/// What a `restore_run` row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreKind {
    Restore,
    Drill,
    /// `restore --globals-only`: the backup's roles into the target's server.
    Roles,
}

impl RestoreKind {
    fn as_str(self) -> &'static str {
        match self {
            RestoreKind::Restore => "restore",
            RestoreKind::Drill => "drill",
            RestoreKind::Roles => "roles",
        }
    }
}

/// What a drill compared (`restore_run.checks`), and the differences it found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Checked {
    pub tables: u64,
    pub rows: u64,
    pub digests: u64,
    pub sequences: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

/// Records a restore or a drill of `manifest`'s backup into `target` (`user@host:port/db`,
/// never a password) that started at `started_at` and ended now, failed with `error` or not.
pub async fn record_restore(
    config: &Config,
    manifest: &Manifest,
    kind: RestoreKind,
    target: &str,
    started_at: DateTime<Utc>,
    checks: Option<&Checked>,
    error: Option<&str>,
) {
    let checks = checks.map(|c| serde_json::to_value(c).expect("checks serialize"));
    let status = if error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    record(
        config,
        manifest,
        kind.as_str(),
        async |client: &Client, run_id| {
            client
                .execute(
                    "INSERT INTO pgkeep.restore_run \
                 (run_id, kind, target, status, started_at, finished_at, error, checks) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    &[
                        &run_id,
                        &kind.as_str(),
                        &target,
                        &status,
                        &started_at,
                        &Utc::now().max(started_at),
                        &error.map(nonempty),
                        &checks,
                    ],
                )
                .await
                .map_err(db("recording the restore"))?;
            Ok(())
        },
    )
    .await;
}

/// Records a verification of `manifest`'s backup: `damaged` objects (status `damaged`), or
/// `error` when objects could not be read (status `failed`), else `ok`.
pub async fn record_verification(
    config: &Config,
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    damaged: &[String],
    error: Option<&str>,
) {
    let (status, error) = match (damaged.is_empty(), error) {
        (false, _) => ("damaged", None),
        (true, Some(e)) => ("failed", Some(nonempty(e))),
        (true, None) => ("ok", None),
    };
    record(
        config,
        manifest,
        "verification",
        async |client: &Client, run_id| {
            client
                .execute(
                    "INSERT INTO pgkeep.verification \
                 (run_id, status, started_at, finished_at, damaged_objects, error) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                    &[
                        &run_id,
                        &status,
                        &started_at,
                        &Utc::now().max(started_at),
                        &damaged,
                        &error,
                    ],
                )
                .await
                .map_err(db("recording the verification"))?;
            Ok(())
        },
    )
    .await;
}

fn nonempty(e: &str) -> &str {
    if e.trim().is_empty() {
        "unknown error"
    } else {
        e
    }
}

/// Connects, brings the catalog's schema up to date, finds (or records) the backup's run and
/// hands its `run_id` to `insert`; logs instead of failing.
async fn record(
    config: &Config,
    manifest: &Manifest,
    what: &str,
    insert: impl AsyncFnOnce(&Client, i64) -> Result<(), CatalogError>,
) {
    if config.catalog.is_none() {
        return;
    }
    let work = async {
        let (mut client, _) = connect(config).await?;
        prepare(&mut client).await?;
        let row = client
            .query_opt(
                "SELECT run_id FROM pgkeep.backup_run WHERE job = $1 AND backup_id = $2",
                &[&manifest.job, &manifest.id],
            )
            .await
            .map_err(db("finding the backup's run"))?;
        let run_id = match row {
            Some(r) => r.get(0),
            None => record_backup(&mut client, manifest).await?,
        };
        insert(&client, run_id).await?;
        Ok::<(), anyhow::Error>(())
    };
    match tokio::time::timeout(LIMIT, work).await {
        Ok(Ok(())) => tracing::debug!(backup = %manifest.id, what, "recorded in the catalog"),
        Ok(Err(e)) => tracing::warn!(backup = %manifest.id, what,
            error = %crate::error::report_anyhow(&e), "could not record this in the catalog"),
        Err(_) => tracing::warn!(backup = %manifest.id, what,
            "the catalog did not answer within 60s; this was not recorded"),
    }
}
