//! Completing a multipart upload, and recognising one that completed although the answer to
//! CompleteMultipartUpload was lost.

use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};

use super::S3Store;
use super::etag;
use crate::store::StoreError;
use crate::store::error::chain;

/// Completes the upload of `total` bytes.
///
/// When completing fails, the store may still have completed it: the answer can be lost (a
/// reset, a timeout) and the SDK's retry then meets `NoSuchUpload`. The object found under
/// the key then decides: exactly this size and (where the store uses S3's multipart ETags)
/// exactly the ETag these parts give means the upload is complete.
pub(super) async fn complete(
    store: &S3Store,
    full: &str,
    upload_id: &str,
    mut parts: Vec<CompletedPart>,
    total: u64,
) -> Result<(), StoreError> {
    parts.sort_by_key(CompletedPart::part_number);
    let predicted = etag::predict_multipart(parts.iter().map(CompletedPart::e_tag));
    let sent = store
        .client
        .complete_multipart_upload()
        .bucket(&store.bucket)
        .key(full)
        .upload_id(upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    let error = match sent {
        Ok(_) => return Ok(()),
        Err(e) => store.error("CompleteMultipartUpload", full, e),
    };
    let answer_lost = error.is_retryable()
        || matches!(&error, StoreError::S3 { code: Some(c), .. } if c == "NoSuchUpload");
    match found_complete(store, full, total, predicted.as_deref(), answer_lost).await {
        Ok(true) => {
            tracing::info!(
                key = full,
                error = %chain(&error),
                "completing the multipart upload failed, but the object is complete"
            );
            Ok(())
        }
        Ok(false) => Err(error),
        Err(head_error) => {
            tracing::warn!(
                key = full,
                error = %chain(&head_error),
                "cannot check a failed completion"
            );
            Err(error)
        }
    }
}

/// Whether the object under the key is this upload, completed (see `etag::completed`).
async fn found_complete(
    store: &S3Store,
    full: &str,
    total: u64,
    predicted: Option<&str>,
    answer_lost: bool,
) -> Result<bool, StoreError> {
    let head = store
        .client
        .head_object()
        .bucket(&store.bucket)
        .key(full)
        .send()
        .await;
    let output = match head {
        Ok(output) => output,
        Err(e) => {
            return match store.error("HeadObject", full, e) {
                StoreError::NotFound { .. } => Ok(false),
                other => Err(other),
            };
        }
    };
    let Some(size) = output.content_length().and_then(|n| u64::try_from(n).ok()) else {
        return Ok(false);
    };
    let found = etag::Found {
        size,
        etag: output.e_tag(),
    };
    Ok(etag::completed(&found, total, predicted, answer_lost))
}
