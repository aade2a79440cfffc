//! Removing what crashed or cancelled runs left: the objects of backups that never got their
//! manifest, and uploads that never finished.
//!
//! A backup directory without `manifest.json` may also be a run in progress (in this process,
//! another replica, or a manual `pgkeep backup`), so the sweep only removes one when both its
//! id (the run's start) and its newest object are older than `orphan_age`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::manifest::MANIFEST_NAME;
use crate::store::{ObjectMeta, ObjectStore, StoreError};

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub objects: usize,
    pub uploads: usize,
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

/// The start time a backup id encodes (`20261124T030000.123Z`).
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|t| t.and_utc())
}

/// The manifest-less backup directories among `objects` (a listing of `<job>/`). Directories
/// whose name is not a backup id are not pgkeep's and are left out.
pub fn orphans(job: &str, objects: &[ObjectMeta]) -> Vec<Orphan> {
    let mut dirs: BTreeMap<&str, (bool, Vec<&ObjectMeta>)> = BTreeMap::new();
    let prefix = format!("{job}/");
    for o in objects {
        let Some(rest) = o.key.strip_prefix(&prefix) else {
            continue;
        };
        let Some((id, name)) = rest.split_once('/') else {
            continue;
        };
        let entry = dirs.entry(id).or_default();
        entry.0 |= name == MANIFEST_NAME;
        entry.1.push(o);
    }
    dirs.into_iter()
        .filter(|(_, (committed, _))| !committed)
        .filter_map(|(id, (_, metas))| {
            Some(Orphan {
                id: id.to_string(),
                started_at: id_time(id)?,
                newest: metas.iter().filter_map(|m| m.last_modified).max(),
                keys: metas.iter().map(|m| m.key.clone()).collect(),
            })
        })
        .collect()
}

impl Orphan {
    /// Whether nothing of this run happened after `cutoff`: it started before, and wrote its
    /// last object before.
    pub fn expired(&self, cutoff: DateTime<Utc>) -> bool {
        self.started_at < cutoff && self.newest.is_none_or(|t| t < cutoff)
    }
}

/// Removes `job`'s orphans and stale uploads older than `orphan_age` at `now`.
///
/// # Errors
/// Listing the job's objects failed; failures to delete one object are logged and skipped.
pub async fn sweep(
    store: &dyn ObjectStore,
    job: &str,
    orphan_age: Duration,
    now: DateTime<Utc>,
) -> Result<Swept, StoreError> {
    let cutoff = now - chrono::Duration::from_std(orphan_age).unwrap_or(chrono::Duration::MAX);
    let prefix = format!("{job}/");
    let listed = store.list(&prefix).await?;
    let mut swept = Swept::default();
    for orphan in orphans(job, &listed) {
        if !orphan.expired(cutoff) {
            continue;
        }
        tracing::info!(job, backup = %orphan.id, objects = orphan.keys.len(), "removing the objects of a backup that was never committed");
        swept.objects += delete_all(store, &orphan.keys).await;
    }
    swept.uploads = stale_uploads(store, job, &prefix, cutoff).await;
    Ok(swept)
}

/// Removes everything of one run (cancelled or timed out) whatever its age: its objects and
/// its unfinished uploads.
pub async fn discard_run(store: &dyn ObjectStore, job: &str, id: &str) -> Swept {
    let prefix = format!("{job}/{id}/");
    let mut swept = Swept::default();
    match store.list(&prefix).await {
        Ok(listed) => {
            if listed.iter().any(|o| o.key.ends_with(MANIFEST_NAME)) {
                tracing::info!(
                    job,
                    backup = id,
                    "the run committed just before it was stopped: its backup is kept"
                );
                return swept;
            }
            let keys: Vec<String> = listed.into_iter().map(|o| o.key).collect();
            swept.objects = delete_all(store, &keys).await;
        }
        Err(e) => {
            tracing::warn!(job, backup = id, error = %e, "could not list a cancelled run's objects");
        }
    }
    swept.uploads = stale_uploads(
        store,
        job,
        &prefix,
        Utc::now() + chrono::Duration::minutes(1),
    )
    .await;
    if swept != Swept::default() {
        tracing::info!(
            job,
            backup = id,
            objects = swept.objects,
            uploads = swept.uploads,
            "removed what the cancelled run had stored"
        );
    }
    swept
}

async fn delete_all(store: &dyn ObjectStore, keys: &[String]) -> usize {
    let mut deleted = 0;
    for key in keys {
        match store.delete(key).await {
            Ok(()) => deleted += 1,
            Err(e) => tracing::warn!(key = %key, error = %e, "could not remove a leftover object"),
        }
    }
    deleted
}

async fn stale_uploads(
    store: &dyn ObjectStore,
    job: &str,
    prefix: &str,
    cutoff: DateTime<Utc>,
) -> usize {
    match store.remove_stale_uploads(prefix, cutoff).await {
        Ok(Some(n)) => n,
        Ok(None) => {
            tracing::debug!(job, store = %store.describe(), "the store does not list unfinished uploads; a bucket lifecycle rule should expire them");
            0
        }
        Err(e) => {
            tracing::warn!(job, error = %e, "could not look for unfinished uploads");
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str, modified: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            key: key.to_string(),
            size: 1,
            last_modified: modified.map(|m| m.parse().unwrap()),
        }
    }

    #[test]
    fn only_old_manifest_less_backups_are_orphans_to_remove() {
        let listed = [
            meta(
                "a/20260101T000000.000Z/dump.pgdump.gz",
                Some("2026-01-01T00:10:00Z"),
            ),
            meta(
                "a/20260101T000000.000Z/manifest.json",
                Some("2026-01-01T00:10:01Z"),
            ),
            meta(
                "a/20260102T000000.000Z/dump.pgdump.gz",
                Some("2026-01-02T00:10:00Z"),
            ),
            meta(
                "a/20260103T000000.000Z/dump.pgdump.gz",
                Some("2026-01-04T23:00:00Z"),
            ),
            meta("a/not-a-backup/file", Some("2026-01-01T00:00:00Z")),
        ];
        let found = orphans("a", &listed);
        let ids: Vec<&str> = found.iter().map(|o| o.id.as_str()).collect();
        assert_eq!(ids, ["20260102T000000.000Z", "20260103T000000.000Z"]);
        let cutoff: DateTime<Utc> = "2026-01-04T00:00:00Z".parse().unwrap();
        // Started before the cutoff but still writing after it: maybe a long run in progress.
        assert!(found[0].expired(cutoff));
        assert!(!found[1].expired(cutoff));
    }

    #[test]
    fn ids_read_back_as_times() {
        let t: DateTime<Utc> = "2026-11-24T03:00:00.123Z".parse().unwrap();
        assert_eq!(id_time(&crate::manifest::new_id(t)), Some(t));
        assert_eq!(id_time("latest"), None);
    }
}
