//! The manifest format: what a committed backup is. A JSON document, written last, that lists
//! every object with its size and sha256 and carries a checksum of its own content, so an edited
//! or damaged manifest is found before anything trusts it. Pure: no I/O (the repository reads
//! and writes manifests). Documented in docs/FORMAT.md so a backup can be restored without
//! pgkeep.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Compression;

mod checksum;
mod cluster;
mod consistency;

pub use checksum::seal;

/// The manifest's file name inside a backup's directory.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The name of a drill record beside a backup's objects (see `repository::DrillRecord`),
/// which no object may take.
pub const DRILL_RECORD_NAME: &str = "drill.json";
/// The manifest format this version writes; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;
/// The member holding the manifest's own checksum (`sha256:<hex>` of the canonical form of
/// everything else, see `checksum`).
pub const CHECKSUM_FIELD: &str = "checksum";

/// A closed set of names, written as strings, with an `Unknown` variant so that an older pgkeep
/// still reads (lists, prunes) a manifest a newer one wrote.
macro_rules! named_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A name this version does not know.
            Unknown(String),
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(s) => s,
                }
            }

            pub fn from_name(s: &str) -> Self {
                match s {
                    $($text => $name::$variant,)+
                    other => $name::Unknown(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($name::from_name(&String::deserialize(d)?))
            }
        }
    };
}

named_enum! {
    /// What kind of backup a manifest describes.
    BackupKind {
        /// A `pg_dump --format=custom` archive of one database, plus the cluster's roles.
        Dump = "dump",
        /// Per-table COPY data read in one snapshot, plus the schema.
        Export = "export",
        /// A `pg_dump --format=custom` archive of each database of a server (`databases`),
        /// plus the cluster's roles, committed together.
        Cluster = "cluster",
    }
}

named_enum! {
    /// What an object of a backup holds.
    ObjectRole {
        /// pg_dump custom-format archive of the whole database.
        Dump = "dump",
        /// pg_dumpall --globals-only SQL: roles and tablespaces.
        Globals = "globals",
        /// pg_dump --schema-only custom-format archive (export backups).
        Schema = "schema",
        /// One table's rows in COPY text format (export backups).
        Table = "table",
    }
}

named_enum! {
    /// How an object's stored bytes are encoded.
    ObjectCodec {
        None = "none",
        Gzip = "gzip",
        Zstd = "zstd",
    }
}

impl ObjectCodec {
    /// The codec that decodes it, when this version knows it.
    pub fn compression(&self) -> Option<Compression> {
        match self {
            ObjectCodec::None => Some(Compression::None),
            ObjectCodec::Gzip => Some(Compression::Gzip(crate::codec::DEFAULT_GZIP_LEVEL)),
            ObjectCodec::Zstd => Some(Compression::Zstd(crate::codec::DEFAULT_ZSTD_LEVEL)),
            ObjectCodec::Unknown(_) => None,
        }
    }

    pub fn of(compression: Compression) -> ObjectCodec {
        ObjectCodec::from_name(compression.name())
    }
}

/// One committed backup.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub id: String,
    pub job: String,
    pub kind: BackupKind,
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
    /// The compression the job asked for (`gzip:6`, `none`), for people; each object records
    /// its own codec.
    pub compression: String,
    /// Whether the cluster's roles were saved, and how.
    pub globals: Globals,
    pub objects: Vec<ObjectEntry>,
    /// The exported snapshot every table was read (an export) or counted (a dump) in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Export backups: the database encoding the COPY data is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<String>,
    /// Export backups: the highest applied migration version, when the job names a
    /// migrations tracking table that exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_version: Option<i64>,
    /// Every sequence's state, read in the snapshot's transaction (a dump's own copy of them
    /// is in the archive; this one is what a drill checks the restore against).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceState>,
    /// Dump backups: every table whose data the dump holds, with its rows counted in the
    /// dump's snapshot (export backups record their tables in `objects`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
    /// Export backups: large objects are not exported; their count is recorded so their
    /// absence is never silent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large_objects: Option<LargeObjects>,
    /// Export backups: materialized views and whether they were populated (a restore
    /// refreshes exactly the populated ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub materialized_views: Vec<MaterializedView>,
    /// Cluster backups: each database, with its archive and what was counted in its snapshot
    /// (`database` is then the one pgkeep connected to, to list them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseEntry>,
    /// How the objects are encrypted, when they are: the scheme (`age`) and the fingerprints
    /// of the public keys they were encrypted to (see `crypt::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
    /// `sha256:<hex>` of the manifest's canonical content without this member. Set by
    /// `to_json`; `None` only in manifests written before pgkeep recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// The encryption of a backup's objects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    pub scheme: String,
    /// Fingerprints of the recipients (not the keys themselves).
    pub recipients: Vec<String>,
}

/// One database of a cluster backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseEntry {
    /// The database's name, as in `pg_database.datname`.
    pub name: String,
    /// The key of its `dump` object.
    pub object: String,
    /// The exported snapshot its tables were counted in.
    pub snapshot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_lsn: Option<String>,
    /// Every table whose data the archive holds, with its rows counted in the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableRows>,
    /// Every sequence's state, read in the snapshot's transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<SequenceState>,
}

