//! The commands behind the CLI, one function each, returning (or writing) what the CLI prints.

mod inspect;
mod restoring;

use std::fmt::Write as _;
use std::path::Path;

pub use inspect::{list, show, show_globals};
pub use restoring::{PlanFormat, drill, drill_summary, restore, restore_roles};

use crate::config::Config;
use crate::error::{Cancel, UsageError};
use crate::manifest::Manifest;
use crate::migrate::{self, MigrateError, MigrateOptions};
use crate::repository::{Repository, Resolved};
use crate::restore::{self, RestoreOptions, RestoreReport};

/// The process exit code for an error: 2 for usage and configuration errors, 1 otherwise
/// (the CLI exits 128 + the signal when a signal stopped the command).
pub fn exit_code(error: &anyhow::Error) -> i32 {
    let usage = error.chain().any(|e| {
        e.downcast_ref::<UsageError>().is_some()
            || e.downcast_ref::<crate::config::ConfigError>().is_some()
            || e.downcast_ref::<crate::repository::RepoError>()
                .is_some_and(crate::repository::RepoError::is_usage)
            || e.downcast_ref::<crate::restore::RestoreError>()
                .is_some_and(crate::restore::RestoreError::is_usage)
            || e.downcast_ref::<crate::drill::DrillError>()
                .is_some_and(crate::drill::DrillError::is_usage)
    });
    if usage { 2 } else { 1 }
}

/// Opens the configured repository.
///
/// # Errors
/// An invalid URL or an S3 client that cannot be built.
pub async fn open_repository(config: &Config) -> anyhow::Result<Repository> {
    Ok(config.storage.open().await?)
}

/// The identities for reading encrypted backups: `--identity` files, else
/// `$PGKEEP_AGE_IDENTITY_FILE`, else `storage.encryption.identity_file`; none when none is
/// named (encrypted backups are then checked for integrity only, and not restored).
///
/// # Errors
/// A usage error naming a file that cannot be read or holds no identity (never its content).
pub fn identities(
    config: &Config,
    given: &[std::path::PathBuf],
) -> anyhow::Result<Option<crate::crypt::Identities>> {
    let files = config.identity_files(given);
    if files.is_empty() {
        return Ok(None);
    }
    crate::crypt::Identities::from_files(&files)
        .map(Some)
        .map_err(|e| UsageError(crate::error::report(&e)).into())
}

/// The migrations of the job that made `manifest`'s backup, if it (still) has any.
fn job_migrations(
    config: &Config,
    manifest: &crate::manifest::Manifest,
) -> Option<crate::config::Migrations> {
    config
        .jobs
        .get(&manifest.job)
        .and_then(|j| j.export.migrations.clone())
}

/// The `pg_bin_dir` of the job that made `manifest`'s backup, if set: its pg_restore is the one
/// that matches its pg_dump.
fn job_pg_bin_dir(
    config: &Config,
    manifest: &crate::manifest::Manifest,
) -> Option<std::path::PathBuf> {
    config
        .jobs
        .get(&manifest.job)
        .and_then(|j| j.pg_bin_dir.clone())
}

/// The job a command is about: the named one (which must exist), else the only one.
fn job_scope<'a>(config: &'a Config, job: Option<&'a str>) -> Result<Option<&'a str>, UsageError> {
    match job {
        Some(name) => config.job(Some(name)).map(|j| Some(j.name.as_str())),
        None if config.jobs.len() == 1 => Ok(config.jobs.keys().next().map(String::as_str)),
        None => Ok(None),
    }
}

/// Resolves `backup` (an id or `latest`) and warns about newer backups it passed over.
async fn resolve(
    config: &Config,
    repo: &Repository,
    job: Option<&str>,
    backup: &str,
) -> anyhow::Result<Manifest> {
    let Resolved {
        manifest,
        passed_over,
    } = repo.resolve(job_scope(config, job)?, backup).await?;
    for d in &passed_over {
        tracing::warn!(job = %d.job, backup = %d.id, error = %crate::error::report(&d.error),
            "passed over a newer backup whose manifest is damaged");
        eprintln!(
            "warning: newer backup {} of job '{}' is damaged and was passed over: {}",
            d.id,
            d.job,
            crate::error::report(&d.error)
        );
    }
    Ok(manifest)
}

