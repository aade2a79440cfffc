//! What a backup reads: `pg_dump` and `pg_dumpall` child processes streaming their output, and
//! the per-table COPY export (see `export`).

pub mod cluster;
pub mod dump;
pub mod export;
pub mod snapshot;
pub use crate::pattern::{TablePattern, selected};

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
