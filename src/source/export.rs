//! Export jobs: every selected table read by parallel workers in one exported snapshot,
//! each streamed with `COPY ... TO STDOUT` (text format) into its own compressed object,
//! while pg_dump captures the schema in the same snapshot.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_util::io::StreamReader;

use crate::config::Job;
use crate::digest::{RowDigest, TableDigest};
use crate::manifest::{
    Column, LargeObjects, MaterializedView, ObjectEntry, ObjectRole, SequenceState,
};
use crate::pg::introspect::{self, TableInfo};
use crate::pg::{DbError, PgError, Target};
use crate::process::{ChildError, Running, Tool};
use crate::repository::Run;
use crate::source::selected;
use crate::source::snapshot::{SESSION_SETUP, Snapshot};
use crate::transfer::UploadError;

/// Most COPY rows handed on to the compressor as one buffer.
const COPY_BATCH: usize = 256;

/// What an export read, for the manifest.
#[derive(Debug)]
pub struct Exported {
    pub snapshot: String,
    pub wal_lsn: Option<String>,
    pub objects: Vec<ObjectEntry>,
    pub sequences: Vec<SequenceState>,
    pub large_objects: Option<LargeObjects>,
    pub migration_version: Option<i64>,
    pub materialized_views: Vec<MaterializedView>,
}

/// Errors of an export, naming the table or step.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error("exporting table {table}")]
    Table {
        table: String,
        #[source]
        cause: UploadError,
    },
    #[error("reading table {table}")]
    Copy {
        table: String,
        #[source]
        source: DbError,
    },
    #[error("capturing the schema")]
    Schema(#[source] UploadError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error("the snapshot-holding connection failed before the export finished")]
    Coordinator(#[source] DbError),
    #[error("no table matches the job's include/exclude patterns")]
    NothingSelected,
}

impl ExportError {
    /// Whether running the job again soon may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ExportError::Pg(e) => e.is_retryable(),
            ExportError::Table { cause, .. } | ExportError::Schema(cause) => cause.is_retryable(),
            ExportError::Copy { source, .. } | ExportError::Coordinator(source) => {
                source.is_retryable()
            }
            ExportError::Child(_) | ExportError::NothingSelected => false,
        }
    }
}

/// Runs the export of `job` into the objects of `run`.
///
/// # Errors
/// `ExportError`; whatever was stored is left for the caller to discard.
pub async fn run(
    job: &Job,
    run: &Run,
    target: &Target,
    pg_dump: &Tool,
) -> Result<Exported, ExportError> {
    let id = run.id();
    let snapshot = Snapshot::take(target).await?;
    let coordinator = &snapshot.client;
    let tables = select_tables(job, introspect::data_tables(coordinator).await?)?;
    snapshot.lock(&tables).await?;
    let sequences = snapshot.sequences().await?;
    let lo_count = introspect::large_object_count(coordinator).await?;
    let large_objects = (lo_count > 0).then(|| {
        tracing::warn!(job = %job.name, count = lo_count, "large objects are not included in export backups");
        LargeObjects {
            count: lo_count,
            included: false,
        }
    });
    let materialized_views = introspect::materialized_views(coordinator)
        .await?
        .into_iter()
        .map(|m| MaterializedView {
            name: m.name,
            populated: m.populated,
        })
        .collect();
    let migration_version = match &job.export.migrations {
        Some(m) => introspect::migration_version(coordinator, &m.table).await?,
        None => None,
    };
    tracing::info!(job = %job.name, backup = %id, snapshot = %snapshot.id, tables = tables.len(),
        workers = job.export.parallel, "exporting tables in one snapshot");

    let schema_name = format!("schema.pgdump{}", job.compression.suffix());
    let schema = capture_schema(job, run, target, pg_dump, &snapshot.id, &schema_name);
    let data = export_tables(job, run, target, &snapshot.id, tables);
    let (schema, data) = tokio::join!(schema, data);
    let schema = schema?;
    let mut tables = data?;

    let (snapshot_id, wal_lsn) = (snapshot.id.clone(), snapshot.wal_lsn.clone());
    snapshot.release().await.map_err(ExportError::Coordinator)?;

    tables.sort_by_key(|(index, _)| *index);
    let mut objects = vec![schema];
    objects.extend(tables.into_iter().map(|(_, o)| o));
    Ok(Exported {
        snapshot: snapshot_id,
        wal_lsn,
        objects,
        sequences,
        large_objects,
        migration_version,
        materialized_views,
    })
}

