//! The S3-compatible store (`s3://bucket/prefix`) on aws-sdk-s3: AWS, MinIO, Garage, R2, B2…

mod abort;
mod client;
mod complete;
mod download;
mod error;
mod etag;
mod multipart;

pub use error::SdkCause;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::Credentials;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::{ByteReader, ObjectMeta, ObjectStore, S3Settings, StoreError};
use client::Timeouts;

/// The smallest part S3 accepts (except for the last one).
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// The largest part S3 accepts.
const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Objects in one bucket, under an optional key prefix.
#[derive(Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket root.
    prefix: String,
    /// The endpoint as shown in messages.
    endpoint: String,
    part_size: u64,
    parts_in_flight: usize,
    /// Part buffers (being filled or uploading) that may exist at once across all uploads of
    /// this store and its clones: `parts_in_flight`, at least 2 so that filling one part
    /// overlaps sending another. Memory stays bounded however many objects upload in parallel.
    part_buffers: Arc<tokio::sync::Semaphore>,
    /// Set once the bucket is known to exist, so a 404 from `head` needs no second look.
    bucket_seen: Arc<AtomicBool>,
    timeouts: Timeouts,
    max_attempts: u32,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `bucket` under `prefix`, with credentials from the standard AWS chain
    /// (environment, shared config and credential files, SSO, container or instance roles).
    ///
    /// No request is sent yet; a missing bucket or bad credentials surface on first use.
    /// `part_size` is clamped to S3's limits (5 MiB–5 GiB).
    pub async fn new(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
    ) -> Result<S3Store, StoreError> {
        Ok(Self::build(bucket, prefix, settings, None).await)
    }

    /// Like [`S3Store::new`] but with fixed credentials instead of the AWS chain.
    ///
    /// For embedding pgkeep and for tests, which must not touch process-wide environment
    /// variables; the program itself always uses the chain.
    pub async fn with_credentials(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Result<S3Store, StoreError> {
        let credentials = Credentials::new(access_key_id, secret_access_key, None, None, "pgkeep");
        Ok(Self::build(bucket, prefix, settings, Some(credentials)).await)
    }

    async fn build(
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        credentials: Option<Credentials>,
    ) -> S3Store {
        let (client, endpoint, timeouts) = client::build(settings, credentials).await;
        S3Store {
            client,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            endpoint,
            part_size: settings.part_size.clamp(MIN_PART_SIZE, MAX_PART_SIZE),
            parts_in_flight: settings.parts_in_flight.max(1),
            part_buffers: Arc::new(tokio::sync::Semaphore::new(settings.parts_in_flight.max(2))),
            bucket_seen: Arc::new(AtomicBool::new(false)),
            timeouts,
            max_attempts: settings.max_attempts.max(1),
        }
    }

    /// The bucket this store writes to.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The key prefix inside the bucket (no leading or trailing `/`; empty for the root).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full S3 key of a store key.
    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// The store key of a full S3 key, or `None` when it lies outside the prefix.
    fn store_key<'k>(&self, full: &'k str) -> Option<&'k str> {
        if self.prefix.is_empty() {
            Some(full)
        } else {
            full.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
        }
    }

    /// The store error for a failed request that ran with the default `request_timeout`.
    fn error<E>(
        &self,
        operation: &'static str,
        full_key: &str,
        err: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        self.error_after(operation, full_key, self.timeouts.request, err)
    }

    /// The store error for a failed request whose attempts were limited to `timeout`.
    fn error_after<E>(
        &self,
        operation: &'static str,
        full_key: &str,
        timeout: Duration,
        err: SdkError<E, HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        error::map(
            err,
            &error::Target {
                operation,
                bucket: &self.bucket,
                key: full_key,
                endpoint: &self.endpoint,
                timeout,
            },
        )
    }

    /// `s3://bucket/key` of a full key, for messages.
    fn location(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    /// Tells a missing bucket from a missing object after a 404: HEAD responses carry no error
    /// code, and some stores say NoSuchKey either way.
    async fn check_bucket(&self) -> Result<(), StoreError> {
        if self.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(match self.error("HeadBucket", "", e) {
                StoreError::NotFound { .. } => StoreError::NoSuchBucket {
                    bucket: self.bucket.clone(),
                },
                other => other,
            }),
        }
    }
}

fn to_chrono(t: &aws_sdk_s3::primitives::DateTime) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, body: ByteReader) -> Result<u64, StoreError> {
        multipart::put(self, key, body).await
    }

    async fn get(&self, key: &str) -> Result<ByteReader, StoreError> {
        let full = self.full_key(key);
        match download::open(self, full).await {
            Ok(reader) => Ok(reader),
            // Some stores answer NoSuchKey for a missing bucket too.
            Err(StoreError::NotFound { .. }) => {
                self.check_bucket().await?;
                Err(StoreError::NotFound {
                    key: key.to_string(),
                })
            }
            Err(other) => Err(other),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        let full = self.full_key(key);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(output) => {
                self.bucket_seen.store(true, Ordering::Relaxed);
                Ok(Some(ObjectMeta {
                    key: key.to_string(),
                    size: output.content_length().unwrap_or(0).max(0) as u64,
                    last_modified: output.last_modified().and_then(to_chrono),
                }))
            }
            Err(e) => match self.error("HeadObject", &full, e) {
                StoreError::NotFound { .. } => {
                    self.check_bucket().await?;
                    Ok(None)
                }
                other => Err(other),
            },
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let full_prefix = self.full_key(prefix);
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&full_prefix)
            .into_paginator()
            .send();
        let mut objects = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error("ListObjectsV2", &full_prefix, e))?;
            for object in page.contents() {
                let Some(key) = object.key().and_then(|k| self.store_key(k)) else {
                    continue;
                };
                objects.push(ObjectMeta {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                    last_modified: object.last_modified().and_then(to_chrono),
                });
            }
        }
        if objects.is_empty() {
            // Some stores list a missing bucket as empty; an empty answer must not hide that.
            self.check_bucket().await?;
        }
        self.bucket_seen.store(true, Ordering::Relaxed);
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    async fn preflight(&self) -> Result<(), StoreError> {
        self.check_bucket().await
    }

    async fn remove_stale_uploads(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<usize>, StoreError> {
        abort::abort_stale(self, prefix, older_than).await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full_key(key);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error("DeleteObject", &full, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }

    fn describe(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_map_under_the_prefix() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: Some("us-east-1".into()),
            ..S3Settings::default()
        };
        let store = S3Store::with_credentials("b", "/prod/", &settings, "AKID", "SECRET")
            .await
            .unwrap();
        assert_eq!(store.describe(), "s3://b/prod");
        assert_eq!(store.full_key("job/x"), "prod/job/x");
        assert_eq!(store.store_key("prod/job/x"), Some("job/x"));
        assert_eq!(store.store_key("production/x"), None);
        let root = S3Store::with_credentials("b", "", &settings, "AKID", "SECRET")
            .await
            .unwrap();
        assert_eq!(root.describe(), "s3://b");
        assert_eq!(root.full_key("job/x"), "job/x");
    }
}
