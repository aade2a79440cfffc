//! Streaming upload with bounded memory: one PutObject for small bodies, else a multipart
//! upload with a capped number of parts in flight, aborted on any failure or cancellation.

use std::io;
use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use tokio::io::AsyncReadExt;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::S3Store;
use super::abort::AbortOnDrop;
use crate::store::{ByteReader, StoreError};

/// S3's limit on the number of parts of one upload.
const MAX_PARTS: i32 = 10_000;
/// Parts per size step: part sizes double after every this many parts, so 10,000 parts starting
/// at 8 MiB cover almost 8 TiB while small backups keep small parts.
const PARTS_PER_STEP: i32 = 1_000;
/// A single PutObject up to this size is a "small" request (`request_timeout`); a larger one
/// carries up to a part's worth of data and gets `part_timeout`.
const SMALL_PUT: u64 = 1024 * 1024;

/// Uploads `body` under `key` (a store key) and returns its length.
pub(super) async fn put(
    store: &S3Store,
    key: &str,
    mut body: ByteReader,
) -> Result<u64, StoreError> {
    let full = store.full_key(key);
    let source_error = |source: io::Error| StoreError::Source {
        key: key.to_string(),
        source,
    };

    // Read one byte past the first part before deciding: a body that fits in one part needs no
    // multipart upload, and a longer one has its first part sent while the second is read.
    let first_size = part_size(store.part_size, 1);
    let permit = buffer_permit(store).await;
    let mut first = read_part(&mut body, first_size + 1, Bytes::new())
        .await
        .map_err(source_error)?;
    if first.len() as u64 <= first_size {
        let stored = put_single(store, &full, first).await;
        drop(permit);
        return stored;
    }
    let carry = first.split_off(first_size as usize);

    let created = store
        .client
        .create_multipart_upload()
        .bucket(&store.bucket)
        .key(&full)
        .send()
        .await
        .map_err(|e| store.error("CreateMultipartUpload", &full, e))?;
    let Some(upload_id) = created.upload_id else {
        return Err(StoreError::S3 {
            operation: "CreateMultipartUpload",
            location: store.location(&full),
            status: None,
            code: None,
            source: "the store returned no upload id".into(),
        });
    };
    let guard = AbortOnDrop {
        store: store.clone(),
        key: full.clone(),
        upload_id: Some(upload_id.clone()),
    };

    let mut upload = Upload {
        store,
        key,
        full: &full,
        id: &upload_id,
        tasks: JoinSet::new(),
        done: Vec::new(),
    };
    let result = match upload.send_parts(first, permit, carry, &mut body).await {
        Ok(total) => upload.complete(total).await.map(|()| total),
        Err(e) => Err(e),
    };
    upload.tasks.shutdown().await;
    match result {
        Ok(total) => {
            guard.disarm();
            tracing::debug!(key = %full, bytes = total, "multipart upload complete");
            Ok(total)
        }
        Err(e) => {
            guard.abort().await;
            Err(e)
        }
    }
}

/// Waits until one more part buffer may exist (`S3Store::part_buffers`). Every holder frees
/// its permit on its own (a part upload completing, a read reaching its end), so waiting here
/// cannot deadlock.
async fn buffer_permit(store: &S3Store) -> OwnedSemaphorePermit {
    Arc::clone(&store.part_buffers)
        .acquire_owned()
        .await
        .expect("the part buffer semaphore is never closed")
}

/// The size of part `number` (1-based).
fn part_size(first: u64, number: i32) -> u64 {
    let step = (number - 1).max(0) / PARTS_PER_STEP;
    first
        .saturating_mul(1 << step.min(20))
        .min(super::MAX_PART_SIZE)
}

/// Reads until `size` bytes, `prefix` first, are buffered or the body ends.
///
/// The buffer is new and filled as the body arrives, never zeroed first: its pages are only
/// touched as data lands in them, so a part being filled holds what was read so far, a small
/// object costs its size rather than a part's, and a sent part's buffer goes back to the
/// system (with the mmap threshold `crate::malloc` fixes) instead of waiting, whole, for the
/// next part.
async fn read_part(body: &mut ByteReader, size: u64, prefix: Bytes) -> io::Result<Bytes> {
    let size = size as usize;
    let mut buf = Vec::with_capacity(size.max(prefix.len()));
    buf.extend_from_slice(&prefix);
    drop(prefix);
    while buf.len() < size {
        let mut rest = (&mut *body).take((size - buf.len()) as u64);
        match rest.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if buf.len() < buf.capacity() / 2 {
        buf.shrink_to_fit();
    }
    Ok(Bytes::from(buf))
}

async fn put_single(store: &S3Store, full: &str, data: Bytes) -> Result<u64, StoreError> {
    let len = data.len() as u64;
    let timeout = if len <= SMALL_PUT {
        store.timeouts.request
    } else {
        store.timeouts.part
    };
    store
        .client
        .put_object()
        .bucket(&store.bucket)
        .key(full)
        .content_length(len as i64)
        .body(ByteStream::from(data))
        .customize()
        .config_override(
            aws_sdk_s3::config::Builder::default().timeout_config(store.timeouts.sdk(timeout)),
        )
        .send()
        .await
        .map_err(|e| store.error_after("PutObject", full, timeout, e))?;
    Ok(len)
}

/// A part's outcome.
type PartResult = Result<CompletedPart, StoreError>;

/// One multipart upload in progress.
struct Upload<'a> {
    store: &'a S3Store,
    key: &'a str,
    full: &'a str,
    id: &'a str,
    tasks: JoinSet<PartResult>,
    done: Vec<CompletedPart>,
}

