//! Drill records: `<job>/<id>/drill.json`, written beside a committed backup when a drill of
//! it passed. The record is not part of the backup (its manifest does not list it, restores
//! never read it, deleting the backup removes it); retention keeps the newest backup that has
//! one, and `list` and `show` say when a backup was last drilled.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{RepoError, Repository, object_key};
use crate::manifest::Manifest;
use crate::store::StoreError;

/// The record's name inside the backup's directory.
pub const DRILL_RECORD: &str = crate::manifest::DRILL_RECORD_NAME;

/// The largest drill record pgkeep reads.
const MAX_RECORD_BYTES: u64 = 1 << 20;

/// What a passed drill proved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillRecord {
    pub backup: String,
    pub job: String,
    pub drilled_at: DateTime<Utc>,
    /// The server the backup was restored on, `user@host:port` (no password).
    pub server: String,
    pub tables: u64,
    pub rows: u64,
    /// Tables whose content digest was compared (export backups).
    pub digests: u64,
    pub sequences: u64,
    pub seconds: f64,
    pub pgkeep_version: String,
}

impl Repository {
    /// Writes (or replaces) the drill record of `manifest`'s backup.
    ///
    /// # Errors
    /// The store's error.
    pub async fn record_drill(
        &self,
        manifest: &Manifest,
        record: &DrillRecord,
    ) -> Result<(), StoreError> {
        let key = object_key(&manifest.job, &manifest.id, DRILL_RECORD);
        let json = serde_json::to_vec_pretty(record).expect("a drill record serializes");
        let written = self
            .store
            .put(&key, Box::pin(std::io::Cursor::new(json.clone())))
            .await?;
        if written != json.len() as u64 {
            return Err(StoreError::Io {
                location: key,
                source: std::io::Error::other(format!(
                    "the store accepted {written} of the drill record's {} bytes",
                    json.len()
                )),
            });
        }
        Ok(())
    }

    /// The drill record of `job`/`id`, if it has one.
    ///
    /// # Errors
    /// The store's error, or a record that is not valid JSON of this shape.
    pub async fn drill_record(
        &self,
        job: &str,
        id: &str,
    ) -> Result<Option<DrillRecord>, RepoError> {
        let key = object_key(job, id, DRILL_RECORD);
        let bytes = match self.read_capped(&key, MAX_RECORD_BYTES).await {
            Ok(b) => b,
            Err(StoreError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            RepoError::Usage(crate::error::UsageError(format!(
                "the drill record {key} is not valid: {e}"
            )))
        })
    }
}
