//! Aborting multipart uploads: the one a failed or dropped `put` leaves, and stale ones a killed
//! process left.

use super::S3Store;
use crate::store::StoreError;
use crate::store::error::chain;

/// Aborts the multipart upload unless disarmed: awaited on failure, spawned when the `put`
/// future is dropped mid-way, so no half-uploaded parts are left behind (and billed).
pub(super) struct AbortOnDrop {
    pub store: S3Store,
    pub key: String,
    pub upload_id: Option<String>,
}

impl AbortOnDrop {
    pub fn disarm(mut self) {
        self.upload_id = None;
    }

    pub async fn abort(mut self) {
        if let Some(upload_id) = self.upload_id.take() {
            abort(self.store.clone(), std::mem::take(&mut self.key), upload_id).await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let key = std::mem::take(&mut self.key);
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(abort(self.store.clone(), key, upload_id));
        } else {
            tracing::warn!(
                key,
                upload_id,
                "cannot abort an interrupted multipart upload: no runtime; \
                 a lifecycle rule for incomplete uploads will clean it up"
            );
        }
    }
}

async fn abort(store: S3Store, key: String, upload_id: String) {
    let result = store
        .client
        .abort_multipart_upload()
        .bucket(&store.bucket)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await;
    match result {
        Ok(_) => tracing::debug!(key, "aborted multipart upload"),
        Err(e) => {
            let error = store.error("AbortMultipartUpload", &key, e);
            tracing::warn!(key, upload_id, error = %chain(&error), "could not abort a multipart upload");
        }
    }
}

/// Aborts the multipart uploads under `prefix` (a store key prefix) initiated before
/// `older_than`; `None` when the store answers that it does not list uploads (501).
pub(super) async fn abort_stale(
    store: &S3Store,
    prefix: &str,
    older_than: chrono::DateTime<chrono::Utc>,
) -> Result<Option<usize>, StoreError> {
    let full_prefix = store.full_key(prefix);
    let mut stale = Vec::new();
    let (mut key_marker, mut upload_id_marker) = (None::<String>, None::<String>);
    loop {
        let listed = store
            .client
            .list_multipart_uploads()
            .bucket(&store.bucket)
            .prefix(&full_prefix)
            .set_key_marker(key_marker.take())
            .set_upload_id_marker(upload_id_marker.take())
            .send()
            .await;
        let page = match listed {
            Ok(page) => page,
            Err(aws_sdk_s3::error::SdkError::ServiceError(e))
                if e.raw().status().as_u16() == 501 =>
            {
                return Ok(None);
            }
            Err(e) => return Err(store.error("ListMultipartUploads", &full_prefix, e)),
        };
        for upload in page.uploads() {
            let started = upload.initiated().and_then(super::to_chrono);
            if let (Some(key), Some(id)) = (upload.key(), upload.upload_id())
                && started.is_some_and(|t| t < older_than)
            {
                stale.push((key.to_string(), id.to_string()));
            }
        }
        if page.is_truncated() != Some(true) {
            break;
        }
        key_marker = page.next_key_marker().map(str::to_string);
        upload_id_marker = page.next_upload_id_marker().map(str::to_string);
        if key_marker.is_none() && upload_id_marker.is_none() {
            break;
        }
    }
    let count = stale.len();
    for (key, upload_id) in stale {
        tracing::info!(key, "aborting a stale multipart upload");
        abort(store.clone(), key, upload_id).await;
    }
    Ok(Some(count))
}
