//! Applying retention to the store: plan with `retention::plan`, then delete what the plan
//! does not keep, each backup's manifest first so a half-deleted backup is never committed.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use crate::config::{Config, Job};
use crate::manifest::{self, MANIFEST_NAME, ManifestError};
use crate::retention::{self, BackupRef, EmptyPolicy, Retention, RetentionPlan};
use crate::store::{ObjectStore, StoreError};

/// Errors of a prune; the backups deleted before the failure stay deleted (each one fully:
/// manifest first, so none is left looking committed).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error("listing the backups of job '{job}': {source}")]
    List {
        job: String,
        #[source]
        source: ManifestError,
    },
    #[error("jobs.{job}.retention: {source}")]
    Policy {
        job: String,
        #[source]
        source: EmptyPolicy,
    },
    #[error(
        "deleting the manifest of backup {id} of job '{job}' failed (the backup is intact): {source}"
    )]
    DeleteManifest {
        job: String,
        id: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "backup {id} of job '{job}' is no longer committed, but removing its objects failed (they are left as orphans): {source}"
    )]
    DeleteObjects {
        job: String,
        id: String,
        #[source]
        source: StoreError,
    },
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
    store: &dyn ObjectStore,
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
    };
    let Some(policy) = job.retention else {
        return Ok(report);
    };
    report.policy = Some(policy);
    let backups = manifest::list(store, Some(&job.name))
        .await
        .map_err(|source| PruneError::List {
            job: job.name.clone(),
            source,
        })?;
    let refs: Vec<BackupRef> = backups
        .iter()
        .filter(|m| m.job == job.name)
        .map(BackupRef::from)
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
        delete_backup(store, &job.name, &id).await?;
        tracing::info!(job = %job.name, backup = %id, "pruned backup");
        report.deleted.push(id);
    }
    Ok(report)
}

/// Retention after a successful backup: prunes `job` if it has a policy and logs the outcome.
/// A failure is only a warning: the backup itself is committed, and the next run retries.
pub async fn after_backup(
    config: &Config,
    job: &Job,
    store: &dyn ObjectStore,
    now: DateTime<Utc>,
) -> Option<PruneReport> {
    job.retention.as_ref()?;
    match prune_job(config, job, store, now, false).await {
        Ok(report) => {
            tracing::info!(
                job = %job.name,
                deleted = report.deleted.len(),
                kept = report.plan.kept().count(),
                "retention applied"
            );
            Some(report)
        }
        Err(e) => {
            tracing::warn!(job = %job.name, error = %e, "retention failed after the backup (the backup is committed)");
            None
        }
    }
}

/// Deletes one backup: the manifest first (from then on it is not a backup), then every other
/// object under its directory.
async fn delete_backup(store: &dyn ObjectStore, job: &str, id: &str) -> Result<(), PruneError> {
    store
        .delete(&manifest::object_key(job, id, MANIFEST_NAME))
        .await
        .map_err(|source| PruneError::DeleteManifest {
            job: job.to_string(),
            id: id.to_string(),
            source,
        })?;
    let objects_error = |source| PruneError::DeleteObjects {
        job: job.to_string(),
        id: id.to_string(),
        source,
    };
    let prefix = format!("{job}/{id}/");
    for meta in store.list(&prefix).await.map_err(objects_error)? {
        store.delete(&meta.key).await.map_err(objects_error)?;
    }
    Ok(())
}