/// Applies include/exclude; a partition also matches through its partitioned ancestors.
fn select_tables(job: &Job, all: Vec<TableInfo>) -> Result<Vec<TableInfo>, ExportError> {
    let include = &job.export.include;
    let exclude = &job.export.exclude;
    let chosen: Vec<TableInfo> = all
        .into_iter()
        .filter(|t| {
            std::iter::once((&t.schema, &t.name))
                .chain(t.ancestors.iter().map(|(s, n)| (s, n)))
                .any(|(s, n)| selected(include, &[], s, n))
                && !std::iter::once((&t.schema, &t.name))
                    .chain(t.ancestors.iter().map(|(s, n)| (s, n)))
                    .any(|(s, n)| exclude.iter().any(|p| p.matches(s, n)))
        })
        .collect();
    if chosen.is_empty() {
        return Err(ExportError::NothingSelected);
    }
    Ok(chosen)
}

/// pg_dump --schema-only in the exported snapshot.
async fn capture_schema(
    job: &Job,
    run: &Run,
    target: &Target,
    pg_dump: &Tool,
    snapshot: &str,
    name: &str,
) -> Result<ObjectEntry, ExportError> {
    let args: Vec<String> = [
        "--format=custom",
        "--compress=0",
        "--schema-only",
        "--no-password",
    ]
    .into_iter()
    .map(String::from)
    .chain([format!("--snapshot={snapshot}")])
    .collect();
    let (running, stdout) =
        Running::spawn_reader(pg_dump.name, pg_dump.command(&args, &target.child_env()))?;
    let verdict = async move { running.finish().await.map(|_| ()) };
    run.put(
        name,
        ObjectRole::Schema,
        stdout,
        job.compression,
        false,
        verdict,
    )
    .await
    .map_err(ExportError::Schema)
}

/// Runs `job.export.parallel` workers over a shared queue, biggest tables first. The first
/// failure stops the others (their uploads are abandoned when their futures are dropped).
async fn export_tables(
    job: &Job,
    run: &Run,
    target: &Target,
    snapshot: &str,
    tables: Vec<TableInfo>,
) -> Result<Vec<(usize, ObjectEntry)>, ExportError> {
    let progress = crate::progress::get();
    progress.phase("export");
    progress.items("tables", tables.len() as u64);
    let mut indexed: Vec<(usize, TableInfo)> = tables.into_iter().enumerate().collect();
    indexed.sort_by_key(|(_, t)| std::cmp::Reverse(t.pages));
    let queue = Arc::new(Mutex::new(VecDeque::from(indexed)));
    let workers = (0..job.export.parallel).map(|_| {
        let queue = Arc::clone(&queue);
        async move {
            let client = worker_connection(target, snapshot).await?;
            let mut done = Vec::new();
            loop {
                let next = queue.lock().await.pop_front();
                let Some((index, table)) = next else { break };
                let entry = export_table(&client, job, run, index, &table).await?;
                progress.item_done();
                done.push((index, entry));
            }
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| ExportError::Coordinator(DbError(e)))?;
            Ok::<_, ExportError>(done)
        }
    });
    let results = futures::future::try_join_all(workers).await?;
    Ok(results.into_iter().flatten().collect())
}

async fn worker_connection(target: &Target, snapshot: &str) -> Result<Client, ExportError> {
    let client = target.connect().await?;
    let sql = format!(
        "{SESSION_SETUP}; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
         SET TRANSACTION SNAPSHOT {}",
        crate::pg::quote_literal(snapshot)
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PgError::query("importing the snapshot", &target.describe(), e))?;
    Ok(client)
}

