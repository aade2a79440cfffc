//! Moving bytes between a stream and the store: compress + sha256 on the way in (on a
//! blocking thread, through a small bounded channel), verify + decompress on the way out.

use std::io::{self, Read, Write};

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::io::{StreamReader, SyncIoBridge};

mod blocks;
mod verified;

use blocks::compress_blocks;
pub use verified::{Decoding, Expected, Latch, VerifyingReader, copy_verified};

use crate::codec::Compression;
use crate::crypt::{Encrypting, Recipients};
use crate::process::ChildError;
use crate::store::{ObjectStore, StoreError};

/// Size of the chunks handed to the store, and of reads from the source.
const CHUNK: usize = 256 * 1024;
/// Chunks buffered between the compressor and the uploader: bounds memory, gives overlap.
const CHANNEL_DEPTH: usize = 4;

/// What was stored for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub raw_bytes: u64,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// Why an upload failed, by stage.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The producer of the data failed (pg_dump exited non-zero, was killed...).
    #[error(transparent)]
    Source(#[from] ChildError),
    #[error("the source produced no data")]
    Empty,
    #[error("reading the source failed")]
    Read(#[source] io::Error),
    #[error("compression failed")]
    Compress(#[source] io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl UploadError {
    /// Whether another attempt may succeed: only the store's transient trouble qualifies (a
    /// failed producer or bad data fails the same way again).
    pub fn is_retryable(&self) -> bool {
        matches!(self, UploadError::Store(e) if e.is_retryable())
    }
}

/// Compresses `input` with `compression` and stores it under `key`. The object is only
/// completed if `verdict` (typically: the producing process exited 0) succeeds and the input
/// was not empty (unless `allow_empty`); otherwise the upload is abandoned and nothing is
/// left under `key`.
///
/// # Errors
/// The first failing stage: a failed producer explains a broken store stream, except when the
/// producer died of SIGPIPE because the store side stopped reading first; then the store's
/// error is the cause and the producer's death only its echo.
pub async fn upload<R, V>(
    store: &dyn ObjectStore,
    key: &str,
    input: R,
    encoding: Encoding,
    allow_empty: bool,
    verdict: V,
) -> Result<Stored, UploadError>
where
    R: AsyncRead + Send + Unpin + 'static,
    V: Future<Output = Result<(), ChildError>>,
{
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let (verdict_tx, verdict_rx) = oneshot::channel::<bool>();
    let bridge = SyncIoBridge::new(input);
    let producer = tokio::task::spawn_blocking(move || {
        compress_stream(bridge, &encoding, allow_empty, &tx, verdict_rx)
    });
    let body = Box::pin(StreamReader::new(ReceiverStream::new(rx)));
    let put = store.put(key, body);
    let judge = async {
        let v = verdict.await;
        let _ = verdict_tx.send(v.is_ok());
        v
    };
    let (put_result, verdict_result) = tokio::join!(put, judge);
    let compressed = producer
        .await
        .unwrap_or_else(|e| Err(ProduceError::Io(io::Error::other(e.to_string()))));
    match (verdict_result, &put_result) {
        (Err(child), Err(store)) if child.died_of_broken_pipe() && !is_source_error(store) => {
            tracing::debug!(error = %child, "the producer died of SIGPIPE after the upload failed");
        }
        (Err(child), _) => return Err(UploadError::Source(child)),
        (Ok(()), _) => {}
    }
    let (raw_bytes, stored_bytes, sha256) = match compressed {
        Ok(v) => v,
        Err(ProduceError::Empty) => return Err(UploadError::Empty),
        Err(ProduceError::Read(e)) => return Err(UploadError::Read(e)),
        Err(ProduceError::Abandoned) => {
            return Err(put_result
                .err()
                .map_or(UploadError::Empty, UploadError::Store));
        }
        Err(ProduceError::Io(e)) => {
            // A closed channel means the store side gave up first: report its error.
            return Err(match put_result {
                Err(store) => UploadError::Store(store),
                Ok(_) => UploadError::Compress(e),
            });
        }
    };
    let stored = put_result?;
    if stored != stored_bytes {
        return Err(UploadError::Store(StoreError::Io {
            location: key.to_string(),
            source: io::Error::other(format!(
                "store accepted {stored} bytes but {stored_bytes} were sent"
            )),
        }));
    }
    Ok(Stored {
        raw_bytes,
        stored_bytes,
        sha256,
    })
}

/// Whether the store failed only because the data it was reading failed (not a cause of its own).
fn is_source_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Source { .. })
}

enum ProduceError {
    Empty,
    Read(io::Error),
    Abandoned,
    Io(io::Error),
}

/// How an object's bytes are encoded for storage: compressed, then (when recipients are
/// given) encrypted to them.
#[derive(Debug, Clone)]
pub struct Encoding {
    pub compression: Compression,
    pub encryption: Option<Recipients>,
}