/// `pgkeep backup [JOB]`: runs one job now and returns its committed manifest. A job with a
/// retention policy is pruned afterwards; a failing prune is a warning, not a failed backup.
///
/// # Errors
/// A usage error for an unknown job; `BackupError` when the run fails.
pub async fn backup(
    config: &Config,
    job: Option<&str>,
    cancel: &Cancel,
) -> anyhow::Result<Manifest> {
    let job = config.job(job)?;
    let repo = open_repository(config).await?;
    let started_at = chrono::Utc::now();
    let clock = std::time::Instant::now();
    let notifier = crate::notify::Notifier::new();
    let result = match take_lock(job).await {
        Ok(lock) => {
            // As in the daemon: `/start` once the run really starts (it holds the lock).
            notifier.started(&job.notifications, &job.name).await;
            // Holding the lock, no run of the job is going anywhere: what earlier runs left
            // (killed, interrupted) is debris, whatever its age.
            match repo.sweep(&job.name, None).await {
                Ok(swept) if swept.objects + swept.uploads > 0 => {
                    tracing::info!(job = %job.name, objects = swept.objects, uploads = swept.uploads, "removed what earlier runs left");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %crate::error::report(&e), "could not look for what earlier runs left");
                }
            }
            // The job's `timeout` bounds a manual run as it bounds the daemon's.
            let (run_cancel, _timer) = cancel.with_timeout(job.timeout);
            let result = crate::backup::run_at(job, &repo, started_at, &run_cancel).await;
            if result.is_ok() {
                crate::prune::after_backup(config, job, &repo, chrono::Utc::now()).await;
            }
            lock.release().await;
            result.map_err(anyhow::Error::from)
        }
        Err(e) => Err(e),
    };
    let failure = result.as_ref().err().map(crate::error::report_anyhow);
    // A run stopped by Ctrl-C or SIGTERM is neither a success nor a failure, as in the daemon.
    if !cancel.is_cancelled() {
        let outcome = match &result {
            Ok(m) => crate::notify::Outcome::Success {
                backup: m.id.clone(),
                bytes: m.stored_bytes(),
            },
            Err(_) => crate::notify::Outcome::Failure {
                backup: None,
                error: failure.clone().unwrap_or_default(),
            },
        };
        notifier
            .finished(&job.notifications, &job.name, &outcome, clock.elapsed())
            .await;
    }
    crate::catalog::after_run(config, &repo, job, started_at, failure.as_deref()).await;
    result
}

/// The job's lock, or why the run cannot start: another pgkeep runs the job, or the
/// database cannot be reached (the backup's own connection would fail the same way).
async fn take_lock(job: &crate::config::Job) -> anyhow::Result<crate::lock::JobLock> {
    match crate::lock::try_lock(job).await {
        Ok(crate::lock::Acquired::Held(lock)) => Ok(lock),
        Ok(crate::lock::Acquired::Busy) => Err(anyhow::anyhow!(
            "job '{}' is running elsewhere: another pgkeep holds its lock on the job's database; try again when it is done",
            job.name
        )),
        Err(e) => Err(crate::backup::BackupError {
            job: job.name.clone(),
            stage: crate::backup::Stage::Connect,
            cause: e.into(),
        }
        .into()),
    }
}

/// `pgkeep prune [--job JOB] [--dry-run]`: applies retention to one job, or to every job with
/// a policy, writing each plan (every backup, kept with its reasons or deleted) to `out`.
///
/// # Errors
/// A usage error for an unknown job; `PruneError` for the jobs whose prune failed (the other
/// jobs are still pruned).
pub async fn prune(
    config: &Config,
    job: Option<&str>,
    dry_run: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let jobs: Vec<&crate::config::Job> = match job {
        Some(name) => vec![config.job(Some(name))?],
        None => config
            .jobs
            .values()
            .filter(|j| j.retention.is_some())
            .collect(),
    };
    if jobs.is_empty() {
        let _ = writeln!(out, "no job has a retention policy: nothing to prune");
        return Ok(());
    }
    let repo = open_repository(config).await?;
    let now = chrono::Utc::now();
    let mut failed = Vec::new();
    for j in jobs {
        match crate::prune::prune_job(config, j, &repo, now, dry_run).await {
            Ok(report) => {
                let _ = write!(out, "{}", report.render());
            }
            Err(e) => {
                let _ = writeln!(
                    out,
                    "job '{}': prune failed: {}",
                    j.name,
                    crate::error::report(&e)
                );
                failed.push(e);
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0).into()),
        n => Err(anyhow::anyhow!(
            "prune failed for {n} jobs; first: {}",
            crate::error::report(&failed.remove(0))
        )),
    }
}

