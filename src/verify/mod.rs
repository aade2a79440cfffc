//! Verification: re-reading every object of a backup, checking its size and sha256, decoding
//! it fully, and checking what its role promises (a pg_dump archive `pg_restore` can read,
//! the recorded row count of a table). Streaming, with bounded memory; every object is
//! checked even after damage is found, so one run reports all of it.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{self, Read, Write};
use std::path::Path;

use tokio_util::io::SyncIoBridge;

use crate::config::Config;
use crate::human;
use crate::manifest::{Manifest, ObjectEntry, ObjectRole};
use crate::process::{ChildError, Hint, Running, Tool};
use crate::repository::{ArchiveNeeds, RepoError, Repository};
use crate::store::StoreError;
use crate::transfer::{Decoding, Expected, Latch, VerifyingReader};

/// Size of the reads from the decoder.
const CHUNK: usize = 256 * 1024;

/// What is wrong with one object (or why it could not be checked).
#[derive(Debug, thiserror::Error)]
pub enum ObjectDamage {
    #[error("missing from the store")]
    Missing,
    /// The store could not be read (after its retries): the object may well be intact.
    #[error("cannot be read from the store (the object may be intact): {}", crate::error::report(.0))]
    Store(StoreError),
    /// Wrong size or sha256, or the read itself failed; the message names the object.
    #[error("{0}")]
    Stored(io::Error),
    #[error(
        "size and sha256 match the manifest, but it does not decode as {compression}: {reason}"
    )]
    Decode {
        compression: &'static str,
        reason: io::Error,
    },
    #[error("the manifest records an unknown compression '{0}'")]
    UnknownCompression(String),
    /// Size and sha256 are intact, but it cannot be decrypted (a wrong identity) or its age
    /// header is damaged.
    #[error("cannot be decrypted: {0}")]
    Decrypt(io::Error),
    #[error("decodes to {actual} bytes but the manifest records {expected}")]
    RawSize { actual: u64, expected: u64 },
    #[error("holds {actual} rows but the manifest records {expected}")]
    Rows { actual: u64, expected: u64 },
    #[error("the manifest records no row count for this table object")]
    NoRowCount,
    #[error("pg_restore --list cannot read the archive: {0}")]
    Archive(ChildError),
    #[error("cannot run pg_restore to check the archive: {0}")]
    NoTool(String),
}

/// The result of checking one object.
#[derive(Debug)]
pub struct ObjectCheck {
    /// The object's full store key (`<job>/<id>/<name>`).
    pub key: String,
    pub role: String,
    /// What was confirmed, or what is wrong.
    pub outcome: Result<String, ObjectDamage>,
}

impl ObjectCheck {
    pub fn is_ok(&self) -> bool {
        self.outcome.is_ok()
    }

    /// Whether its archive could not be checked for want of a pg_restore that reads it (the
    /// object is not known to be damaged).
    pub fn is_unchecked(&self) -> bool {
        matches!(self.outcome, Err(ObjectDamage::NoTool(_)))
    }

    /// Whether it could not be checked because the store could not be read.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self.outcome,
            Err(ObjectDamage::Store(_) | ObjectDamage::Decrypt(_))
        )
    }
}

impl fmt::Display for ObjectCheck {
    /// `ok       main/<id>/dump.pgdump.gz (dump: ...)` or `DAMAGED  <key> (role): why`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Ok(detail) => write!(f, "ok       {} ({}: {detail})", self.key, self.role),
            Err(e) => {
                // Messages of the size/sha256 check start by naming the object again.
                let why = e.to_string();
                let prefix = format!("object {} ", self.key);
                let why = why.strip_prefix(&prefix).unwrap_or(&why);
                let verdict = if self.is_unreadable() {
                    "UNREAD "
                } else if self.is_unchecked() {
                    "NOTOOL "
                } else {
                    "DAMAGED"
                };
                write!(f, "{verdict}  {} ({}): {why}", self.key, self.role)
            }
        }
    }
}