impl Upload<'_> {
    /// Uploads every part, at most `parts_in_flight` at a time, and returns the total size.
    /// `carry` is what was read past the first part: the start of the second.
    async fn send_parts(
        &mut self,
        first: Bytes,
        first_permit: OwnedSemaphorePermit,
        mut carry: Bytes,
        body: &mut ByteReader,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        let mut number = 1;
        let mut current = first;
        let mut permit = first_permit;
        loop {
            let full_part = current.len() as u64 == part_size(self.store.part_size, number);
            total += current.len() as u64;
            while self.tasks.len() >= self.store.parts_in_flight {
                self.join_one().await?;
            }
            self.spawn_part(number, current, permit);
            // Notice a failed part early instead of after reading the next one.
            while let Some(joined) = self.tasks.try_join_next() {
                self.finished(joined)?;
            }

            if !full_part {
                break; // a short part is the last one
            }
            permit = self.next_permit().await?;
            let next = read_part(
                body,
                part_size(self.store.part_size, number + 1),
                std::mem::take(&mut carry),
            )
            .await
            .map_err(|source| StoreError::Source {
                key: self.key.to_string(),
                source,
            })?;
            if next.is_empty() {
                break;
            }
            number += 1;
            if number > MAX_PARTS {
                return Err(StoreError::S3 {
                    operation: "UploadPart",
                    location: self.store.location(self.full),
                    status: None,
                    code: None,
                    source: format!(
                        "the object needs more than {MAX_PARTS} parts; raise the part size"
                    )
                    .into(),
                });
            }
            current = next;
        }
        while !self.tasks.is_empty() {
            self.join_one().await?;
        }
        Ok(total)
    }

    /// The permit for the next part's buffer. Parts that finish meanwhile are collected, so a
    /// failed one stops the upload without waiting for a permit first.
    async fn next_permit(&mut self) -> Result<OwnedSemaphorePermit, StoreError> {
        let store = self.store;
        loop {
            if self.tasks.is_empty() {
                return Ok(buffer_permit(store).await);
            }
            tokio::select! {
                permit = buffer_permit(store) => return Ok(permit),
                Some(joined) = self.tasks.join_next() => self.finished(joined)?,
            }
        }
    }

    /// Uploads one part on its own task, which holds the part's buffer and its permit until it
    /// ends.
    fn spawn_part(&mut self, number: i32, data: Bytes, permit: OwnedSemaphorePermit) {
        let store = self.store.clone();
        let full = self.full.to_string();
        let upload_id = self.id.to_string();
        self.tasks.spawn(async move {
            let len = data.len() as i64;
            let timeout = store.timeouts.part;
            let output = store
                .client
                .upload_part()
                .bucket(&store.bucket)
                .key(&full)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len)
                .body(ByteStream::from(data))
                .customize()
                .config_override(
                    aws_sdk_s3::config::Builder::default()
                        .timeout_config(store.timeouts.sdk(timeout)),
                )
                .send()
                .await
                .map_err(|e| store.error_after("UploadPart", &full, timeout, e))?;
            drop(permit);
            Ok(CompletedPart::builder()
                .part_number(number)
                .set_e_tag(output.e_tag)
                .build())
        });
    }

    async fn join_one(&mut self) -> Result<(), StoreError> {
        if let Some(joined) = self.tasks.join_next().await {
            self.finished(joined)?;
        }
        Ok(())
    }

    /// Records a part's outcome; a task that panicked or was cancelled counts as a failed part.
    fn finished(
        &mut self,
        joined: Result<PartResult, tokio::task::JoinError>,
    ) -> Result<(), StoreError> {
        let part = joined.unwrap_or_else(|e| {
            Err(StoreError::S3 {
                operation: "UploadPart",
                location: self.store.location(self.full),
                status: None,
                code: None,
                source: Box::new(e),
            })
        })?;
        self.done.push(part);
        Ok(())
    }

    async fn complete(&mut self, total: u64) -> Result<(), StoreError> {
        let parts = std::mem::take(&mut self.done);
        super::complete::complete(self.store, self.full, self.id, parts, total).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that hands out at most `step` bytes per read, as a network stream does.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = buf
                .remaining()
                .min(self.step)
                .min(self.data.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn parts_are_read_to_their_size_after_their_prefix_and_no_further() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let mut body: ByteReader = Box::pin(Trickle {
            data: data.clone(),
            at: 0,
            step: 7_000,
        });
        let first = read_part(&mut body, 60_000, Bytes::from_static(b"ab"))
            .await
            .unwrap();
        assert_eq!(first.len(), 60_000);
        assert_eq!(&first[..2], b"ab");
        assert_eq!(&first[2..], &data[..59_998]);
        let last = read_part(&mut body, 60_000, Bytes::new()).await.unwrap();
        assert_eq!(&last[..], &data[59_998..], "a short part is the rest");
        let after = read_part(&mut body, 60_000, Bytes::new()).await.unwrap();
        assert!(after.is_empty());
    }

    #[test]
    fn part_sizes_double_every_thousand_parts() {
        let mib = 1024 * 1024;
        assert_eq!(part_size(8 * mib, 1), 8 * mib);
        assert_eq!(part_size(8 * mib, 1000), 8 * mib);
        assert_eq!(part_size(8 * mib, 1001), 16 * mib);
        assert_eq!(part_size(8 * mib, 10_000), 4096 * mib);
        let total: u64 = (1..=MAX_PARTS).map(|n| part_size(8 * mib, n)).sum();
        assert!(
            total > 7 * 1024 * 1024 * mib,
            "10,000 parts cover {total} bytes"
        );
    }
}
