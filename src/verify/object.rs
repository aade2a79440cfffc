//! Checking one object of a backup: its stored bytes against the manifest (size, sha256), then
//! decoded in full (decrypted, decompressed) to its recorded size, then what its role promises:
//! an archive `pg_restore --list` reads (with a pg_restore new enough for it), a table's row
//! count. Without an identity, encrypted objects are checked for integrity only.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::path::Path;

use tokio_util::io::SyncIoBridge;

use super::{CHUNK, ObjectCheck, ObjectDamage};
use crate::human;
use crate::manifest::{Manifest, ObjectEntry, ObjectRole};
use crate::process::{Hint, Running, Tool};
use crate::repository::{ArchiveNeeds, RepoError, Repository};
use crate::store::StoreError;
use crate::transfer::{Decoding, Expected, Latch, VerifyingReader};

/// pg_restore per major version, located once per run.
#[derive(Debug, Default)]
pub struct Tools(HashMap<u32, Result<Tool, String>>);

impl Tools {
    async fn pg_restore(
        &mut self,
        bin_dir: Option<&Path>,
        needs: &ArchiveNeeds,
    ) -> Result<Tool, String> {
        let major = needs.major;
        let tool = if let Some(found) = self.0.get(&major) {
            found.clone()?
        } else {
            let found = Tool::locate("pg_restore", bin_dir, Some(major))
                .await
                .map_err(|e| e.to_string());
            self.0.insert(major, found.clone());
            found?
        };
        tool.require_at_least(major, &needs.describe, Hint::PgBinDir)
            .map_err(|e| e.to_string())?;
        Ok(tool)
    }
}

/// Checks one object of `manifest`; never fails, the outcome says what was found.
pub async fn verify_object(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
    bin_dir: Option<&Path>,
    tools: &mut Tools,
) -> ObjectCheck {
    let key = Repository::object_key(manifest, object);
    let outcome = check(repo, manifest, object, bin_dir, tools).await;
    ObjectCheck {
        key,
        role: object.role.to_string(),
        outcome,
    }
}

async fn check(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
    bin_dir: Option<&Path>,
    tools: &mut Tools,
) -> Result<String, ObjectDamage> {
    let decoding = match repo.decoding(manifest, object) {
        Ok(d) => d,
        // Encrypted, and no identity: the stored bytes can still be proven intact.
        Err(RepoError::Locked { .. }) => return integrity_only(repo, manifest, object).await,
        Err(_) => {
            return Err(ObjectDamage::UnknownCompression(
                object.compression.to_string(),
            ));
        }
    };
    let is_archive = matches!(object.role, ObjectRole::Dump | ObjectRole::Schema);
    let rows = if object.role == ObjectRole::Table {
        Some(object.rows.ok_or(ObjectDamage::NoRowCount)?)
    } else {
        None
    };
    let reader = match repo.read(manifest, object).await {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) => return Err(ObjectDamage::Missing),
        Err(e) => return Err(ObjectDamage::Store(e)),
    };
    let mut archive = None;
    let mut tool_version = String::new();
    if is_archive {
        let needs = repo.archive_needs(manifest, object).await;
        let tool = tools
            .pg_restore(bin_dir, &needs)
            .await
            .map_err(ObjectDamage::NoTool)?;
        tool_version.clone_from(&tool.version);
        let (running, stdin) =
            Running::spawn_writer("pg_restore --list", tool.command(&["--list".into()], &[]))
                .map_err(|e| ObjectDamage::NoTool(e.to_string()))?;
        archive = Some((running, SyncIoBridge::new(stdin)));
    }
    let (running, sink) = match archive {
        Some((r, s)) => (Some(r), Some(s)),
        None => (None, None),
    };
    let expected = Repository::expected(manifest, object);
    let source = SyncIoBridge::new(reader);
    let raw_bytes = object.raw_bytes;
    let count_lines = rows.is_some();
    let decoded = tokio::task::spawn_blocking(move || {
        decode(source, expected, &decoding, raw_bytes, count_lines, sink)
    })
    .await
    .unwrap_or_else(|e| Err(ObjectDamage::Stored(io::Error::other(e.to_string()))));
    let decoded = match decoded {
        Ok(d) => d,
        Err(e) => {
            if let Some(r) = running {
                r.kill().await;
            }
            return Err(e);
        }
    };
    if let Some(r) = running {
        r.finish().await.map_err(ObjectDamage::Archive)?;
    }
    if decoded.raw != raw_bytes {
        return Err(ObjectDamage::RawSize {
            actual: decoded.raw,
            expected: raw_bytes,
        });
    }
    if let Some(expected) = rows
        && decoded.lines != expected
    {
        return Err(ObjectDamage::Rows {
            actual: decoded.lines,
            expected,
        });
    }
    let size = human::bytes(raw_bytes);
    Ok(match object.role {
        ObjectRole::Dump | ObjectRole::Schema => {
            format!("{size} decoded, pg_restore {tool_version} reads the archive")
        }
        ObjectRole::Table => format!("{size} decoded, {} rows", decoded.lines),
        _ => format!("{size} decoded"),
    })
}

