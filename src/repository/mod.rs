//! The repository: the backups in a store, and the only code that knows their layout
//! (`<job>/<id>/<object>`, `manifest.json` last) and the commit rules. It lists backups (a
//! damaged manifest is reported beside the others, never in their way), resolves `latest` or an
//! id, opens a committed backup's objects (see `objects`), begins runs (see `run`), deletes
//! backups manifest first (see `delete`), and finds what crashed runs left (see `debris`).

mod archive;
mod debris;
mod delete;
mod drills;
mod objects;
mod run;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use tokio::io::AsyncReadExt;

pub use archive::ArchiveNeeds;
pub use debris::{Orphan, Swept};
pub use delete::DeleteError;
pub use drills::{DRILL_RECORD, DrillRecord};
pub use objects::ObjectProblem;
pub use run::{CommitError, Run};

use crate::crypt::{Identities, Recipients};
use crate::error::UsageError;
use crate::manifest::{self, Manifest, ManifestError};
use crate::store::{ObjectMeta, ObjectStore, S3Settings, StoreError};

pub use crate::manifest::MANIFEST_NAME;
/// Manifests read at once while listing.
const PARALLEL_READS: usize = 8;
/// The largest manifest pgkeep reads (a manifest of 100,000 tables is about 60 MiB).
const MAX_MANIFEST_BYTES: u64 = 256 << 20;

/// Errors of the repository, naming the backup or key involved.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the manifest of backup {id} of job '{job}' ({key}) is damaged")]
    Damaged {
        job: String,
        id: String,
        key: String,
        #[source]
        source: ManifestError,
    },
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(
        "backup {id} of job '{job}' is encrypted (to {needed}): give the matching identity with --identity FILE, PGKEEP_AGE_IDENTITY_FILE or storage.encryption.identity_file"
    )]
    Locked {
        id: String,
        job: String,
        needed: String,
    },
    #[error("object {key} uses {codec}, which this version of pgkeep cannot decode")]
    Codec { key: String, codec: String },
    #[error("backup {id} cannot be decrypted: {reason}")]
    WrongIdentity { id: String, reason: String },
}

impl RepoError {
    /// Whether this is a mistake in what was asked for (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(self, RepoError::Usage(_))
    }
}

/// A backup whose manifest cannot be used: unreadable, or failing its own checks.
#[derive(Debug)]
pub struct DamagedBackup {
    pub job: String,
    pub id: String,
    pub key: String,
    pub error: RepoError,
}

/// The committed backups of a listing and the damaged ones beside them, each newest first.
#[derive(Debug, Default)]
pub struct Listing {
    pub backups: Vec<Manifest>,
    pub damaged: Vec<DamagedBackup>,
    /// (job, id) of the committed backups that have a drill record (a drill of them passed).
    pub drilled: std::collections::BTreeSet<(String, String)>,
}

impl Listing {
    /// Whether a drill of `manifest`'s backup passed.
    pub fn was_drilled(&self, manifest: &Manifest) -> bool {
        self.drilled
            .contains(&(manifest.job.clone(), manifest.id.clone()))
    }
}

/// What `resolve` found: the backup, and the newer ones of the job it had to pass over because
/// their manifests are damaged (a caller warns about them).
#[derive(Debug)]
pub struct Resolved {
    pub manifest: Manifest,
    pub passed_over: Vec<DamagedBackup>,
}

/// The backups in one store, with the keys new objects are encrypted to and the identities
/// encrypted ones are read with.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Arc<dyn ObjectStore>,
    encryption: Option<Recipients>,
    identities: Option<Identities>,
}

impl Repository {
    pub fn new(store: Arc<dyn ObjectStore>) -> Repository {
        Repository {
            store,
            encryption: None,
            identities: None,
        }
    }

    /// New objects are encrypted to `recipients`.
    #[must_use]
    pub fn encrypting_to(mut self, recipients: Option<Recipients>) -> Repository {
        self.encryption = recipients;
        self
    }

    /// Encrypted objects are read with `identities`.
    #[must_use]
    pub fn reading_with(mut self, identities: Option<Identities>) -> Repository {
        self.identities = identities;
        self
    }

