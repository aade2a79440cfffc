//! Verification: re-reading every object of a backup, checking its size and sha256, decoding
//! it fully, and checking what its role promises (a pg_dump archive `pg_restore` can read,
//! the recorded row count of a table). Streaming, with bounded memory; every object is
//! checked even after damage is found, so one run reports all of it.

use std::fmt::{self, Write as _};
use std::io::{self, Write};

use crate::config::Config;
use crate::human;
use crate::manifest::Manifest;
use crate::process::ChildError;
use crate::repository::Repository;
use crate::store::StoreError;

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

mod object;

pub use object::{Tools, verify_object};

#[cfg(test)]
mod tests;