/// A failure below the decoder: the store's own (the object could not be read, it may be
/// intact) or the stored bytes' (size, sha256).
fn below(e: io::Error) -> ObjectDamage {
    if crate::error::wraps::<StoreError>(&e) {
        ObjectDamage::Store(StoreError::from_read("", e))
    } else {
        ObjectDamage::Stored(e)
    }
}

/// The size and sha256 of an encrypted object, read without an identity: its integrity, not
/// its content.
async fn integrity_only(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<String, ObjectDamage> {
    let reader = match repo.read(manifest, object).await {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) => return Err(ObjectDamage::Missing),
        Err(e) => return Err(ObjectDamage::Store(e)),
    };
    let expected = Repository::expected(manifest, object);
    let source = SyncIoBridge::new(reader);
    tokio::task::spawn_blocking(move || VerifyingReader::new(source, expected).finish())
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())))
        .map_err(below)?;
    Ok(format!(
        "{} stored, size and sha256 intact; encrypted, not decoded (no identity given)",
        human::bytes(object.stored_bytes)
    ))
}

/// What decoding an object found.
pub(super) struct Decoded {
    pub(super) raw: u64,
    pub(super) lines: u64,
}

/// The blocking half: read the stored bytes through the size + sha256 check, decode them
/// (refusing more than `raw_bytes`), count newlines, and feed `archive` (pg_restore's stdin)
/// for as long as it reads.
pub(super) fn decode(
    stored: impl Read,
    expected: Expected,
    decoding: &Decoding,
    raw_bytes: u64,
    count_lines: bool,
    mut archive: Option<impl Write>,
) -> Result<Decoded, ObjectDamage> {
    let compression = decoding.compression;
    let mut verifier = VerifyingReader::new(stored, expected);
    let mut latch = Latch::new(&mut verifier);
    let failed = latch.flag();
    let mut raw = 0u64;
    let mut lines = 0u64;
    let mut undecryptable = None;
    let decoded: io::Result<()> = 'decoding: {
        let plain = match decoding.open(&mut latch) {
            Ok(plain) => plain,
            Err(e) if failed.load(std::sync::atomic::Ordering::Relaxed) => break 'decoding Err(e),
            Err(e) => {
                undecryptable = Some(e);
                break 'decoding Ok(());
            }
        };
        let mut decoder = compression.decoder(plain, raw_bytes);
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match decoder.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => break Err(e),
            };
            raw += n as u64;
            if count_lines {
                // Decoding is several times slower than this loop, which the compiler
                // vectorizes: not worth a dependency.
                #[allow(clippy::naive_bytecount)]
                let newlines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                lines += newlines as u64;
            }
            if let Some(w) = archive.as_mut()
                && w.write_all(&buf[..n]).is_err()
            {
                // pg_restore --list stops once it has read the table of contents; its exit
                // status says whether it could. The rest is still decoded and checked.
                archive = None;
            }
        }
    };
    let stored_failed = failed.load(std::sync::atomic::Ordering::Relaxed);
    if let Some(e) = undecryptable {
        // Intact as stored (checked first), yet not readable with the identities given.
        verifier.finish().map_err(below)?;
        return Err(ObjectDamage::Decrypt(e));
    }
    match decoded {
        // The size/sha256 check (or the read) failed: that is the cause.
        Err(e) if stored_failed => return Err(below(e)),
        // Decoding failed first: damaged stored bytes explain that, so check them.
        Err(reason) => {
            verifier.finish().map_err(below)?;
            return Err(ObjectDamage::Decode {
                compression: compression.name(),
                reason,
            });
        }
        Ok(()) => verifier.finish().map_err(below)?,
    }
    if let Some(mut w) = archive {
        let _ = w.flush();
    }
    Ok(Decoded { raw, lines })
}
