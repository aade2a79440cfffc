//! Cluster jobs (`databases = [...]`): the server's databases that the job's patterns select,
//! listed at each run (never a template, never one that refuses connections), dumped one after
//! the other, each in a snapshot of its own and counted there, into one repository run: the
//! one manifest commits them all, and the first database that fails fails the run.

use tokio_postgres::Client;

use super::dump::{self, DumpError};
use crate::config::{ClusterSettings, Job};
use crate::manifest::{DatabaseEntry, ObjectEntry};
use crate::pg::{PgError, Target};
use crate::process::Tool;
use crate::repository::Run;

/// The longest part of a database's name kept in its archive's object name.
const NAME_IN_KEY: usize = 48;

/// What a cluster run stored and counted, for the manifest.
#[derive(Debug, Default)]
pub struct ClusterDumped {
    pub objects: Vec<ObjectEntry>,
    pub databases: Vec<DatabaseEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(
        "no database of the server matches `databases` ({include}){exclude}: a backup of nothing is not taken"
    )]
    NoDatabase { include: String, exclude: String },
    #[error(
        "`databases` names '{}', which cannot be backed up: {why}",
        crate::redact::show(.pattern)
    )]
    Unavailable { pattern: String, why: &'static str },
    #[error("the server's list of databases holds a name that is not UTF-8 (a SQL_ASCII server?)")]
    NotUtf8,
    #[error("database '{}'", crate::human::name(.database))]
    Database {
        database: String,
        #[source]
        source: DumpError,
    },
}

impl ClusterError {
    /// Whether running the job again soon may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClusterError::Pg(e) => e.is_retryable(),
            ClusterError::NoDatabase { .. }
            | ClusterError::Unavailable { .. }
            | ClusterError::NotUtf8 => false,
            ClusterError::Database { source, .. } => source.is_retryable(),
        }
    }
}

/// The databases of the server `client` is connected to that `settings` selects, by name:
/// never a template, one that refuses connections (or that an interrupted `DROP DATABASE`
/// left invalid), or one pgkeep is building (its comment is a restore's or a drill's mark).
/// A wildcard pattern passes over the databases it may not back up, with a warning; a pattern
/// without wildcards names a database the run must back up.
///
/// # Errors
/// The catalog query failed; a pattern without wildcards names no database of the server, or
/// one that cannot be backed up.
pub async fn databases(
    client: &Client,
    target: &Target,
    settings: &ClusterSettings,
) -> Result<Vec<String>, ClusterError> {
    let rows = client
        .query(
            "SELECT datname, datistemplate, datallowconn AND datconnlimit <> -2, \
                    shobj_description(oid, 'pg_database') \
             FROM pg_catalog.pg_database ORDER BY datname COLLATE \"C\"",
            &[],
        )
        .await
        .map_err(|e| PgError::query("listing the server's databases", &target.describe(), e))?;
    let text = |row: &tokio_postgres::Row, i: usize| -> Result<Option<String>, ClusterError> {
        row.try_get::<_, Option<String>>(i)
            .map_err(|_| ClusterError::NotUtf8)
    };
    let mut out = Vec::new();
    let mut named: Vec<&str> = Vec::new();
    for row in &rows {
        let name = text(row, 0)?.unwrap_or_default();
        let (template, open): (bool, bool) = (row.get(1), row.get(2));
        if !settings.selects(&name) {
            continue;
        }
        let literal = settings
            .include
            .iter()
            .find(|p| p.is_literal() && p.matches(&name));
        let refusal = match (template, open) {
            (true, _) => Some("it is a template"),
            (false, false) => Some(
                "it does not accept connections (datallowconn, or left invalid by an interrupted DROP DATABASE)",
            ),
            (false, true) => None,
        };
        if let Some(why) = refusal {
            if let Some(pattern) = literal {
                return Err(ClusterError::Unavailable {
                    pattern: pattern.as_str().to_string(),
                    why,
                });
            }
            if !template {
                tracing::warn!(database = %name, "leaving out a database of the server: {why}");
            }
            continue;
        }
        if let Some(pattern) = literal {
            named.push(pattern.as_str());
        }
        // A restore's new database or a drill's scratch one, while pgkeep builds it: not the
        // server's data, and gone (renamed or dropped) before long. An undecodable comment is
        // not pgkeep's mark.
        let comment = text(row, 3).ok().flatten();
        if comment.as_deref().is_some_and(crate::marker::is_mark) {
            tracing::info!(database = %name, comment = comment.as_deref().unwrap_or_default(),
                "leaving out a database pgkeep is building (a restore or a drill)");
            continue;
        }
        out.push(name);
    }
    let excluded = |p: &crate::pattern::DatabasePattern| {
        settings.exclude.iter().any(|e| e.matches(p.as_str()))
    };
    if let Some(missing) = settings
        .include
        .iter()
        .find(|p| p.is_literal() && !named.contains(&p.as_str()) && !excluded(p))
    {
        return Err(ClusterError::Unavailable {
            pattern: missing.as_str().to_string(),
            why: "the server has no such database",
        });
    }
    Ok(out)
}

