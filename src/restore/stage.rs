//! Shared restore steps: verified staging of an archive to a local temp file, locating
//! pg_restore, and reading one object as verified, decoded chunks.

use std::path::Path;

use bytes::Bytes;
use tempfile::NamedTempFile;
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

use super::{RestoreError, RestorePlan};
use crate::codec::Compression;
use crate::manifest::{Manifest, ObjectEntry};
use crate::source::{SourceError, Tool};
use crate::store::ObjectStore;
use crate::transfer::{self, Expected};

/// The codec and verification data of an object.
pub(super) fn expectations(
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<(Compression, Expected), RestoreError> {
    let compression = Compression::from_manifest_name(&object.compression).ok_or_else(|| {
        RestoreError::Damaged(std::io::Error::other(format!(
            "object {} uses unknown compression '{}'",
            object.key, object.compression
        )))
    })?;
    let expected = Expected {
        key: manifest.key_of(&object.key),
        stored_bytes: object.stored_bytes,
        sha256: object.sha256.clone(),
    };
    Ok((compression, expected))
}

/// pg_restore at least as new as the pg_dump that wrote the backup.
pub(super) async fn pg_restore(manifest: &Manifest) -> Result<Tool, RestoreError> {
    let dump_major = manifest
        .pg_dump_version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    let tool = Tool::locate(
        "pg_restore",
        None,
        Some(dump_major.max(manifest.server_version_num / 10000)),
    )
    .await?;
    tool.require_at_least(dump_major, &manifest.pg_dump_version)?;
    Ok(tool)
}

/// Downloads, verifies and decodes `object` into a temp file (for tools that need to seek).
/// Nothing is returned unless the whole object matched its manifest entry.
pub(super) async fn stage(
    store: &dyn ObjectStore,
    plan: &RestorePlan,
    object: &ObjectEntry,
) -> Result<NamedTempFile, RestoreError> {
    let (compression, expected) = expectations(&plan.manifest, object)?;
    let dir = plan
        .options
        .staging_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);
    let staged = tempfile::Builder::new()
        .prefix("pgkeep-restore-")
        .tempfile_in(&dir)
        .map_err(|e| staging_error(&dir, &e))?;
    let file = staged.reopen().map_err(|e| staging_error(&dir, &e))?;
    let source = SyncIoBridge::new(store.get(&expected.key).await?);
    let raw = object.raw_bytes;
    tokio::task::spawn_blocking(move || {
        transfer::copy_verified(
            source,
            expected,
            compression,
            raw,
            std::io::BufWriter::new(file),
        )
    })
    .await
    .map_err(|e| RestoreError::Damaged(std::io::Error::other(e.to_string())))?
    .map_err(RestoreError::Damaged)?;
    Ok(staged)
}

fn staging_error(dir: &Path, e: &std::io::Error) -> RestoreError {
    RestoreError::Source(SourceError::Spawn {
        program: format!("staging in {}", dir.display()),
        reason: e.to_string(),
    })
}

/// Streams an object's verified, decoded content as chunks. The last chunk is sent only
/// after the whole object matched its manifest entry; on damage the channel ends with an
/// error instead, so a consumer that commits on a clean end never commits damaged data.
pub(super) async fn decoded_chunks(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<mpsc::Receiver<Result<Bytes, std::io::Error>>, RestoreError> {
    let (compression, expected) = expectations(manifest, object)?;
    let source = SyncIoBridge::new(store.get(&expected.key).await?);
    let (tx, rx) = mpsc::channel(4);
    let raw = object.raw_bytes;
    tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter { tx: tx.clone() };
        if let Err(e) = transfer::copy_verified(source, expected, compression, raw, sink) {
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