    /// The repository in the store a storage URL names (`file://...` or `s3://...`).
    ///
    /// # Errors
    /// `StoreError::InvalidUrl`, or an S3 client that cannot be built.
    pub async fn open(url: &str, s3: &S3Settings) -> Result<Repository, StoreError> {
        Ok(Repository::new(Arc::from(
            crate::store::open(url, s3).await?,
        )))
    }

    /// The store, for what is not about backups (`check`'s probe object).
    pub fn store(&self) -> &dyn ObjectStore {
        self.store.as_ref()
    }

    /// Where the store is, for messages.
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    /// Fails fast when the store cannot be used at all (see `ObjectStore::preflight`).
    ///
    /// # Errors
    /// The store's error.
    pub async fn preflight(&self) -> Result<(), StoreError> {
        self.store.preflight().await
    }

    /// Every committed backup (of `job`, or of every job), newest first, and the damaged ones.
    ///
    /// # Errors
    /// Only when the store cannot be listed; a manifest that cannot be read or checked is
    /// reported in `Listing::damaged`.
    pub async fn list(&self, job: Option<&str>) -> Result<Listing, RepoError> {
        let prefix = job.map(job_prefix).unwrap_or_default();
        let listed = self.store.list(&prefix).await?;
        let dirs = directories(&listed);
        let drilled = dirs
            .iter()
            .filter(|(_, dir)| dir.manifest && dir.drilled)
            .map(|(key, _)| key.clone())
            .collect();
        let committed: Vec<(String, String)> = dirs
            .into_iter()
            .filter(|(_, dir)| dir.manifest)
            .map(|((job, id), _)| (job, id))
            .collect();
        // Owned futures (no borrow of `self`), so a listing can run inside spawned tasks.
        let reads: Vec<_> = committed
            .into_iter()
            .map(|(job, id)| {
                let repo = self.clone();
                async move {
                    let read = repo.manifest(&job, &id).await;
                    (job, id, read)
                }
            })
            .collect();
        let mut listing = Listing {
            drilled,
            ..Listing::default()
        };
        let results: Vec<_> = futures::stream::iter(reads)
            .buffered(PARALLEL_READS)
            .collect()
            .await;
        for (job, id, read) in results {
            match read {
                Ok(m) => listing.backups.push(m),
                Err(error) => listing.damaged.push(DamagedBackup {
                    key: manifest_key(&job, &id),
                    job,
                    id,
                    error,
                }),
            }
        }
        let newest_first =
            |a: (&str, &str), b: (&str, &str)| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0));
        listing
            .backups
            .sort_by(|a, b| newest_first((&a.job, &a.id), (&b.job, &b.id)));
        listing
            .damaged
            .sort_by(|a, b| newest_first((&a.job, &a.id), (&b.job, &b.id)));
        Ok(listing)
    }

    /// Reads and checks one backup's manifest.
    ///
    /// # Errors
    /// `Store(NotFound)` when the backup has no manifest; `Damaged` when it fails its checks.
    pub async fn manifest(&self, job: &str, id: &str) -> Result<Manifest, RepoError> {
        let key = manifest_key(job, id);
        let bytes = self.read_small(&key).await?;
        Manifest::from_json(&bytes, job, id).map_err(|source| RepoError::Damaged {
            job: job.to_string(),
            id: id.to_string(),
            key,
            source,
        })
    }

    async fn read_small(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.read_capped(key, MAX_MANIFEST_BYTES).await
    }

    /// Reads a small object whole, at most `cap` bytes of it.
    async fn read_capped(&self, key: &str, cap: u64) -> Result<Vec<u8>, StoreError> {
        let reader = self.store.get(key).await?;
        let mut buf = Vec::new();
        reader
            .take(cap)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StoreError::from_read(key, e))?;
        Ok(buf)
    }

    /// Finds a backup by id or `latest` (the newest intact backup of `job`). Without a job, an
    /// id is looked up across all jobs.
    ///
    /// # Errors
    /// `Usage` when the backup does not exist or the choice is ambiguous; `Damaged` when the
    /// named backup's manifest is damaged; store errors.
    pub async fn resolve(&self, job: Option<&str>, which: &str) -> Result<Resolved, RepoError> {
        let scope = job.map_or_else(|| "any job".to_string(), |j| format!("job '{j}'"));
        if which == "latest" {
            let Some(job) = job else {
                return Err(UsageError(
                    "'latest' needs a job: the configuration has several; pass --job".into(),
                )
                .into());
            };
            let listing = self.list(Some(job)).await?;
            let Some(manifest) = listing.backups.into_iter().next() else {
                let damaged = listing.damaged.len();
                let more = if damaged > 0 {
                    format!(" ({damaged} damaged backups are not counted; see `pgkeep list`)")
                } else {
                    String::new()
                };
                return Err(UsageError(format!(
                    "no committed backup of {scope} in {}{more}",
                    self.describe()
                ))
                .into());
            };
            let passed_over = listing
                .damaged
                .into_iter()
                .filter(|d| d.id > manifest.id)
                .collect();
            return Ok(Resolved {
                manifest,
                passed_over,
            });
        }
        if let Some(job) = job {
            return match self.manifest(job, which).await {
                Ok(manifest) => Ok(Resolved {
                    manifest,
                    passed_over: Vec::new(),
                }),
                Err(RepoError::Store(StoreError::NotFound { .. })) => {
                    Err(not_found(which, &scope, &self.describe()))
                }
                Err(e) => Err(e),
            };
        }
        let listing = self.list(None).await?;
        let mut found: Vec<Manifest> = listing
            .backups
            .into_iter()
            .filter(|m| m.id == which)
            .collect();
        let mut damaged: Vec<DamagedBackup> = listing
            .damaged
            .into_iter()
            .filter(|d| d.id == which)
            .collect();
        match (found.len(), damaged.len()) {
            (1, 0) => Ok(Resolved {
                manifest: found.remove(0),
                passed_over: Vec::new(),
            }),
            (0, 1) => Err(damaged.remove(0).error),
            (0, 0) => Err(not_found(which, &scope, &self.describe())),
            _ => Err(UsageError(format!(
                "backup id '{which}' exists in several jobs; pass --job"
            ))
            .into()),
        }
    }

    /// The newest committed backup id of `job` (by its directory, without reading manifests).
    ///
    /// # Errors
    /// The store's error.
    pub async fn newest_id(&self, job: &str) -> Result<Option<String>, StoreError> {
        let listed = self.store.list(&job_prefix(job)).await?;
        Ok(directories(&listed)
            .into_iter()
            .filter(|(_, d)| d.manifest)
            .map(|((_, id), _)| id)
            .max())
    }

    /// Starts a run of `job` whose id is its start time (see `manifest::new_id`).
    pub fn begin(&self, job: &str, started_at: chrono::DateTime<chrono::Utc>) -> Run {
        Run::new(self.clone(), job, started_at)
    }
}

