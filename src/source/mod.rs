//! What a backup reads: `pg_dump` and `pg_dumpall` child processes streaming their output.

pub mod export;
mod tool;

pub use crate::pattern::{TablePattern, selected};
pub use tool::{Running, Tool};

/// Errors of a source process; each names the program and carries stderr's tail.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{program} --version printed something unexpected: {output}")]
    Version { program: String, output: String },
    #[error(
        "{program} is version {version}, older than the server ({server_version}); install the PostgreSQL {server_major} client programs or point pg_bin_dir at them"
    )]
    TooOld {
        program: String,
        version: String,
        server_version: String,
        server_major: u32,
    },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: String,
        status: String,
        stderr: String,
    },
}

impl SourceError {
    /// Whether the failure reads like a permission problem (as opposed to a broken server).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, SourceError::Failed { stderr, .. } if stderr.contains("permission denied"))
    }
}

/// Arguments for a custom-format dump whose compression pgkeep does itself; the database and
/// credentials come from the environment (`Target::child_env`), never from argv.
pub fn pg_dump_args() -> Vec<String> {
    ["--format=custom", "--compress=0", "--no-password"]
        .map(String::from)
        .to_vec()
}

/// Arguments for the cluster's roles and tablespaces, read through `dbname`.
pub fn pg_dumpall_globals_args(dbname: &str, role_passwords: bool) -> Vec<String> {
    let mut args = vec![
        "--globals-only".to_string(),
        "--no-password".to_string(),
        format!("--database={dbname}"),
    ];
    if !role_passwords {
        args.push("--no-role-passwords".to_string());
    }
    args
}
