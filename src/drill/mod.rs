//! Drills: a backup restored into a scratch database on a server of the operator's choice,
//! through the normal restore path, checked against what the backup recorded (`checks`), and
//! dropped — also when the restore or a check fails, or the drill is interrupted. A drill that
//! passed leaves its record beside the backup (`repository::drills`), which retention honours.

pub mod checks;
pub mod scratch;

use std::time::{Duration, Instant};

use chrono::Utc;

use crate::config::Migrations;
use crate::error::{Cancel, Interrupted};
use crate::manifest::Manifest;
use crate::pg::{ConnInfo, PgError, Target};
use crate::repository::DrillRecord;
use crate::repository::Repository;
use crate::restore::{self, RestoreError, RestoreOptions, SchemaFrom};
use crate::store::StoreError;
use checks::Failure;

/// The most differences a drill's error names; the rest are counted.
const NAMED_FAILURES: usize = 5;

/// How to drill a backup.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// libpq conninfo of the server (and its maintenance database, `postgres` when the conninfo
    /// names none) the scratch database is created on.
    pub server: String,
    /// A file holding the server's password (else the conninfo's, PGPASSWORD or the passfile).
    pub password_file: Option<std::path::PathBuf>,
    /// Parallel sessions of the restore.
    pub jobs: u32,
    pub no_owner: bool,
    pub staging_dir: Option<std::path::PathBuf>,
    pub schema_from: Option<SchemaFrom>,
    pub migrations: Option<Migrations>,
    /// Where pg_restore is (the job's `pg_bin_dir`).
    pub pg_bin_dir: Option<std::path::PathBuf>,
}

/// A drill that passed.
#[derive(Debug, Clone)]
pub struct DrillReport {
    pub record: DrillRecord,
    /// The scratch database the backup was restored in (dropped since).
    pub database: String,
    /// Scratch databases of killed drills this drill dropped first.
    pub swept: Vec<String>,
    /// The backup recorded no row counts (made by an older pgkeep): only that it restores was
    /// checked, and its sequences.
    pub no_counts: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    #[error("--target: {0}")]
    Target(String),
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("drill of backup {backup} of job '{job}' failed: {}", describe(.failures))]
    Failed {
        backup: String,
        job: String,
        failures: Vec<Failure>,
    },
    #[error("the drill of backup {backup} passed, but its record could not be written")]
    Record {
        backup: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "the drill passed, but its scratch database {database} could not be dropped (the next drill drops it)"
    )]
    Cleanup {
        database: String,
        #[source]
        source: PgError,
    },
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
}

impl DrillError {
    /// Whether the error is the operator's (exit 2).
    pub fn is_usage(&self) -> bool {
        match self {
            DrillError::Target(_) => true,
            DrillError::Restore(e) => e.is_usage(),
            _ => false,
        }
    }
}

fn describe(failures: &[Failure]) -> String {
    let named: Vec<String> = failures
        .iter()
        .take(NAMED_FAILURES)
        .map(Failure::to_string)
        .collect();
    let more = failures.len().saturating_sub(NAMED_FAILURES);
    let (count, s) = (failures.len(), if failures.len() == 1 { "" } else { "s" });
    if more > 0 {
        format!(
            "{count} difference{s}: {}; and {more} more",
            named.join("; ")
        )
    } else {
        format!("{count} difference{s}: {}", named.join("; "))
    }
}

