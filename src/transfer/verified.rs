//! The reading side: a stored object checked against its manifest entry (size and sha256) as
//! it streams, decoded (decrypted, decompressed) behind that check, with the final bytes held
//! back until the whole object proved intact.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use super::CHUNK;
use crate::codec::Compression;
use crate::crypt::Identities;

/// What a manifest promises about a stored object, checked while it is read back.
#[derive(Debug, Clone)]
pub struct Expected {
    pub key: String,
    pub stored_bytes: u64,
    pub sha256: String,
}

/// Reads a stored object and checks, at its end, that its size and sha256 are the recorded
/// ones: the end of the stream is reported only after the check passed, so consumers never
/// see a clean EOF from a damaged object.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    expected: Expected,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Expected) -> Self {
        VerifyingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            expected,
            done: false,
        }
    }

    /// Reads to the end (if the consumer stopped early) and performs the check.
    ///
    /// # Errors
    /// `InvalidData` naming the object on a size or checksum mismatch.
    pub fn finish(&mut self) -> io::Result<()> {
        let mut sink = vec![0u8; 64 * 1024];
        while !self.done {
            let _ = self.read(&mut sink)?;
        }
        Ok(())
    }

    fn check(&mut self) -> io::Result<()> {
        let digest = hex::encode(std::mem::take(&mut self.hasher).finalize());
        if self.count != self.expected.stored_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "object {} is {} bytes but its manifest records {}",
                    self.expected.key, self.count, self.expected.stored_bytes
                ),
            ));
        }
        if digest != self.expected.sha256 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "object {} is damaged: sha256 {digest} does not match the manifest's {}",
                    self.expected.key, self.expected.sha256
                ),
            ));
        }
        Ok(())
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.check()?;
            self.done = true;
            return Ok(0);
        }
        self.count += n as u64;
        crate::progress::get().bytes(n as u64);
        if self.count > self.expected.stored_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "object {} is longer than the {} bytes its manifest records",
                    self.expected.key, self.expected.stored_bytes
                ),
            ));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Copies the decoded content of a verified object into `out`, holding back the final bytes
/// until the whole object has been checked. A consumer such as `pg_restore` therefore cannot
/// finish (and commit) on data that later turns out to be damaged.
///
/// # Errors
/// Any read, verification, decode or write error; the held-back tail is then never written.
/// Damage (size, sha256, decoding) is `InvalidData` naming the object; a failure of the stored
/// reader itself (the store could not be read) is passed on as it came, so it is never taken
/// for damage.
pub fn copy_verified(
    stored: impl Read,
    expected: Expected,
    decoding: &Decoding,
    raw_bytes: u64,
    mut out: impl Write,
) -> io::Result<u64> {
    const HOLD: usize = 64 * 1024;
    let key = expected.key.clone();
    let damaged = |e: io::Error| {
        if e.to_string().contains(&key) || e.kind() == io::ErrorKind::PermissionDenied {
            e
        } else {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("object {key} is damaged: {e}"),
            )
        }
    };
    let mut verifier = VerifyingReader::new(stored, expected);
    let mut written = 0u64;
    let mut pending: Vec<u8> = Vec::with_capacity(CHUNK + HOLD);
    {
        let mut latch = Latch::new(&mut verifier);
        let failed = latch.flag();
        let below = move || failed.load(std::sync::atomic::Ordering::Relaxed);
        let plain = match decoding.open(&mut latch) {
            Ok(plain) => plain,
            Err(e) => return Err(if below() { e } else { damaged(e) }),
        };
        let mut decoder = decoding.compression.decoder(plain, raw_bytes);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    drop(decoder);
                    return Err(if below() { e } else { damaged(e) });
                }
            };
            pending.extend_from_slice(&buf[..n]);
            if pending.len() > HOLD {
                let release = pending.len() - HOLD;
                out.write_all(&pending[..release])?;
                written += release as u64;
                pending.drain(..release);
            }
        }
    }
    verifier.finish()?;
    if written + pending.len() as u64 != raw_bytes {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "object {key} is damaged: it decodes to {} bytes but the manifest records {raw_bytes}",
                written + pending.len() as u64
            ),
        ));
    }
    out.write_all(&pending)?;
    out.flush()?;
    Ok(written + pending.len() as u64)
}

/// How to read an object back: decrypted with these identities when it is encrypted (to the
/// recipients named, for messages), then decompressed.
#[derive(Debug, Clone)]
pub struct Decoding {
    pub compression: Compression,
    pub decryption: Option<(Identities, Vec<String>)>,
}

impl Decoding {
    /// The plain (compressed) stream of `stored`.
    ///
    /// # Errors
    /// `InvalidData` when no identity fits or the age header is damaged; the stored reader's
    /// own error when it fails.
    pub fn open<'r>(&self, stored: impl Read + 'r) -> io::Result<Box<dyn Read + 'r>> {
        match &self.decryption {
            None => Ok(Box::new(stored)),
            Some((identities, needed)) => identities.decrypt(stored, needed).map_err(|e| {
                match e {
                    crate::crypt::CryptError::Header(age::DecryptError::Io(io)) => io,
                    // Not damage: the wrong key.
                    e @ crate::crypt::CryptError::NoMatchingKey { .. } => {
                        io::Error::new(io::ErrorKind::PermissionDenied, e)
                    }
                    other => io::Error::new(io::ErrorKind::InvalidData, other),
                }
            }),
        }
    }
}

/// Remembers whether the reader below a decoder failed, to tell a stored-bytes problem (size,
/// sha256, or the store's own read error) from a decoding one. The flag is shared, so it can
/// be read while the decoder still borrows the latch.
pub struct Latch<R> {
    inner: R,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R> Latch<R> {
    pub fn new(inner: R) -> Self {
        Latch {
            inner,
            failed: std::sync::Arc::default(),
        }
    }

    /// A handle on the flag that stays readable while the latch is borrowed.
    pub fn flag(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        std::sync::Arc::clone(&self.failed)
    }
}

impl<R: Read> Read for Latch<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = self.inner.read(buf);
        if r.is_err() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        r
    }
}
