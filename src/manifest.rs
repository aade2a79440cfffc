//! The manifest: the JSON document, written last, whose presence makes a backup committed.
//! Its format is documented in docs/FORMAT.md so a backup can be restored without pgkeep.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::store::{ObjectStore, StoreError};

/// The manifest format this version writes; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name inside a backup's directory.
pub const MANIFEST_NAME: &str = "manifest.json";

/// One committed backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub job: String,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub pgkeep_version: String,
    /// The database that was backed up: `user@host:port/dbname` (no password).
    pub source: String,
    pub database: String,
    pub server_version: String,
    pub server_version_num: u32,
    pub pg_dump_version: String,
    /// The server's WAL position when the backup started.
    pub wal_lsn: Option<String>,
    /// The compression of the objects (`gzip:6`, `none`).
    pub compression: String,
    /// Whether the cluster's roles were saved, and how.
    pub globals: Globals,
    pub objects: Vec<ObjectEntry>,
    /// Export backups: the exported snapshot every table was read in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Export backups: the database encoding the COPY data is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Export backups: the highest applied migration version, when the job names a
    /// migrations tracking table that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_version: Option<i64>,
    /// Export backups: every sequence's state, read in the snapshot's transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceState>,
    /// Export backups: large objects are not exported; their count is recorded so their
    /// absence is never silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<LargeObjects>,
    /// Export backups: materialized views and whether they were populated (a restore
    /// refreshes exactly the populated ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materialized_views: Vec<MaterializedView>,
}

/// A materialized view of an export backup's database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaterializedView {
    /// `"schema"."name"`.
    pub name: String,
    pub populated: bool,
}

/// One sequence's state, as `setval(name, last_value, is_called)` restores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceState {
    /// Schema-qualified, quoted name: `"public"."film_film_id_seq"`.
    pub name: String,
    pub last_value: i64,
    pub is_called: bool,
    /// `"schema"."table"` whose column owns the sequence (serial, identity), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owned_by: Option<String>,
}

/// Large objects present in the database but not included in the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LargeObjects {
    pub count: i64,
    pub included: bool,
}

/// A column of an exported table, as the source database defined it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// The column name as in the catalog (unquoted).
    pub name: String,
    /// `format_type()` of the column, e.g. `character varying(20)`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// Generated columns are not in the data: the target recomputes them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub generated: bool,
}

/// The cluster-wide objects (roles, tablespaces) of a dump backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Globals {
    pub included: bool,
    /// False when the backup role could not read role passwords (`--no-role-passwords`).
    pub role_passwords: bool,
    /// Why globals are missing or incomplete, when they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// The object's name inside the backup's directory (`<job>/<id>/`).
    pub key: String,
    /// `dump` (pg_dump custom format), `globals` (pg_dumpall SQL), `schema` (pg_dump custom
    /// format, schema only) or `table` (COPY text format data of one table).
    pub role: String,
    /// The table, for `table` objects: schema-qualified and quoted, `"public"."film"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Rows in a `table` object (counted from the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// For `table` objects: every column of the table in the source, in order; the data
    /// holds the non-generated ones, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    /// Codec name: `gzip` or `none`.
    pub compression: String,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// sha256 of the stored (compressed) bytes, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Stored bytes of every object.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_bytes).sum()
    }

    /// The objects with `role`, in manifest order.
    pub fn objects_with_role<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a ObjectEntry> {
        self.objects.iter().filter(move |o| o.role == role)
    }

    pub fn object(&self, role: &str) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| o.role == role)
    }

    /// The store key of one of this backup's objects.
    pub fn key_of(&self, name: &str) -> String {
        object_key(&self.job, &self.id, name)
    }
}

/// `<job>/<id>/<name>`.
pub fn object_key(job: &str, id: &str, name: &str) -> String {
    format!("{job}/{id}/{name}")
}

/// A new backup id: the UTC start time to the millisecond, so ids sort chronologically
/// as plain strings (`20261124T030000.123Z`).
pub fn new_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// RFC 3339 with seconds, for human output.
pub fn display_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Errors reading manifests.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("manifest {key} is not valid: {reason}")]
    Invalid { key: String, reason: String },
    #[error(
        "manifest {key} has format version {version}; this pgkeep reads up to {FORMAT_VERSION}"
    )]
    TooNew { key: String, version: u32 },
}

/// Writes the manifest: the commit point of a backup.
///
/// # Errors
/// The store's error.
pub async fn write(store: &dyn ObjectStore, manifest: &Manifest) -> Result<(), StoreError> {
    let json = serde_json::to_vec_pretty(manifest).expect("a manifest always serializes");
    let key = manifest.key_of(MANIFEST_NAME);
    store
        .put(&key, Box::pin(std::io::Cursor::new(json)))
        .await
        .map(|_| ())
}

/// Reads and parses the manifest at `key`.
///
/// # Errors
/// Store errors, unparseable JSON, or a format newer than this program.
pub async fn read(store: &dyn ObjectStore, key: &str) -> Result<Manifest, ManifestError> {
    use tokio::io::AsyncReadExt;
    let mut reader = store.get(key).await?;
    let mut buf = Vec::new();
    reader
        .read_to_end(&mut buf)
        .await
        .map_err(|e| StoreError::Io {
            location: key.to_string(),
            source: e,
        })?;
    let probe: serde_json::Value =
        serde_json::from_slice(&buf).map_err(|e| ManifestError::Invalid {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
    let version = probe
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0) as u32;
    if version > FORMAT_VERSION {
        return Err(ManifestError::TooNew {
            key: key.to_string(),
            version,
        });
    }
    serde_json::from_value(probe).map_err(|e| ManifestError::Invalid {
        key: key.to_string(),
        reason: e.to_string(),
    })
}

/// Every committed backup, optionally of one job, newest first.
///
/// # Errors
/// Store errors and unreadable manifests (a damaged manifest is reported, not skipped).
pub async fn list(
    store: &dyn ObjectStore,
    job: Option<&str>,
) -> Result<Vec<Manifest>, ManifestError> {
    let prefix = job.map(|j| format!("{j}/")).unwrap_or_default();
    let mut manifests = Vec::new();
    for meta in store.list(&prefix).await? {
        let parts: Vec<&str> = meta.key.split('/').collect();
        if parts.len() == 3 && parts[2] == MANIFEST_NAME {
            manifests.push(read(store, &meta.key).await?);
        }
    }
    manifests.sort_by(|a, b| b.id.cmp(&a.id).then_with(|| a.job.cmp(&b.job)));
    Ok(manifests)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_sort_chronologically() {
        let a = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        let b = a + chrono::Duration::milliseconds(1);
        let c = Utc.with_ymd_and_hms(2026, 10, 1, 0, 0, 0).unwrap();
        assert_eq!(new_id(a), "20260102T030405.000Z");
        assert!(new_id(a) < new_id(b));
        assert!(new_id(b) < new_id(c));
    }
}
