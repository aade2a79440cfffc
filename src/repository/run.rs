//! A backup run: its objects are stored one by one (each compressed, hashed and streamed by
//! `transfer`), then the manifest is written last as the commit. When the manifest write's
//! outcome is unknown the run reads it back before deciding; a run that did not commit removes
//! its objects only once no manifest naming them can exist.

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::io::AsyncRead;

use super::{Repository, Swept, manifest_key, object_key};
use crate::codec::Compression;
use crate::manifest::{self, Manifest, ObjectCodec, ObjectEntry, ObjectRole};
use crate::process::ChildError;
use crate::store::StoreError;
use crate::transfer::{self, Encoding, Stored, UploadError};

/// One run in progress: `<job>/<id>/`, where `id` is the run's start time.
#[derive(Debug)]
pub struct Run {
    repo: Repository,
    job: String,
    id: String,
    started_at: DateTime<Utc>,
    /// What this run stored, by object name.
    written: Mutex<BTreeMap<String, Stored>>,
}

/// Why a commit did not happen, or might not have.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("the manifest does not match what the run stored: {0}")]
    Invalid(String),
    #[error("writing the manifest {key} failed; the backup is not committed")]
    NotCommitted {
        key: String,
        #[source]
        source: StoreError,
    },
    #[error(
        "writing the manifest {key} failed and reading it back failed too, so it is not known whether backup {id} was committed; nothing was removed (`pgkeep list` tells; a backup without a manifest is removed by the next run)"
    )]
    Unknown {
        key: String,
        id: String,
        #[source]
        source: StoreError,
    },
}

impl CommitError {
    /// Whether the store's trouble may pass (the run may be retried).
    pub fn is_retryable(&self) -> bool {
        match self {
            CommitError::Invalid(_) => false,
            CommitError::NotCommitted { source, .. } | CommitError::Unknown { source, .. } => {
                source.is_retryable()
            }
        }
    }
}

impl Run {
    pub(super) fn new(repo: Repository, job: &str, started_at: DateTime<Utc>) -> Run {
        Run {
            repo,
            job: job.to_string(),
            id: manifest::new_id(started_at),
            started_at,
            written: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn job(&self) -> &str {
        &self.job
    }

    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Where the run's objects go, for messages.
    pub fn describe(&self) -> String {
        format!("{}/{}/ in {}", self.job, self.id, self.repo.describe())
    }

    /// Compresses `input` and stores it as the object `name` of this run, completing it only
    /// when `verdict` (the producer's exit) succeeds; see `transfer::upload`. Returns the
    /// object's manifest entry, to which the caller adds what it knows (table, rows, columns).
    ///
    /// # Errors
    /// `UploadError`, naming the first stage that failed.
    pub async fn put<R, V>(
        &self,
        name: &str,
        role: ObjectRole,
        input: R,
        compression: Compression,
        allow_empty: bool,
        verdict: V,
    ) -> Result<ObjectEntry, UploadError>
    where
        R: AsyncRead + Send + Unpin + 'static,
        V: Future<Output = Result<(), ChildError>>,
    {
        assert!(
            manifest::valid_object_name(name),
            "object name {name:?} of a run"
        );
        // Encrypted objects say so in their name, for people and for `age -d`.
        let name = match &self.repo.encryption {
            Some(_) => format!("{name}.age"),
            None => name.to_string(),
        };
        let key = object_key(&self.job, &self.id, &name);
        let encoding = Encoding {
            compression,
            encryption: self.repo.encryption.clone(),
        };
        let stored = transfer::upload(
            self.repo.store.as_ref(),
            &key,
            input,
            encoding,
            allow_empty,
            verdict,
        )
        .await?;
        let entry = ObjectEntry {
            key: name.clone(),
            role,
            table: None,
            rows: None,
            digest: None,
            columns: Vec::new(),
            compression: ObjectCodec::of(compression),
            encryption: self
                .repo
                .encryption
                .as_ref()
                .map(|_| crate::crypt::SCHEME.to_string()),
            raw_bytes: stored.raw_bytes,
            stored_bytes: stored.stored_bytes,
            sha256: stored.sha256.clone(),
        };
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name, stored);
        Ok(entry)
    }

    /// Commits the run: checks that `manifest` describes exactly what this run stored, then
    /// writes it. If the store reports a failure, the manifest is read back: it may have been
    /// written all the same.
    ///
    /// # Errors
    /// `CommitError`: `Invalid` and `NotCommitted` mean no backup exists (the caller aborts
    /// the run); `Unknown` means nothing may be removed.
    pub async fn commit(self, mut manifest: Manifest) -> Result<Manifest, (Run, CommitError)> {
        manifest.encryption = self.repo.encryption.as_ref().map(|r| manifest::Encryption {
            scheme: crate::crypt::SCHEME.to_string(),
            recipients: r.fingerprints(),
        });
        if let Err(reason) = self.matches(&manifest) {
            return Err((self, CommitError::Invalid(reason)));
        }
        let key = manifest_key(&self.job, &self.id);
        let json = manifest.to_json();
        tracing::debug!(job = %self.job, backup = %self.id, objects = manifest.objects.len(), "committing: writing the manifest");
        let store = self.repo.store.as_ref();
        let written = store
            .put(&key, Box::pin(std::io::Cursor::new(json.clone())))
            .await;
        let source = match written {
            Ok(n) if n == json.len() as u64 => return Ok(manifest),
            Ok(n) => StoreError::Io {
                location: key.clone(),
                source: std::io::Error::other(format!(
                    "the store accepted {n} of the manifest's {} bytes",
                    json.len()
                )),
            },
            Err(e) => e,
        };
        tracing::warn!(job = %self.job, backup = %self.id, error = %crate::error::report(&source),
            "writing the manifest failed: reading it back to learn whether it was written");
        match self.repo.read_small(&key).await {
            Ok(back) if back == json => {
                tracing::info!(job = %self.job, backup = %self.id, "the manifest was written despite the error: the backup is committed");
                Ok(manifest)
            }
            Ok(_) | Err(StoreError::NotFound { .. }) => {
                Err((self, CommitError::NotCommitted { key, source }))
            }
            Err(read) => {
                tracing::error!(job = %self.job, backup = %self.id, error = %crate::error::report(&read), "reading the manifest back failed");
                let id = self.id.clone();
                Err((self, CommitError::Unknown { key, id, source }))
            }
        }
    }

    /// Removes what the run stored: its manifest if one may have been written (deleted and
    /// confirmed gone first), then its objects and unfinished uploads. When the manifest cannot
    /// be confirmed gone, everything is left and the sweep of a later run decides.
    pub async fn abort(self) -> Swept {
        self.repo
            .discard(&self.job, &self.id)
            .await
            .unwrap_or_default()
    }

    fn matches(&self, m: &Manifest) -> Result<(), String> {
        if m.job != self.job || m.id != self.id {
            return Err(format!(
                "it names {}/{}, the run is {}/{}",
                m.job, m.id, self.job, self.id
            ));
        }
        let written = self
            .written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for o in &m.objects {
            match written.get(&o.key) {
                Some(s) if s.stored_bytes == o.stored_bytes && s.sha256 == o.sha256 => {}
                Some(_) => return Err(format!("object {} differs from what was stored", o.key)),
                None => return Err(format!("object {} was not stored by this run", o.key)),
            }
        }
        if written.len() != m.objects.len() {
            return Err(format!(
                "the run stored {} objects but the manifest lists {}",
                written.len(),
                m.objects.len()
            ));
        }
        let problems = m.problems(&self.job, &self.id);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}