/// Damage found by a verification, or objects it could not read: exit code 1, naming each.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe_failure(.checked, .damaged, .unreadable, .unchecked))]
pub struct VerifyFailed {
    pub checked: usize,
    pub damaged: Vec<String>,
    /// Objects the store could not deliver: not known to be damaged.
    pub unreadable: Vec<String>,
    /// Archives no pg_restore here can read (too old, or none): not known to be damaged.
    pub unchecked: Vec<String>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // thiserror passes fields by reference
fn describe_failure(
    checked: &usize,
    damaged: &[String],
    unreadable: &[String],
    unchecked: &[String],
) -> String {
    let mut parts = Vec::new();
    if !damaged.is_empty() {
        parts.push(format!(
            "verify found damage in {} of {checked} objects: {}",
            damaged.len(),
            damaged.join(", ")
        ));
    }
    if !unreadable.is_empty() {
        parts.push(format!(
            "verify could not read {} of {checked} objects from the store (they may be intact; try again): {}",
            unreadable.len(),
            unreadable.join(", ")
        ));
    }
    if !unchecked.is_empty() {
        parts.push(format!(
            "verify could not check {} of {checked} objects, archives no pg_restore here reads (they may be intact; see the NOTOOL lines): {}",
            unchecked.len(),
            unchecked.join(", ")
        ));
    }
    parts.join("; ")
}

/// The backups a verification covers.
#[derive(Debug, Clone)]
pub enum Selection {
    /// These manifests (already resolved).
    Backups(Vec<Manifest>),
    /// Every committed backup in the store, of one job or of all; manifests that cannot be
    /// read are reported as damage rather than stopping the run.
    All { job: Option<String> },
}

/// Verifies the selected backups, writing one line per object to `out` as it is checked.
///
/// # Errors
/// `VerifyFailed` naming every damaged object (after checking all of them); store errors
/// when the backups cannot even be listed.
pub async fn verify(
    config: &Config,
    repo: &Repository,
    selection: Selection,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut tools = Tools::default();
    let mut checked = 0usize;
    let mut damaged = Vec::new();
    let mut unreadable = Vec::new();
    let mut unchecked = Vec::new();
    let mut backups = 0usize;
    let manifests = match selection {
        Selection::Backups(list) => list,
        Selection::All { job } => {
            let listing = repo.list(job.as_deref()).await?;
            for d in &listing.damaged {
                let _ = writeln!(
                    out,
                    "DAMAGED  {} (manifest): {}",
                    d.key,
                    crate::error::report(&d.error)
                );
                checked += 1;
                damaged.push(d.key.clone());
            }
            listing.backups
        }
    };
    if manifests.is_empty() && damaged.is_empty() {
        let _ = writeln!(out, "no committed backups in {}", repo.describe());
    }
    let progress = crate::progress::get();
    progress.phase("verify");
    progress.items(
        "objects",
        manifests.iter().map(|m| m.objects.len() as u64).sum(),
    );
    progress.expect_bytes(manifests.iter().map(Manifest::stored_bytes).sum());
    for m in manifests {
        backups += 1;
        let mut integrity = if m.checksum.is_some() {
            "manifest checksum ok".to_string()
        } else {
            "manifest written before pgkeep recorded its checksum: not checked".to_string()
        };
        if let Some(e) = &m.encryption {
            let _ = write!(
                integrity,
                "; encrypted ({}) to {}{}",
                e.scheme,
                e.recipients.join(", "),
                if repo.can_decode(&m) {
                    ""
                } else {
                    ": checking integrity only, give --identity to decode"
                }
            );
        }
        let _ = writeln!(
            out,
            "backup {} of job '{}' ({} objects, {} stored; {integrity})",
            m.id,
            m.job,
            m.objects.len(),
            human::bytes(m.stored_bytes())
        );
        let bin_dir = config
            .jobs
            .get(&m.job)
            .and_then(|j| j.pg_bin_dir.as_deref());
        let started_at = chrono::Utc::now();
        let (mut damaged_here, mut unreadable_here, mut unchecked_here) =
            (Vec::new(), Vec::new(), Vec::new());
        for object in &m.objects {
            let check = verify_object(repo, &m, object, bin_dir, &mut tools).await;
            let _ = writeln!(out, "{check}");
            let _ = out.flush();
            progress.item_done();
            checked += 1;
            if check.is_unreadable() {
                tracing::warn!(backup = %m.id, object = %check.key, "object could not be read");
                unreadable_here.push(check.key);
            } else if check.is_unchecked() {
                tracing::warn!(backup = %m.id, object = %check.key, "archive not checked: no pg_restore reads it");
                unchecked_here.push(check.key);
            } else if !check.is_ok() {
                tracing::warn!(backup = %m.id, object = %check.key, "damaged object");
                damaged_here.push(check.key);
            }
        }
        let mut errors = Vec::new();
        if !unreadable_here.is_empty() {
            errors.push(format!(
                "the store could not deliver {}",
                unreadable_here.join(", ")
            ));
        }
        if !unchecked_here.is_empty() {
            errors.push(format!(
                "no pg_restore here reads {}",
                unchecked_here.join(", ")
            ));
        }
        let error = (!errors.is_empty()).then(|| errors.join("; "));
        crate::catalog::record_verification(
            config,
            &m,
            started_at,
            &damaged_here,
            error.as_deref(),
        )
        .await;
        damaged.append(&mut damaged_here);
        unreadable.append(&mut unreadable_here);
        unchecked.append(&mut unchecked_here);
    }
    if !damaged.is_empty() || !unreadable.is_empty() || !unchecked.is_empty() {
        return Err(VerifyFailed {
            checked,
            damaged,
            unreadable,
            unchecked,
        }
        .into());
    }
    if backups > 0 {
        let _ = writeln!(
            out,
            "verified {checked} objects of {backups} backup{}: all intact",
            if backups == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

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
struct Decoded {
    raw: u64,
    lines: u64,
}

/// The blocking half: read the stored bytes through the size + sha256 check, decode them
/// (refusing more than `raw_bytes`), count newlines, and feed `archive` (pg_restore's stdin)
/// for as long as it reads.
fn decode(
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

#[cfg(test)]
mod tests;