fn not_found(id: &str, scope: &str, store: &str) -> RepoError {
    UsageError(format!(
        "no committed backup '{id}' of {scope} in {store} (see `pgkeep list`)"
    ))
    .into()
}

fn job_prefix(job: &str) -> String {
    format!("{job}/")
}

fn backup_prefix(job: &str, id: &str) -> String {
    format!("{job}/{id}/")
}

fn object_key(job: &str, id: &str, name: &str) -> String {
    format!("{job}/{id}/{name}")
}

fn manifest_key(job: &str, id: &str) -> String {
    object_key(job, id, MANIFEST_NAME)
}

/// A backup directory as a listing shows it.
#[derive(Debug, Default)]
struct Directory<'a> {
    manifest: bool,
    /// It holds a drill record.
    drilled: bool,
    objects: Vec<&'a ObjectMeta>,
}

/// The backup directories (`<job>/<id>/...`) of a listing, by (job, id). Keys of another shape
/// (pgkeep's `check` probe, anything else in the bucket) are not backups and are left out.
fn directories(listed: &[ObjectMeta]) -> BTreeMap<(String, String), Directory<'_>> {
    let mut dirs: BTreeMap<(String, String), Directory<'_>> = BTreeMap::new();
    for o in listed {
        let mut parts = o.key.splitn(3, '/');
        let (Some(job), Some(id), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if job.is_empty() || job.starts_with('.') || manifest::id_time(id).is_none() {
            continue;
        }
        let dir = dirs.entry((job.to_string(), id.to_string())).or_default();
        dir.manifest |= name == MANIFEST_NAME;
        dir.drilled |= name == DRILL_RECORD;
        dir.objects.push(o);
    }
    dirs
}

#[cfg(test)]
mod tests;