/// Dumps every database `settings` selects on `target`'s server into `run`, one after the
/// other.
///
/// # Errors
/// `ClusterError`, naming the database that failed; whatever was stored is left for the
/// caller to discard.
pub async fn run(
    job: &Job,
    settings: &ClusterSettings,
    run: &Run,
    target: &Target,
    pg_dump: &Tool,
) -> Result<ClusterDumped, ClusterError> {
    let client = target.connect().await?;
    let names = databases(&client, target, settings).await?;
    drop(client);
    if names.is_empty() {
        let join = |patterns: &[crate::pattern::DatabasePattern]| {
            patterns
                .iter()
                .map(|p| format!("'{}'", crate::redact::show(p.as_str())))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let exclude = if settings.exclude.is_empty() {
            String::new()
        } else {
            format!(" and no `exclude_databases` ({})", join(&settings.exclude))
        };
        return Err(ClusterError::NoDatabase {
            include: join(&settings.include),
            exclude,
        });
    }
    tracing::info!(job = %job.name, backup = %run.id(), databases = names.len(),
        "backing up the server's databases: {}", names.join(", "));
    let mut out = ClusterDumped::default();
    for (index, name) in names.iter().enumerate() {
        let key = object_name(index, name, job.compression.suffix());
        let failed = |source| ClusterError::Database {
            database: name.clone(),
            source,
        };
        tracing::info!(job = %job.name, backup = %run.id(), database = %name, object = %key,
            "dumping a database of the server");
        let dumped = dump::run(job, run, &target.with_dbname(name), pg_dump, &key)
            .await
            .map_err(failed)?;
        out.databases.push(DatabaseEntry {
            name: name.clone(),
            object: key,
            snapshot: dumped.snapshot,
            wal_lsn: dumped.wal_lsn,
            tables: dumped.tables,
            sequences: dumped.sequences,
        });
        out.objects.push(dumped.object);
    }
    Ok(out)
}

/// `databases/<index>-<name>.pgdump<suffix>`: the index keeps names unique and in the
/// manifest's order; the name (its letters, digits, `-`, `_` and `.`, others as `_`,
/// shortened) is for people listing the store. The manifest maps each database to its key.
pub fn object_name(index: usize, database: &str, suffix: &str) -> String {
    let readable: String = database
        .chars()
        .take(NAME_IN_KEY)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("databases/{index:04}-{readable}.pgdump{suffix}")
}

#[cfg(test)]
mod tests {
    use super::object_name;

    #[test]
    fn object_names_are_plain_and_unique() {
        assert_eq!(object_name(0, "app", ".gz"), "databases/0000-app.pgdump.gz");
        let odd = object_name(12, "Odd/Name \"ü\"; ..", ".zst");
        assert_eq!(odd, "databases/0012-Odd_Name______...pgdump.zst");
        assert!(crate::manifest::valid_object_name(&odd));
        let long = object_name(3, &"x".repeat(300), "");
        assert!(long.len() < 80, "{long}");
        assert_ne!(object_name(1, "a b", ""), object_name(2, "a_b", ""));
    }
}
