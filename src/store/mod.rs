//! Object storage: the narrow `ObjectStore` trait and its local-directory and S3 implementations.

mod error;
mod local;
mod read;
mod s3;

use std::fmt;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncRead;

pub use error::{BoxError, StoreError, store_error_of};
pub use local::LocalStore;
pub use s3::{S3Store, SdkCause};

/// How to reach an S3-compatible store. Credentials always come from the standard AWS chain
/// (environment, shared files, instance or container roles), never from pgkeep's own config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Custom endpoint for S3-compatible stores (`http://127.0.0.1:3900`); `None` means AWS.
    pub endpoint: Option<String>,
    /// Signing region; `None` falls back to the AWS chain, then `us-east-1`.
    pub region: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`) instead of virtual-host style.
    pub force_path_style: bool,
    /// Send the SDK's optional request checksums; some stores (R2, B2) reject them.
    pub request_checksums: bool,
    /// First multipart part size in bytes (at least 5 MiB); later parts grow so that
    /// a stream of several TiB stays under 10,000 parts.
    pub part_size: u64,
    /// Part buffers, being filled or uploading, at once across all uploads of the store (at
    /// least 2); memory use is at most about `parts_in_flight * part size`.
    pub parts_in_flight: usize,
    /// Attempts per request, the first included, for transient errors (5xx, throttling, resets,
    /// timeouts); also how many times in a row a download is resumed after a fault mid-body.
    pub max_attempts: u32,
    /// Longest wait for a TCP (and TLS) connection to the store.
    pub connect_timeout: Duration,
    /// Longest one attempt of a request may take, other than part uploads and the transfer of a
    /// download's body: head, list, delete, create/complete/abort an upload, put a small object.
    pub request_timeout: Duration,
    /// Longest one attempt of one part upload (or of a single PutObject larger than 1 MiB) may
    /// take; sized for multi-GB parts on a slow link.
    pub part_timeout: Duration,
    /// Longest a download may go without receiving a byte before it is resumed.
    pub read_timeout: Duration,
}

impl Default for S3Settings {
    fn default() -> Self {
        S3Settings {
            endpoint: None,
            region: None,
            force_path_style: false,
            request_checksums: true,
            part_size: 8 * 1024 * 1024,
            parts_in_flight: 4,
            max_attempts: 5,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_mins(1),
            part_timeout: Duration::from_mins(10),
            read_timeout: Duration::from_mins(1),
        }
    }
}

/// A readable byte stream, as handed to `put` and returned by `get`.
pub type ByteReader = Pin<Box<dyn AsyncRead + Send>>;

/// What a listing or a `head` reports about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full key, relative to the store's root (its prefix is not included).
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, when the store reports one.
    pub last_modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// A place where backups live. Keys are `/`-separated paths relative to the store's root;
/// implementations map them onto their own prefix.
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug {
    /// Stores the whole of `body` under `key` and returns the number of bytes stored.
    ///
    /// The object becomes visible only once complete: if `body` fails, or the upload fails,
    /// nothing is left under `key` (a multipart upload is aborted, a temp file removed).
    async fn put(&self, key: &str, body: ByteReader) -> Result<u64, StoreError>;

    /// Opens the object for streaming reads.
    ///
    /// The reader's errors wrap a `StoreError` (see [`store_error_of`]) when the store could not
    /// deliver the bytes: a failed read is then never mistaken for damaged content. S3 downloads
    /// resume after transient faults mid-body, so the reader yields one continuous stream.
    async fn get(&self, key: &str) -> Result<ByteReader, StoreError>;

    /// The object's metadata, or `None` when there is no object under `key`.
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError>;

    /// Every object whose key starts with `prefix`, in lexicographic key order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError>;

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Checks, before a run stores anything, that the store can be used at all (the bucket
    /// exists and answers, the directory can be created), so a misconfiguration fails fast.
    async fn preflight(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Removes uploads under `prefix` that were started before `older_than` and never
    /// finished, as a process killed mid-upload leaves them: S3 multipart uploads are aborted
    /// (their parts are stored, and billed, until then), local temp files deleted. Returns how
    /// many were removed, or `None` when the store cannot list them (some S3-compatible
    /// servers do not implement ListMultipartUploads).
    async fn remove_stale_uploads(
        &self,
        prefix: &str,
        older_than: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<usize>, StoreError> {
        let _ = (prefix, older_than);
        Ok(Some(0))
    }

    /// A human-readable location for messages (`file:///var/lib/pgkeep`, `s3://bucket/prefix`).
    fn describe(&self) -> String;
}

/// Opens the store named by a storage URL: `file://PATH` or `s3://BUCKET[/PREFIX]`.
///
/// # Errors
/// `StoreError::InvalidUrl` for an unknown scheme or a malformed URL.
pub async fn open(url: &str, s3: &S3Settings) -> Result<Box<dyn ObjectStore>, StoreError> {
    if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_string(),
                reason: "no directory after file://".into(),
            });
        }
        return Ok(Box::new(LocalStore::new(path)));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b, p.trim_matches('/')),
            None => (rest, ""),
        };
        if bucket.is_empty() {
            return Err(StoreError::InvalidUrl {
                url: url.to_string(),
                reason: "no bucket after s3://".into(),
            });
        }
        return Ok(Box::new(S3Store::new(bucket, prefix, s3).await?));
    }
    Err(StoreError::InvalidUrl {
        url: url.to_string(),
        reason: "the scheme must be file:// or s3://".into(),
    })
}
