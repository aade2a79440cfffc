//! Restores: plan (resolve the backup, check the target) then apply — pg_restore for a dump;
//! schema (captured or from migrations) plus parallel COPY FROM for an export.

mod dump;
mod export;
mod load;
mod queue;
mod schema;
mod stage;
mod toc;

use std::time::Duration;

use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::{self, PgError, Target};
use crate::source::SourceError;
use crate::store::{ObjectStore, StoreError};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
#[allow(clippy::struct_excessive_bools)] // independent command-line switches
pub struct RestoreOptions {
    /// libpq conninfo of the target database.
    pub target: String,
    /// Parallel pg_restore jobs; above 1 the dump is staged to a local temp file first.
    pub jobs: u32,
    /// Replace a non-empty target: drop and recreate the database (same owner, encoding and
    /// locale) before restoring into it.
    pub clean: bool,
    /// Create the target database when it does not exist.
    pub create: bool,
    /// Skip ownership commands (for a target without the source's roles).
    pub no_owner: bool,
    /// Where archives are staged when pg_restore needs a seekable file; the system temp dir
    /// when `None`.
    pub staging_dir: Option<std::path::PathBuf>,
    /// Export backups: where the schema comes from (default: migrations when the job has a
    /// migrations directory, else the captured schema).
    pub schema_from: Option<SchemaFrom>,
    /// Export backups: the job's migrations (directory and tracking table), if configured.
    pub migrations: Option<crate::config::Migrations>,
    /// Export backups: restore only the data of tables matching these patterns.
    pub tables: Vec<String>,
    /// Export backups: load data even when the migrated schema differs from the captured one.
    pub allow_drift: bool,
}

/// Where an export restore takes the schema from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaFrom {
    /// The schema pg_dump captured in the backup's snapshot.
    Dump,
    /// The application's migrations, up to the backup's recorded migration version.
    Migrations,
}

/// Errors of a restore; none of them leaves a silently half-restored database behind
/// when it is detected before pg_restore commits.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Pg(#[from] PgError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Damaged(std::io::Error),
    #[error(
        "target database '{database}' is not empty (it has {examples}); refusing to overwrite it without --clean"
    )]
    TargetNotEmpty { database: String, examples: String },
    #[error("target database '{database}' does not exist; create it or pass --create")]
    MissingDatabase { database: String },
    #[error("backup {id} of job '{job}' has no {role} object")]
    MissingObject {
        id: String,
        job: String,
        role: &'static str,
    },
    #[error("backup {id} is a '{kind}' backup, which this version of pgkeep cannot restore")]
    UnsupportedKind { id: String, kind: String },
    #[error("{0}")]
    Usage(String),
    #[error(
        "the schema built by the migrations differs from the backup's:\n{diff}\n(pass --allow-drift to load the data anyway)"
    )]
    Drift { diff: String },
    #[error(transparent)]
    Migrate(#[from] crate::migrate::MigrateError),
    #[error("table {table}: loaded {loaded} rows but the backup holds {expected}")]
    RowCount {
        table: String,
        loaded: u64,
        expected: u64,
    },
    #[error("loading table {table}: {reason}")]
    Load { table: String, reason: String },
}

/// A checked restore, ready to apply.
#[derive(Debug)]
pub struct RestorePlan {
    pub manifest: Manifest,
    pub target: Target,
    pub object: ObjectEntry,
    pub create_database: bool,
    /// The target is not empty and `--clean` was given: it is dropped and recreated.
    pub replace_database: bool,
    pub options: RestoreOptions,
}

/// What a finished restore did.
#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub backup: String,
    pub job: String,
    pub database: String,
    pub raw_bytes: u64,
    pub duration: Duration,
}

