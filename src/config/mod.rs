//! Configuration: the TOML file and `PGKEEP_*` environment overrides, merged, typed strictly
//! and validated once, at load, into the values the rest of pgkeep uses.

mod checks;
mod cluster;
mod de;
mod job;
mod load;
mod problems;
mod raw;
mod tree;
mod validate;

#[cfg(test)]
mod proptests;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{ConfigSource, environment, load, load_from};
pub use raw::{
    RawCatalog, RawConfig, RawDaemon, RawDrill, RawEncryption, RawJob, RawMigrations,
    RawNotifications, RawRetention, RawS3, RawStorage, default_migrations_table,
};

use crate::codec::Compression;
use crate::pattern::{DatabasePattern, TablePattern};
use crate::pg::ConnInfo;
use crate::redact::show_at_most;
use crate::retention::Retention;
use crate::schedule::Schedule;
use crate::store::S3Settings;

/// The storage URL used when none is configured.
pub const DEFAULT_STORAGE_URL: &str = "file://./pgkeep-backups";
/// The name of the job that exists when there is no configuration file.
pub const DEFAULT_JOB: &str = "default";
/// A job's overall run limit when it sets no `timeout`: long enough for a big dump, short
/// enough that a hung run does not block the next night's.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_hours(12);

/// A configuration problem; each names the file position or the key it is about, on one
/// line, and never shows a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {reason}", shown_path(.path))]
    Read { path: PathBuf, reason: String },
    #[error("config file {}: line {line}, column {column}: {reason}", shown_path(.path))]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        reason: String,
    },
    #[error("{}", render_problems(.problems))]
    Invalid { problems: Vec<Problem> },
}

impl ConfigError {
    /// Each problem as its own line (the `Display` form joins them on one line).
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

fn shown_path(path: &std::path::Path) -> String {
    show_at_most(&path.display().to_string(), 100)
}

/// Longest key path a problem shows.
const KEY_CHARS: usize = 100;
/// Longest reason a problem shows, notes included: a problem's line stays under 300.
const REASON_CHARS: usize = 196;

/// One validation problem: the dotted key path (or the environment variable) and what is
/// wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub reason: String,
}

impl Problem {
    /// A problem, bounded in length and kept on one line whatever went into it.
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Problem {
        Problem {
            key: bound(key.into(), KEY_CHARS),
            reason: bound(reason.into(), REASON_CHARS),
        }
    }

    /// Appends `note` (e.g. which variable set the key), shortening the reason to make room.
    pub fn add_note(&mut self, note: &str) {
        let note = bound(note.to_string(), REASON_CHARS / 2);
        let room = REASON_CHARS.saturating_sub(note.chars().count());
        self.reason = format!("{}{note}", bound(std::mem::take(&mut self.reason), room));
    }
}

fn bound(s: String, limit: usize) -> String {
    if s.chars().count() <= limit && !s.chars().any(char::is_control) {
        s
    } else {
        show_at_most(&s, limit)
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

fn render_problems(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    format!("invalid configuration: {}", parts.join("; "))
}

/// A validated configuration, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub storage: Storage,
    pub daemon: Daemon,
    pub catalog: Option<Catalog>,
    /// Global notification targets; a job's own replace them.
    pub notifications: Notifications,
    pub jobs: BTreeMap<String, Job>,
    /// Where the configuration came from, for messages.
    pub source: ConfigSource,
}

#[derive(Debug, Clone)]
pub struct Storage {
    pub url: String,
    pub s3: S3Settings,
    /// Encryption of new objects, and where restores find the private key.
    pub encryption: Option<Encryption>,
}

impl Storage {
    /// The repository this storage holds, encrypting new objects when `[storage.encryption]`
    /// says so. Every writer opens it here, so none forgets the encryption.
    ///
    /// # Errors
    /// An invalid URL or an S3 client that cannot be built.
    pub async fn open(&self) -> Result<crate::repository::Repository, crate::store::StoreError> {
        let repo = crate::repository::Repository::open(&self.url, &self.s3).await?;
        Ok(repo.encrypting_to(self.encryption.as_ref().map(|e| e.recipients.clone())))
    }
}

/// `[storage.encryption]`, validated: the recipients parsed, the identity file's path.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub recipients: crate::crypt::Recipients,
    pub identity_file: Option<PathBuf>,
}

/// How `pgkeep run` behaves.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub timezone: chrono_tz::Tz,
    pub listen: Option<SocketAddr>,
    pub max_concurrent_jobs: usize,
    pub shutdown_grace: Duration,
    pub retries: u32,
    pub retry_backoff: Duration,
    pub orphan_age: Duration,
}

