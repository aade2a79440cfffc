//! The configuration as written: serde structs with `deny_unknown_fields` and named defaults,
//! filled by the strict deserializer in `de`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::DEFAULT_STORAGE_URL;

/// The whole file (plus environment overrides), before validation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub storage: RawStorage,
    #[serde(default)]
    pub daemon: RawDaemon,
    pub catalog: Option<RawCatalog>,
    #[serde(default)]
    pub notifications: RawNotifications,
    #[serde(default)]
    pub jobs: BTreeMap<String, RawJob>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    #[serde(default = "default_storage_url")]
    pub url: String,
    #[serde(default)]
    pub s3: RawS3,
    pub encryption: Option<RawEncryption>,
}

/// `[storage.encryption]`: age encryption of every object but the manifest.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEncryption {
    /// Public keys (`age1...`) new objects are encrypted to.
    pub recipients: Option<Vec<String>>,
    /// A file of public keys, one per line (as `age-keygen -y` prints them).
    pub recipients_file: Option<std::path::PathBuf>,
    /// The private key file restores and verify read encrypted objects with (on hosts that
    /// restore; a backup host does not need it).
    pub identity_file: Option<std::path::PathBuf>,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            url: default_storage_url(),
            s3: RawS3::default(),
            encryption: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawS3 {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    #[serde(default)]
    pub force_path_style: bool,
    #[serde(default = "default_true")]
    pub request_checksums: bool,
    #[serde(default = "default_part_size_mib")]
    pub part_size_mib: u64,
    #[serde(default = "default_parts_in_flight")]
    pub parts_in_flight: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u64,
    /// Longest wait for a connection to the store, e.g. "10s".
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: String,
    /// Longest one attempt of a request other than a part upload or a body transfer may take.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// Longest one attempt of one part upload may take.
    #[serde(default = "default_part_timeout")]
    pub part_timeout: String,
    /// Longest a download may go without receiving a byte.
    #[serde(default = "default_read_timeout")]
    pub read_timeout: String,
}

impl Default for RawS3 {
    fn default() -> Self {
        RawS3 {
            endpoint: None,
            region: None,
            force_path_style: false,
            request_checksums: true,
            part_size_mib: default_part_size_mib(),
            parts_in_flight: default_parts_in_flight(),
            max_attempts: default_max_attempts(),
            connect_timeout: default_connect_timeout(),
            request_timeout: default_request_timeout(),
            part_timeout: default_part_timeout(),
            read_timeout: default_read_timeout(),
        }
    }
}

/// `[daemon]`: how `pgkeep run` schedules, serves and shuts down.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDaemon {
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// `host:port` for /metrics, /healthz, /readyz; off when unset.
    pub listen: Option<String>,
    #[serde(default = "default_max_concurrent_jobs")]
    pub max_concurrent_jobs: u64,
    #[serde(default = "default_shutdown_grace")]
    pub shutdown_grace: String,
    /// Extra attempts of a run that failed for a transient reason.
    #[serde(default = "default_retries")]
    pub retries: u64,
    #[serde(default = "default_retry_backoff")]
    pub retry_backoff: String,
    /// Objects of a backup without a manifest are removed once older than this.
    #[serde(default = "default_orphan_age")]
    pub orphan_age: String,
}

impl Default for RawDaemon {
    fn default() -> Self {
        RawDaemon {
            timezone: default_timezone(),
            listen: None,
            max_concurrent_jobs: default_max_concurrent_jobs(),
            shutdown_grace: default_shutdown_grace(),
            retries: default_retries(),
            retry_backoff: default_retry_backoff(),
            orphan_age: default_orphan_age(),
        }
    }
}

/// `[catalog]`: the optional database that mirrors backup history.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCatalog {
    pub database: String,
    pub password_file: Option<PathBuf>,
}

/// Notification targets, global or per job.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawNotifications {
    /// Receives a JSON event after every run, successful or not.
    pub webhook_url: Option<String>,
    /// healthchecks.io-style: `URL/start`, `URL` on success, `URL/fail` on failure.
    pub ping_url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    #[serde(default = "default_kind")]
    pub kind: String,
    /// libpq conninfo or URL; empty means "the PG* environment".
    #[serde(default)]
    pub database: String,
    pub password_file: Option<PathBuf>,
    pub schedule: Option<String>,
    #[serde(default = "default_compression")]
    pub compression: String,
    pub pg_bin_dir: Option<PathBuf>,
    #[serde(default = "default_true")]
    pub globals: bool,
    pub retention: Option<RawRetention>,
    /// Longest a run may take, e.g. "2h"; `DEFAULT_TIMEOUT` when unset.
    pub timeout: Option<String>,
    /// `/readyz` turns 503 when the last success is older; default twice the schedule interval.
    pub max_age: Option<String>,
    pub notifications: Option<RawNotifications>,
    // dump jobs of a whole server
    pub databases: Option<Vec<String>>,
    pub exclude_databases: Option<Vec<String>>,
    // export jobs
    pub include: Option<Vec<String>>,
    pub exclude: Option<Vec<String>>,
    pub parallel: Option<u64>,
    pub migrations: Option<RawMigrations>,
    pub drill: Option<RawDrill>,
}

/// `[jobs.NAME.drill]`: the daemon drills the job's newest backup on a schedule.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawDrill {
    pub schedule: String,
    /// The server to drill on (libpq conninfo or URL of its maintenance database).
    pub target: String,
    pub password_file: Option<PathBuf>,
    /// Parallel restore sessions.
    pub jobs: Option<u64>,
    #[serde(default)]
    pub no_owner: bool,
    /// `/readyz` turns 503 when the last passed drill is older.
    pub max_age: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
}

/// The application's SQL migrations, for export jobs.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawMigrations {
    pub dir: PathBuf,
    /// The runner's tracking table (optionally schema-qualified).
    #[serde(default = "default_migrations_table")]
    pub table: String,
}

pub(super) fn default_storage_url() -> String {
    DEFAULT_STORAGE_URL.to_string()
}
fn default_true() -> bool {
    true
}
fn default_part_size_mib() -> u64 {
    8
}
fn default_parts_in_flight() -> u64 {
    4
}
fn default_max_attempts() -> u64 {
    5
}
fn default_connect_timeout() -> String {
    "10s".to_string()
}
fn default_request_timeout() -> String {
    "1m".to_string()
}
fn default_part_timeout() -> String {
    "10m".to_string()
}
fn default_read_timeout() -> String {
    "1m".to_string()
}
pub(super) fn default_kind() -> String {
    "dump".to_string()
}
pub(super) fn default_compression() -> String {
    "gzip".to_string()
}
fn default_timezone() -> String {
    "UTC".to_string()
}
fn default_max_concurrent_jobs() -> u64 {
    2
}
fn default_shutdown_grace() -> String {
    "30s".to_string()
}
fn default_retries() -> u64 {
    2
}
fn default_retry_backoff() -> String {
    "10s".to_string()
}
fn default_orphan_age() -> String {
    "24h".to_string()
}
/// The tracking table of pgkeep's migration runner.
pub fn default_migrations_table() -> String {
    "pgkeep_schema_migrations".to_string()
}
