//! Downloads that survive transport faults: a GetObject body read with an idle timeout and,
//! after a reset, a stall or a body cut short, resumed with `Range` and `If-Match`, so that the
//! reader sees one continuous stream of the object's bytes.

use std::io;
use std::time::Duration;

use aws_sdk_s3::config::ResponseChecksumValidation;
use aws_sdk_s3::operation::get_object::GetObjectOutput;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use tokio_util::io::StreamReader;

use super::S3Store;
use crate::store::error::chain;
use crate::store::{BoxError, ByteReader, StoreError};

/// Resumes of one download at most, however much each one delivered: a store that cuts every
/// connection after a few bytes fails the read (after at most this many `read_timeout`s)
/// instead of crawling on for hours.
const MAX_RESUMES: u32 = 20;

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
enum BodyFault {
    #[error("the connection failed")]
    Transport(#[source] BoxError),
    #[error("timed out after {}s without receiving a byte", .0.as_secs_f64())]
    Idle(Duration),
    #[error("the body ended before the announced {0} bytes")]
    Truncated(u64),
}

/// Opens `full` (a full key) for reading. Errors are those of the first GetObject; faults after
/// it are handled by the reader.
pub(super) async fn open(store: &S3Store, full: String) -> Result<ByteReader, StoreError> {
    let output = request(store, &full, None).await?;
    let download = Download {
        store: store.clone(),
        size: output.content_length().and_then(|n| u64::try_from(n).ok()),
        etag: output.e_tag().map(str::to_string),
        full,
        offset: 0,
        skip: 0,
        body: Some(output.body),
        faults: 0,
        resumes: 0,
    };
    let stream = futures::stream::unfold(download, |mut download| async move {
        let item = download.next().await?;
        Some((item, download))
    });
    Ok(Box::pin(StreamReader::new(Box::pin(stream))))
}

/// One GetObject: the whole object, or the rest of it from `offset` if it still has `etag`.
async fn request(
    store: &S3Store,
    full: &str,
    resume: Option<(u64, &str)>,
) -> Result<GetObjectOutput, StoreError> {
    let mut get = store.client.get_object().bucket(&store.bucket).key(full);
    if let Some((offset, etag)) = resume {
        get = get.range(format!("bytes={offset}-")).if_match(etag);
    }
    get.customize()
        .config_override(
            aws_sdk_s3::config::Builder::default()
                .timeout_config(store.timeouts.sdk(store.timeouts.request))
                // The SDK can only check a whole object's checksum at its very end, where a
                // mismatch cannot be resumed; ranged responses have none. pgkeep checks every
                // object's sha256 itself.
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
        )
        .send()
        .await
        .map_err(|e| store.error("GetObject", full, e))
}

/// The state of one download.
struct Download {
    store: S3Store,
    full: String,
    /// ETag of the first response: a resumed request must get the same object.
    etag: Option<String>,
    /// Content-Length of the first response: the stream is complete at exactly this many bytes.
    size: Option<u64>,
    /// Bytes handed to the reader.
    offset: u64,
    /// Bytes to drop from the current body (a store that ignored the Range header).
    skip: u64,
    body: Option<ByteStream>,
    /// Faults since the last byte received.
    faults: u32,
    resumes: u32,
}

impl Download {
    /// The next chunk of the object, `None` at its end (or after an error was returned).
    async fn next(&mut self) -> Option<io::Result<Bytes>> {
        loop {
            let body = self.body.as_mut()?;
            let fault = match tokio::time::timeout(self.store.timeouts.read, body.next()).await {
                Ok(Some(Ok(bytes))) => match self.deliver(bytes) {
                    Ok(Some(bytes)) => return Some(Ok(bytes)),
                    Ok(None) => continue,
                    Err(e) => return Some(Err(self.fail(e))),
                },
                Ok(Some(Err(e))) => BodyFault::Transport(Box::new(e)),
                Ok(None) => match self.size {
                    Some(size) if self.offset < size => BodyFault::Truncated(size),
                    _ => {
                        self.body = None;
                        return None;
                    }
                },
                Err(_elapsed) => BodyFault::Idle(self.store.timeouts.read),
            };
            self.body = None;
            if self.size == Some(self.offset) {
                // Every announced byte arrived; the fault came after the last one.
                return None;
            }
            if let Err(e) = self.resume(fault).await {
                return Some(Err(self.fail(e)));
            }
        }
    }

