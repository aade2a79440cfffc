//! The PostgreSQL image (container/postgres) built and run for real: first start creates the
//! cluster, a self-signed certificate, the backup role, the application database and pgkeep's
//! catalog database; its settings and pg_stat_statements are checked (`postgres_image_checks`);
//! pgkeep migrates the catalog as its role and backs the database up over `verify-full` TLS as
//! the backup role, recording the run into the catalog, and the backup restores; a connection
//! without TLS, the superuser over the network and a wrong password are refused; a restart
//! keeps the certificate; a missing secret stops the first start with one line, and a first
//! start that failed half-way is refused at the next one.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use super::podman::{BASE_IMAGE, Podman, unique};
use super::postgres_image_checks::{self as checks, CATALOG_PASSWORD};
use super::{repo, text};
use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;
use crate::common::s3::free_port;

const BACKUP_PASSWORD: &str = "backup pw: with 'quotes' & spaces";
const SEED_ROWS: i64 = 1000;

/// `psql -XAt -c SQL` from the host against the container, with `PGPASSWORD`; the output
/// whatever the status.
pub(super) async fn host_psql(
    url: &str,
    password: Option<&str>,
    sql: &str,
) -> std::process::Output {
    let mut cmd = cluster().command("psql");
    cmd.args([
        "-X",
        "-A",
        "-t",
        "-v",
        "ON_ERROR_STOP=1",
        "-d",
        url,
        "-c",
        sql,
    ])
    .env("PGCONNECT_TIMEOUT", "5");
    if let Some(pw) = password {
        cmd.env("PGPASSWORD", pw);
    }
    tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("psql took more than 30 s")
        .expect("running psql")
}

