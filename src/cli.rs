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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one job now; prints the new backup's id as the last line
    Backup {
        /// The job (may be omitted when there is exactly one)
        job: Option<String>,
    },
    /// List committed backups, newest first
    List {
        #[arg(long)]
        job: Option<String>,
        /// Print a JSON array
        #[arg(long)]
        json: bool,
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
    },
    /// Restore a backup into a database
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
        /// Drop the backup's objects in the target before recreating them
        #[arg(long)]
        clean: bool,
        /// Create the target database if it does not exist
        #[arg(long)]
        create: bool,
        /// Do not restore object ownership (for a server without the source's roles)
        #[arg(long)]
        no_owner: bool,
    },
}
