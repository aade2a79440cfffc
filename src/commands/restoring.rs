//! `pgkeep restore` (of a database, or of the roles with `--globals-only`) and `pgkeep drill`:
//! the backup resolved, the job's migrations and `pg_bin_dir` filled in, then the restore
//! module's plan and apply.

use super::*;

/// How `restore --dry-run` prints its plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanFormat {
    Text,
    /// One JSON object (`--json`), printed only once the whole plan is made.
    Json,
}

/// `pgkeep restore BACKUP --target ...`: plan, then (unless `dry_run`) apply. Returns the
/// plan, as text or JSON, for a dry run, else the report.
///
/// # Errors
/// As `resolve`, `restore::plan` and `restore::apply`.
#[allow(clippy::too_many_arguments)]
pub async fn restore(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    options: RestoreOptions,
    identity: &[std::path::PathBuf],
    dry_run: Option<PlanFormat>,
    cancel: &Cancel,
) -> anyhow::Result<Result<RestoreReport, String>> {
    let repo = open_repository(config)
        .await?
        .reading_with(identities(config, identity)?);
    let manifest = resolve(config, &repo, job, backup).await?;
    let mut options = options;
    if options.migrations.is_none() {
        options.migrations = job_migrations(config, &manifest);
    }
    if options.pg_bin_dir.is_none() {
        options.pg_bin_dir = job_pg_bin_dir(config, &manifest);
    }
    // The catalog records the backup as stored (a cluster backup whole), not the one
    // database of it a restore plans with.
    let stored = manifest.clone();
    let plan = tokio::select! {
        plan = restore::plan(&repo, manifest, options) => plan?,
        interrupted = cancel.cancelled() => return Err(interrupted.into()),
    };
    match dry_run {
        Some(PlanFormat::Text) => {
            return Ok(Err(format!("{plan}(dry run: nothing was changed)\n")));
        }
        Some(PlanFormat::Json) => {
            return Ok(Err(serde_json::to_string_pretty(&plan.to_json())? + "\n"));
        }
        None => {}
    }
    tracing::info!(target = %plan.target.describe(), build = %plan.build, "restore planned");
    let (target, started_at) = (plan.target.describe(), chrono::Utc::now());
    let applied = restore::apply(&repo, plan, cancel).await;
    let error = applied.as_ref().err().map(|e| crate::error::report(e));
    crate::catalog::record_restore(
        config,
        &stored,
        crate::catalog::RestoreKind::Restore,
        &target,
        started_at,
        None,
        error.as_deref(),
    )
    .await;
    Ok(Ok(applied?))
}

/// `pgkeep drill [JOB] [--backup ID] --target CONNINFO`: restores the backup into a scratch
/// database, checks it, drops it, and records the drill.
///
/// # Errors
/// As `resolve`; `drill::DrillError`, naming every difference when a check failed.
pub async fn drill(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    options: crate::drill::DrillOptions,
    identity: &[std::path::PathBuf],
    cancel: &Cancel,
) -> anyhow::Result<crate::drill::DrillReport> {
    let repo = open_repository(config)
        .await?
        .reading_with(identities(config, identity)?);
    let job = job_scope(config, job)?;
    let manifest = resolve(config, &repo, job, backup).await?;
    let mut options = options;
    if options.migrations.is_none() {
        options.migrations = job_migrations(config, &manifest);
    }
    if options.pg_bin_dir.is_none() {
        options.pg_bin_dir = job_pg_bin_dir(config, &manifest);
    }
    let started_at = chrono::Utc::now();
    // The job's `timeout` bounds a drill from the command line as it bounds the daemon's.
    let limit = config
        .jobs
        .get(&manifest.job)
        .map_or(crate::config::DEFAULT_TIMEOUT, |j| j.timeout);
    let (drill_cancel, _timer) = cancel.with_timeout(limit);
    let drilled = crate::drill::drill(&repo, &manifest, &options, &drill_cancel).await;
    crate::drill::record(config, &manifest, &options, started_at, &drilled).await;
    Ok(drilled?)
}

/// What `pgkeep drill` prints when the drill passed.
pub fn drill_summary(report: &crate::drill::DrillReport) -> String {
    use std::fmt::Write as _;
    let r = &report.record;
    let mut out = String::new();
    for swept in &report.swept {
        let _ = writeln!(
            out,
            "dropped {swept}, the scratch database of a killed drill"
        );
    }
    if report.no_counts {
        out.push_str(
            "warning: the backup recorded no row counts (it was made by an older pgkeep): checked that it restores, and its sequences\n",
        );
    }
    let digests = if r.digests > 0 {
        format!(", {} content digests", r.digests)
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "drill of backup {} of job '{}' passed on {}: {} tables, {} rows{digests}, {} sequences checked in {:.1}s",
        r.backup, r.job, r.server, r.tables, r.rows, r.sequences, r.seconds
    );
    out
}

/// `pgkeep restore BACKUP --globals-only --target ...`: the backup's roles into the target's
/// server (see `restore::plan_roles`), recorded in the catalog unless a dry run. Returns what
/// to print: a line per role and note.
///
/// # Errors
/// As `resolve`, `restore::plan_roles` and `RolesPlan::apply`.
pub async fn restore_roles(
    config: &Config,
    job: Option<&str>,
    backup: &str,
    options: &restore::RolesOptions,
    identity: &[std::path::PathBuf],
    cancel: &Cancel,
) -> anyhow::Result<String> {
    let repo = open_repository(config)
        .await?
        .reading_with(identities(config, identity)?);
    let manifest = resolve(config, &repo, job, backup).await?;
    let plan = tokio::select! {
        plan = restore::plan_roles(&repo, &manifest, options) => plan?,
        interrupted = cancel.cancelled() => return Err(interrupted.into()),
    };
    let report = if options.dry_run {
        plan.report().clone()
    } else {
        let (target, started_at) = (plan.target.clone(), chrono::Utc::now());
        let applied = tokio::select! {
            applied = plan.apply() => applied,
            interrupted = cancel.cancelled() => Err(restore::RestoreError::Interrupted(interrupted)),
        };
        let error = applied.as_ref().err().map(|e| crate::error::report(e));
        crate::catalog::record_restore(
            config,
            &manifest,
            crate::catalog::RestoreKind::Roles,
            &target,
            started_at,
            None,
            error.as_deref(),
        )
        .await;
        applied?
    };
    let mut out = String::new();
    for line in &report.lines {
        let _ = writeln!(out, "{line}");
    }
    Ok(out)
}
