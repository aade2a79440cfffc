//! The snapshot a backup reads the database in: a coordinator session that exports it and
//! holds it for the whole run (other sessions, and pg_dump, import it), locks the tables
//! against being dropped or altered meanwhile, and reads the sequences in it.

use tokio_postgres::Client;

use crate::manifest::SequenceState;
use crate::pg::introspect::{self, TableInfo};
use crate::pg::{DbError, PgError, Target};

/// Session settings that make COPY's text output exact and independent of the server's
/// configuration (the same ones pg_dump uses). Drills set them too, so a restored table's
/// COPY text is comparable with the backup's.
pub const SESSION_SETUP: &str = "SET row_security = off; SET extra_float_digits = 3; \
     SET DateStyle = ISO; SET IntervalStyle = postgres; SET TimeZone = 'UTC'; \
     SET bytea_output = hex; SET client_encoding = 'UTF8'; SET statement_timeout = 0; \
     SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0";

/// An exported snapshot and the session holding it.
pub struct Snapshot {
    pub client: Client,
    /// The id other sessions import (`SET TRANSACTION SNAPSHOT`, `pg_dump --snapshot`).
    pub id: String,
    /// The server's WAL position (the replay position on a standby) as the snapshot was taken.
    pub wal_lsn: Option<String>,
    target: String,
}

impl Snapshot {
    /// Connects, starts a repeatable-read, read-only transaction and exports its snapshot.
    ///
    /// # Errors
    /// Connection and query errors.
    pub async fn take(target: &Target) -> Result<Snapshot, PgError> {
        let client = target.connect().await?;
        let describe = target.describe();
        let pg = |what: &'static str| {
            let t = describe.clone();
            move |e: tokio_postgres::Error| PgError::query(what, &t, e)
        };
        client
            .batch_execute(SESSION_SETUP)
            .await
            .map_err(pg("setting up the session"))?;
        client
            .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await
            .map_err(pg("starting the snapshot transaction"))?;
        let row = client
            .query_one(
                "SELECT pg_export_snapshot(), CASE WHEN pg_is_in_recovery() \
                 THEN pg_last_wal_replay_lsn()::text ELSE pg_current_wal_lsn()::text END",
                &[],
            )
            .await
            .map_err(pg("exporting the snapshot"))?;
        Ok(Snapshot {
            id: row.get(0),
            wal_lsn: row.get(1),
            client,
            target: describe,
        })
    }

    /// Takes `ACCESS SHARE` locks on `tables` (as pg_dump does), so none is dropped or
    /// rewritten before it is read.
    ///
    /// # Errors
    /// The lock statement's error.
    pub async fn lock(&self, tables: &[TableInfo]) -> Result<(), PgError> {
        for chunk in tables.chunks(500) {
            let names: Vec<String> = chunk.iter().map(TableInfo::qualified).collect();
            self.client
                .batch_execute(&format!(
                    "LOCK TABLE {} IN ACCESS SHARE MODE",
                    names.join(", ")
                ))
                .await
                .map_err(|e| PgError::query("locking the tables", &self.target, e))?;
        }
        Ok(())
    }

    /// Every sequence's state in the snapshot.
    ///
    /// # Errors
    /// Query errors.
    pub async fn sequences(&self) -> Result<Vec<SequenceState>, PgError> {
        let mut out = Vec::new();
        for seq in introspect::sequences(&self.client).await? {
            let (last_value, is_called) =
                introspect::sequence_state(&self.client, &seq.name).await?;
            out.push(SequenceState {
                name: seq.name,
                last_value,
                is_called,
                owned_by: seq.owned_by,
            });
        }
        Ok(out)
    }

    /// Ends the transaction. The snapshot must have been held for the whole run: a session
    /// that died meanwhile fails here.
    ///
    /// # Errors
    /// The `COMMIT`'s error.
    pub async fn release(self) -> Result<(), DbError> {
        self.client.batch_execute("COMMIT").await.map_err(DbError)
    }
}
