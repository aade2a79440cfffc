//! Configuration: the TOML file and `PGKEEP_*` environment overrides, loaded, defaulted and validated.

mod load;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

pub use load::{ConfigSource, load, load_from};

use crate::codec::Compression;
use crate::store::S3Settings;

/// The storage URL used when none is configured.
pub const DEFAULT_STORAGE_URL: &str = "file://./pgkeep-backups";
/// The name of the job that exists when there is no configuration file.
pub const DEFAULT_JOB: &str = "default";

/// A configuration problem; every variant names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("config file {path}: {reason}")]
    Syntax { path: String, reason: String },
    #[error("{}", render_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

/// One validation problem: the dotted key path and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

fn render_problems(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.reason))
        .collect();
    format!("invalid configuration: {}", parts.join("; "))
}

/// The whole configuration, as written by the user (before validation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub storage: RawStorage,
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
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            url: default_storage_url(),
            s3: RawS3::default(),
        }
    }
}

fn default_storage_url() -> String {
    DEFAULT_STORAGE_URL.to_string()
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
        }
    }
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
fn default_kind() -> String {
    "dump".to_string()
}
fn default_compression() -> String {
    "gzip".to_string()
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

/// A validated configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage: Storage,
    pub jobs: BTreeMap<String, Job>,
    /// Where the configuration came from, for messages.
    pub source: ConfigSource,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub url: String,
    pub s3: S3Settings,
}

/// The kinds of backup a job can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// `pg_dump --format=custom` of one database, plus the cluster's roles.
    Dump,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Dump => "dump",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: JobKind,
    pub database: String,
    pub password_file: Option<PathBuf>,
    pub schedule: Option<String>,
    pub compression: Compression,
    pub pg_bin_dir: Option<PathBuf>,
    pub globals: bool,
    pub retention: Option<RawRetention>,
}

impl Config {
    /// The job named `name`, or the only job when `name` is `None`.
    ///
    /// # Errors
    /// A usage error when the job does not exist, or when `name` is omitted and there are several.
    pub fn job(&self, name: Option<&str>) -> Result<&Job, crate::UsageError> {
        match name {
            Some(n) => self.jobs.get(n).ok_or_else(|| {
                crate::UsageError(format!(
                    "no job named '{n}' in the configuration (jobs: {})",
                    self.job_names()
                ))
            }),
            None if self.jobs.len() == 1 => Ok(self.jobs.values().next().expect("one job")),
            None => Err(crate::UsageError(format!(
                "the configuration has several jobs ({}); name one with --job or as an argument",
                self.job_names()
            ))),
        }
    }

    fn job_names(&self) -> String {
        self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