/// `pgkeep verify [BACKUP | --all] [--job JOB]`: re-reads and checks the backup(s), one line
/// per object to `out`. `BACKUP` is an id or `latest` (the default).
///
/// # Errors
/// As `resolve`; `verify::VerifyFailed` naming every damaged object.
pub async fn verify(
    config: &Config,
    job: Option<&str>,
    backup: Option<&str>,
    all: bool,
    identity: &[std::path::PathBuf],
    out: &mut dyn std::io::Write,
    cancel: &Cancel,
) -> anyhow::Result<()> {
    let repo = open_repository(config)
        .await?
        .reading_with(identities(config, identity)?);
    let selection = if all {
        crate::verify::Selection::All {
            job: job_scope(config, job)?.map(str::to_string),
        }
    } else {
        let m = resolve(config, &repo, job, backup.unwrap_or("latest")).await?;
        crate::verify::Selection::Backups(vec![m])
    };
    tokio::select! {
        verified = crate::verify::verify(config, &repo, selection, out) => verified,
        interrupted = cancel.cancelled() => Err(interrupted.into()),
    }
}

/// `pgkeep catalog sync`: applies the catalog migrations, then rebuilds the committed runs
/// from the manifests in the configured store. Returns what to print.
///
/// # Errors
/// A usage error when no catalog is configured; connection, store and database errors.
pub async fn catalog_sync(config: &Config) -> anyhow::Result<String> {
    let (mut client, target) = crate::catalog::connect(config).await?;
    crate::catalog::prepare(&mut client).await?;
    let repo = open_repository(config).await?;
    let r = crate::catalog::sync(&mut client, &repo).await?;
    let damaged = if r.damaged > 0 {
        format!(", {} damaged (left as they were)", r.damaged)
    } else {
        String::new()
    };
    Ok(format!(
        "catalog {} synced from {}: {} committed backups ({} new), {} marked pruned{damaged}\n",
        target.describe(),
        repo.describe(),
        r.manifests,
        r.added,
        r.pruned
    ))
}

/// `pgkeep migrate`: applies the files in `dir`, or pgkeep's own catalog without one, to
/// `database`, and returns what to print.
///
/// Without `--table` the tracking table is `pgkeep_schema_migrations` for a directory and
/// `pgkeep.schema_migrations` for the catalog, so an application's migrations and pgkeep's
/// catalog can share a database without mixing their versions.
///
/// # Errors
/// A usage error for a missing directory or a bad table name; otherwise connection and
/// migration errors.
pub async fn migrate(
    database: &str,
    dir: Option<&Path>,
    target_version: Option<i64>,
    table: Option<&str>,
) -> anyhow::Result<String> {
    let usage = |e: MigrateError| -> anyhow::Error {
        if e.is_usage() {
            UsageError(crate::error::report(&e)).into()
        } else {
            e.into()
        }
    };
    let migrations = match dir {
        Some(d) => migrate::discover(d).map_err(usage)?,
        None => crate::catalog::migrations(),
    };
    let table = table.map_or_else(
        || match dir {
            Some(_) => crate::config::default_migrations_table(),
            None => crate::catalog::CATALOG_MIGRATIONS_TABLE.to_string(),
        },
        str::to_string,
    );
    let opts = MigrateOptions {
        table,
        target_version,
    };
    let target = crate::pg::Target::resolve(database, None)
        .map_err(|e| UsageError(format!("--database: {}", crate::error::report(&e))))?;
    let mut client = target.connect().await?;
    let report = migrate::apply(&mut client, &migrations, &opts)
        .await
        .map_err(usage)?;
    let mut out = String::new();
    for (version, file) in &report.applied {
        let _ = writeln!(out, "applied {file} (version {version})");
    }
    let version = report
        .version
        .map_or_else(|| "no version".to_string(), |v| format!("version {v}"));
    if report.applied.is_empty() {
        let _ = writeln!(
            out,
            "nothing to apply: {} is at {version} (table {})",
            target.describe(),
            opts.table
        );
    } else {
        let _ = writeln!(
            out,
            "{} is now at {version} (table {})",
            target.describe(),
            opts.table
        );
    }
    Ok(out)
}
