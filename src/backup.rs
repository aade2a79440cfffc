//! One backup run: the source (pg_dump, or the COPY export) streamed into a repository run,
//! then the manifest commit. Any failure removes what the run stored and leaves no manifest.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::{Job, JobKind};
use crate::error::Cancel;
use crate::manifest::{self, BackupKind, Globals, Manifest, ObjectEntry, ObjectRole};
use crate::pg::{self, PgError, Target};
use crate::process::{ChildError, Hint, Running, Tool};
use crate::repository::{CommitError, Repository, Run};
use crate::source;
use crate::store::StoreError;
use crate::transfer::UploadError;

/// The stage of a run, named in errors so an operator knows where it broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Storage,
    Connect,
    PgDump,
    Export,
    Globals,
    Manifest,
}

impl Stage {
    /// The stage that reads the database for this job's kind.
    fn of(job: &Job) -> Stage {
        match job.kind {
            JobKind::Dump => Stage::PgDump,
            JobKind::Export => Stage::Export,
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Storage => "checking the store",
            Stage::Connect => "connecting to the database",
            Stage::PgDump => "pg_dump",
            Stage::Export => "the table export",
            Stage::Globals => "pg_dumpall --globals-only",
            Stage::Manifest => "writing the manifest",
        })
    }
}

/// A failed run: the job, the stage, and the cause. Nothing of the run was committed, unless
/// the cause is `Commit(CommitError::Unknown)`: then nobody knows yet, and the message says so.
#[derive(Debug, thiserror::Error)]
#[error("backup of job '{job}' failed at {stage}")]
pub struct BackupError {
    pub job: String,
    pub stage: Stage,
    #[source]
    pub cause: BackupCause,
}

