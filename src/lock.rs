//! The job lock: a session-level `pg_try_advisory_lock` on the job's source database, held on
//! its own connection for a whole run and released when that connection closes. It keeps two
//! pgkeep processes (daemon replicas, a manual `pgkeep backup`) from running one job at once,
//! and lets its holder remove what earlier runs of the job left, whatever its age.

use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use crate::config::Job;
use crate::pg::{self, PgError, Target};

/// The lock key of `job`: the first 8 bytes of sha256("pgkeep:" + name), so it is the same
/// in every pgkeep version and on every machine (unlike Rust's `DefaultHasher`).
pub fn lock_key(job: &str) -> i64 {
    let digest = Sha256::digest(format!("pgkeep:{job}").as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

/// A held lock; released by `release` or, failing that, when the connection is dropped.
pub struct JobLock {
    client: Client,
    key: i64,
}

/// The answer of a try.
pub enum Acquired {
    Held(JobLock),
    /// Another session holds it: another pgkeep is running this job.
    Busy,
}

/// How long connecting for the lock may take: an unanswering host must not hold the job (and
/// its concurrency slot) for the minutes TCP takes to give up.
const CONNECT_LIMIT: Duration = Duration::from_mins(1);

/// Tries to take `job`'s lock on its source database.
///
/// # Errors
/// The database cannot be reached (the same errors the backup itself would meet; a connection
/// that times out is a transient failure).
pub async fn try_lock(job: &Job) -> Result<Acquired, PgError> {
    let target = Target::from_conninfo(&job.database, job.password_file.as_deref())?;
    let client = tokio::time::timeout(CONNECT_LIMIT, target.connect())
        .await
        .map_err(|_| PgError::Timeout {
            what: "connecting",
            target: target.describe(),
            limit: CONNECT_LIMIT,
        })??;
    let key = lock_key(&job.name);
    let row = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
        .await
        .map_err(|e| PgError::query("taking the job's advisory lock", &target.describe(), e))?;
    if row.get::<_, bool>(0) {
        Ok(Acquired::Held(JobLock { client, key }))
    } else {
        Ok(Acquired::Busy)
    }
}

impl JobLock {
    /// Unlocks and closes the connection.
    pub async fn release(self) {
        if let Err(e) = self
            .client
            .execute("SELECT pg_advisory_unlock($1)", &[&self.key])
            .await
        {
            // Closing the connection releases it anyway.
            tracing::debug!(error = %pg::describe_error(&e), "advisory unlock failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        assert_eq!(lock_key("nightly"), lock_key("nightly"));
        assert_ne!(lock_key("nightly"), lock_key("hourly"));
        // Pinned: changing it would let old and new daemons run a job twice during an upgrade.
        let digest = Sha256::digest(b"pgkeep:nightly");
        assert_eq!(
            lock_key("nightly").to_be_bytes(),
            <[u8; 8]>::try_from(&digest[..8]).unwrap()
        );
    }
}