/// Checks everything that can be checked without changing anything: the backup has a dump,
/// the target exists (or may be created) and is empty (or `--clean` was given).
///
/// # Errors
/// `RestoreError` saying what is wrong; nothing has been changed.
pub async fn plan(
    manifest: Manifest,
    options: RestoreOptions,
) -> Result<RestorePlan, RestoreError> {
    if manifest.kind != "dump" && manifest.kind != "export" {
        return Err(RestoreError::UnsupportedKind {
            id: manifest.id.clone(),
            kind: manifest.kind.clone(),
        });
    }
    let role = if manifest.kind == "export" {
        "schema"
    } else {
        "dump"
    };
    let object = manifest
        .object(role)
        .cloned()
        .ok_or_else(|| RestoreError::MissingObject {
            id: manifest.id.clone(),
            job: manifest.job.clone(),
            role,
        })?;
    if manifest.kind == "export" {
        export::check_options(&manifest, &options)?;
    } else if !options.tables.is_empty() || options.schema_from.is_some() || options.allow_drift {
        return Err(RestoreError::Usage(
            "--tables, --schema-from and --allow-drift apply to export backups only".into(),
        ));
    }
    let target = Target::resolve(&options.target, None)?;
    let mut create_database = false;
    let mut replace_database = false;
    match target.connect().await {
        Ok(client) => {
            let found = pg::user_relations(&client, &target, 5).await?;
            if !found.is_empty() && !options.clean {
                return Err(RestoreError::TargetNotEmpty {
                    database: target.dbname().to_string(),
                    examples: found.join(", "),
                });
            }
            replace_database = !found.is_empty();
        }
        Err(e) if e.is_missing_database() && options.create => create_database = true,
        Err(e) if e.is_missing_database() => {
            return Err(RestoreError::MissingDatabase {
                database: target.dbname().to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    Ok(RestorePlan {
        manifest,
        target,
        object,
        create_database,
        replace_database,
        options,
    })
}

/// Carries out a plan.
///
/// # Errors
/// `RestoreError`; with `--jobs 1` a damaged object is detected before pg_restore can commit,
/// and its single transaction is rolled back.
pub async fn apply(
    store: &dyn ObjectStore,
    plan: RestorePlan,
) -> Result<RestoreReport, RestoreError> {
    let started = std::time::Instant::now();
    if plan.replace_database {
        recreate_database(&plan.target).await?;
    } else if plan.create_database {
        create_database(&plan.target).await?;
    }
    let raw_bytes = if plan.manifest.kind == "export" {
        export::apply(store, &plan).await?
    } else {
        dump::apply(store, &plan).await?
    };
    Ok(RestoreReport {
        backup: plan.manifest.id.clone(),
        job: plan.manifest.job.clone(),
        database: plan.target.dbname().to_string(),
        raw_bytes,
        duration: started.elapsed(),
    })
}

/// Drops the target database and creates it anew with the same owner, encoding and locale:
/// what `--clean` means, so that nothing of the old contents survives next to the backup's.
async fn recreate_database(target: &Target) -> Result<(), RestoreError> {
    let (admin, client) = maintenance_connection(target).await?;
    let query = |what: &'static str| {
        let t = admin.describe();
        move |e: tokio_postgres::Error| PgError::Query {
            what,
            target: t.clone(),
            reason: pg::describe_error(&e),
        }
    };
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype              FROM pg_database WHERE datname = $1",
            &[&target.dbname()],
        )
        .await
        .map_err(query("reading the target database's settings"))?;
    let (owner, encoding, collate, ctype): (String, String, String, String) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    let name = pg::quote_ident(target.dbname());
    tracing::warn!(database = %target.dbname(), "--clean: dropping and recreating the target database");
    client
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .map_err(query("DROP DATABASE"))?;
    client
        .batch_execute(&format!(
            "CREATE DATABASE {name} OWNER {} ENCODING {} LC_COLLATE {} LC_CTYPE {} TEMPLATE template0",
            pg::quote_ident(&owner),
            pg::quote_literal(&encoding),
            pg::quote_literal(&collate),
            pg::quote_literal(&ctype),
        ))
        .await
        .map_err(query("CREATE DATABASE"))?;
    Ok(())
}

/// A connection to the target's server through its `postgres` database, or `template1`.
async fn maintenance_connection(
    target: &Target,
) -> Result<(Target, tokio_postgres::Client), RestoreError> {
    let mut last = None;
    for maintenance in ["postgres", "template1"] {
        let admin = target.with_dbname(maintenance);
        match admin.connect().await {
            Ok(client) => return Ok((admin, client)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("tried at least once").into())
}

/// Creates the target database from template0 (a clean slate, as pg_dump output expects),
/// through the server's `postgres` database, or `template1` when that is missing.
async fn create_database(target: &Target) -> Result<(), RestoreError> {
    let (admin, client) = maintenance_connection(target).await?;
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0",
        pg::quote_ident(target.dbname())
    );
    client
        .batch_execute(&sql)
        .await
        .map_err(|e| PgError::Query {
            what: "CREATE DATABASE",
            target: admin.describe(),
            reason: pg::describe_error(&e),
        })?;
    tracing::info!(database = %target.dbname(), "created the target database");
    Ok(())
}
