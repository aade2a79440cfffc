//! Dump jobs: `pg_dump` of the whole database in a snapshot pgkeep exports and holds, while
//! the same snapshot's session counts every table's rows and reads every sequence. The counts
//! are what a drill checks the restored database against: pg_dump's archive holds the data,
//! but nothing about it a restore could be compared with.

use tokio_postgres::Client;

use crate::config::Job;
use crate::manifest::{ObjectEntry, ObjectRole, SequenceState, TableRows};
use crate::pg::introspect::{self, TableInfo};
use crate::pg::{DbError, PgError, Target};
use crate::process::{ChildError, Running, Tool};
use crate::repository::Run;
use crate::source::snapshot::Snapshot;
use crate::transfer::UploadError;

/// What a dump stored and counted, for the manifest.
#[derive(Debug)]
pub struct Dumped {
    pub object: ObjectEntry,
    pub snapshot: String,
    pub wal_lsn: Option<String>,
    pub tables: Vec<TableRows>,
    pub sequences: Vec<SequenceState>,
}

/// Errors of a dump, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Child(#[from] ChildError),
    #[error(transparent)]
    Upload(#[from] UploadError),
    #[error("counting the rows of table {table}")]
    Count {
        table: String,
        #[source]
        source: DbError,
    },
    #[error("the snapshot-holding connection failed before the dump finished")]
    Coordinator(#[source] DbError),
}

impl DumpError {
    /// Whether running the job again soon may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            DumpError::Pg(e) => e.is_retryable(),
            DumpError::Upload(e) => e.is_retryable(),
            DumpError::Count { source, .. } | DumpError::Coordinator(source) => {
                source.is_retryable()
            }
            DumpError::Child(_) => false,
        }
    }
}

/// Dumps `job`'s database into the object `name` of `run`, counting its tables meanwhile.
///
/// # Errors
/// `DumpError`; whatever was stored is left for the caller to discard.
pub async fn run(
    job: &Job,
    run: &Run,
    target: &Target,
    pg_dump: &Tool,
    name: &str,
) -> Result<Dumped, DumpError> {
    let snapshot = Snapshot::take(target).await?;
    let tables = introspect::data_tables(&snapshot.client).await?;
    snapshot.lock(&tables).await?;
    let sequences = snapshot.sequences().await?;
    tracing::info!(job = %job.name, backup = %run.id(), snapshot = %snapshot.id,
        tables = tables.len(), "dumping the database; counting its tables in the same snapshot");

    crate::progress::get().phase("dump");
    let mut args = super::pg_dump_args();
    args.push(format!("--snapshot={}", snapshot.id));
    let (running, stdout) =
        Running::spawn_reader(pg_dump.name, pg_dump.command(&args, &target.child_env()))?;
    let verdict = async move { running.finish().await.map(|_| ()) };
    let dump = async {
        run.put(
            name,
            ObjectRole::Dump,
            stdout,
            job.compression,
            false,
            verdict,
        )
        .await
        .map_err(DumpError::Upload)
    };
    // The first failure drops the other future: an unfinished upload is abandoned, a
    // pg_dump still running is killed.
    let (object, counted) = tokio::try_join!(dump, count_rows(&snapshot.client, &tables))?;

    let (id, wal_lsn) = (snapshot.id.clone(), snapshot.wal_lsn.clone());
    snapshot.release().await.map_err(DumpError::Coordinator)?;
    Ok(Dumped {
        object,
        snapshot: id,
        wal_lsn,
        tables: counted,
        sequences,
    })
}

/// `count(*)` of every table (its own rows, not its inheritance children's), one after the
/// other in the snapshot's session.
async fn count_rows(client: &Client, tables: &[TableInfo]) -> Result<Vec<TableRows>, DumpError> {
    {
        let mut out = Vec::with_capacity(tables.len());
        for t in tables {
            let name = t.qualified();
            let row = client
                .query_one(&format!("SELECT count(*) FROM ONLY {name}"), &[])
                .await
                .map_err(|e| DumpError::Count {
                    table: name.clone(),
                    source: DbError(e),
                })?;
            let rows: i64 = row.get(0);
            out.push(TableRows {
                name,
                rows: rows as u64,
            });
        }
        Ok(out)
    }
}
