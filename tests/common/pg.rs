//! A throwaway PostgreSQL 15 cluster shared by the whole test process, and helpers around it;
//! [`pg18::cluster`] is a second one, of PostgreSQL 18, started the same way.
//!
//! # Usage
//!
//! ```ignore
//! let pg = common::pg::cluster();            // started on first use, shared by every test
//! let db = pg.create_db("mytest").await;     // each test gets its own database
//! pg.load_pagila(&db).await;                 // or: let db = pg.pagila_db("mytest").await;
//! let before = pg.snapshot(&db).await;
//! // ... back up, restore into `other` ...
//! common::pg::assert_same(&before, &pg.snapshot(&other).await);
//! ```
//!
//! # The cluster
//!
//! `initdb` runs in a fresh directory `/tmp/pgkeep-test-pg-XXXXXX` as the `postgres` OS user when
//! the tests run as root (initdb and postgres refuse root), else as the current user. The server
//! listens on `127.0.0.1` on a free port and on a Unix socket in that directory, with fsync off,
//! TLS on (a self-signed certificate for `localhost` and `127.0.0.1`, see [`Cluster::ca_cert_path`])
//! and this `pg_hba.conf`:
//!
//! ```text
//! local     all all                          trust
//! hostnossl all +pgkeep_ssl_required  ...    reject          # members must use TLS
//! host      all +pgkeep_pw_required   ...    scram-sha-256   # members need a password over TCP
//! host      all all                   ...    trust           # everyone else: trusted
//! ```
//!
//! The superuser is `postgres`, without a password.
//!
//! # Cleanup
//!
//! Statics are never dropped, so the cluster is torn down by a small `sh` supervisor started before
//! `initdb`. Its stdin is a pipe whose write end only this process holds (std creates pipes
//! close-on-exec, so no child inherits it). When the test process exits for any reason — normal
//! end, panic, `SIGKILL` — the kernel closes the pipe, the supervisor sees end-of-file, stops the
//! server (`pg_ctl stop -m immediate`, then `SIGKILL` if still there) and removes the directory.
//! The supervisor (which ignores SIGINT/SIGTERM/SIGHUP) and the server run in their own process
//! groups, so Ctrl-C on `cargo test` reaches only the test process and still goes through that path.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// Where the PostgreSQL 15 server and client binaries live.
pub const BIN_DIR: &str = "/usr/lib/postgresql/15/bin";

/// Role whose members must authenticate with a password (scram-sha-256) over TCP.
pub const PW_REQUIRED_ROLE: &str = "pgkeep_pw_required";

/// Role whose members are rejected over TCP without TLS.
pub const SSL_REQUIRED_ROLE: &str = "pgkeep_ssl_required";

/// Environment variables that would change how libpq clients (psql, pg_dump, ...) connect or
/// format output; removed from every client tool started through [`Cluster::command`].
const CLIENT_ENV_TO_CLEAR: &[&str] = &[
    "PGSERVICE",
    "PGSERVICEFILE",
    "PGSSLMODE",
    "PGREQUIRESSL",
    "PGSSLROOTCERT",
    "PGSSLCERT",
    "PGSSLKEY",
    "PGSSLCRL",
    "PGGSSENCMODE",
    "PGCHANNELBINDING",
    "PGOPTIONS",
    "PGTARGETSESSIONATTRS",
    "PGPASSWORD",
    "PGPASSFILE",
    "PGTZ",
    "PGDATESTYLE",
    "PGCLIENTENCODING",
    "PGCONNECT_TIMEOUT",
];

/// The pagila fixture directory (schema + data SQL), shared between projects.
pub fn pagila_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/fixtures/pagila"
    ))
}

/// This crate's own fixtures: `torture.sql`, `large_objects.sql`, ...
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

/// The hard schema + data fixture (`tests/fixtures/torture.sql`).
pub fn torture_sql() -> PathBuf {
    fixtures_dir().join("torture.sql")
}

/// The cluster shared by every test of this process, started on first use.
///
/// Panics (in every caller) if the cluster could not be started, with initdb's or the server's log.
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
    match CLUSTER.get_or_init(Cluster::start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("test PostgreSQL cluster failed to start: {e}"),
    }
}

/// A running PostgreSQL cluster (see the module docs).
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    bin_dir: PathBuf,
    /// Whether the server speaks TLS (a build without OpenSSL cannot).
    tls: bool,
    /// Write end of the supervisor's stdin: closing it (at process exit) tears the cluster down.
    _supervisor: ChildStdin,
    counter: AtomicU64,
    /// The `-c` settings the server was started with ([`Cluster::start_with`]).
    settings: Vec<String>,
    pagila_template: tokio::sync::OnceCell<String>,
    torture_template: tokio::sync::OnceCell<String>,
}

