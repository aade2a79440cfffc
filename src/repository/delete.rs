//! Deleting a backup: the manifest first, confirmed gone (from then on it is not a backup),
//! then the rest of its directory.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use super::{PARALLEL_READS, Repository, backup_prefix, manifest_key};
use crate::store::StoreError;

impl Repository {
    /// Deletes one backup: the manifest first, confirmed gone (from then on it is not a
    /// backup), then every other object under its directory.
    ///
    /// # Errors
    /// `DeleteError` saying whether the backup is still intact or only its objects remain.
    pub async fn delete_backup(&self, job: &str, id: &str) -> Result<(), DeleteError> {
        self.uncommit(job, id)
            .await
            .map_err(|source| DeleteError::Manifest { source })?;
        self.delete_objects(job, id)
            .await
            .map_err(|source| DeleteError::Objects { source })?;
        Ok(())
    }

    /// Deletes the manifest of `job`/`id` and makes sure it is gone.
    pub(super) async fn uncommit(&self, job: &str, id: &str) -> Result<(), StoreError> {
        let key = manifest_key(job, id);
        self.store.delete(&key).await?;
        match self.store.head(&key).await? {
            None => Ok(()),
            Some(_) => Err(StoreError::Io {
                location: key,
                source: std::io::Error::other("the manifest is still there after its deletion"),
            }),
        }
    }

    /// Deletes every object under the backup's directory; the first failure stops it.
    async fn delete_objects(&self, job: &str, id: &str) -> Result<usize, StoreError> {
        let listed = self.store.list(&backup_prefix(job, id)).await?;
        let deletes: Vec<_> = listed
            .into_iter()
            .map(|o| {
                let store = Arc::clone(&self.store);
                async move { store.delete(&o.key).await }
            })
            .collect();
        futures::stream::iter(deletes)
            .buffer_unordered(PARALLEL_READS)
            .try_collect::<Vec<()>>()
            .await
            .map(|done| done.len())
    }
}

/// A deletion that stopped half-way.
#[derive(Debug, thiserror::Error)]
pub enum DeleteError {
    #[error("deleting the manifest failed (the backup is intact)")]
    Manifest {
        #[source]
        source: StoreError,
    },
    #[error(
        "the backup is no longer committed, but removing its objects failed (they are left as debris for the next run)"
    )]
    Objects {
        #[source]
        source: StoreError,
    },
}
