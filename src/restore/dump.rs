//! Restoring a dump backup: the verified, decoded pg_dump archive fed to `pg_restore`
//! (through a `--use-list` for a selective restore), and reading the archive's table of
//! contents for the plan.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::AsyncReadExt as _;
use tokio_util::io::SyncIoBridge;

use super::schema::dbname_conninfo;
use super::stage::{self, read_error};
use super::{RestoreError, RestorePlan};
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::Target;
use crate::process::{Running, Tool};
use crate::repository::Repository;
use crate::transfer;

/// `pg_restore --list --verbose` of a dump object, read from the head of the decoded archive
/// (where a custom-format archive keeps its table of contents) without staging it. The rest
/// of the object is not read, unless pg_restore fails: the object is then read to its end to
/// tell damage (named as such) from an archive pg_restore cannot read.
pub(super) async fn read_toc(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
    tool: &Tool,
) -> Result<String, RestoreError> {
    let decoding = stage::decoding(repo, manifest, object)?;
    let expected = Repository::expected(manifest, object);
    let args = ["--list", "--verbose"].map(String::from);
    let (running, stdin, stdout) = Running::spawn_filter("pg_restore", tool.command(&args, &[]))?;
    let source = SyncIoBridge::new(repo.read(manifest, object).await?);
    let sink = SyncIoBridge::new(stdin);
    let raw = object.raw_bytes;
    let feeding = tokio::task::spawn_blocking(move || {
        transfer::copy_verified(source, expected, &decoding, raw, sink)
    });
    let mut listing = Vec::new();
    let mut stdout = stdout;
    let read = stdout.read_to_end(&mut listing).await;
    let listed = running.finish().await;
    let fed = feeding
        .await
        .map_err(|e| RestoreError::Step(format!("reading the archive's contents stopped: {e}")))?;
    match fed {
        // pg_restore stops reading once it has the table of contents.
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(read_error(e)),
    }
    if let Err(e) = listed {
        check_whole(repo, manifest, object).await?;
        return Err(e.into());
    }
    read.map_err(|e| RestoreError::Step(format!("reading pg_restore --list: {e}")))?;
    Ok(String::from_utf8_lossy(&listing).into_owned())
}

/// Reads `object` to its end, verified and decoded, and discards it.
async fn check_whole(
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<(), RestoreError> {
    let decoding = stage::decoding(repo, manifest, object)?;
    let expected = Repository::expected(manifest, object);
    let source = SyncIoBridge::new(repo.read(manifest, object).await?);
    let raw = object.raw_bytes;
    tokio::task::spawn_blocking(move || {
        transfer::copy_verified(source, expected, &decoding, raw, std::io::sink())
    })
    .await
    .map_err(|e| RestoreError::Step(format!("checking the archive stopped: {e}")))?
    .map_err(read_error)?;
    Ok(())
}

/// Runs pg_restore of `object` into `into` and returns the archive's size.
pub(super) async fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    object: &ObjectEntry,
    selection: Option<&super::select::Selection>,
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
    let list = match selection {
        Some(s) => Some(super::schema::write_list(&s.list)?),
        None => None,
    };
    if let Some(l) = &list {
        args.push(format!("--use-list={}", l.path().display()));
    }
    let env = into.child_env();
    let jobs = plan.jobs.max(1);
    tracing::info!(backup = %manifest.id, target = %into.describe(), jobs, "running pg_restore");
    crate::progress::get().phase("pg_restore");

    // A selective restore in place commits as pg_restore ends, which may be before the last
    // bytes are read and checked: it restores from a staged, fully verified archive instead.
    let in_place = matches!(plan.action, super::Action::InPlace);
    if jobs == 1 && !(selection.is_some() && in_place) {
        // One transaction, fed as a stream: a damaged object is noticed before the last bytes
        // reach pg_restore, which is then killed and its transaction rolled back. A selective
        // restore's pg_restore may end before the archive does: the rest is still read and
        // checked, and damage then fails the restore (the database built is dropped).
        let decoding = stage::decoding(repo, manifest, object)?;
        let expected = Repository::expected(manifest, object);
        args.push("--single-transaction".to_string());
        let (running, stdin) = Running::spawn_writer("pg_restore", plan.tool.command(&args, &env))?;
        let source = SyncIoBridge::new(repo.read(manifest, object).await?);
        let abort = Arc::new(AtomicBool::new(false));
        let sink = Feed {
            inner: SyncIoBridge::new(stdin),
            read_past_end: selection.is_some(),
            closed: false,
            abort: Arc::clone(&abort),
        };
        let raw = object.raw_bytes;
        let copying = tokio::task::spawn_blocking(move || {
            transfer::copy_verified(source, expected, &decoding, raw, sink)
        });
        if selection.is_some() {
            let finished = running.finish().await;
            if finished.is_err() {
                abort.store(true, Ordering::Relaxed);
            }
            let copied = copying
                .await
                .map_err(|e| RestoreError::Step(format!("feeding pg_restore stopped: {e}")))?;
            finished?;
            return copied.map_err(read_error);
        }
        let copied = copying
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
        args.push(if jobs > 1 {
            format!("--jobs={jobs}")
        } else {
            "--single-transaction".to_string()
        });
        args.push(staged.path().display().to_string());
        Running::spawn_plain("pg_restore", plan.tool.command(&args, &env))?
            .finish()
            .await?;
        Ok(object.raw_bytes)
    }
}

/// pg_restore's stdin. With `read_past_end` (a selective restore), a pipe pg_restore closed
/// takes the rest of the archive without passing it on, so it is still read to its end and
/// checked; `abort` (pg_restore failed) stops the reading.
struct Feed<W> {
    inner: W,
    read_past_end: bool,
    closed: bool,
    abort: Arc<AtomicBool>,
}

impl<W: std::io::Write> std::io::Write for Feed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.abort.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "pg_restore failed",
            ));
        }
        if self.closed {
            return Ok(buf.len());
        }
        match self.inner.write(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && self.read_past_end => {
                self.closed = true;
                Ok(buf.len())
            }
            other => other,
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match self.inner.flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && self.read_past_end => {
                self.closed = true;
                Ok(())
            }
            other => other,
        }
    }
}
