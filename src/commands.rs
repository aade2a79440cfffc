//! The commands behind the CLI, one function each, returning what the CLI prints.

use std::fmt::Write as _;

use serde_json::json;

use crate::UsageError;
use crate::config::Config;
use crate::manifest::{self, Manifest};
use crate::restore::{self, RestoreOptions, RestoreReport};
use crate::store::{self, ObjectStore};

/// Opens the configured store.
///
/// # Errors
/// An invalid URL or an S3 client that cannot be built.
pub async fn open_store(config: &Config) -> anyhow::Result<Box<dyn ObjectStore>> {
    Ok(store::open(&config.storage.url, &config.storage.s3).await?)
}

/// `pgkeep backup [JOB]`: runs one job now and returns its committed manifest. A job with a
/// retention policy is pruned afterwards; a failing prune is a warning, not a failed backup.
///
/// # Errors
/// A usage error for an unknown job; `BackupError` when the run fails.
pub async fn backup(config: &Config, job: Option<&str>) -> anyhow::Result<Manifest> {
    let job = config.job(job)?;
    let store = open_store(config).await?;
    let started_at = chrono::Utc::now();
    let result = crate::backup::run(job, store.as_ref()).await;
    if result.is_ok() {
        crate::prune::after_backup(config, job, store.as_ref(), chrono::Utc::now()).await;
    }
    let failure = result.as_ref().err().map(ToString::to_string);
    crate::catalog::after_run(config, store.as_ref(), job, started_at, failure.as_deref()).await;
    Ok(result?)
}

/// `pgkeep list`: committed backups, newest first, as a table or a JSON array.
///
/// # Errors
/// Store errors and unreadable manifests.
pub async fn list(config: &Config, job: Option<&str>, as_json: bool) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let backups = manifest::list(store.as_ref(), job).await?;
    if as_json {
        let items: Vec<serde_json::Value> = backups.iter().map(summary_json).collect();
        return Ok(serde_json::to_string_pretty(&items)? + "\n");
    }
    if backups.is_empty() {
        return Ok(format!("no backups in {}\n", store.describe()));
    }
    let mut out = format!(
        "{:<22} {:<16} {:<6} {:<20} {:>9} {:>10}\n",
        "ID", "JOB", "KIND", "STARTED", "DURATION", "SIZE"
    );
    for m in &backups {
        let secs = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
        let _ = writeln!(
            out,
            "{:<22} {:<16} {:<6} {:<20} {:>8.1}s {:>10}",
            m.id,
            m.job,
            m.kind,
            manifest::display_time(m.started_at),
            secs,
            human_bytes(m.stored_bytes())
        );
    }
    Ok(out)
}

fn summary_json(m: &Manifest) -> serde_json::Value {
    json!({
        "id": m.id,
        "job": m.job,
        "kind": m.kind,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "bytes": m.stored_bytes(),
        "database": m.database,
        "server_version": m.server_version,
        "objects": m.objects.len(),
    })
}

/// Finds a backup by id or `latest`. With no job named and several configured, an id is
/// looked up across all jobs; `latest` then needs a job.
///
/// # Errors
/// A usage error when the backup does not exist or the choice is ambiguous.
pub async fn resolve(
    config: &Config,
    store: &dyn ObjectStore,
    job: Option<&str>,
    backup: &str,
) -> anyhow::Result<Manifest> {
    let job = match job {
        Some(j) => Some(j.to_string()),
        None if config.jobs.len() == 1 => config.jobs.keys().next().cloned(),
        None => None,
    };
    // A named backup of a known job is one read, not a read of every manifest of the job;
    // anything unexpected falls through to the listing, which reports it precisely.
    if let Some(j) = job.as_deref()
        && backup != "latest"
        && !backup.contains('/')
    {
        let key = manifest::object_key(j, backup, manifest::MANIFEST_NAME);
        if let Ok(m) = manifest::read(store, &key).await
            && m.id == backup
            && m.job == j
        {
            return Ok(m);
        }
    }
    let backups = manifest::list(store, job.as_deref()).await?;
    let scope = job
        .as_deref()
        .map_or_else(|| "any job".to_string(), |j| format!("job '{j}'"));
    if backup == "latest" {
        if job.is_none() {
            return Err(UsageError(
                "'latest' needs a job: the configuration has several; pass --job".into(),
            )
            .into());
        }
        return backups.into_iter().next().ok_or_else(|| {
            UsageError(format!(
                "no committed backup of {scope} in {}",
                store.describe()
            ))
            .into()
        });
    }
    let mut found: Vec<Manifest> = backups.into_iter().filter(|m| m.id == backup).collect();
    match found.len() {
        0 => Err(UsageError(format!(
            "no committed backup '{backup}' of {scope} in {} (see `pgkeep list`)",
            store.describe()
        ))
        .into()),
        1 => Ok(found.remove(0)),
        _ => Err(UsageError(format!(
            "backup id '{backup}' exists in several jobs; pass --job"
        ))
        .into()),
    }
}

