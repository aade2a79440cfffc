//! Loading an export's tables: COPY of every table on parallel sessions, biggest first, each
//! table's indexes and key constraints built as soon as its data is in (while other tables
//! still load), then its ANALYZE.

use std::collections::BTreeSet;
use std::sync::Mutex;

use futures::SinkExt;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::queue::{Queue, Work};
use super::schema::SchemaArchive;
use super::toc::Early;
use super::{RestoreError, stage};
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::introspect::{self, data_columns};
use crate::pg::{DbError, PgError, Target, quote_ident};
use crate::repository::Repository;

/// Session settings for loading COPY text data written by an export.
const LOAD_SETUP: &str = "SET client_encoding = 'UTF8'; SET DateStyle = ISO; \
     SET IntervalStyle = postgres; SET synchronous_commit = off; \
     SET maintenance_work_mem = '256MB'; SET statement_timeout = 0; SET lock_timeout = 0";

/// What the load needs besides the tables.
pub(super) struct Load<'a> {
    pub repo: &'a Repository,
    pub manifest: &'a Manifest,
    pub target: &'a Target,
    pub jobs: usize,
    /// The schema archive, and the post-data entries of it to build during the load (see
    /// `toc::early`; none when the schema comes from migrations).
    pub schema: &'a SchemaArchive,
    pub early: Vec<Early>,
}

/// Loads every table with `jobs` parallel sessions, biggest first; builds the early post-data
/// entries as soon as their tables are in, and analyzes each table once its own indexes exist
/// (statistics then cover expression indexes built early; the cores that would otherwise idle
/// at the end of the load do the work of a final ANALYZE).
pub(super) async fn load_tables(
    load: Load<'_>,
    tables: &[&ObjectEntry],
) -> Result<Loaded, RestoreError> {
    let mut ordered: Vec<&ObjectEntry> = tables.to_vec();
    ordered.sort_by_key(|o| std::cmp::Reverse(o.raw_bytes));
    let queue = Mutex::new(Queue::new(ordered, load.early));
    let wake = Notify::new();
    let (queue, wake) = (&queue, &wake);
    let (repo, manifest, target, schema) = (load.repo, load.manifest, load.target, load.schema);
    let workers = (0..load.jobs.min(tables.len()).max(1)).map(|_| async move {
        let client = target.connect().await?;
        exec(&client, LOAD_SETUP, "setting up a load session").await?;
        let mut bytes = 0;
        loop {
            let work = loop {
                let notified = wake.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                {
                    let mut q = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if q.stopped {
                        return Ok::<u64, RestoreError>(bytes);
                    }
                    if let Some(work) = q.take() {
                        break work;
                    }
                    if q.running == 0 {
                        return Ok(bytes);
                    }
                }
                notified.await;
            };
            let result = match &work {
                Work::Copy(object) => load_table(&client, repo, manifest, object).await.map(|b| {
                    crate::progress::get().item_done();
                    bytes += b;
                }),
                Work::Build(entry) => schema.restore_entries(target, &[entry.line.as_str()]).await,
                Work::Analyze(table) => exec(&client, &format!("ANALYZE {table}"), "ANALYZE").await,
            };
            {
                let mut q = queue
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if result.is_err() {
                    q.stopped = true;
                }
                q.done(&work);
            }
            wake.notify_waiters();
            result?;
        }
    });
    let done = futures::future::try_join_all(workers).await?;
    let q = queue
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok(Loaded {
        raw_bytes: done.into_iter().sum(),
        built: q.built.iter().copied().collect(),
    })
}

/// What the load did.
pub(super) struct Loaded {
    pub raw_bytes: u64,
    /// The post-data entries it built; any other is left for the pass after the load.
    pub built: BTreeSet<u32>,
}

