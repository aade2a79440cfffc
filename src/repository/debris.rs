//! What failed, killed or cancelled runs leave: backup directories that never got their
//! manifest, and uploads that never finished. A directory without a manifest may also be a run
//! in progress, so only a caller that knows no run of the job is going (it holds the job's lock)
//! removes debris of any age; anyone else passes a cutoff and removes only older debris.

use chrono::{DateTime, Utc};

use super::{RepoError, Repository, backup_prefix, directories, job_prefix, manifest_key};
use crate::manifest::{self, Manifest};
use crate::store::StoreError;

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub uploads: usize,
}

impl Swept {
    fn add(&mut self, other: Swept) {
        self.objects += other.objects;
        self.uploads += other.uploads;
    }
}

/// One backup directory without a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    pub keys: Vec<String>,
    /// The run's start, read from its id.
    pub started_at: DateTime<Utc>,
    /// The newest object's modification time, when the store reports them.
    pub newest: Option<DateTime<Utc>>,
}

impl Orphan {
    /// Whether nothing of this run happened after `cutoff`: it started before, and wrote its
    /// last object before.
    pub fn expired(&self, cutoff: DateTime<Utc>) -> bool {
        self.started_at < cutoff && self.newest.is_none_or(|t| t < cutoff)
    }
}

impl Repository {
    /// The manifest-less backup directories of `job`.
    ///
    /// # Errors
    /// The store's error.
    pub async fn orphans(&self, job: &str) -> Result<Vec<Orphan>, StoreError> {
        let listed = self.store.list(&job_prefix(job)).await?;
        Ok(directories(&listed)
            .into_iter()
            .filter(|((j, _), dir)| j == job && !dir.manifest)
            .filter_map(|((_, id), dir)| {
                Some(Orphan {
                    started_at: manifest::id_time(&id)?,
                    newest: dir.objects.iter().filter_map(|m| m.last_modified).max(),
                    keys: dir.objects.iter().map(|m| m.key.clone()).collect(),
                    id,
                })
            })
            .collect())
    }

    /// Removes `job`'s debris: every orphan and unfinished upload when `cutoff` is `None` (the
    /// caller holds the job's lock, so no run of the job is in progress), else only those
    /// older than `cutoff`.
    ///
    /// # Errors
    /// Listing the job's objects failed; failures to delete one object are logged and skipped.
    pub async fn sweep(
        &self,
        job: &str,
        cutoff: Option<DateTime<Utc>>,
    ) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        for orphan in self.orphans(job).await? {
            if cutoff.is_some_and(|c| !orphan.expired(c)) {
                continue;
            }
            tracing::info!(job, backup = %orphan.id, objects = orphan.keys.len(), "removing the objects of a backup that was never committed");
            swept.objects += self.delete_all(&orphan.keys).await;
        }
        let uploads_before = cutoff.unwrap_or_else(|| Utc::now() + chrono::Duration::minutes(1));
        swept.uploads = self
            .stale_uploads(job, &job_prefix(job), uploads_before)
            .await;
        Ok(swept)
    }

    /// Removes everything of one run that did not commit (cancelled, timed out, failed):
    /// its manifest first if one got written and is damaged, confirmed gone, then its objects
    /// and unfinished uploads. A run whose manifest is there and sound did commit: it is kept,
    /// and `None` says so.
    pub async fn discard(&self, job: &str, id: &str) -> Option<Swept> {
        let key = manifest_key(job, id);
        match self.store.head(&key).await {
            Ok(None) => {}
            Ok(Some(_)) => match self.manifest(job, id).await {
                Ok(m) => {
                    log_kept(&m);
                    return None;
                }
                Err(e @ (RepoError::Store(_) | RepoError::Usage(_))) => {
                    tracing::error!(job, backup = id, error = %crate::error::report(&e),
                        "the run's manifest cannot be read back, so it may be a committed backup: its objects are left in place");
                    return Some(Swept::default());
                }
                Err(e) => {
                    tracing::warn!(job, backup = id, error = %crate::error::report(&e), "the run left a damaged manifest: removing it");
                    if let Err(e) = self.uncommit(job, id).await {
                        tracing::error!(job, backup = id, error = %crate::error::report(&e),
                            "cannot remove the run's damaged manifest: its objects are left in place");
                        return Some(Swept::default());
                    }
                }
            },
            Err(e) => {
                tracing::error!(job, backup = id, error = %crate::error::report(&e),
                    "cannot tell whether the run wrote its manifest: its objects are left in place");
                return Some(Swept::default());
            }
        }
        let mut swept = Swept::default();
        match self.store.list(&backup_prefix(job, id)).await {
            Ok(listed) => {
                let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
                swept.objects = self.delete_all(&keys).await;
            }
            Err(e) => {
                tracing::warn!(job, backup = id, error = %crate::error::report(&e), "could not list the run's objects");
            }
        }
        swept.add(Swept {
            objects: 0,
            uploads: self
                .stale_uploads(
                    job,
                    &backup_prefix(job, id),
                    Utc::now() + chrono::Duration::minutes(1),
                )
                .await,
        });
        if swept != Swept::default() {
            tracing::info!(
                job,
                backup = id,
                objects = swept.objects,
                uploads = swept.uploads,
                "removed what the run had stored"
            );
        }
        Some(swept)
    }

    async fn delete_all(&self, keys: &[String]) -> usize {
        let mut deleted = 0;
        for key in keys {
            match self.store.delete(key).await {
                Ok(()) => deleted += 1,
                Err(e) => {
                    tracing::warn!(key = %key, error = %crate::error::report(&e), "could not remove a leftover object");
                }
            }
        }
        deleted
    }

    async fn stale_uploads(&self, job: &str, prefix: &str, cutoff: DateTime<Utc>) -> usize {
        match self.store.remove_stale_uploads(prefix, cutoff).await {
            Ok(Some(n)) => n,
            Ok(None) => {
                tracing::debug!(job, store = %self.describe(), "the store does not list unfinished uploads; a bucket lifecycle rule should expire them");
                0
            }
            Err(e) => {
                tracing::warn!(job, error = %crate::error::report(&e), "could not look for unfinished uploads");
                0
            }
        }
    }
}

fn log_kept(m: &Manifest) {
    tracing::info!(
        job = %m.job,
        backup = %m.id,
        "the run committed before it was stopped: its backup is kept"
    );
}
