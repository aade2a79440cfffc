//! Reading a backup's objects for a restore: verified staging of an archive to a local temp
//! file, reading one object as verified, decoded chunks, and locating pg_restore. A read that
//! fails because the store could not be read is reported as such, never as damage.

use std::path::Path;

use bytes::Bytes;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::RestoreError;
use crate::manifest::{Manifest, ObjectEntry, ObjectRole};
use crate::process::{Hint, Tool};
use crate::repository::Repository;
use crate::store::StoreError;
use crate::transfer::{self, Decoding};

/// How an object is read: its codec, and the identities when it is encrypted.
pub(super) fn decoding(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<Decoding, RestoreError> {
    repo.decoding(manifest, object).map_err(RestoreError::Repo)
}

/// pg_restore new enough for the backup's archive (a dump's, or an export's schema): the
/// major its header asks for, never older than the pg_dump the manifest records. Looked for
/// in the Debian layout, newest first, then on `PATH`.
pub(super) async fn pg_restore(
    repo: &Repository,
    manifest: &Manifest,
    bin_dir: Option<&std::path::Path>,
) -> Result<Tool, RestoreError> {
    let archive = manifest
        .object(&ObjectRole::Dump)
        .or_else(|| manifest.object(&ObjectRole::Schema));
    let (major, describe) = match archive {
        Some(object) => {
            let needs = repo.archive_needs(manifest, object).await;
            (needs.major, needs.describe)
        }
        None => (
            manifest.pg_dump_major(),
            format!("the backup (pg_dump {})", manifest.pg_dump_version),
        ),
    };
    let tool = Tool::locate("pg_restore", bin_dir, Some(major)).await?;
    let hint = if bin_dir.is_some() {
        Hint::PgBinDir
    } else {
        Hint::Path
    };
    tool.require_at_least(major, &describe, hint)?;
    tracing::debug!(backup = %manifest.id, pg_restore = %tool.path.display(), version = %tool.version, needed = major, "pg_restore chosen");
    Ok(tool)
}

/// What a failed read of an object means: the store's trouble (it could not be read; the
/// object may be intact), damage (its bytes are not the recorded ones), or a local failure.
pub(super) fn read_error(e: std::io::Error) -> RestoreError {
    if crate::error::wraps::<StoreError>(&e) {
        return RestoreError::Store(StoreError::from_read("", e));
    }
    match e.kind() {
        std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
            RestoreError::Damaged(e)
        }
        _ => RestoreError::Step(format!("reading a backup object: {e}")),
    }
}

/// Downloads, verifies and decodes `object` into a temp file in `dir` (for tools that need to
/// seek). Nothing is returned unless the whole object matched its manifest entry.
pub(super) async fn stage(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
    dir: &Path,
) -> Result<NamedTempFile, RestoreError> {
    let decoding = decoding(repo, manifest, object)?;
    let expected = Repository::expected(manifest, object);
    let staged = tempfile::Builder::new()
        .prefix("pgkeep-restore-")
        .tempfile_in(dir)
        .map_err(|e| staging_error(dir, &e))?;
    let file = staged.reopen().map_err(|e| staging_error(dir, &e))?;
    let source = SyncIoBridge::new(repo.read(manifest, object).await?);
    let raw = object.raw_bytes;
    let mut out = std::io::BufWriter::new(file);
    tokio::task::spawn_blocking(move || {
        transfer::copy_verified(source, expected, &decoding, raw, &mut out)
    })
    .await
    .map_err(|e| RestoreError::Step(format!("staging stopped: {e}")))?
    .map_err(|e| {
        if e.get_ref().is_none() && !matches!(e.kind(), std::io::ErrorKind::InvalidData) {
            staging_error(dir, &e)
        } else {
            read_error(e)
        }
    })?;
    Ok(staged)
}

fn staging_error(dir: &Path, e: &std::io::Error) -> RestoreError {
    RestoreError::Step(format!("staging in {}: {e}", dir.display()))
}

/// Streams an object's verified, decoded content as chunks. The last chunk is sent only
/// after the whole object matched its manifest entry; on damage (or a read that failed) the
/// channel ends with an error instead, so a consumer that commits on a clean end never commits
/// damaged data.
pub(super) async fn decoded_chunks(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<mpsc::Receiver<Result<Bytes, std::io::Error>>, RestoreError> {
    let decoding = decoding(repo, manifest, object)?;
    let expected = Repository::expected(manifest, object);
    let source = SyncIoBridge::new(repo.read(manifest, object).await?);
    let (tx, rx) = mpsc::channel(4);
    let raw = object.raw_bytes;
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone() };
        if let Err(e) = transfer::copy_verified(source, expected, &decoding, raw, sink) {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Ok(rx)
}

/// A `Write` that hands each buffer to an async consumer.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the load stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