/// The database mirroring backup history.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub database: ConnInfo,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notifications {
    pub webhook_url: Option<String>,
    pub ping_url: Option<String>,
}

/// The kinds of backup a job can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// `pg_dump --format=custom` of one database, plus the cluster's roles.
    Dump,
    /// Per-table COPY exports in one snapshot, plus the schema.
    Export,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Dump => "dump",
            JobKind::Export => "export",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub kind: JobKind,
    /// As written; the PG* environment fills the rest when connecting.
    pub database: ConnInfo,
    pub password_file: Option<PathBuf>,
    pub schedule: Option<Schedule>,
    pub compression: Compression,
    pub pg_bin_dir: Option<PathBuf>,
    pub globals: bool,
    pub retention: Option<Retention>,
    /// The longest a run may take ([`DEFAULT_TIMEOUT`] unless set).
    pub timeout: Duration,
    pub max_age: Option<Duration>,
    /// This job's notification targets (its own, else the global ones).
    pub notifications: Notifications,
    pub export: ExportSettings,
    /// Dump jobs of a whole server (`databases = [...]`): which of its databases each run
    /// backs up; `None` for a job of the one database `database` names.
    pub cluster: Option<ClusterSettings>,
    /// Scheduled drills of the job's newest backup (`[jobs.NAME.drill]`).
    pub drill: Option<DrillSettings>,
}

impl Job {
    /// The kind of backup the job makes, as manifests name it: `dump`, `export`, or
    /// `cluster` for a dump job of a whole server.
    pub fn kind_name(&self) -> &'static str {
        if self.cluster.is_some() {
            "cluster"
        } else {
            self.kind.as_str()
        }
    }
}

/// How the daemon drills a job's backups.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    pub schedule: Schedule,
    /// The server the scratch databases are made on (its maintenance database).
    pub target: ConnInfo,
    pub password_file: Option<PathBuf>,
    /// Parallel restore sessions.
    pub jobs: u32,
    pub no_owner: bool,
    /// How old the last passed drill may be before `/readyz` fails.
    pub max_age: Option<Duration>,
}

/// Which databases of the server a cluster job backs up: those matching `include` and no
/// `exclude` pattern, of the ones that allow connections and are not templates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub include: Vec<DatabasePattern>,
    pub exclude: Vec<DatabasePattern>,
}

impl ClusterSettings {
    pub fn selects(&self, name: &str) -> bool {
        self.include.iter().any(|p| p.matches(name))
            && !self.exclude.iter().any(|p| p.matches(name))
    }
}

/// What an export job reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSettings {
    /// Table patterns (`schema.table`, `*` wildcards, quoted identifiers); empty means all.
    pub include: Vec<TablePattern>,
    pub exclude: Vec<TablePattern>,
    /// Worker connections.
    pub parallel: usize,
    pub migrations: Option<Migrations>,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            include: Vec::new(),
            exclude: Vec::new(),
            parallel: 2,
            migrations: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrations {
    pub dir: PathBuf,
    pub table: String,
}

/// The environment variable naming an identity file for reading encrypted backups.
pub const IDENTITY_ENV: &str = "PGKEEP_AGE_IDENTITY_FILE";

impl Config {
    /// The identity files for reading encrypted backups: `given` (`--identity`), else
    /// `$PGKEEP_AGE_IDENTITY_FILE`, else `storage.encryption.identity_file`.
    pub fn identity_files(&self, given: &[PathBuf]) -> Vec<PathBuf> {
        if !given.is_empty() {
            return given.to_vec();
        }
        std::env::var_os(IDENTITY_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                self.storage
                    .encryption
                    .as_ref()
                    .and_then(|e| e.identity_file.clone())
            })
            .into_iter()
            .collect()
    }

    /// The job named `name`, or the only job when `name` is `None`.
    ///
    /// # Errors
    /// A usage error when the job does not exist, or when `name` is omitted and there are several.
    pub fn job(&self, name: Option<&str>) -> Result<&Job, crate::error::UsageError> {
        match name {
            Some(n) => self.jobs.get(n).ok_or_else(|| {
                crate::error::UsageError(format!(
                    "no job named '{n}' in the configuration (jobs: {})",
                    self.job_names()
                ))
            }),
            None if self.jobs.len() == 1 => Ok(self.jobs.values().next().expect("one job")),
            None => Err(crate::error::UsageError(format!(
                "the configuration has several jobs ({}); name one with --job or as an argument",
                self.job_names()
            ))),
        }
    }

    fn job_names(&self) -> String {
        self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}
