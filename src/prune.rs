//! Applying retention to a repository: plan with `retention::plan`, then delete what the plan
//! does not keep, each backup's manifest first so a half-deleted backup is never committed.
//! A backup whose manifest is damaged is neither kept by a rule nor deleted: it is reported.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{Config, Job};
use crate::repository::{DeleteError, RepoError, Repository};
use crate::retention::{self, BackupRef, Retention, RetentionPlan};

/// Errors of a prune; the backups deleted before the failure stay deleted (each one fully:
/// manifest first, so none is left looking committed).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("listing the backups of job '{job}'")]
    List {
        job: String,
        #[source]
        source: RepoError,
    },
    #[error("deleting backup {id} of job '{job}'")]
    Delete {
        job: String,
        id: String,
        /// Backups this prune deleted before the failure.
        deleted: usize,
        #[source]
        source: DeleteError,
    },
}

impl PruneError {
    /// How many backups the failed prune deleted before it stopped.
    pub fn deleted(&self) -> usize {
        match self {
            PruneError::List { .. } => 0,
            PruneError::Delete { deleted, .. } => *deleted,
        }
    }
}

/// What a prune of one job decided and did.
#[derive(Debug, Clone)]
pub struct PruneReport {
    pub job: String,
    /// `None` when the job has no retention policy (and nothing was done).
    pub policy: Option<Retention>,
    /// The time zone calendar periods were counted in.
    pub timezone: Tz,
    pub plan: RetentionPlan,
    pub dry_run: bool,
    /// Ids of the backups deleted, oldest first (none on a dry run).
    pub deleted: Vec<String>,
    /// Backups whose manifest is damaged, with why: never kept by a rule, never deleted.
    pub damaged: Vec<(String, String)>,
}

impl PruneReport {
    /// For people: the policy, every backup with its verdict and reasons, then a total.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Some(policy) = &self.policy else {
            let _ = writeln!(
                out,
                "job '{}' has no retention policy: nothing to prune",
                self.job
            );
            return out;
        };
        let _ = writeln!(
            out,
            "job '{}': {policy} (periods in {})",
            self.job, self.timezone
        );
        if self.plan.decisions.is_empty() {
            let _ = writeln!(out, "  no committed backups");
        }
        for d in &self.plan.decisions {
            if d.keep() {
                let verb = if self.dry_run { "keep" } else { "kept" };
                let _ = writeln!(out, "  {verb:<8} {}  {}", d.backup.id, d.reasons_text());
            } else {
                let verb = if self.dry_run { "delete" } else { "deleted" };
                let _ = writeln!(out, "  {verb:<8} {}", d.backup.id);
            }
        }
        for (id, why) in &self.damaged {
            let _ = writeln!(
                out,
                "  damaged  {id}  left alone: its manifest is damaged ({why}); no rule counts it, and prune does not delete what it cannot read"
            );
        }
        let kept = self.plan.kept().count();
        if self.dry_run {
            let _ = writeln!(
                out,
                "job '{}': would delete {}, keep {kept} (dry run: nothing was changed)",
                self.job,
                self.plan.deleted().count()
            );
        } else {
            let _ = writeln!(
                out,
                "job '{}': deleted {}, kept {kept}",
                self.job,
                self.deleted.len()
            );
        }
        out
    }
}

/// Applies `job`'s retention policy to its committed backups in `store`: plans (see
/// `retention::plan`, with `now` and the daemon's time zone) and, unless `dry_run`, deletes
/// every backup the plan does not keep, oldest first. A job without a policy is left alone.
///
/// # Errors
/// `PruneError`: the backups cannot be listed (an unreadable manifest stops the prune rather
/// than being guessed about), or a deletion failed; the prune stops at the first failure.
pub async fn prune_job(
    config: &Config,
    job: &Job,
    repo: &Repository,
    now: DateTime<Utc>,
    dry_run: bool,
) -> Result<PruneReport, PruneError> {
    let timezone = config.daemon.timezone;
    let mut report = PruneReport {
        job: job.name.clone(),
        policy: None,
        timezone,
        plan: RetentionPlan::default(),
        dry_run,
        deleted: Vec::new(),
        damaged: Vec::new(),
    };
    let Some(policy) = job.retention else {
        return Ok(report);
    };
    report.policy = Some(policy);
    let listing = repo
        .list(Some(&job.name))
        .await
        .map_err(|source| PruneError::List {
            job: job.name.clone(),
            source,
        })?;
    for d in &listing.damaged {
        tracing::warn!(job = %job.name, backup = %d.id, error = %crate::error::report(&d.error), "a backup with a damaged manifest is left alone by retention");
        report
            .damaged
            .push((d.id.clone(), crate::error::report(&d.error)));
    }
    let refs: Vec<BackupRef> = listing
        .backups
        .iter()
        .filter(|m| m.job == job.name)
        .map(|m| BackupRef {
            id: m.id.clone(),
            started_at: m.started_at,
            drilled: listing.was_drilled(m),
        })
        .collect();
    report.plan = retention::plan(&refs, &policy, now, timezone);
    if dry_run {
        return Ok(report);
    }
    let doomed: Vec<String> = report
        .plan
        .deleted()
        .rev()
        .map(|d| d.backup.id.clone())
        .collect();
    for id in doomed {
        repo.delete_backup(&job.name, &id)
            .await
            .map_err(|source| PruneError::Delete {
                job: job.name.clone(),
                id: id.clone(),
                deleted: report.deleted.len(),
                source,
            })?;
        tracing::info!(job = %job.name, backup = %id, "pruned backup");
        report.deleted.push(id);
    }
    Ok(report)
}

/// Retention after a successful backup: prunes `job` if it has a policy (`None` if not) and
/// logs the outcome. A failure is only a warning: the backup itself is committed, and the next
/// run retries; the caller counts it (the daemon's `pgkeep_prune_failures_total`).
pub async fn after_backup(
    config: &Config,
    job: &Job,
    repo: &Repository,
    now: DateTime<Utc>,
) -> Option<Result<PruneReport, PruneError>> {
    job.retention.as_ref()?;
    let result = prune_job(config, job, repo, now, false).await;
    match &result {
        Ok(report) => {
            tracing::info!(
                job = %job.name,
                deleted = report.deleted.len(),
                kept = report.plan.kept().count(),
                "retention applied"
            );
        }
        Err(e) => {
            tracing::warn!(job = %job.name, error = %crate::error::report(e), "retention failed after the backup (the backup is committed)");
        }
    }
    Some(result)
}
