//! One backup run: source -> codec -> store for every object, then the manifest commit.
//! Any failure removes what the run stored and leaves no manifest.

use std::fmt;
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::config::{Job, JobKind};
use crate::manifest::{self, Globals, Manifest, ObjectEntry};
use crate::pg::{self, PgError, Target};
use crate::source::{self, Running, SourceError, Tool};
use crate::store::{ObjectStore, StoreError};
use crate::transfer::{self, Stored, UploadError};

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

/// A failed run: the job, the stage, and the cause. Nothing of the run was committed.
#[derive(Debug, thiserror::Error)]
#[error("backup of job '{job}' failed at {stage}: {cause}")]
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
    Source(#[from] SourceError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] source::export::ExportError),
}

impl BackupError {
    /// Whether running the job again soon may succeed (network trouble, throttling).
    pub fn is_retryable(&self) -> bool {
        match &self.cause {
            BackupCause::Pg(e) | BackupCause::Export(source::export::ExportError::Pg(e)) => {
                e.is_retryable()
            }
            BackupCause::Store(e)
            | BackupCause::Upload(UploadError::Store(e))
            | BackupCause::Export(source::export::ExportError::Table {
                cause: UploadError::Store(e),
                ..
            }) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Runs one backup of `job` into `store` and returns its committed manifest.
///
/// # Errors
/// `BackupError` naming the failed stage; the store holds nothing of the run afterwards
/// (best effort: objects that cannot be deleted are left without a manifest, which makes
/// them not-a-backup).
pub async fn run(job: &Job, store: &dyn ObjectStore) -> Result<Manifest, BackupError> {
    run_at(job, store, Utc::now()).await
}

/// `run` with the start time, and so the backup id (`manifest::new_id(started_at)`), chosen
/// by the caller: the daemon, which may cancel a run by dropping its future, then knows
/// which objects to remove.
///
/// # Errors
/// As `run`.
pub async fn run_at(
    job: &Job,
    store: &dyn ObjectStore,
    started_at: DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    let id = manifest::new_id(started_at);
    let clock = Instant::now();
    tracing::info!(job = %job.name, backup = %id, kind = job.kind.as_str(), "backup started");
    let result = run_job(job, store, &id, started_at).await;
    match result {
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
        Err(e) => {
            tracing::error!(job = %job.name, backup = %id, stage = %e.stage, error = %e.cause, "backup failed");
            discard(store, &job.name, &id).await;
            Err(e)
        }
    }
}

async fn run_job(
    job: &Job,
    store: &dyn ObjectStore,
    id: &str,
    started_at: DateTime<Utc>,
) -> Result<Manifest, BackupError> {
    let fail = |stage: Stage| {
        let name = job.name.clone();
        move |cause: BackupCause| BackupError {
            job: name.clone(),
            stage,
            cause,
        }
    };
    store
        .preflight()
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

    let dump_fail = fail(Stage::PgDump);
    let pg_dump = Tool::locate("pg_dump", job.pg_bin_dir.as_deref(), Some(server.major()))
        .await
        .map_err(|e| dump_fail(e.into()))?;
    pg_dump
        .require_at_least(server.major(), &server.version)
        .map_err(|e| dump_fail(e.into()))?;
    tracing::info!(job = %job.name, backup = %id, pg_dump = %pg_dump.path.display(),
        pg_dump_version = %pg_dump.version, server_version = %server.version, source = %target.describe(), "reading the database");

    let mut manifest = Manifest {
        format_version: manifest::FORMAT_VERSION,
        id: id.to_string(),
        job: job.name.clone(),
        kind: job.kind.as_str().to_string(),
        started_at,
        finished_at: started_at,
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
        large_objects: None,
        materialized_views: Vec::new(),
    };

    match job.kind {
        JobKind::Dump => {
            let dump_name = format!("dump.pgdump{}", job.compression.suffix());
            let stored = stream_tool(
                store,
                &manifest::object_key(&job.name, id, &dump_name),
                &pg_dump,
                &source::pg_dump_args(),
                &target.child_env(),
                job,
            )
            .await
            .map_err(dump_fail)?;
            manifest
                .objects
                .push(entry(&dump_name, "dump", job, &stored));
        }
        JobKind::Export => {
            let exported = source::export::run(job, store, id, &target, &pg_dump)
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

    if job.globals {
        let (globals, object) = dump_globals(job, store, id, &target, &server)
            .await
            .map_err(fail(Stage::Globals))?;
        manifest.objects.extend(object);
        manifest.globals = globals;
    }

    manifest.finished_at = Utc::now();
    manifest::write(store, &manifest)
        .await
        .map_err(|e| fail(Stage::Manifest)(e.into()))?;
    Ok(manifest)
}

/// Runs `tool` and streams its stdout into `key`; the object is kept only if the tool exits 0.
async fn stream_tool(
    store: &dyn ObjectStore,
    key: &str,
    tool: &Tool,
    args: &[String],
    env: &[(String, String)],
    job: &Job,
) -> Result<Stored, BackupCause> {
    let (running, stdout) = Running::spawn_reader(tool.name, tool.command(args, env))?;
    let verdict = async move { running.finish().await.map(|_| ()) };
    let stored = transfer::upload(store, key, stdout, job.compression, false, verdict).await?;
    Ok(stored)
}

/// Saves roles and tablespaces. A role that may not read role passwords gets them without
/// passwords; one that may not read roles at all gets a manifest note instead of a failure.
async fn dump_globals(
    job: &Job,
    store: &dyn ObjectStore,
    id: &str,
    target: &Target,
    server: &pg::ServerInfo,
) -> Result<(Globals, Option<ObjectEntry>), BackupCause> {
    let tool = Tool::locate(
        "pg_dumpall",
        job.pg_bin_dir.as_deref(),
        Some(server.major()),
    )
    .await?;
    tool.require_at_least(server.major(), &server.version)?;
    let name = format!("globals.sql{}", job.compression.suffix());
    let key = manifest::object_key(&job.name, id, &name);
    let env = target.child_env();
    let mut last_error = None;
    for role_passwords in [true, false] {
        let args = source::pg_dumpall_globals_args(target.dbname(), role_passwords);
        match stream_tool(store, &key, &tool, &args, &env, job).await {
            Ok(stored) => {
                let note = (!role_passwords).then(|| {
                    "the backup role may not read pg_authid: roles saved without passwords"
                        .to_string()
                });
                let globals = Globals {
                    included: true,
                    role_passwords,
                    note,
                };
                return Ok((globals, Some(entry(&name, "globals", job, &stored))));
            }
            Err(BackupCause::Upload(UploadError::Source(e))) if e.is_permission_denied() => {
                tracing::warn!(job = %job.name, backup = %id, role_passwords, error = %e, "pg_dumpall was refused");
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

fn entry(name: &str, role: &str, job: &Job, stored: &Stored) -> ObjectEntry {
    ObjectEntry {
        key: name.to_string(),
        role: role.to_string(),
        table: None,
        rows: None,
        columns: Vec::new(),
        compression: job.compression.name().to_string(),
        raw_bytes: stored.raw_bytes,
        stored_bytes: stored.stored_bytes,
        sha256: stored.sha256.clone(),
    }
}

/// Removes whatever a failed run stored, so it is not mistaken for a backup and wastes no space.
async fn discard(store: &dyn ObjectStore, job: &str, id: &str) {
    let prefix = format!("{job}/{id}/");
    match store.list(&prefix).await {
        Ok(objects) => {
            for o in objects {
                if let Err(e) = store.delete(&o.key).await {
                    tracing::warn!(key = %o.key, error = %e, "could not remove an object of a failed backup");
                }
            }
        }
        Err(e) => {
            tracing::warn!(prefix = %prefix, error = %e, "could not list a failed backup's objects");
        }
    }
}