impl Cluster {
    /// The TCP port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host to connect to over TCP: `"127.0.0.1"`.
    #[allow(clippy::unused_self)]
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The directory holding the server's Unix socket (usable as libpq `host=`).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The server's log file (stdout + stderr of the postmaster).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Where `psql`, `pg_dump`, `pg_restore`, ... live (`/usr/lib/postgresql/15/bin` for
    /// [`cluster`], [`pg18::BIN_DIR`] for [`pg18::cluster`]).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's self-signed certificate (PEM), usable as `sslrootcert` / a root certificate:
    /// valid for `localhost` and `127.0.0.1`. Absent when the server has no TLS ([`pg18`]).
    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB` (superuser, trusted over TCP, TLS not required).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{}", self.port, pct(db))
    }

    /// A URL for `user` (with `password` in it when given) to `db` over TCP on 127.0.0.1.
    pub fn url_as(&self, user: &str, password: Option<&str>, db: &str) -> String {
        let auth = match password {
            Some(pw) => format!("{}:{}", pct(user), pct(pw)),
            None => pct(user),
        };
        format!("postgres://{auth}@127.0.0.1:{}/{}", self.port, pct(db))
    }

    /// A TLS connector for tokio-postgres trusting only [`Cluster::ca_cert_path`], verifying the
    /// host name (use host `127.0.0.1` or `localhost`): what libpq's `verify-full` does. Pair it
    /// with `sslmode=require` in the URL (tokio-postgres does not parse `verify-full`).
    pub fn tls_connector(&self) -> postgres_native_tls::MakeTlsConnector {
        let pem = fs::read(self.ca_cert_path()).expect("reading the test server certificate");
        let cert =
            native_tls::Certificate::from_pem(&pem).expect("parsing the test server certificate");
        let connector = native_tls::TlsConnector::builder()
            .add_root_certificate(cert)
            .disable_built_in_roots(true)
            .build()
            .expect("building a TLS connector");
        postgres_native_tls::MakeTlsConnector::new(connector)
    }

    /// Like [`Cluster::url`] but with `sslmode=verify-full&sslrootcert=<ca_cert_path>`, for libpq
    /// clients (psql, pg_dump, ...) and conninfo parsers that understand those parameters.
    pub fn url_verify_full(&self, db: &str) -> String {
        format!(
            "{}?sslmode=verify-full&sslrootcert={}",
            self.url(db),
            pct(&self.ca_cert_path().to_string_lossy())
        )
    }

    /// A unique name (`prefix_N_PID`, lowercase ASCII) for databases, roles, ... in this cluster.
    pub fn unique_name(&self, prefix: &str) -> String {
        let mut clean: String = prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        clean.truncate(40);
        if clean.is_empty() || clean.starts_with(|c: char| c.is_ascii_digit()) {
            clean.insert(0, 't');
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{clean}_{n}_{}", std::process::id())
    }

    /// A client tool (`psql`, `pg_dump`, ...) from [`Cluster::bin_dir`] as a tokio command, with
    /// the libpq environment variables that would change its behaviour removed.
    pub fn command(&self, tool: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.bin_dir.join(tool));
        for var in CLIENT_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd.kill_on_drop(true);
        cmd
    }

    /// Like [`Cluster::command`], as a blocking `std::process::Command`.
    pub fn std_command(&self, tool: &str) -> Command {
        let mut cmd = Command::new(self.bin_dir.join(tool));
        for var in CLIENT_ENV_TO_CLEAR {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Creates an empty database with a unique name (see [`Cluster::unique_name`]) and returns it.
    pub async fn create_db(&self, prefix: &str) -> String {
        let name = self.unique_name(prefix);
        self.psql_sql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        )
        .await;
        name
    }

    /// Creates a database as a copy of `template` (which must have no open connections).
    /// Retries for a few seconds while `template` still has sessions closing.
    pub async fn create_db_from(&self, prefix: &str, template: &str) -> String {
        let name = self.unique_name(prefix);
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(template)
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.run_psql("postgres", &["-c", &sql], None).await;
            if out.status.success() {
                return name;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("is being accessed by other users") && Instant::now() < deadline,
                "{sql}: {stderr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether the database `name` exists.
    pub async fn database_exists(&self, name: &str) -> bool {
        let out = self
            .psql_sql(
                "postgres",
                &format!(
                    "\\pset tuples_only on\nSELECT count(*) FROM pg_database WHERE datname = {}",
                    quote_literal(name)
                ),
            )
            .await;
        out.trim() == "1"
    }

    /// Drops a database, terminating its sessions.
    pub async fn drop_db(&self, db: &str) {
        self.psql_sql(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(db)),
        )
        .await;
    }

    /// A new database holding pagila. Pagila is loaded once per process into a template database
    /// (connections to it disallowed) and each call clones it: ~0.1 s instead of a full load.
    pub async fn pagila_db(&self, prefix: &str) -> String {
        let template = self
            .pagila_template
            .get_or_init(|| async {
                let db = self.create_db("pagila_template").await;
                self.load_pagila(&db).await;
                self.close_template(&db).await;
                db
            })
            .await;
        self.create_db_from(prefix, template).await
    }

    /// A new database holding `tests/fixtures/torture.sql`, cloned from a template like
    /// [`Cluster::pagila_db`].
    pub async fn torture_db(&self, prefix: &str) -> String {
        let template = self
            .torture_template
            .get_or_init(|| async {
                let db = self.create_db("torture_template").await;
                self.load_torture(&db).await;
                self.close_template(&db).await;
                db
            })
            .await;
        self.create_db_from(prefix, template).await
    }

    async fn close_template(&self, db: &str) {
        let db = quote_ident(db);
        self.psql_sql(
            "postgres",
            &format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true"),
        )
        .await;
    }

    /// Connects as `postgres` without TLS; the connection task is spawned on the current runtime.
    pub async fn connect(&self, db: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url(db), NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url(db)));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                eprintln!("test connection error: {e}");
            }
        });
        client
    }

    async fn run_psql(&self, db: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut cmd = self.command("psql");
        cmd.args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-d"])
            .arg(self.url(db))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting psql");
        if let Some(input) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            let input = input.to_owned();
            // Write concurrently with reading the output, so neither side can fill up and block.
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let _ = pipe.write_all(input.as_bytes()).await;
            });
        }
        child.wait_with_output().await.expect("waiting for psql")
    }

    /// Runs `psql -v ON_ERROR_STOP=1 -X -q -d URL -f path`; panics with stderr on failure.
    /// Returns stdout.
    pub async fn psql_file(&self, db: &str, path: impl AsRef<Path>) -> String {
        let path = path.as_ref();
        let out = self
            .run_psql(db, &["-f", &path.to_string_lossy()], None)
            .await;
        assert!(
            out.status.success(),
            "psql -f {} on {db} failed ({}):\n{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sql` (any number of statements, fed on stdin) through psql like [`Cluster::psql_file`].
    /// Statements run in autocommit mode unless `sql` has its own BEGIN/COMMIT. Returns stdout.
    pub async fn psql_sql(&self, db: &str, sql: &str) -> String {
        let out = self.run_psql(db, &["-f", "-"], Some(sql)).await;
        assert!(
            out.status.success(),
            "psql on {db} failed ({}):\n{}\nSQL:\n{sql}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads the pagila schema, then its data (~50k rows), into `db`.
    pub async fn load_pagila(&self, db: &str) {
        let dir = pagila_dir();
        self.psql_file(db, dir.join("pagila-schema.sql")).await;
        self.psql_file(db, dir.join("pagila-data.sql")).await;
    }

    /// Loads `tests/fixtures/torture.sql` into `db` (which should be empty).
    pub async fn load_torture(&self, db: &str) {
        self.psql_file(db, torture_sql()).await;
    }

    /// Creates a LOGIN role `name` with `password`, member of [`PW_REQUIRED_ROLE`], so it needs
    /// the password (scram-sha-256) over TCP. No other privileges: granting what it needs (e.g.
    /// `GRANT pg_read_all_data TO name`) is the caller's business. Roles are cluster-wide: use
    /// [`Cluster::unique_name`] for the name.
    pub async fn create_role_with_password(&self, name: &str, password: &str) {
        self.psql_sql(
            "postgres",
            &format!(
                "CREATE ROLE {} LOGIN PASSWORD {} IN ROLE {PW_REQUIRED_ROLE}",
                quote_ident(name),
                quote_literal(password)
            ),
        )
        .await;
    }

    /// Makes `role` unable to connect over TCP without TLS (membership in [`SSL_REQUIRED_ROLE`]).
    pub async fn require_ssl(&self, role: &str) {
        self.psql_sql(
            "postgres",
            &format!("GRANT {SSL_REQUIRED_ROLE} TO {}", quote_ident(role)),
        )
        .await;
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `"ident"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'literal'` with embedded quotes doubled (standard_conforming_strings is on).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub mod pg18;
mod private;
mod snapshot;
mod start;

pub use snapshot::{DbSnapshot, UNPOPULATED, assert_same};
