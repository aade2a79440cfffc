//! Restoring a dump backup: the verified, decoded pg_dump archive fed to `pg_restore`.

use tokio_util::io::SyncIoBridge;

use super::stage::{self, read_error};
use super::{RestoreError, RestorePlan};
use crate::manifest::ObjectEntry;
use crate::pg::Target;
use crate::process::Running;
use crate::repository::Repository;
use crate::transfer;

/// Runs pg_restore of `object` into `into` and returns the archive's size.
pub(super) async fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    object: &ObjectEntry,
    into: &Target,
) -> Result<u64, RestoreError> {
    let manifest = &plan.manifest;
    let mut args = vec![
        "--exit-on-error".to_string(),
        "--no-password".to_string(),
        format!("--dbname={}", dbname_conninfo(into.dbname())),
    ];
    if plan.no_owner {
        args.push("--no-owner".to_string());
    }
    let env = into.child_env();
    let jobs = plan.jobs.max(1);
    tracing::info!(backup = %manifest.id, target = %into.describe(), jobs, "running pg_restore");
    crate::progress::get().phase("pg_restore");

    if jobs == 1 {
        // One transaction, fed as a stream: a damaged object is noticed before the last bytes
        // reach pg_restore, which is then killed and its transaction rolled back.
        let decoding = stage::decoding(repo, manifest, object)?;
        let expected = Repository::expected(manifest, object);
        args.push("--single-transaction".to_string());
        let (running, stdin) = Running::spawn_writer("pg_restore", plan.tool.command(&args, &env))?;
        let source = SyncIoBridge::new(repo.read(manifest, object).await?);
        let sink = SyncIoBridge::new(stdin);
        let raw = object.raw_bytes;
        let copied = tokio::task::spawn_blocking(move || {
            transfer::copy_verified(source, expected, &decoding, raw, sink)
        })
        .await
        .map_err(|e| RestoreError::Step(format!("feeding pg_restore stopped: {e}")))?;
        match copied {
            Ok(n) => {
                running.finish().await?;
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                // pg_restore stopped reading: its own error is the one that matters.
                running.finish().await?;
                Err(read_error(e))
            }
            Err(e) => {
                running.kill().await;
                Err(read_error(e))
            }
        }
    } else {
        // Parallel pg_restore needs a seekable archive: stage it, fully verified, first.
        let staged = stage::stage(repo, manifest, object, &plan.staging_dir).await?;
        args.push(format!("--jobs={jobs}"));
        args.push(staged.path().display().to_string());
        Running::spawn_plain("pg_restore", plan.tool.command(&args, &env))?
            .finish()
            .await?;
        Ok(object.raw_bytes)
    }
}

/// `dbname='...'`: a conninfo naming only the database, so any database name is taken
/// literally and no credential ever appears in pg_restore's argv.
pub(super) fn dbname_conninfo(name: &str) -> String {
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
