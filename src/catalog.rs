//! The catalog: backup history mirrored into PostgreSQL tables (schema `pgkeep`, defined in
//! `migrations/`) so operators can query it; the manifests in storage stay the truth and
//! [`sync`] rebuilds the committed runs from them. Documented in docs/CATALOG.md.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient};

use crate::config::Config;
use crate::error::UsageError;
use crate::manifest::Manifest;
use crate::migrate::{self, MigrateError, MigrateOptions, Migration};
use crate::pg::{DbError, PgError, Target};
use crate::repository::{RepoError, Repository};

mod outcomes;
pub use outcomes::{Checked, RestoreKind, record_restore, record_verification};

/// The tracking table of the catalog's own migrations: apart from an application's
/// (`pgkeep_schema_migrations`), so both can live in one database.
pub const CATALOG_MIGRATIONS_TABLE: &str = "pgkeep.schema_migrations";

/// The latest committed backup of every job (served by `backup_run_committed_idx`).
pub const LATEST_COMMITTED_SQL: &str = "SELECT DISTINCT ON (job) job, backup_id, kind, \
     started_at, finished_at, stored_bytes \
     FROM pgkeep.backup_run WHERE status = 'committed' ORDER BY job, started_at DESC";

/// Failed runs that started in `[$1, $2)` (served by `backup_run_failed_idx`).
pub const FAILURES_BETWEEN_SQL: &str = "SELECT job, kind, started_at, finished_at, error \
     FROM pgkeep.backup_run WHERE status = 'failed' AND started_at >= $1 AND started_at < $2 \
     ORDER BY started_at";

const UPSERT_RUN_SQL: &str = "INSERT INTO pgkeep.backup_run \
     (job, kind, backup_id, status, started_at, finished_at, stored_bytes, server_version, manifest) \
     VALUES ($1, $2, $3, 'committed', $4, $5, $6, $7, $8) \
     ON CONFLICT (job, backup_id) DO UPDATE SET kind = EXCLUDED.kind, status = 'committed', \
     started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at, \
     stored_bytes = EXCLUDED.stored_bytes, server_version = EXCLUDED.server_version, \
     error = NULL, manifest = EXCLUDED.manifest, recorded_at = now() \
     RETURNING run_id, (xmax = 0) AS inserted";

const DELETE_OTHER_OBJECTS_SQL: &str =
    "DELETE FROM pgkeep.backup_object WHERE run_id = $1 AND key <> ALL($2::text[])";

const UPSERT_OBJECTS_SQL: &str = "INSERT INTO pgkeep.backup_object \
     (run_id, key, role, table_name, row_count, compression, raw_bytes, stored_bytes, sha256) \
     SELECT $1, o.key, o.role, o.table_name, o.row_count, o.compression, o.raw_bytes, \
            o.stored_bytes, o.sha256 \
       FROM unnest($2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::bigint[], \
                   $8::bigint[], $9::text[]) \
            AS o(key, role, table_name, row_count, compression, raw_bytes, stored_bytes, sha256) \
     ON CONFLICT (run_id, key) DO UPDATE SET role = EXCLUDED.role, \
     table_name = EXCLUDED.table_name, row_count = EXCLUDED.row_count, \
     compression = EXCLUDED.compression, raw_bytes = EXCLUDED.raw_bytes, \
     stored_bytes = EXCLUDED.stored_bytes, sha256 = EXCLUDED.sha256";

const PRUNE_SQL: &str = "UPDATE pgkeep.backup_run SET status = 'pruned', recorded_at = now() \
     WHERE status = 'committed' AND (job, backup_id) NOT IN \
     (SELECT s.job, s.backup_id FROM unnest($1::text[], $2::text[]) AS s(job, backup_id))";

/// pgkeep's own catalog schema (`migrations/` in the source tree), compiled in.
pub fn migrations() -> Vec<Migration> {
    const FILES: &[(&str, &str)] = &[
        (
            "0001_catalog.sql",
            include_str!("../migrations/0001_catalog.sql"),
        ),
        (
            "0002_history_indexes.sql",
            include_str!("../migrations/0002_history_indexes.sql"),
        ),
        (
            "0003_drills.sql",
            include_str!("../migrations/0003_drills.sql"),
        ),
        (
            "0004_cluster_backups.sql",
            include_str!("../migrations/0004_cluster_backups.sql"),
        ),
        (
            "0005_role_restores.sql",
            include_str!("../migrations/0005_role_restores.sql"),
        ),
    ];
    FILES
        .iter()
        .map(|(file, sql)| Migration::new(file, sql).expect("embedded migration names are valid"))
        .collect()
}

/// Catalog errors.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog migrations")]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("catalog database")]
    Pg(#[from] PgError),
    #[error("{what} in the catalog failed")]
    Db {
        what: &'static str,
        #[source]
        source: DbError,
    },
    #[error("backup {job}/{id} cannot be recorded: {reason}")]
    Value {
        job: String,
        id: String,
        reason: String,
    },
}