/// A table of a dump backup and its rows, as counted in the dump's snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableRows {
    /// `"schema"."name"`.
    pub name: String,
    pub rows: u64,
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
    pub role: ObjectRole,
    /// The table, for `table` objects: schema-qualified and quoted, `"public"."film"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// Rows in a `table` object (counted from the stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// For `table` objects: the order-independent digest of the rows as COPY text
    /// (`xxh3-128-sum:<hex>`, see `digest`), which a drill compares with the restored table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// For `table` objects: every column of the table in the source, in order; the data
    /// holds the non-generated ones, in this order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<Column>,
    pub compression: ObjectCodec,
    /// `age` when the object is encrypted (after compression); absent when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<String>,
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    /// sha256 of the stored (compressed, then encrypted) bytes, lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Stored bytes of every object.
    pub fn stored_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.stored_bytes).sum()
    }

    /// The objects with `role`, in manifest order.
    pub fn objects_with_role<'a>(
        &'a self,
        role: &'a ObjectRole,
    ) -> impl Iterator<Item = &'a ObjectEntry> {
        self.objects.iter().filter(move |o| &o.role == role)
    }

    /// The first object with `role`.
    pub fn object(&self, role: &ObjectRole) -> Option<&ObjectEntry> {
        self.objects.iter().find(|o| &o.role == role)
    }

    /// The major version of the pg_dump that wrote the archives (0 when unreadable).
    pub fn pg_dump_major(&self) -> u32 {
        self.pg_dump_version
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// The server's major version (`server_version_num / 10000`).
    pub fn server_major(&self) -> u32 {
        self.server_version_num / 10000
    }

    /// The manifest as stored: pretty JSON with its `checksum` computed and set.
    pub fn to_json(&mut self) -> Vec<u8> {
        self.checksum = None;
        let mut value = serde_json::to_value(&*self).expect("a manifest always serializes");
        seal(&mut value);
        self.checksum = value[CHECKSUM_FIELD].as_str().map(str::to_string);
        let mut out = serde_json::to_vec_pretty(&*self).expect("a manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Parses a stored manifest and checks its own checksum (when it has one) and its
    /// consistency (see `problems`). `job` and `id` are the directory it was read from.
    ///
    /// # Errors
    /// `ManifestError` saying what is wrong.
    pub fn from_json(bytes: &[u8], job: &str, id: &str) -> Result<Manifest, ManifestError> {
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(ManifestError::Syntax)?;
        let Some(object) = value.as_object_mut() else {
            return Err(ManifestError::NotAnObject);
        };
        let version = object
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0);
        if version > u64::from(FORMAT_VERSION) {
            return Err(ManifestError::TooNew { version });
        }
        let recorded = object.remove(CHECKSUM_FIELD);
        let checksum = match recorded {
            None => None,
            Some(serde_json::Value::String(s)) => {
                let actual = checksum::of(&value);
                if s != actual {
                    return Err(ManifestError::Checksum {
                        recorded: s,
                        actual,
                    });
                }
                Some(s)
            }
            Some(_) => return Err(ManifestError::ChecksumNotAString),
        };
        let mut manifest: Manifest =
            serde_path_to_error::deserialize(value).map_err(|e| ManifestError::Fields {
                path: e.path().to_string(),
                source: e.into_inner(),
            })?;
        manifest.checksum = checksum;
        let problems = manifest.problems(job, id);
        if !problems.is_empty() {
            return Err(ManifestError::Inconsistent { problems });
        }
        Ok(manifest)
    }
}

/// Whether `name` can be an object's name inside a backup's directory: relative, `/`-separated,
/// no empty, `.` or `..` component, and not the manifest itself.
pub fn valid_object_name(name: &str) -> bool {
    !name.is_empty()
        && name != MANIFEST_NAME
        && name != DRILL_RECORD_NAME
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && !name.chars().any(char::is_control)
}

/// Errors of a stored manifest; the repository adds where it was read from.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("it is not valid JSON")]
    Syntax(#[source] serde_json::Error),
    #[error("it is not a JSON object")]
    NotAnObject,
    #[error("its field {path} is not valid")]
    Fields {
        /// Where in the document: `objects[3].stored_bytes`, or `.` for the top.
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("it has format version {version}; this pgkeep reads up to {FORMAT_VERSION}")]
    TooNew { version: u64 },
    #[error(
        "its checksum does not match its content (recorded {recorded}, computed {actual}): it was edited or damaged"
    )]
    Checksum { recorded: String, actual: String },
    #[error("its checksum is not a string")]
    ChecksumNotAString,
    #[error("it contradicts itself: {}", .problems.join("; "))]
    Inconsistent { problems: Vec<String> },
}

/// A new backup id: the UTC start time to the millisecond, so ids sort chronologically
/// as plain strings (`20261124T030000.123Z`).
pub fn new_id(now: DateTime<Utc>) -> String {
    now.format("%Y%m%dT%H%M%S%.3fZ").to_string()
}

/// The start time a backup id encodes.
pub fn id_time(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|t| t.and_utc())
        .filter(|t| new_id(*t) == id)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
