//! Applying a dump backup: the verified, decoded pg_dump archive fed to `pg_restore`.

use tokio_util::io::SyncIoBridge;

use super::{RestoreError, RestorePlan};
use crate::codec::Compression;
use crate::source::{Running, SourceError, Tool};
use crate::store::ObjectStore;
use crate::transfer::{self, Expected};

/// Runs pg_restore for the plan and returns the archive's size.
pub(super) async fn apply(
    store: &dyn ObjectStore,
    plan: &RestorePlan,
) -> Result<u64, RestoreError> {
    let manifest = &plan.manifest;
    let object = &plan.object;
    let compression = Compression::from_manifest_name(&object.compression).ok_or_else(|| {
        RestoreError::Damaged(std::io::Error::other(format!(
            "object {} uses unknown compression '{}'",
            object.key, object.compression
        )))
    })?;
    let key = manifest.key_of(&object.key);
    let expected = Expected {
        key: key.clone(),
        stored_bytes: object.stored_bytes,
        sha256: object.sha256.clone(),
    };
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

    let mut args = vec![
        "--exit-on-error".to_string(),
        "--no-password".to_string(),
        format!("--dbname={}", dbname_conninfo(plan.target.dbname())),
    ];
    if plan.options.no_owner {
        args.push("--no-owner".to_string());
    }
    let env = plan.target.child_env();
    let jobs = plan.options.jobs.max(1);
    tracing::info!(backup = %manifest.id, target = %plan.target.describe(), jobs, "running pg_restore");

    if jobs == 1 {
        // One transaction, fed as a stream: a damaged object is noticed before the last bytes
        // reach pg_restore, which is then killed and its transaction rolled back.
        args.push("--single-transaction".to_string());
        let (running, stdin) = Running::spawn_writer("pg_restore", tool.command(&args, &env))?;
        let source = SyncIoBridge::new(store.get(&key).await?);
        let sink = SyncIoBridge::new(stdin);
        let raw = object.raw_bytes;
        let copied = tokio::task::spawn_blocking(move || {
            transfer::copy_verified(source, expected, compression, raw, sink)
        })
        .await
        .map_err(|e| RestoreError::Damaged(std::io::Error::other(e.to_string())))?;
        match copied {
            Ok(n) => {
                running.finish().await?;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                // pg_restore stopped reading: its own error is the one that matters.
                running.finish().await?;
                Err(RestoreError::Damaged(e))
            }
            Err(e) => {
                running.kill().await;
                Err(RestoreError::Damaged(e))
            }
        }
    } else {
        // Parallel pg_restore needs a seekable archive: stage it, fully verified, first.
        let dir = plan
            .options
            .staging_dir
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let staged = tempfile::Builder::new()
            .prefix("pgkeep-restore-")
            .suffix(".pgdump")
            .tempfile_in(&dir)
            .map_err(|e| staging_error(&dir, &e))?;
        let file = staged.reopen().map_err(|e| staging_error(&dir, &e))?;
        let source = SyncIoBridge::new(store.get(&key).await?);
        let raw = object.raw_bytes;
        let n = tokio::task::spawn_blocking(move || {
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
        args.push(format!("--jobs={jobs}"));
        args.push(staged.path().display().to_string());
        let running = Running::spawn_plain("pg_restore", tool.command(&args, &env))?;
        running.finish().await?;
        drop(staged);
        Ok(n)
    }
}

fn staging_error(dir: &std::path::Path, e: &std::io::Error) -> RestoreError {
    RestoreError::Source(SourceError::Spawn {
        program: format!("staging in {}", dir.display()),
        reason: e.to_string(),
    })
}

/// `dbname='...'`: a conninfo naming only the database, so any database name is taken
/// literally and no credential ever appears in pg_restore's argv.
fn dbname_conninfo(name: &str) -> String {
    format!(
        "dbname='{}'",
        name.replace('\\', "\\\\").replace('\'', "\\'")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dbname_conninfo_quotes() {
        assert_eq!(super::dbname_conninfo("a'b\\c"), "dbname='a\\'b\\\\c'");
    }
}