/// Where the compressor writes: straight into the hashing chunk sink, or through age.
enum Sink {
    Plain(ChunkSink),
    Encrypted(Encrypting<ChunkSink>),
}

impl Sink {
    /// Ends the encryption, if any, and returns the chunk sink.
    fn finish(self) -> io::Result<ChunkSink> {
        match self {
            Sink::Plain(s) => Ok(s),
            Sink::Encrypted(e) => e.finish(),
        }
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(s) => s.write(data),
            Sink::Encrypted(e) => e.write(data),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(s) => s.flush(),
            Sink::Encrypted(e) => e.flush(),
        }
    }
}

/// The blocking half of `upload`: read, compress, encrypt, hash, hand chunks to the uploader.
fn compress_stream(
    mut input: impl Read,
    encoding: &Encoding,
    allow_empty: bool,
    tx: &mpsc::Sender<io::Result<Bytes>>,
    verdict: oneshot::Receiver<bool>,
) -> Result<(u64, u64, String), ProduceError> {
    let chunks = ChunkSink {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
        hasher: Sha256::new(),
        count: 0,
    };
    let fail = |e: io::Error| {
        let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        ProduceError::Io(e)
    };
    let mut sink = match &encoding.encryption {
        None => Sink::Plain(chunks),
        Some(recipients) => Sink::Encrypted(recipients.encrypt(chunks).map_err(fail)?),
    };
    let copied = match encoding.compression {
        Compression::None => copy_plain(&mut input, &mut sink),
        Compression::Gzip(_) | Compression::Zstd(_) => {
            compress_blocks(&mut input, encoding.compression, &mut sink)
        }
    };
    let raw = match copied {
        Ok(raw) => raw,
        Err(Failure::Read(e)) => {
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
            return Err(ProduceError::Read(e));
        }
        Err(Failure::Write(e)) => return Err(fail(e)),
    };
    // The stream ended; complete the object only if its producer says it ended well. Until
    // the channel ends cleanly the store holds no object, whatever was sent so far.
    if !verdict.blocking_recv().unwrap_or(false) {
        let _ = tx.blocking_send(Err(io::Error::other("source failed")));
        return Err(ProduceError::Abandoned);
    }
    if raw == 0 && !allow_empty {
        let _ = tx.blocking_send(Err(io::Error::other("source produced no data")));
        return Err(ProduceError::Empty);
    }
    let mut sink = sink.finish().map_err(fail)?;
    sink.send_buffered().map_err(fail)?;
    Ok((raw, sink.count, hex::encode(sink.hasher.finalize())))
}

/// Which side of the compressor failed.
pub(super) enum Failure {
    Read(io::Error),
    Write(io::Error),
}

fn copy_plain(input: &mut impl Read, sink: &mut impl Write) -> Result<u64, Failure> {
    let mut buf = vec![0u8; CHUNK];
    let mut raw = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Read(e)),
        };
        raw += n as u64;
        sink.write_all(&buf[..n]).map_err(Failure::Write)?;
    }
}

/// Collects compressed output into chunks, hashing and counting what will be stored.
struct ChunkSink {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    hasher: Sha256,
    count: u64,
}

impl ChunkSink {
    fn send_buffered(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.hasher.update(&chunk);
        self.count += chunk.len() as u64;
        crate::progress::get().bytes(chunk.len() as u64);
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send_buffered()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(compression: Compression) -> Decoding {
        Decoding {
            compression,
            decryption: None,
        }
    }

    fn stored(data: &[u8], c: Compression) -> (Vec<u8>, Expected) {
        let mut e = c.encoder(Vec::new());
        e.write_all(data).unwrap();
        let s = e.finish().unwrap();
        let exp = Expected {
            key: "k".into(),
            stored_bytes: s.len() as u64,
            sha256: hex::encode(Sha256::digest(&s)),
        };
        (s, exp)
    }

    #[test]
    fn copy_verified_passes_good_data_through() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        let (s, exp) = stored(&data, Compression::Gzip(1));
        let mut out = Vec::new();
        copy_verified(
            &s[..],
            exp,
            &plain(Compression::Gzip(1)),
            data.len() as u64,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn copy_verified_withholds_the_tail_of_a_damaged_object() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 97) as u8).collect();
        let (mut s, exp) = stored(&data, Compression::None);
        let last = s.len() - 1;
        s[last] ^= 1;
        let mut out = Vec::new();
        let err = copy_verified(
            &s[..],
            exp,
            &plain(Compression::None),
            data.len() as u64,
            &mut out,
        )
        .unwrap_err();
        assert!(err.to_string().contains("damaged"), "{err}");
        assert!(out.len() < data.len(), "the tail must be held back");
    }

    #[test]
    fn verifying_reader_rejects_truncation() {
        let (s, exp) = stored(b"hello world", Compression::None);
        let mut r = VerifyingReader::new(&s[..5], exp);
        let mut out = Vec::new();
        assert!(r.read_to_end(&mut out).is_err());
    }
}
