//! Reading the objects of a committed backup: their store keys, what their manifest promises
//! about them, how each is decoded (codec, and the identities that decrypt it), and the check
//! that every one is in the store with its recorded size.

use std::collections::BTreeMap;

use super::{RepoError, Repository, backup_prefix, object_key};
use crate::manifest::{Manifest, ObjectEntry};
use crate::store::{ByteReader, StoreError};
use crate::transfer::{Decoding, Expected};

/// One object of a committed backup that is not in the store as its manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectProblem {
    Missing {
        key: String,
    },
    Size {
        key: String,
        actual: u64,
        expected: u64,
    },
}

impl std::fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ObjectProblem::Missing { key } => write!(f, "object {key} is missing from the store"),
            ObjectProblem::Size {
                key,
                actual,
                expected,
            } => write!(
                f,
                "object {key} is {actual} bytes in the store but its manifest records {expected}"
            ),
        }
    }
}

impl Repository {
    /// How an object of `manifest` is read back: its codec, and the identities to decrypt it
    /// with when it is encrypted.
    ///
    /// # Errors
    /// `Locked` when it is encrypted and no identity was given (or with a scheme this version
    /// does not know), naming the recipients it needs.
    pub fn decoding(
        &self,
        manifest: &Manifest,
        object: &ObjectEntry,
    ) -> Result<Decoding, RepoError> {
        let compression = object
            .compression
            .compression()
            .ok_or_else(|| RepoError::Codec {
                key: Self::object_key(manifest, object),
                codec: object.compression.to_string(),
            })?;
        let needed = manifest
            .encryption
            .as_ref()
            .map(|e| e.recipients.clone())
            .unwrap_or_default();
        let decryption = match object.encryption.as_deref() {
            None => None,
            Some(crate::crypt::SCHEME) => match &self.identities {
                Some(ids) => Some((ids.clone(), needed)),
                None => {
                    return Err(RepoError::Locked {
                        id: manifest.id.clone(),
                        job: manifest.job.clone(),
                        needed: needed.join(", "),
                    });
                }
            },
            Some(other) => {
                return Err(RepoError::Codec {
                    key: Self::object_key(manifest, object),
                    codec: format!("encryption '{other}'"),
                });
            }
        };
        Ok(Decoding {
            compression,
            decryption,
        })
    }

    /// Checks, by reading the header of its first encrypted object, that the identities given
    /// decrypt `manifest`'s objects (a restore then fails before it touches anything).
    ///
    /// # Errors
    /// `Locked` without identities, `WrongIdentity` when none fits, store errors.
    pub async fn check_identities(&self, manifest: &Manifest) -> Result<(), RepoError> {
        let Some(object) = manifest.objects.iter().find(|o| o.encryption.is_some()) else {
            return Ok(());
        };
        let decoding = self.decoding(manifest, object)?;
        let reader = self.read(manifest, object).await?;
        let key = Self::object_key(manifest, object);
        let opened = tokio::task::spawn_blocking(move || {
            let source = tokio_util::io::SyncIoBridge::new(reader);
            decoding.open(source).map(|_| ())
        })
        .await
        .map_err(|e| StoreError::Io {
            location: key.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        match opened {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                Err(RepoError::WrongIdentity {
                    id: manifest.id.clone(),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(StoreError::from_read(&key, e).into()),
        }
    }

    /// Whether objects of `manifest` can be read at all (no identity needed, or one given).
    pub fn can_decode(&self, manifest: &Manifest) -> bool {
        manifest
            .objects
            .iter()
            .all(|o| o.encryption.is_none() || self.identities.is_some())
    }

    /// The store key of an object of a committed backup, for messages.
    pub fn object_key(manifest: &Manifest, object: &ObjectEntry) -> String {
        object_key(&manifest.job, &manifest.id, &object.key)
    }

    /// What the manifest promises about an object, for checking it while it is read.
    pub fn expected(manifest: &Manifest, object: &ObjectEntry) -> Expected {
        Expected {
            key: Self::object_key(manifest, object),
            stored_bytes: object.stored_bytes,
            sha256: object.sha256.clone(),
        }
    }

    /// Opens an object of a committed backup for streaming reads.
    ///
    /// # Errors
    /// The store's error (`NotFound` for a missing object).
    pub async fn read(
        &self,
        manifest: &Manifest,
        object: &ObjectEntry,
    ) -> Result<ByteReader, StoreError> {
        self.store.get(&Self::object_key(manifest, object)).await
    }

    /// Checks, without reading them, that every object of the backup is in the store with
    /// the size its manifest records (one listing of the backup's directory).
    ///
    /// # Errors
    /// The store's error.
    pub async fn check_objects(
        &self,
        manifest: &Manifest,
    ) -> Result<Vec<ObjectProblem>, StoreError> {
        let listed = self
            .store
            .list(&backup_prefix(&manifest.job, &manifest.id))
            .await?;
        let sizes: BTreeMap<&str, u64> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
        Ok(manifest
            .objects
            .iter()
            .filter_map(|o| {
                let key = Self::object_key(manifest, o);
                match sizes.get(key.as_str()) {
                    None => Some(ObjectProblem::Missing { key }),
                    Some(&actual) if actual != o.stored_bytes => Some(ObjectProblem::Size {
                        key,
                        actual,
                        expected: o.stored_bytes,
                    }),
                    Some(_) => None,
                }
            })
            .collect())
    }
}