fn write_private(path: &Path, content: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, content).expect("writing a secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Waits until the backup role can log in over TLS (the final server, not the set-up one).
async fn wait_ready(podman: &Podman, name: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = host_psql(url, Some(BACKUP_PASSWORD), "SELECT 1").await;
        if out.status.success() {
            return;
        }
        if Instant::now() > deadline {
            let logs = podman.run(&["logs", name], Duration::from_secs(30)).await;
            panic!(
                "the container's server did not accept the backup role after 90 s:\n{}\n--- logs\n{}",
                text(&out),
                text(&logs)
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_image_is_tls_only_and_pgkeep_backs_it_up_as_the_backup_role() {
    let work = tempfile::tempdir().expect("tempdir");
    let Some(podman) = Podman::find(work.path()) else {
        return;
    };
    let mut timings = String::new();
    podman.ensure_base_image().await;

    let image = format!("localhost/{}:test", unique("pgkeep-test-postgres"));
    let t = Instant::now();
    let _image = podman
        .build(
            &repo().join("container/postgres/Dockerfile"),
            &repo().join("container/postgres"),
            &[
                "--build-arg",
                &format!("BASE_IMAGE={BASE_IMAGE}"),
                "--build-arg",
                "PG_APT_REPO=debian",
                "--build-arg",
                "PG_MAJOR=15",
            ],
            &image,
        )
        .await;
    let _ = write!(timings, "build {:.1?}", t.elapsed());
    let inspect = podman
        .run_ok(&["image", "inspect", &image], Duration::from_secs(30))
        .await;
    let inspect: serde_json::Value =
        serde_json::from_slice(&inspect.stdout).expect("podman image inspect's JSON");
    let config = &inspect[0]["Config"];
    assert_eq!(config["User"], "999:999", "{config}");
    assert_eq!(config["StopSignal"], "SIGINT", "{config}");
    let env = config["Env"].to_string();
    assert!(!env.to_ascii_uppercase().contains("PASSWORD"), "{env}");
    assert!(
        inspect[0]["Healthcheck"]["Test"]
            .to_string()
            .contains("pg_isready"),
        "{inspect}"
    );

    // Secrets and the seed script as files, the exported certificate into a host directory.
    let secrets = work.path().join("secrets");
    let tls = work.path().join("tls");
    let initdb = work.path().join("initdb");
    for dir in [&secrets, &tls, &initdb] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    write_private(
        &secrets.join("backup-password"),
        &format!("{BACKUP_PASSWORD}\n"),
    );
    write_private(&secrets.join("app-password"), "app pw\n");
    write_private(
        &secrets.join("catalog-password"),
        &format!("{CATALOG_PASSWORD}\n"),
    );
    std::fs::write(
        initdb.join("10-seed.sql"),
        format!(
            "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);\n\
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, {SEED_ROWS}) g;\n"
        ),
    )
    .expect("writing the seed script");

    let port = free_port();
    let name = unique("pgkeep-test-postgres");
    let _container = podman.container(&name);
    let secrets_mount = format!("{}:/run/secrets:ro,U", secrets.display());
    let tls_mount = format!("{}:/var/lib/postgresql/tls:U", tls.display());
    let initdb_mount = format!("{}:/docker-entrypoint-initdb.d:ro", initdb.display());
    let pgport = format!("PGPORT={port}");
    let t = Instant::now();
    podman
        .run_ok(
            &[
                "run",
                "--detach",
                "--timeout",
                "600",
                "--name",
                &name,
                "--network",
                "host",
                "-e",
                &pgport,
                "-e",
                "BACKUP_PASSWORD_FILE=/run/secrets/backup-password",
                "-e",
                "POSTGRES_DB=app",
                "-e",
                "APP_ROLE=app",
                "-e",
                "APP_PASSWORD_FILE=/run/secrets/app-password",
                "-e",
                "CATALOG_PASSWORD_FILE=/run/secrets/catalog-password",
                "-v",
                &secrets_mount,
                "-v",
                &tls_mount,
                "-v",
                &initdb_mount,
                &image,
                "postgres",
                "-c",
                "listen_addresses=127.0.0.1",
            ],
            Duration::from_mins(1),
        )
        .await;
    let ca = tls.join("server.crt");
    let tls_url = |user: &str, host: &str| {
        format!(
            "postgres://{user}@{host}:{port}/app?sslmode=verify-full&sslrootcert={}",
            ca.display()
        )
    };
    wait_ready(&podman, &name, &tls_url("pgkeep_backup", "127.0.0.1")).await;
    let _ = write!(timings, ", first start {:.1?}", t.elapsed());
    podman
        .run_ok(&["healthcheck", "run", &name], Duration::from_secs(30))
        .await;
    checks::settings_and_pg_stat_statements(&podman, &name).await;

    // Inside, through the local socket: the roles as the image promises them.
    let inside = podman
        .run_ok(
            &[
                "exec",
                &name,
                "psql",
                "-XAt",
                "-c",
                "SELECT rolname, rolsuper, rolpassword IS NULL, rolpassword LIKE 'SCRAM-SHA-256$%', \
                        pg_has_role(rolname, 'pg_read_all_data', 'member'), rolcreatedb \
                   FROM pg_authid WHERE rolname IN ('postgres', 'pgkeep_backup', 'app', 'pgkeep_catalog') \
                  ORDER BY 1",
                "-c",
                "SHOW data_checksums",
                "-c",
                "SELECT datname, pg_get_userbyid(datdba), datacl::text FROM pg_database \
                  WHERE datname IN ('app', 'pgkeep') ORDER BY 1",
            ],
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(
        String::from_utf8_lossy(&inside.stdout)
            .lines()
            .collect::<Vec<_>>(),
        [
            "app|f|f|t|f|t",
            "pgkeep_backup|f|f|t|t|f",
            "pgkeep_catalog|f|f|t|f|f",
            "postgres|t|t||t|t",
            "on",
            "app|app|",
            "pgkeep|pgkeep_catalog|{pgkeep_catalog=CTc/pgkeep_catalog}",
        ],
        "{}",
        text(&inside)
    );

    // Refused: no TLS; the superuser over the network; a wrong password; a host name the
    // certificate does not name.
    let plain = host_psql(
        &format!("postgres://pgkeep_backup@127.0.0.1:{port}/app?sslmode=disable"),
        Some(BACKUP_PASSWORD),
        "SELECT 1",
    )
    .await;
    assert!(!plain.status.success());
    assert!(
        text(&plain).contains(
            "no pg_hba.conf entry for host \"127.0.0.1\", user \"pgkeep_backup\", database \"app\", no encryption"
        ),
        "{}",
        text(&plain)
    );
    let superuser = host_psql(&tls_url("postgres", "127.0.0.1"), None, "SELECT 1").await;
    assert!(
        text(&superuser)
            .contains("pg_hba.conf rejects connection for host \"127.0.0.1\", user \"postgres\""),
        "{}",
        text(&superuser)
    );
    let wrong = host_psql(
        &tls_url("pgkeep_backup", "127.0.0.1"),
        Some("not it"),
        "SELECT 1",
    )
    .await;
    assert!(
        text(&wrong).contains("password authentication failed for user \"pgkeep_backup\""),
        "{}",
        text(&wrong)
    );
    let backup_role = host_psql(
        &tls_url("pgkeep_backup", "localhost"),
        Some(BACKUP_PASSWORD),
        "SELECT ssl, count(*) FROM pg_stat_ssl JOIN items ON true WHERE pid = pg_backend_pid() GROUP BY ssl",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&backup_role.stdout).trim(),
        format!("t|{SEED_ROWS}"),
        "{}",
        text(&backup_role)
    );
    let written = host_psql(
        &tls_url("pgkeep_backup", "127.0.0.1"),
        Some(BACKUP_PASSWORD),
        "INSERT INTO items VALUES (0, 'no')",
    )
    .await;
    assert!(
        text(&written).contains("permission denied for table items"),
        "{}",
        text(&written)
    );

    // pgkeep backs up through verify-full as the backup role, its password from a file.
    // PGPASSWORD is the application role's, for the restore below; the job's password_file
    // comes first for the backup.
    // The catalog: pgkeep migrate creates it as its role; the backup records into it.
    let p = Pgkeep::with_config("").env("PGPASSWORD", "app pw");
    let store = p.dir.path().join("backups");
    let catalog_url = tls_url("pgkeep_catalog", "localhost").replace("/app?", "/pgkeep?");
    checks::catalog_is_private(&tls_url("app", "127.0.0.1").replace("/app?", "/pgkeep?")).await;
    checks::migrate_catalog(&p, &catalog_url).await;
    p.write_config(&format!(
        "[storage]\nurl = \"file://{}\"\n\n[catalog]\ndatabase = \"{catalog_url}\"\n\
         password_file = \"{}\"\n\n[jobs.main]\nkind = \"dump\"\ndatabase = \"{}\"\n\
         password_file = \"{}\"\ncompression = \"gzip:1\"\n",
        store.display(),
        secrets.join("catalog-password").display(),
        tls_url("pgkeep_backup", "127.0.0.1"),
        secrets.join("backup-password").display()
    ));
    let t = Instant::now();
    let id = p.backup_ok().await;
    let _ = write!(timings, ", backup {:.1?}", t.elapsed());
    checks::backup_recorded(&catalog_url, &id).await;
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.join("main").join(&id).join("manifest.json")).expect("manifest"),
    )
    .expect("manifest JSON");
    assert!(
        manifest["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("pgkeep_backup@127.0.0.1:")),
        "{manifest}"
    );
    assert!(
        manifest["server_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("15.")),
        "{manifest}"
    );
    // pg_read_all_data reads pg_authid too: the roles are saved with their SCRAM verifiers
    // (docs/DATABASE.md says so, and why to encrypt backups).
    assert_eq!(manifest["globals"]["role_passwords"], true, "{manifest}");
    let mut globals = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(
            std::fs::File::open(store.join("main").join(&id).join("globals.sql.gz"))
                .expect("globals.sql.gz"),
        ),
        &mut globals,
    )
    .expect("decompressing globals.sql.gz");
    assert!(
        globals
            .lines()
            .any(|l| l.starts_with("ALTER ROLE app ") && l.contains("PASSWORD 'SCRAM-SHA-256$")),
        "{globals}"
    );

    // And the backup holds the seeded rows: restored into the test cluster.
    let c = cluster();
    let restored = c.unique_name("postgres_image_restored");
    p.run(&[
        "restore",
        "latest",
        "--target",
        &c.url(&restored),
        "--create",
        "--no-owner",
    ])
    .await
    .expect_code(0);
    let rows = c
        .psql_sql(
            &restored,
            "\\pset tuples_only on\nSELECT count(*) FROM items;",
        )
        .await;
    assert_eq!(rows.trim(), SEED_ROWS.to_string());
    c.drop_db(&restored).await;

    // And into the container itself, as the application role (CREATEDB, as INSTALL.md's
    // Compose restore does it), over verify-full.
    let restore = p
        .run(&[
            "restore",
            "latest",
            "--target",
            &tls_url("app", "127.0.0.1").replace("/app?", "/app_restored?"),
            "--create",
            "--no-owner",
        ])
        .await
        .expect_code(0);
    let restored_rows = host_psql(
        &tls_url("app", "127.0.0.1").replace("/app?", "/app_restored?"),
        Some("app pw"),
        "SELECT pg_get_userbyid(d.datdba), count(*) FROM items, pg_database d \
         WHERE d.datname = current_database() GROUP BY 1",
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&restored_rows.stdout).trim(),
        format!("app|{SEED_ROWS}"),
        "{}\n{}",
        text(&restored_rows),
        restore.stderr
    );

    let logs = podman.run(&["logs", &name], Duration::from_secs(30)).await;
    assert!(
        !text(&logs).contains(BACKUP_PASSWORD)
            && !text(&logs).contains("app pw")
            && !text(&logs).contains(CATALOG_PASSWORD),
        "a password in the container's log:\n{}",
        text(&logs)
    );

    // A restart keeps the cluster and its certificate.
    let cert_before = std::fs::read(&ca).expect("reading the exported certificate");
    let t = Instant::now();
    podman
        .run_ok(&["restart", "--time", "20", &name], Duration::from_mins(1))
        .await;
    wait_ready(&podman, &name, &tls_url("pgkeep_backup", "127.0.0.1")).await;
    let _ = write!(timings, ", restart {:.1?}", t.elapsed());
    assert_eq!(std::fs::read(&ca).expect("re-reading"), cert_before);
    p.backup_ok().await;

    // A first start without the backup role's password stops at once, with one line.
    let out = podman
        .run(
            &["run", "--rm", "--network", "none", &image],
            Duration::from_mins(1),
        )
        .await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("pgkeep-postgres"))
        .collect();
    assert_eq!(
        ours,
        [
            "pgkeep-postgres: error: BACKUP_PASSWORD_FILE is not set: name a file holding the password (a Compose or Kubernetes secret)"
        ],
        "{stderr}"
    );

    // A first start that fails half-way (here in an init script) is not taken for a finished
    // one when the container starts again on the same volume.
    let data = work.path().join("data-broken");
    let bad_initdb = work.path().join("initdb-broken");
    for dir in [&data, &bad_initdb] {
        std::fs::create_dir(dir).expect("mkdir");
    }
    std::fs::write(bad_initdb.join("10-fails.sql"), "SELECT 1 / 0;\n").expect("writing");
    let data_mount = format!("{}:/var/lib/postgresql/data:U", data.display());
    let bad_mount = format!("{}:/docker-entrypoint-initdb.d:ro", bad_initdb.display());
    let broken_args = [
        "run",
        "--rm",
        "--network",
        "none",
        "-e",
        "BACKUP_PASSWORD_FILE=/run/secrets/backup-password",
        "-v",
        &secrets_mount,
        "-v",
        &data_mount,
        "-v",
        &bad_mount,
        &image,
    ];
    let first = podman.run(&broken_args, Duration::from_mins(1)).await;
    assert_eq!(first.status.code(), Some(3), "{}", text(&first));
    assert!(
        String::from_utf8_lossy(&first.stderr).contains("division by zero"),
        "{}",
        text(&first)
    );
    let again = podman.run(&broken_args, Duration::from_mins(1)).await;
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(
            "pgkeep-postgres: error: the first start in /var/lib/postgresql/data/pgdata did not finish"
        ),
        "{}",
        text(&again)
    );
    eprintln!("postgres image: {timings}");
}