/// Drills `manifest`'s backup: restores it into a new scratch database on `options.server`,
/// checks it, drops it, and on success records the drill beside the backup.
///
/// # Errors
/// `DrillError::Failed` naming every difference; the restore's, the server's or the store's
/// error; in every case the scratch database has been dropped (or, when even that failed, is
/// dropped by the next drill on the server).
pub async fn drill(
    repo: &Repository,
    manifest: &Manifest,
    options: &DrillOptions,
    cancel: &Cancel,
) -> Result<DrillReport, DrillError> {
    let started = Instant::now();
    let mut info = ConnInfo::parse(&options.server)
        .map_err(|e| DrillError::Target(crate::error::report(&e)))?;
    if info.get("dbname").is_none() {
        info.set("dbname", "postgres");
    }
    let admin = Target::from_conninfo(&info, options.password_file.as_deref()).map_err(|e| {
        if matches!(e, PgError::PasswordFile { .. }) {
            DrillError::Pg(e)
        } else {
            DrillError::Target(crate::error::report(&e))
        }
    })?;
    // The scratch database is reached with the credentials resolved for the maintenance one.
    if let Some(password) = admin.password() {
        info.set("password", password);
    }
    let server = scratch::Server::connect(admin.clone()).await?;
    let swept = server.sweep().await?;
    // A cluster backup is drilled database by database, each in a scratch database of its
    // own; the differences of all of them are named together.
    let parts = manifest.database_backups();
    let cluster = manifest.kind == crate::manifest::BackupKind::Cluster;
    let mut checked = checks::Checked::default();
    let mut scratch_names = Vec::new();
    for part in &parts {
        let (one, database) = drill_database(&server, repo, part, options, &info, cancel).await?;
        checked.absorb(one, cluster.then_some(part.database.as_str()));
        scratch_names.push(database);
    }
    let database = scratch_names.join(", ");
    if !checked.failures.is_empty() {
        return Err(DrillError::Failed {
            backup: manifest.id.clone(),
            job: manifest.job.clone(),
            failures: checked.failures,
        });
    }
    let record = DrillRecord {
        backup: manifest.id.clone(),
        job: manifest.job.clone(),
        drilled_at: Utc::now(),
        server: server_of(&admin),
        tables: checked.tables,
        rows: checked.rows,
        digests: checked.digests,
        sequences: checked.sequences,
        seconds: round_seconds(started.elapsed()),
        pgkeep_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    repo.record_drill(manifest, &record)
        .await
        .map_err(|source| DrillError::Record {
            backup: manifest.id.clone(),
            source,
        })?;
    Ok(DrillReport {
        record,
        database,
        swept,
        no_counts: checked.no_counts,
    })
}

/// One database's drill: a scratch database made on `server`, `manifest` (a dump or export
/// backup of one database) restored into it and checked, and the scratch database dropped
/// whatever happened. Returns the checks and the scratch database's name.
async fn drill_database(
    server: &scratch::Server,
    repo: &Repository,
    manifest: &Manifest,
    options: &DrillOptions,
    info: &ConnInfo,
    cancel: &Cancel,
) -> Result<(checks::Checked, String), DrillError> {
    let database = scratch::name(&manifest.job);
    server
        .create(&database, &manifest.job, &manifest.id)
        .await?;
    tracing::info!(backup = %manifest.id, job = %manifest.job, database = %database,
        source_database = %manifest.database, "drilling: restoring into a scratch database");
    let mut info = info.clone();
    info.set("dbname", database.as_str());
    let outcome = tokio::select! {
        done = restore_and_check(repo, manifest, options, &info, cancel) => done,
        interrupted = cancel.cancelled() => Err(interrupted.into()),
    };
    let dropped = server.drop(&database).await;
    match (outcome, dropped) {
        (Ok(checked), Ok(())) => Ok((checked, database)),
        (Ok(_), Err(source)) => Err(DrillError::Cleanup { database, source }),
        (Err(e), dropped) => {
            if let Err(d) = dropped {
                tracing::error!(database = %database, error = %crate::error::report(&d),
                    "the failed drill's scratch database could not be dropped (the next drill drops it)");
            }
            Err(e)
        }
    }
}

/// Records a drill's outcome in the catalog (when one is configured; never fails).
pub async fn record(
    config: &crate::config::Config,
    manifest: &Manifest,
    options: &DrillOptions,
    started_at: chrono::DateTime<Utc>,
    drilled: &Result<DrillReport, DrillError>,
) {
    use crate::catalog::Checked;
    let (target, checks, error) = match drilled {
        Ok(report) => {
            let r = &report.record;
            let checks = Checked {
                tables: r.tables,
                rows: r.rows,
                digests: r.digests,
                sequences: r.sequences,
                differences: Vec::new(),
            };
            (
                format!("{}/{}", r.server, report.database),
                Some(checks),
                None,
            )
        }
        Err(e) => {
            let checks = match e {
                DrillError::Failed { failures, .. } => Some(Checked {
                    differences: failures.iter().map(ToString::to_string).collect(),
                    ..Checked::default()
                }),
                _ => None,
            };
            let server = Target::resolve(&options.server, None)
                .map_or_else(|_| "the drill's server".to_string(), |t| t.describe());
            (server, checks, Some(crate::error::report(e)))
        }
    };
    crate::catalog::record_restore(
        config,
        manifest,
        crate::catalog::RestoreKind::Drill,
        &target,
        started_at,
        checks.as_ref(),
        error.as_deref(),
    )
    .await;
}

/// The restore into the scratch database (`info`), through the normal plan and apply, then
/// the checks.
async fn restore_and_check(
    repo: &Repository,
    manifest: &Manifest,
    options: &DrillOptions,
    info: &ConnInfo,
    cancel: &Cancel,
) -> Result<checks::Checked, DrillError> {
    let restore_options = RestoreOptions {
        target: info.to_keywords(),
        jobs: options.jobs,
        clean: false,
        create: false,
        no_owner: options.no_owner,
        // The scratch database is new and empty, and nobody else uses it: atomicity buys
        // nothing, and the drill drops it whatever happens.
        in_place: true,
        keep_old: false,
        staging_dir: options.staging_dir.clone(),
        schema_from: options.schema_from,
        migrations: options.migrations.clone(),
        pg_bin_dir: options.pg_bin_dir.clone(),
        tables: Vec::new(),
        allow_drift: false,
        database: None,
    };
    let plan = restore::plan(repo, manifest.clone(), restore_options).await?;
    restore::apply(repo, plan, cancel).await?;
    let scratch = Target::from_conninfo(info, None)
        .map_err(|e| DrillError::Target(crate::error::report(&e)))?;
    let client = scratch.connect().await?;
    crate::progress::get().phase("checks");
    client
        .batch_execute(crate::source::snapshot::SESSION_SETUP)
        .await
        .map_err(|e| PgError::query("setting up the checking session", &scratch.describe(), e))?;
    Ok(checks::run(&client, &scratch.describe(), manifest).await?)
}

/// `user@host:port` of the server (no database, never a password).
fn server_of(admin: &Target) -> String {
    let described = admin.describe();
    match described.rsplit_once('/') {
        Some((server, _)) => server.to_string(),
        None => described,
    }
}

fn round_seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_named_up_to_a_limit() {
        let f = |i: usize| Failure {
            relation: format!("\"public\".\"t{i}\""),
            difference: "1 rows restored, the backup recorded 2".into(),
        };
        assert_eq!(
            describe(&[f(1)]),
            "1 difference: \"public\".\"t1\": 1 rows restored, the backup recorded 2"
        );
        let many: Vec<Failure> = (0..8).map(f).collect();
        let text = describe(&many);
        assert!(
            text.starts_with("8 differences: \"public\".\"t0\""),
            "{text}"
        );
        assert!(text.ends_with("; and 3 more"), "{text}");
        assert!(!text.contains("t5"), "{text}");
    }
}