/// One table in one transaction: user triggers disabled by name (and put back exactly as
/// they were), COPY FROM STDIN fed with verified data, the row count checked.
async fn load_table(
    client: &Client,
    repo: &Repository,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<u64, RestoreError> {
    let table = object.table.clone().unwrap_or_default();
    let fail = |what: &'static str, e: tokio_postgres::Error| RestoreError::Load {
        table: table.clone(),
        source: PgError::Query {
            what,
            target: String::new(),
            source: DbError(e),
        },
    };
    exec(client, "BEGIN", "BEGIN").await?;
    let triggers = introspect::enabled_user_triggers(client, &table).await?;
    for t in &triggers {
        client
            .batch_execute(&format!(
                "ALTER TABLE {table} DISABLE TRIGGER {}",
                quote_ident(&t.name)
            ))
            .await
            .map_err(|e| fail("disabling a trigger", e))?;
    }
    let columns = data_columns(
        object
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.generated)),
    );
    let copy = |freeze: &str| {
        if columns.is_empty() {
            format!("COPY {table} FROM STDIN{freeze}")
        } else {
            format!("COPY {table} ({}) FROM STDIN{freeze}", columns.join(", "))
        }
    };
    // COPY FREEZE when possible (see `empty_again`); the server refuses it up front, before
    // any data, when something else in the transaction prevents it: then a plain COPY.
    let frozen = if empty_again(client, &table).await? {
        match client.copy_in::<_, bytes::Bytes>(&copy(" (FREEZE)")).await {
            Ok(sink) => Some(sink),
            Err(e) => {
                tracing::debug!(table = %table, error = %crate::pg::describe_error(&e), "COPY FREEZE refused");
                exec(
                    client,
                    "ROLLBACK TO SAVEPOINT pgkeep_load",
                    "ROLLBACK TO SAVEPOINT",
                )
                .await?;
                None
            }
        }
    } else {
        None
    };
    let sink = match frozen {
        Some(sink) => sink,
        None => client
            .copy_in::<_, bytes::Bytes>(&copy(""))
            .await
            .map_err(|e| fail("COPY FROM STDIN", e))?,
    };
    let mut sink = Box::pin(sink);
    let mut chunks = stage::decoded_chunks(repo, manifest, object).await?;
    while let Some(chunk) = chunks.recv().await {
        match chunk {
            Ok(bytes) => sink
                .send(bytes)
                .await
                .map_err(|e| fail("COPY FROM STDIN", e))?,
            Err(e) => {
                // The sink must go first: dropped unfinished it sends CopyFail, which ends the
                // COPY; a ROLLBACK sent while it is open would wait behind the COPY forever.
                drop(sink);
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(stage::read_error(e));
            }
        }
    }
    let loaded = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| fail("COPY FROM STDIN", e))?;
    drop(sink);
    let expected = object.rows.unwrap_or(0);
    if loaded != expected {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(RestoreError::RowCount {
            table,
            loaded,
            expected,
        });
    }
    for t in &triggers {
        let how = match t.enabled {
            'A' => "ENABLE ALWAYS",
            'R' => "ENABLE REPLICA",
            _ => "ENABLE",
        };
        exec(
            client,
            &format!("ALTER TABLE {table} {how} TRIGGER {}", quote_ident(&t.name)),
            "re-enabling a trigger",
        )
        .await?;
    }
    exec(client, "COMMIT", "COMMIT").await?;
    tracing::debug!(table = %table, rows = loaded, "table loaded");
    Ok(object.raw_bytes)
}

/// Makes COPY FREEZE possible for an empty table: truncated in this transaction, its rows can
/// be written already frozen and its pages marked all-visible, so the index builds and ANALYZE
/// that follow need not set hint bits on (and rewrite) every page, as `pg_restore` leaves them
/// to. Done in a savepoint and only when the table is empty; if the table has rows or cannot be
/// truncated (privileges, a foreign key from outside the restore), nothing changes and the load
/// goes on without FREEZE.
async fn empty_again(client: &Client, table: &str) -> Result<bool, RestoreError> {
    exec(client, "SAVEPOINT pgkeep_load", "SAVEPOINT").await?;
    // The simple protocol: an extended-protocol portal left open would itself rule out FREEZE.
    let has_rows = client
        .simple_query(&format!("SELECT EXISTS (SELECT FROM ONLY {table})"))
        .await
        .ok()
        .and_then(|messages| {
            messages.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                _ => None,
            })
        });
    let truncated = has_rows == Some(false)
        && client
            .batch_execute(&format!("TRUNCATE ONLY {table}"))
            .await
            .is_ok();
    if !truncated {
        exec(
            client,
            "ROLLBACK TO SAVEPOINT pgkeep_load",
            "ROLLBACK TO SAVEPOINT",
        )
        .await?;
    }
    Ok(truncated)
}

pub(super) async fn exec(
    client: &Client,
    sql: &str,
    what: &'static str,
) -> Result<(), RestoreError> {
    client
        .batch_execute(sql)
        .await
        .map_err(|e| RestoreError::Pg(PgError::query(what, "", e)))
}

#[cfg(test)]
mod tests {
    #[test]
    fn index_builds_get_the_loads_maintenance_work_mem() {
        let setting = format!(
            "maintenance_work_mem = '{}'",
            super::super::schema::LOAD_MAINTENANCE_WORK_MEM
        );
        assert!(super::LOAD_SETUP.contains(&setting));
    }
}