fn db(what: &'static str) -> impl Fn(tokio_postgres::Error) -> CatalogError {
    move |e| CatalogError::Db {
        what,
        source: DbError(e),
    }
}

/// Applies pgkeep's catalog migrations (idempotent); returns the catalog's schema version.
///
/// # Errors
/// Migration errors, e.g. a catalog created by a newer pgkeep.
pub async fn prepare(client: &mut Client) -> Result<Option<i64>, CatalogError> {
    let opts = MigrateOptions {
        table: CATALOG_MIGRATIONS_TABLE.to_string(),
        target_version: None,
    };
    Ok(migrate::apply(client, &migrations(), &opts).await?.version)
}

/// Records a committed backup and its objects, replacing what the catalog had for it (a
/// pruned or failed record of the same id becomes committed). Returns the run's `run_id`.
///
/// # Errors
/// Database errors; sizes beyond `bigint`.
pub async fn record_backup(client: &mut Client, manifest: &Manifest) -> Result<i64, CatalogError> {
    let tx = client
        .transaction()
        .await
        .map_err(db("starting a transaction"))?;
    let (run_id, _) = upsert_backup(&tx, manifest).await?;
    tx.commit()
        .await
        .map_err(db("committing the backup record"))?;
    Ok(run_id)
}

/// Records a run that failed (it has no manifest, so only the catalog knows of it). Returns
/// the run's `run_id`.
///
/// # Errors
/// Database errors, and the catalog's checks (e.g. `finished_at` before `started_at`).
pub async fn record_failure(
    client: &Client,
    job: &str,
    kind: &str,
    started_at: DateTime<Utc>,
    finished_at: DateTime<Utc>,
    error: &str,
) -> Result<i64, CatalogError> {
    let error = if error.trim().is_empty() {
        "unknown error"
    } else {
        error
    };
    let row = client
        .query_one(
            "INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at, error) \
             VALUES ($1, $2, 'failed', $3, $4, $5) RETURNING run_id",
            &[&job, &kind, &started_at, &finished_at, &error],
        )
        .await
        .map_err(db("recording a failed run"))?;
    Ok(row.get(0))
}

/// What [`sync`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Committed backups found in storage (each one recorded).
    pub manifests: usize,
    /// Of those, the ones the catalog did not know.
    pub added: usize,
    /// Committed runs whose manifest is no longer in storage, now marked `pruned`.
    pub pruned: usize,
    /// Backups whose manifest is damaged: left as the catalog had them.
    pub damaged: usize,
}

/// Makes the catalog's committed runs match the manifests in `store`, in one transaction:
/// every manifest is recorded (see [`record_backup`]), and committed runs whose manifest is
/// gone are marked `pruned`. Failed runs are kept. One catalog mirrors one store.
///
/// # Errors
/// Store errors, database errors. A damaged manifest does not stop the sync: its backup is
/// left as the catalog had it (neither recorded anew nor marked pruned).
pub async fn sync(client: &mut Client, repo: &Repository) -> Result<SyncReport, CatalogError> {
    let listing = repo.list(None).await?;
    let manifests = listing.backups;
    let tx = client
        .transaction()
        .await
        .map_err(db("starting a transaction"))?;
    let mut report = SyncReport {
        manifests: manifests.len(),
        damaged: listing.damaged.len(),
        ..SyncReport::default()
    };
    for m in &manifests {
        if upsert_backup(&tx, m).await?.1 {
            report.added += 1;
        }
    }
    let present = manifests
        .iter()
        .map(|m| (m.job.as_str(), m.id.as_str()))
        .chain(
            listing
                .damaged
                .iter()
                .map(|d| (d.job.as_str(), d.id.as_str())),
        );
    let (jobs, ids): (Vec<&str>, Vec<&str>) = present.unzip();
    let pruned = tx
        .execute(PRUNE_SQL, &[&jobs, &ids])
        .await
        .map_err(db("marking pruned backups"))?;
    report.pruned = usize::try_from(pruned).unwrap_or(usize::MAX);
    tx.commit().await.map_err(db("committing the sync"))?;
    tracing::info!(
        store = %repo.describe(),
        manifests = report.manifests,
        added = report.added,
        pruned = report.pruned,
        "catalog synced"
    );
    Ok(report)
}