#[derive(Debug, thiserror::Error)]
pub enum BackupCause {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dump(#[from] source::dump::DumpError),
    #[error(transparent)]
    Export(#[from] source::export::ExportError),
    #[error(transparent)]
    Cluster(#[from] source::cluster::ClusterError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Interrupted(#[from] crate::error::Interrupted),
}

impl BackupError {
    /// Whether running the job again soon may succeed (network trouble, throttling, a server
    /// restarting), decided by each layer from its own typed facts.
    pub fn is_retryable(&self) -> bool {
        match &self.cause {
            BackupCause::Pg(e) => e.is_retryable(),
            BackupCause::Store(e) => e.is_retryable(),
            BackupCause::Upload(e) => e.is_retryable(),
            BackupCause::Dump(e) => e.is_retryable(),
            BackupCause::Export(e) => e.is_retryable(),
            BackupCause::Cluster(e) => e.is_retryable(),
            BackupCause::Commit(e) => e.is_retryable(),
            BackupCause::Child(_) | BackupCause::Interrupted(_) => false,
        }
    }

    /// Whether the run may have committed although it reports a failure (the manifest write's
    /// outcome is unknown).
    pub fn may_have_committed(&self) -> bool {
        matches!(self.cause, BackupCause::Commit(CommitError::Unknown { .. }))
    }
}

/// Runs one backup of `job` into `repo` and returns its committed manifest.
///
/// # Errors
/// `BackupError` naming the failed stage; the store holds nothing of the run afterwards
/// (best effort: objects that cannot be deleted are left without a manifest, which makes
/// them not-a-backup, and the next run of the job removes them).
pub async fn run(job: &Job, repo: &Repository) -> Result<Manifest, BackupError> {
    run_at(job, repo, Utc::now(), &Cancel::new()).await
}

/// `run` with the start time, and so the backup id (`manifest::new_id(started_at)`), chosen
/// by the caller (the daemon records it), and a cancellation: when `cancel` fires (Ctrl-C, a
/// timeout, the daemon's shutdown) before the commit, the run stops its children and uploads,
/// removes what it stored, and fails with `Interrupted`.
///
/// # Errors
/// As `run`.
pub async fn run_at(
    job: &Job,
    repo: &Repository,
    started_at: DateTime<Utc>,
    cancel: &Cancel,
) -> Result<Manifest, BackupError> {
    let run = repo.begin(&job.name, started_at);
    let clock = Instant::now();
    tracing::info!(job = %job.name, backup = %run.id(), kind = job.kind_name(), "backup started");
    let fail = |stage: Stage| {
        let name = job.name.clone();
        move |cause: BackupCause| BackupError {
            job: name.clone(),
            stage,
            cause,
        }
    };
    let taken = tokio::select! {
        taken = take(job, repo, &run) => taken,
        interrupted = cancel.cancelled() => Err(fail(Stage::of(job))(interrupted.into())),
    };
    let manifest = match taken {
        Ok(m) => m,
        Err(e) => {
            log_failure(job, run.id(), &e);
            run.abort().await;
            return Err(e);
        }
    };
    match run.commit(manifest).await {
        Ok(m) => {
            tracing::info!(
                job = %job.name,
                backup = %m.id,
                bytes = m.stored_bytes(),
                seconds = clock.elapsed().as_secs_f64(),
                "backup committed"
            );
            Ok(m)
        }
        Err((run, cause)) => {
            let e = fail(Stage::Manifest)(cause.into());
            log_failure(job, run.id(), &e);
            if !e.may_have_committed() {
                run.abort().await;
            }
            Err(e)
        }
    }
}

fn log_failure(job: &Job, id: &str, e: &BackupError) {
    tracing::error!(job = %job.name, backup = %id, stage = %e.stage,
        error = %crate::error::report(&e.cause), "backup failed");
}

/// Everything up to the commit: the store checked, the database read into the run's
/// objects, and the manifest that describes them.
async fn take(job: &Job, repo: &Repository, run: &Run) -> Result<Manifest, BackupError> {
    let fail = |stage: Stage| {
        let name = job.name.clone();
        move |cause: BackupCause| BackupError {
            job: name.clone(),
            stage,
            cause,
        }
    };
    repo.preflight()
        .await
        .map_err(|e| fail(Stage::Storage)(e.into()))?;
    let connect = fail(Stage::Connect);
    let target = Target::from_conninfo(&job.database, job.password_file.as_deref())
        .map_err(|e| connect(e.into()))?;
    let client = target.connect().await.map_err(|e| connect(e.into()))?;
    let server = pg::server_info(&client, &target)
        .await
        .map_err(|e| connect(e.into()))?;
    drop(client);

    // Both tools are chosen, and refused when too old, before anything is stored.
    let dump_fail = fail(Stage::PgDump);
    let pg_dump = client_tool("pg_dump", job, &server)
        .await
        .map_err(|e| dump_fail(e.into()))?;
    let pg_dumpall = if job.globals {
        Some(
            client_tool("pg_dumpall", job, &server)
                .await
                .map_err(|e| fail(Stage::Globals)(e.into()))?,
        )
    } else {
        None
    };
    tracing::info!(job = %job.name, backup = %run.id(), pg_dump = %pg_dump.path.display(),
        pg_dump_version = %pg_dump.version, server_version = %server.version, source = %target.describe(), "reading the database");

    let mut manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        id: run.id().to_string(),
        job: job.name.clone(),
        kind: BackupKind::from_name(job.kind_name()),
        started_at: run.started_at(),
        finished_at: run.started_at(),
        pgkeep_version: env!("CARGO_PKG_VERSION").to_string(),
        source: target.describe(),
        database: target.dbname().to_string(),
        server_version: server.version.clone(),
        server_version_num: server.version_num,
        pg_dump_version: pg_dump.version.clone(),
        wal_lsn: server.wal_lsn.clone(),
        compression: job.compression.to_string(),
        globals: Globals {
            included: false,
            role_passwords: false,
            note: Some("disabled by the job's `globals = false`".into()),
        },
        objects: Vec::new(),
        snapshot: None,
        encoding: None,
        migration_version: None,
        sequences: Vec::new(),
        tables: Vec::new(),
        large_objects: None,
        materialized_views: Vec::new(),
        databases: Vec::new(),
        encryption: None,
        checksum: None,
    };

    match (job.kind, &job.cluster) {
        (JobKind::Dump, Some(cluster)) => {
            let dumped = source::cluster::run(job, cluster, run, &target, &pg_dump)
                .await
                .map_err(|e| dump_fail(e.into()))?;
            manifest.objects = dumped.objects;
            manifest.databases = dumped.databases;
        }
        (JobKind::Dump, None) => {
            let dump_name = format!("dump.pgdump{}", job.compression.suffix());
            let dumped = source::dump::run(job, run, &target, &pg_dump, &dump_name)
                .await
                .map_err(|e| dump_fail(e.into()))?;
            manifest.objects.push(dumped.object);
            manifest.snapshot = Some(dumped.snapshot);
            manifest.wal_lsn = dumped.wal_lsn.or(manifest.wal_lsn);
            manifest.tables = dumped.tables;
            manifest.sequences = dumped.sequences;
        }
        (JobKind::Export, _) => {
            let exported = source::export::run(job, run, &target, &pg_dump)
                .await
                .map_err(|e| fail(Stage::Export)(e.into()))?;
            manifest.objects = exported.objects;
            manifest.snapshot = Some(exported.snapshot);
            manifest.wal_lsn = exported.wal_lsn.or(manifest.wal_lsn);
            manifest.encoding = Some("UTF8".into());
            manifest.migration_version = exported.migration_version;
            manifest.sequences = exported.sequences;
            manifest.large_objects = exported.large_objects;
            manifest.materialized_views = exported.materialized_views;
        }
    }

    if let Some(pg_dumpall) = &pg_dumpall {
        crate::progress::get().phase("globals");
        let (globals, object) = dump_globals(job, run, &target, pg_dumpall)
            .await
            .map_err(fail(Stage::Globals))?;
        manifest.objects.extend(object);
        manifest.globals = globals;
    }
    manifest.finished_at = Utc::now();
    Ok(manifest)
}

/// `name` (pg_dump, pg_dumpall) at least as new as the server, from the job's `pg_bin_dir` or
/// else the Debian layout or `PATH` ([`Tool::locate`]).
///
/// # Errors
/// `ChildError::TooOld` naming the server's major, the tool's version and what to install
/// or configure; the tool's own error when none can be run.
pub async fn client_tool(
    name: &'static str,
    job: &Job,
    server: &pg::ServerInfo,
) -> Result<Tool, ChildError> {
    let tool = Tool::locate(name, job.pg_bin_dir.as_deref(), Some(server.major())).await?;
    tool.require_at_least(
        server.major(),
        &format!("the server (PostgreSQL {})", server.version),
        Hint::PgBinDir,
    )?;
    Ok(tool)
}

/// Runs `tool` and streams its stdout into the object `name`; the object is kept only if the
/// tool exits 0.
async fn stream_tool(
    run: &Run,
    name: &str,
    role: ObjectRole,
    tool: &Tool,
    args: &[String],
    env: &[(String, String)],
    job: &Job,
) -> Result<ObjectEntry, BackupCause> {
    let (running, stdout) = Running::spawn_reader(tool.name, tool.command(args, env))?;
    let verdict = async move { running.finish().await.map(|_| ()) };
    Ok(run
        .put(name, role, stdout, job.compression, false, verdict)
        .await?)
}

/// Saves roles and tablespaces. A role that may not read role passwords gets them without
/// passwords; one that may not read roles at all gets a manifest note instead of a failure.
async fn dump_globals(
    job: &Job,
    run: &Run,
    target: &Target,
    tool: &Tool,
) -> Result<(Globals, Option<ObjectEntry>), BackupCause> {
    let name = format!("globals.sql{}", job.compression.suffix());
    let env = target.child_env();
    let mut last_error = None;
    for role_passwords in [true, false] {
        let args = source::pg_dumpall_globals_args(target.dbname(), role_passwords);
        match stream_tool(run, &name, ObjectRole::Globals, tool, &args, &env, job).await {
            Ok(entry) => {
                let note = (!role_passwords).then(|| {
                    "the backup role may not read pg_authid: roles saved without passwords"
                        .to_string()
                });
                let globals = Globals {
                    included: true,
                    role_passwords,
                    note,
                };
                return Ok((globals, Some(entry)));
            }
            Err(BackupCause::Upload(UploadError::Source(e))) if e.is_permission_denied() => {
                tracing::warn!(job = %job.name, backup = %run.id(), role_passwords, error = %e, "pg_dumpall was refused");
                last_error = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    let reason = last_error.map_or_else(String::new, |e| e.to_string());
    Ok((
        Globals {
            included: false,
            role_passwords: false,
            note: Some(format!("roles not saved: {reason}")),
        },
        None,
    ))
}
