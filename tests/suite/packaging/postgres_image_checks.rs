//! Checks of the running PostgreSQL container (container/postgres) beyond its roles and TLS,
//! called by `postgres_image`'s test on the container it started: the settings of its
//! postgresql.conf in effect, pg_stat_statements loaded and answering, and pgkeep's catalog
//! database — private to its role, created by `pgkeep migrate` as that role over verify-full,
//! and recording a backup whose `[catalog]` names it.

use std::time::Duration;

use super::podman::Podman;
use super::postgres_image::host_psql;
use super::text;
use crate::common::cli::{Pgkeep, Run};

/// The catalog role's password (the container reads it from `CATALOG_PASSWORD_FILE`).
pub(super) const CATALOG_PASSWORD: &str = "catalog pw: \"double\" $quotes";

/// `psql -XAt -c SQL...` inside the container, as the superuser over the local socket, in `db`.
async fn inside(podman: &Podman, name: &str, db: &str, sql: &[&str]) -> Vec<String> {
    let mut args = vec![
        "exec",
        name,
        "psql",
        "-XAt",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        db,
    ];
    for s in sql {
        args.extend(["-c", s]);
    }
    let out = podman.run_ok(&args, Duration::from_secs(30)).await;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// postgresql.conf's settings are the server's, and pg_stat_statements counts statements.
pub(super) async fn settings_and_pg_stat_statements(podman: &Podman, name: &str) {
    let settings = inside(
        podman,
        name,
        "postgres",
        &[
            "SELECT name || '=' || current_setting(name) FROM pg_settings \
           WHERE name IN ('ssl', 'password_encryption', 'shared_preload_libraries', \
                          'max_wal_size', 'checkpoint_timeout', 'maintenance_work_mem', \
                          'log_min_duration_statement', 'log_lock_waits', 'log_connections', \
                          'log_disconnections', 'log_checkpoints', 'log_temp_files', \
                          'track_io_timing', 'log_line_prefix') ORDER BY name",
        ],
    )
    .await;
    assert_eq!(
        settings,
        [
            "checkpoint_timeout=15min",
            "log_checkpoints=on",
            "log_connections=on",
            "log_disconnections=on",
            "log_line_prefix=%m [%p] %q%u@%d ",
            "log_lock_waits=on",
            "log_min_duration_statement=5s",
            "log_temp_files=0",
            "maintenance_work_mem=256MB",
            "max_wal_size=4GB",
            "password_encryption=scram-sha-256",
            "shared_preload_libraries=pg_stat_statements",
            "ssl=on",
            "track_io_timing=on",
        ]
    );
    // The entrypoint created the extension in `postgres`; it counts a statement run in `app`
    // (the view sees every database), and the extension can be created elsewhere too.
    let created = inside(
        podman,
        name,
        "postgres",
        &[
            "SELECT extversion <> '' FROM pg_extension WHERE extname = 'pg_stat_statements'",
            "SELECT 'reset' FROM pg_stat_statements_reset()",
        ],
    )
    .await;
    assert_eq!(created, ["t", "reset"]);
    inside(
        podman,
        name,
        "app",
        &[
            "SELECT count(*) FROM items WHERE id > 42",
            "SELECT count(*) FROM items WHERE id > 7",
        ],
    )
    .await;
    let stats = inside(
        podman,
        name,
        "postgres",
        &[
            "SELECT d.datname, s.calls, s.query FROM pg_stat_statements s \
               JOIN pg_database d ON d.oid = s.dbid WHERE s.query LIKE '%FROM items WHERE id >%'",
            "CREATE DATABASE pss_check",
        ],
    )
    .await;
    assert_eq!(
        stats[0], "app|2|SELECT count(*) FROM items WHERE id > $1",
        "{stats:?}"
    );
    let created = inside(
        podman,
        name,
        "pss_check",
        &[
            "CREATE EXTENSION pg_stat_statements",
            "SELECT count(*) > 0 FROM pg_stat_statements",
        ],
    )
    .await;
    assert_eq!(created, ["CREATE EXTENSION", "t"]);
    inside(podman, name, "postgres", &["DROP DATABASE pss_check"]).await;
}

/// Nobody but the catalog role (and the superuser) may connect to the catalog database.
pub(super) async fn catalog_is_private(app_url: &str) {
    let refused = host_psql(app_url, Some("app pw"), "SELECT 1").await;
    assert!(
        text(&refused).contains("permission denied for database \"pgkeep\""),
        "{}",
        text(&refused)
    );
}

/// `pgkeep migrate` creates the catalog as its role over verify-full (the password through
/// `PGPASSWORD`, never the command line).
pub(super) async fn migrate_catalog(p: &Pgkeep, catalog_url: &str) {
    let out = p
        .command(&["migrate", "--database", catalog_url])
        .env("PGPASSWORD", CATALOG_PASSWORD)
        .output()
        .await
        .expect("running pgkeep migrate");
    let run = Run::from(&out).expect_code(0);
    assert!(
        run.stdout.contains("applied 0001_catalog.sql")
            && run.stdout.contains("applied 0002_history_indexes.sql"),
        "{}",
        run.stdout
    );
}

/// The backup `id` of job `main` is in the catalog, committed, in tables the catalog role owns.
pub(super) async fn backup_recorded(catalog_url: &str, id: &str) {
    let rows = host_psql(
        catalog_url,
        Some(CATALOG_PASSWORD),
        "SELECT r.job, r.backup_id, r.status, r.server_version LIKE '15.%', \
                (SELECT count(*) FROM pgkeep.backup_object o WHERE o.run_id = r.run_id) > 0, \
                pg_get_userbyid(c.relowner), \
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) \
           FROM pgkeep.backup_run r, pg_class c \
          WHERE c.oid = 'pgkeep.backup_run'::regclass ORDER BY r.started_at",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        format!("main|{id}|committed|t|t|pgkeep_catalog|t"),
        "{}",
        text(&rows)
    );
}