/// Upserts one committed run and its objects; returns its run_id and whether it is new.
async fn upsert_backup(
    client: &impl GenericClient,
    m: &Manifest,
) -> Result<(i64, bool), CatalogError> {
    let value = |reason: String| CatalogError::Value {
        job: m.job.clone(),
        id: m.id.clone(),
        reason,
    };
    let big = |n: u64, what: &str| {
        i64::try_from(n).map_err(|_| value(format!("{what} {n} is too large for bigint")))
    };
    let document = serde_json::to_value(m).map_err(|e| value(e.to_string()))?;
    let row = client
        .query_one(
            UPSERT_RUN_SQL,
            &[
                &m.job,
                &m.kind.as_str(),
                &m.id,
                &m.started_at,
                &m.finished_at,
                &big(m.stored_bytes(), "stored size")?,
                &m.server_version,
                &document,
            ],
        )
        .await
        .map_err(db("recording a backup run"))?;
    let run_id: i64 = row.get(0);
    let inserted: bool = row.get(1);
    let mut keys = Vec::new();
    let mut roles = Vec::new();
    let mut tables = Vec::new();
    let mut rows = Vec::new();
    let mut compressions = Vec::new();
    let mut raw = Vec::new();
    let mut stored = Vec::new();
    let mut sums = Vec::new();
    for o in &m.objects {
        keys.push(o.key.as_str());
        roles.push(o.role.as_str());
        tables.push(o.table.as_deref());
        rows.push(o.rows.map(|r| big(r, "row count")).transpose()?);
        compressions.push(o.compression.as_str());
        raw.push(big(o.raw_bytes, "raw size")?);
        stored.push(big(o.stored_bytes, "stored size")?);
        sums.push(o.sha256.as_str());
    }
    client
        .execute(DELETE_OTHER_OBJECTS_SQL, &[&run_id, &keys])
        .await
        .map_err(db("replacing a run's objects"))?;
    client
        .execute(
            UPSERT_OBJECTS_SQL,
            &[
                &run_id,
                &keys,
                &roles,
                &tables,
                &rows,
                &compressions,
                &raw,
                &stored,
                &sums,
            ],
        )
        .await
        .map_err(db("recording a run's objects"))?;
    Ok((run_id, inserted))
}

/// One committed backup, as [`latest_committed`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub job: String,
    pub backup_id: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub stored_bytes: i64,
}

/// The latest committed backup of every job, by job name.
///
/// # Errors
/// Database errors.
pub async fn latest_committed(client: &Client) -> Result<Vec<RunSummary>, CatalogError> {
    let rows = client
        .query(LATEST_COMMITTED_SQL, &[])
        .await
        .map_err(db("reading the latest backups"))?;
    Ok(rows
        .iter()
        .map(|r| RunSummary {
            job: r.get(0),
            backup_id: r.get(1),
            kind: r.get(2),
            started_at: r.get(3),
            finished_at: r.get(4),
            stored_bytes: r.get(5),
        })
        .collect())
}

/// One failed run, as [`failures_between`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub job: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub error: String,
}

/// Failed runs that started in `[from, to)`, oldest first.
///
/// # Errors
/// Database errors.
pub async fn failures_between(
    client: &Client,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Failure>, CatalogError> {
    let rows = client
        .query(FAILURES_BETWEEN_SQL, &[&from, &to])
        .await
        .map_err(db("reading failed runs"))?;
    Ok(rows
        .iter()
        .map(|r| Failure {
            job: r.get(0),
            kind: r.get(1),
            started_at: r.get(2),
            finished_at: r.get(3),
            error: r.get(4),
        })
        .collect())
}

/// Connects to the configured catalog database.
///
/// # Errors
/// A usage error when no `[catalog]` is configured; connection errors.
pub async fn connect(config: &Config) -> anyhow::Result<(Client, Target)> {
    let catalog = config.catalog.as_ref().ok_or_else(|| {
        UsageError(format!(
            "no catalog is configured in {}: add a [catalog] section with \
             database = \"postgres://...\" (or set PGKEEP_CATALOG__DATABASE)",
            config.source
        ))
    })?;
    let target = Target::from_conninfo(&catalog.database, catalog.password_file.as_deref())?;
    let client = target.connect().await?;
    Ok((client, target))
}

/// Mirrors one run into the configured catalog, if any: a failure is recorded as such, then
/// the committed runs are synced from the manifests (which also catches up on everything
/// missed while the catalog was unreachable, and on backups retention removed). Never fails
/// the run: problems are logged.
pub async fn after_run(
    config: &Config,
    repo: &Repository,
    job: &crate::config::Job,
    started_at: DateTime<Utc>,
    failure: Option<&str>,
) {
    if config.catalog.is_none() {
        return;
    }
    let work = async {
        let (mut client, _) = connect(config).await?;
        prepare(&mut client).await?;
        if let Some(error) = failure {
            record_failure(
                &client,
                &job.name,
                job.kind_name(),
                started_at,
                Utc::now().max(started_at),
                error,
            )
            .await?;
        }
        sync(&mut client, repo).await?;
        Ok::<(), anyhow::Error>(())
    };
    match tokio::time::timeout(std::time::Duration::from_mins(1), work).await {
        Ok(Ok(())) => tracing::debug!(job = %job.name, "run recorded in the catalog"),
        Ok(Err(e)) => {
            tracing::warn!(job = %job.name, error = %crate::error::report_anyhow(&e), "could not record the run in the catalog; it catches up at the next run");
        }
        Err(_) => {
            tracing::warn!(job = %job.name, "the catalog did not answer within 60s; it catches up at the next run");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_catalog_is_a_valid_set() {
        let set = super::migrations();
        assert!(!set.is_empty());
        crate::migrate::check_set(&set).expect("a consistent set");
        assert_eq!(set[0].version, 1);
        assert!(set.iter().all(|m| m.transactional));
    }
}
