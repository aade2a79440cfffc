//! The psycopg2 client of the catalog (`clients/python`): its pytest suite run against this
//! process's TLS test cluster with the pgkeep binary under test, and its status query checked
//! to be the one pgkeep runs (`catalog::LATEST_COMMITTED_SQL`, EXPLAIN-checked there).
//!
//! Needs `python3` (or `$PGKEEP_TEST_PYTHON`) with psycopg2 and pytest, which
//! `scripts/test-deps.sh` installs; without them the tests fail and say so.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common::pg::{PW_REQUIRED_ROLE, SSL_REQUIRED_ROLE, cluster};

fn client_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

fn python() -> String {
    std::env::var("PGKEEP_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// `python3 ARGS` in clients/python with its package importable; panics unless it starts.
async fn run_python(
    args: &[&str],
    envs: &[(&str, String)],
    limit: Duration,
) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(python());
    cmd.args(args)
        .current_dir(client_dir())
        .env("PYTHONPATH", client_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    tokio::time::timeout(limit, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{} {} took more than {limit:?}", python(), args.join(" ")))
        .unwrap_or_else(|e| panic!("starting {}: {e}", python()))
}

async fn require_modules() {
    let out = run_python(
        &[
            "-c",
            "import psycopg2, pytest, mypy; print(psycopg2.__version__)",
        ],
        &[],
        Duration::from_mins(1),
    )
    .await;
    assert!(
        out.status.success(),
        "{} lacks psycopg2, pytest or mypy (scripts/test-deps.sh installs clients/python/requirements-test.txt):\n{}",
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_status_query_is_pgkeeps() {
    require_modules().await;
    let out = run_python(
        &[
            "-c",
            "from pgkeep_catalog import queries; print(queries.LATEST_COMMITTED_SQL)",
        ],
        &[],
        Duration::from_mins(1),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let squash = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(
        squash(&String::from_utf8_lossy(&out.stdout)),
        squash(pgkeep::catalog::LATEST_COMMITTED_SQL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_passes_a_strict_type_check() {
    require_modules().await;
    let out = run_python(
        &[
            "-m",
            "mypy",
            "--strict",
            "--cache-dir=/dev/null",
            "pgkeep_catalog",
        ],
        &[],
        Duration::from_mins(3),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.starts_with("Success: no issues found"),
        "mypy --strict:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The counts in pytest's closing line, e.g. "41 passed, 1 skipped in 12.3s".
fn summary_count(line: &str, what: &str) -> usize {
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    words
        .windows(2)
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_pytest_suite_passes_against_the_tls_cluster() {
    require_modules().await;
    let c = cluster();
    let envs = [
        ("PGKEEP_TEST_PG_HOST", c.host().to_string()),
        ("PGKEEP_TEST_PG_PORT", c.port().to_string()),
        (
            "PGKEEP_TEST_PG_CA",
            c.ca_cert_path().to_string_lossy().into_owned(),
        ),
        (
            "PGKEEP_TEST_PGKEEP",
            env!("CARGO_BIN_EXE_pgkeep").to_string(),
        ),
        ("PGKEEP_TEST_PW_ROLE", PW_REQUIRED_ROLE.to_string()),
        ("PGKEEP_TEST_SSL_ROLE", SSL_REQUIRED_ROLE.to_string()),
        ("PGKEEP_TEST_PREFIX", std::process::id().to_string()),
    ];
    let t = Instant::now();
    let out = run_python(
        &[
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rfEs",
            "tests",
        ],
        &envs,
        Duration::from_mins(5),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pytest failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    assert!(
        summary_count(last, "passed") >= 30 && summary_count(last, "skipped") == 0,
        "pytest's summary: {last}\n{stdout}"
    );
    eprintln!("python client: {last} ({:.1?})", t.elapsed());
}