/// One table: COPY TO STDOUT, rows counted and digested from the stream (one `\n` per row in
/// text format).
async fn export_table(
    client: &Client,
    job: &Job,
    run: &Run,
    index: usize,
    table: &TableInfo,
) -> Result<ObjectEntry, ExportError> {
    let qualified = table.qualified();
    let columns = table.data_columns();
    let sql = if columns.is_empty() {
        format!("COPY {qualified} TO STDOUT")
    } else {
        format!("COPY {qualified} ({}) TO STDOUT", columns.join(", "))
    };
    let fail = |cause: UploadError| table_error(&qualified, cause);
    let stream = client.copy_out(&sql).await.map_err(|e| ExportError::Copy {
        table: qualified.clone(),
        source: DbError(e),
    })?;
    // The rows are counted and digested as they pass (see `digest`).
    let digest = Arc::new(std::sync::Mutex::new(RowDigest::new()));
    let digesting = Arc::clone(&digest);
    // COPY yields one message per row: rows already received travel on together, so the
    // compressor's reads (each a trip through the runtime) come in batches, not per row.
    let bytes = stream
        .ready_chunks(COPY_BATCH)
        .map(move |batch| {
            let mut joined =
                bytes::BytesMut::with_capacity(batch.iter().flatten().map(bytes::Bytes::len).sum());
            for row in batch {
                joined.extend_from_slice(&row.map_err(copy_read_error)?);
            }
            digesting
                .lock()
                .expect("only this stream digests the table")
                .update(&joined);
            Ok::<_, std::io::Error>(joined.freeze())
        })
        .boxed();
    let name = format!(
        "tables/{index:05}-{}.copy{}",
        file_safe(&table.schema, &table.name),
        job.compression.suffix()
    );
    let mut entry = run
        .put(
            &name,
            ObjectRole::Table,
            StreamReader::new(bytes),
            job.compression,
            true,
            async { Ok(()) },
        )
        .await
        .map_err(fail)?;
    let TableDigest { rows, digest } = std::mem::take(
        &mut *digest
            .lock()
            .expect("the stream has ended: nothing else holds the digest"),
    )
    .finish();
    tracing::debug!(table = %qualified, rows, bytes = entry.stored_bytes, "table exported");
    entry.table = Some(qualified);
    entry.rows = Some(rows);
    entry.digest = Some(digest);
    entry.columns = table
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            type_name: c.type_name.clone(),
            generated: c.generated,
        })
        .collect();
    Ok(entry)
}

/// A COPY stream's failure as the I/O error the compressor reads, keeping the database error
/// (and its SQLSTATE) inside, so `table_error` can take it out again.
fn copy_read_error(e: tokio_postgres::Error) -> std::io::Error {
    std::io::Error::other(DbError(e))
}

/// The error of a failed table upload: the database's own when the COPY stream failed (a
/// terminated backend, a lost connection), else the upload's.
fn table_error(table: &str, cause: UploadError) -> ExportError {
    if let UploadError::Read(e) = &cause
        && crate::error::wraps::<DbError>(e)
        && let UploadError::Read(e) = cause
    {
        let inner = e.into_inner().expect("checked above");
        return ExportError::Copy {
            table: table.to_string(),
            source: *inner.downcast::<DbError>().expect("checked above"),
        };
    }
    ExportError::Table {
        table: table.to_string(),
        cause,
    }
}

/// A readable, file-system-safe rendering of a table name for object keys.
fn file_safe(schema: &str, name: &str) -> String {
    let mut s: String = format!("{schema}.{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    s.truncate(80);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn file_safe_names() {
        assert_eq!(super::file_safe("public", "film"), "public.film");
        assert_eq!(
            super::file_safe("we;ird \"s", "slash/../x"),
            "we_ird__s.slash_.._x"
        );
    }
}