/// `pgkeep show BACKUP`: one backup's manifest.
///
/// # Errors
/// As `resolve`.
pub async fn show(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    as_json: bool,
) -> anyhow::Result<String> {
    let store = open_store(config).await?;
    let m = resolve(config, store.as_ref(), job, backup).await?;
    if as_json {
        let mut v = serde_json::to_value(&m)?;
        v["bytes"] = json!(m.stored_bytes());
        return Ok(serde_json::to_string_pretty(&v)? + "\n");
    }
    let mut out = String::new();
    let secs = (m.finished_at - m.started_at).num_milliseconds() as f64 / 1000.0;
    let _ = writeln!(out, "backup:          {}", m.id);
    let _ = writeln!(out, "job:             {} ({})", m.job, m.kind);
    let _ = writeln!(
        out,
        "started:         {}",
        manifest::display_time(m.started_at)
    );
    let _ = writeln!(
        out,
        "finished:        {} ({secs:.1}s)",
        manifest::display_time(m.finished_at)
    );
    let _ = writeln!(out, "source:          {}", m.source);
    let _ = writeln!(out, "server version:  {}", m.server_version);
    let _ = writeln!(out, "pg_dump version: {}", m.pg_dump_version);
    let _ = writeln!(
        out,
        "wal position:    {}",
        m.wal_lsn.as_deref().unwrap_or("-")
    );
    let _ = writeln!(out, "compression:     {}", m.compression);
    let globals = match (&m.globals.included, &m.globals.note) {
        (true, None) => "included".to_string(),
        (_, Some(n)) => n.clone(),
        (false, None) => "not included".to_string(),
    };
    let _ = writeln!(out, "globals:         {globals}");
    let _ = writeln!(out, "stored size:     {}", human_bytes(m.stored_bytes()));
    let _ = writeln!(out, "objects:");
    for o in &m.objects {
        let _ = writeln!(
            out,
            "  {:<24} {:<8} {:>10} raw {:>10} stored  sha256 {}",
            o.key,
            o.role,
            human_bytes(o.raw_bytes),
            human_bytes(o.stored_bytes),
            o.sha256
        );
    }
    Ok(out)
}

/// `pgkeep restore BACKUP --target ...`: plan, then apply.
///
/// # Errors
/// As `resolve`, `restore::plan` and `restore::apply`.
pub async fn restore(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    options: RestoreOptions,
) -> anyhow::Result<RestoreReport> {
    let store = open_store(config).await?;
    let m = resolve(config, store.as_ref(), job, backup).await?;
    let mut options = options;
    if options.migrations.is_none() {
        options.migrations = config
            .jobs
            .get(&m.job)
            .and_then(|j| j.export.migrations.clone());
    }
    let plan = restore::plan(m, options).await?;
    Ok(restore::apply(store.as_ref(), plan).await?)
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
    let store = open_store(config).await?;
    let now = chrono::Utc::now();
    let mut failed = Vec::new();
    for j in jobs {
        match crate::prune::prune_job(config, j, store.as_ref(), now, dry_run).await {
            Ok(report) => {
                let _ = write!(out, "{}", report.render());
            }
            Err(e) => {
                let _ = writeln!(out, "job '{}': prune failed: {e}", j.name);
                failed.push(e);
            }
        }
    }
    match failed.len() {
        0 => Ok(()),
        1 => Err(failed.remove(0).into()),
        n => Err(anyhow::anyhow!(
            "prune failed for {n} jobs; first: {}",
            failed.remove(0)
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
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    let store = open_store(config).await?;
    let selection = if all {
        crate::verify::Selection::All {
            job: job.map(str::to_string),
        }
    } else {
        let m = resolve(config, store.as_ref(), job, backup.unwrap_or("latest")).await?;
        crate::verify::Selection::Backups(vec![m])
    };
    crate::verify::verify(config, store.as_ref(), selection, out).await
}

/// `1.5 MiB`-style sizes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
