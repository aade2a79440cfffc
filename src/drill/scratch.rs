//! The scratch database a drill restores into: a fresh database with a unique name, marked
//! (its comment) with the backup it drills and the process building it, dropped when the drill
//! ends, and, when a killed drill left it behind, by the next drill on the same server.

use tokio_postgres::Client;

use crate::pg::{PgError, Target, quote_ident};

/// Every scratch database's name starts with this.
pub const PREFIX: &str = "pgkeep_drill_";
/// The start of a scratch database's comment; the rest names the builder (`marker`).
const MARK: &str = "pgkeep: drill";
/// The longest part of a job's name in a scratch database's name.
const JOB_PART: usize = 30;

/// A connection to the drill server's maintenance database.
pub struct Server {
    pub admin: Target,
    pub client: Client,
    version_num: i32,
}

impl Server {
    pub async fn connect(admin: Target) -> Result<Server, PgError> {
        let client = admin.connect().await?;
        let row = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| PgError::query("reading the server version", &admin.describe(), e))?;
        Ok(Server {
            version_num: row.get(0),
            admin,
            client,
        })
    }

    fn error(&self, what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
        let target = self.admin.describe();
        move |e| PgError::query(what, &target, e)
    }

    /// Creates the scratch database `name` for a drill of `backup` of `job`, marked with this
    /// process.
    pub async fn create(&self, name: &str, job: &str, backup: &str) -> Result<(), PgError> {
        self.client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0",
                quote_ident(name)
            ))
            .await
            .map_err(self.error("creating the drill's scratch database"))?;
        let mark = crate::marker::mark(&format!("{MARK} of backup {backup} of job {job}"));
        let marked = self
            .client
            .batch_execute(&format!(
                "COMMENT ON DATABASE {} IS {}",
                quote_ident(name),
                crate::pg::quote_literal(&mark)
            ))
            .await
            .map_err(self.error("marking the drill's scratch database"));
        if marked.is_err() {
            // Unmarked, no sweep would ever recognise it: drop it now.
            if let Err(e) = self.drop(name).await {
                tracing::warn!(database = %name, error = %crate::error::report(&e),
                    "could not drop the unmarked scratch database; drop it by hand");
            }
        }
        marked
    }

    /// Drops `name`, ending its sessions.
    pub async fn drop(&self, name: &str) -> Result<(), PgError> {
        if self.version_num < 130_000 {
            self.client
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid()",
                    &[&name],
                )
                .await
                .map_err(self.error("ending the scratch database's sessions"))?;
        }
        let force = if self.version_num >= 130_000 {
            " WITH (FORCE)"
        } else {
            ""
        };
        self.client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}{force}",
                quote_ident(name)
            ))
            .await
            .map_err(self.error("dropping the drill's scratch database"))
    }

    /// Drops the scratch databases whose drill was killed (their builder, a process of this
    /// host, is gone); returns their names, and warns about scratch databases it leaves (built
    /// by a live process, on another host, or unmarked).
    pub async fn sweep(&self) -> Result<Vec<String>, PgError> {
        let rows = self
            .client
            .query(
                "SELECT datname::text, COALESCE(shobj_description(oid, 'pg_database'), '') \
                 FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
                &[&PREFIX],
            )
            .await
            .map_err(self.error("looking for scratch databases of killed drills"))?;
        let mut dropped = Vec::new();
        for r in rows {
            let name: String = r.get(0);
            let comment: String = r.get(1);
            if comment.starts_with(MARK) && crate::marker::builder_gone(&comment) {
                tracing::warn!(database = %name, "dropping the scratch database of a killed drill");
                self.drop(&name).await?;
                dropped.push(name);
            } else {
                tracing::info!(database = %name, comment = %comment,
                    "a scratch database of another drill is on the server; leaving it");
            }
        }
        Ok(dropped)
    }
}

/// `pgkeep_drill_<job>_<8 hex digits>`: the job's name (lowercase letters, digits and `_`,
/// others as `_`, at most 30 of them) and a random suffix.
pub fn name(job: &str) -> String {
    let part: String = job
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(JOB_PART)
        .collect();
    format!("{PREFIX}{part}_{:08x}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_safe_and_unique() {
        let a = name("App-DB.nightly");
        assert!(a.starts_with("pgkeep_drill_app_db_nightly_"), "{a}");
        assert_eq!(a.len(), "pgkeep_drill_app_db_nightly_".len() + 8);
        assert_ne!(a, name("App-DB.nightly"));
        let long = name(&"é".repeat(100));
        assert!(long.len() <= 63, "{long}");
        assert!(long.is_ascii());
    }
}
