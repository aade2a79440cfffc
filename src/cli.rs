//! Command-line definitions (clap).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pgkeep",
    version,
    about = "Keeps PostgreSQL databases safe: backups to object storage, and restores"
)]
pub struct Cli {
    /// Configuration file (default: $PGKEEP_CONFIG, ./pgkeep.toml, /etc/pgkeep/pgkeep.toml)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// A progress line on stderr for backup, restore, verify and drill: when stderr is a
    /// terminal (auto), always, or never
    #[arg(long, global = true, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressArg {
    Never,
    Auto,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SchemaFromArg {
    Dump,
    Migrations,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: runs every scheduled job on its schedule; serves /metrics, /healthz and
    /// /readyz at [daemon] listen; stops cleanly on SIGTERM or SIGINT
    Run,
    /// Diagnose the configuration, the store, and each job's connection, TLS, table access
    /// and pg_dump version; one line per check, exit 1 if any fails
    Check,
    /// Run one job now; prints the new backup's id as the last line
    Backup {
        /// The job (may be omitted when there is exactly one)
        job: Option<String>,
    },
    /// List committed backups, newest first; damaged ones are marked
    List {
        #[arg(long)]
        job: Option<String>,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
        /// Also check that every object is in the store with its recorded size (no download)
        #[arg(long)]
        verify: bool,
    },
    /// Show one backup's manifest
    Show {
        /// A backup id, or `latest`
        backup: String,
        #[arg(long)]
        job: Option<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
        /// Print the backup's roles and tablespaces (the globals SQL), read and verified
        #[arg(long, conflicts_with = "json")]
        globals: bool,
        /// An age identity file, for --globals of an encrypted backup (repeatable; default:
        /// $PGKEEP_AGE_IDENTITY_FILE, then storage.encryption.identity_file)
        #[arg(long, value_name = "FILE", requires = "globals")]
        identity: Vec<PathBuf>,
    },
    /// Restore a backup into a database: built beside the target and swapped in by renaming,
    /// so a failed restore leaves the target as it was
    Restore {
        /// A backup id, or `latest`
        backup: String,
        #[arg(long)]
        job: Option<String>,
        /// The target database (libpq conninfo or URL); its password comes from the URL,
        /// PGPASSWORD or the passfile
        #[arg(long, value_name = "CONNINFO")]
        target: String,
        /// Parallel pg_restore jobs (above 1 the dump is staged to a temp file first)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// Replace a target that holds data (atomically, once the restore is complete)
        #[arg(long)]
        clean: bool,
        /// Create the target database if it does not exist
        #[arg(long)]
        create: bool,
        /// Restore straight into the existing, empty target (for a role that may not create or
        /// rename databases); not atomic: a failure leaves what was loaded
        #[arg(long)]
        in_place: bool,
        /// Keep the replaced database under a printed name instead of dropping it
        #[arg(long)]
        keep_old: bool,
        /// Print what the restore would do, after every check, and change nothing (read-only
        /// sessions only)
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: print the plan as one JSON object (fields in docs/FORMAT.md)
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Do not restore object ownership (for a server without the source's roles)
        #[arg(long)]
        no_owner: bool,
        /// Export backups: take the schema from the captured dump or from the job's
        /// migrations (default: migrations when the job has a migrations dir)
        #[arg(long, value_enum)]
        schema_from: Option<SchemaFromArg>,
        /// Restore only the tables matching these patterns: for an export their data (the
        /// whole schema is created), for a dump their schema and data with what belongs to
        /// them; foreign keys only between restored tables
        #[arg(long, value_delimiter = ',', value_name = "PATTERN,...")]
        tables: Vec<String>,
        /// Export backups: load the data even when the migrated schema differs
        #[arg(long)]
        allow_drift: bool,
        /// Cluster backups (of a whole server): the database to restore; it keeps its name on
        /// the server of --target unless --target names a database
        #[arg(long, value_name = "NAME")]
        database: Option<String>,
        /// An age identity file for encrypted backups (repeatable; default:
        /// $PGKEEP_AGE_IDENTITY_FILE, then storage.encryption.identity_file)
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Restore only the backup's roles into the server of --target, in one transaction:
        /// missing roles are created, existing ones left alone, tablespaces skipped
        #[arg(long, conflicts_with_all = [
            "jobs", "clean", "create", "in_place", "keep_old", "no_owner", "schema_from", "tables",
            "allow_drift", "json", "database",
        ])]
        globals_only: bool,
        /// With --globals-only: also bring existing roles to the backup's attributes,
        /// settings, memberships and comments (never the role running the restore)
        #[arg(long, requires = "globals_only")]
        update_roles: bool,
        /// With --globals-only: set the backup's role passwords (without it none is set)
        #[arg(long, requires = "globals_only")]
        role_passwords: bool,
    },
    /// Re-read backups: check every object's size and sha256, decode it fully, and check the
    /// archive (pg_restore --list) or the row count; exit 1 naming every damaged object
    /// Prove a backup restores: restore it into a new scratch database on a server, check
    /// every table's rows (and, for exports, their content) and every sequence against what
    /// the backup recorded, then drop the scratch database; exit 0 only if every check passed
    Drill {
        /// The job (optional when there is one job)
        job: Option<String>,
        /// A backup id, or `latest`
        #[arg(long, default_value = "latest")]
        backup: String,
        /// The server to drill on (libpq conninfo or URL, of its maintenance database:
        /// `postgres` when it names none); the role must be able to create databases
        #[arg(long, value_name = "CONNINFO")]
        target: String,
        /// Parallel sessions of the restore
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
        jobs: u32,
        /// Do not restore object ownership (for a server without the source's roles)
        #[arg(long)]
        no_owner: bool,
        /// Export backups: take the schema from the captured dump or from the job's migrations
        #[arg(long, value_enum)]
        schema_from: Option<SchemaFromArg>,
        /// An age identity file for encrypted backups (repeatable; default:
        /// $PGKEEP_AGE_IDENTITY_FILE, then storage.encryption.identity_file)
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    Verify {
        /// A backup id, or `latest` (the default)
        #[arg(conflicts_with = "all")]
        backup: Option<String>,
        /// Every committed backup (of --job, or of all jobs)
        #[arg(long)]
        all: bool,
        #[arg(long)]
        job: Option<String>,
        /// An age identity file: encrypted objects are then decoded too, not only checked
        /// for integrity (repeatable; default: $PGKEEP_AGE_IDENTITY_FILE, then
        /// storage.encryption.identity_file)
        #[arg(long, value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    /// Apply retention: delete the backups no keep_* rule keeps (never the newest)
    Prune {
        /// One job (default: every job with a retention policy)
        #[arg(long)]
        job: Option<String>,
        /// Print the plan and change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Apply SQL migrations (NNNN_name.sql files in --dir; without --dir, pgkeep's own
    /// catalog schema); needs no configuration file
    Migrate {
        /// The database (libpq conninfo or URL); its password comes from the URL,
        /// PGPASSWORD or the passfile
        #[arg(long, value_name = "CONNINFO")]
        database: String,
        /// The migrations directory (default: pgkeep's catalog migrations, built in)
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Stop after this version
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
        target_version: Option<i64>,
        /// The tracking table, optionally schema-qualified (default: pgkeep_schema_migrations,
        /// or pgkeep.schema_migrations for the catalog)
        #[arg(long, value_name = "NAME")]
        table: Option<String>,
    },
    /// The catalog database mirroring backup history ([catalog] in the configuration)
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Apply the catalog's migrations, then rebuild its committed backups from the manifests
    /// in storage (the manifests are the truth)
    Sync,
}