    /// Accounts for a chunk received: `None` when nothing of it is for the reader.
    fn deliver(&mut self, mut bytes: Bytes) -> Result<Option<Bytes>, StoreError> {
        if self.skip > 0 {
            let n = self.skip.min(bytes.len() as u64);
            bytes = bytes.split_off(n as usize);
            self.skip -= n;
        }
        if bytes.is_empty() {
            return Ok(None);
        }
        self.offset += bytes.len() as u64;
        self.faults = 0;
        if let Some(size) = self.size
            && self.offset > size
        {
            return Err(self.protocol(format!(
                "the store sent more than the announced {size} bytes"
            )));
        }
        Ok(Some(bytes))
    }

    fn fail(&mut self, e: StoreError) -> io::Error {
        self.body = None;
        e.into_read_error()
    }

    /// Re-requests the rest of the object after `fault`, or says why it cannot.
    async fn resume(&mut self, fault: BodyFault) -> Result<(), StoreError> {
        self.faults += 1;
        self.resumes += 1;
        let Some(etag) = self.etag.clone() else {
            // Without an ETag a resumed request could get another object's bytes.
            return Err(self.interrupted(fault));
        };
        if self.faults > self.store.max_attempts || self.resumes > MAX_RESUMES {
            return Err(self.interrupted(fault));
        }
        tracing::info!(
            key = %self.full,
            offset = self.offset,
            fault = %chain(&fault),
            "resuming an interrupted download"
        );
        backoff(self.faults).await;
        let location = self.store.location(&self.full);
        let output = request(&self.store, &self.full, Some((self.offset, &etag)))
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. }
                | StoreError::S3 {
                    status: Some(412), ..
                } => StoreError::Changed {
                    location: location.clone(),
                },
                other => other,
            })?;
        if output.e_tag().is_some_and(|e| e != etag) {
            return Err(StoreError::Changed { location });
        }
        match output.content_range() {
            Some(range) => {
                let (start, total) = parse_content_range(range)
                    .ok_or_else(|| self.protocol(format!("unreadable Content-Range '{range}'")))?;
                if start != self.offset || self.size.is_some_and(|size| size != total) {
                    return Err(self.protocol(format!(
                        "asked for bytes={}-, the store sent '{range}'",
                        self.offset
                    )));
                }
            }
            // The whole object again: drop what the reader already has.
            None => self.skip = self.offset,
        }
        self.body = Some(output.body);
        Ok(())
    }

    fn interrupted(&self, fault: BodyFault) -> StoreError {
        StoreError::Interrupted {
            location: self.store.location(&self.full),
            offset: self.offset,
            size: self.size,
            source: Box::new(fault),
        }
    }

    fn protocol(&self, what: String) -> StoreError {
        StoreError::S3 {
            operation: "GetObject",
            location: self.store.location(&self.full),
            status: None,
            code: None,
            source: what.into(),
        }
    }
}

/// Waits before resuming: full jitter over 100 ms doubling per fault, at most 5 s.
async fn backoff(faults: u32) {
    let cap_ms = 100u64
        .saturating_mul(1 << faults.saturating_sub(1).min(6))
        .min(5_000);
    let wait = rand::random_range(0..=cap_ms);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// `(first byte, total size)` of a `Content-Range: bytes FIRST-LAST/TOTAL` header.
fn parse_content_range(value: &str) -> Option<(u64, u64)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (first, _last) = range.split_once('-')?;
    Some((first.trim().parse().ok()?, total.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some((100, 200)));
        assert_eq!(parse_content_range("bytes 0-0/1"), Some((0, 1)));
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes 5-9/*"), None);
    }

    #[test]
    fn faults_read_as_one_line() {
        let idle = BodyFault::Idle(Duration::from_secs(2));
        assert_eq!(
            idle.to_string(),
            "timed out after 2s without receiving a byte"
        );
        assert_eq!(
            BodyFault::Truncated(10).to_string(),
            "the body ended before the announced 10 bytes"
        );
    }
}
