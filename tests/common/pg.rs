//! A throwaway PostgreSQL 15 cluster shared by the whole test process, and helpers around it.
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
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
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
    /// Write end of the supervisor's stdin: closing it (at process exit) tears the cluster down.
    _supervisor: ChildStdin,
    counter: AtomicU64,
    /// The `-c` settings the server was started with ([`Cluster::start_with`]).
    settings: Vec<String>,
    pagila_template: tokio::sync::OnceCell<String>,
    torture_template: tokio::sync::OnceCell<String>,
}

/// uid/gid to run `initdb`/`postgres` as: the `postgres` user when we are root, else ourselves.
fn server_owner() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| format!("looking up the postgres OS user: {e}"))?
        .ok_or("running as root but there is no `postgres` OS user to run the server as")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs a setup command to completion; `Err` with its output if it fails.
fn run_setup(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Tears the cluster down once its stdin reaches end-of-file (see the module docs).
/// `$1` is the cluster directory, `$2` the binary directory.
const SUPERVISOR_SCRIPT: &str = r#"
trap '' INT TERM HUP QUIT PIPE
dir=$1
bin=$2
cat >/dev/null
if [ -f "$dir/data/postmaster.pid" ]; then
    "$bin/pg_ctl" stop -D "$dir/data" -m immediate -w -t 20 >/dev/null 2>&1
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null)
    if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null; sleep 0.2; fi
fi
rm -rf "$dir"
"#;

const PG_HBA: &str = "\
# Written by tests/common/pg.rs. Order matters: first match wins.
local     all all                                 trust
hostnossl all +pgkeep_ssl_required 127.0.0.1/32   reject
hostnossl all +pgkeep_ssl_required ::1/128        reject
host      all +pgkeep_pw_required  127.0.0.1/32   scram-sha-256
host      all +pgkeep_pw_required  ::1/128        scram-sha-256
host      all all                  127.0.0.1/32   trust
host      all all                  ::1/128        trust
";

/// A port that was free a moment ago (the kernel's pick for `127.0.0.1:0`).
fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

enum StartOutcome {
    Ready,
    PortTaken,
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        Self::start_with(&[])
    }

    /// A cluster of the caller's own, set up like the shared one plus `settings` (`name=value`,
    /// passed as `-c`): for a test that changes server settings or needs a library preloaded.
    /// Stopped and removed when dropped (or when the process exits).
    pub fn start_with(settings: &[&str]) -> Result<Cluster, String> {
        let t0 = Instant::now();
        let owner = server_owner()?;
        let bin_dir = PathBuf::from(BIN_DIR);

        let dir = tempfile::Builder::new()
            .prefix("pgkeep-test-pg-")
            .tempdir_in("/tmp")
            .map_err(|e| format!("creating a directory under /tmp: {e}"))?
            .keep();
        chown(&dir, owner)?;

        // The supervisor comes first so that every later failure is cleaned up too.
        let mut supervisor = Command::new("/bin/sh");
        supervisor
            .arg("-c")
            .arg(SUPERVISOR_SCRIPT)
            .arg("pgkeep-test-pg-supervisor")
            .arg(&dir)
            .arg(&bin_dir)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let mut child = as_owner(&mut supervisor, owner)
            .spawn()
            .map_err(|e| format!("starting the cleanup supervisor: {e}"))?;
        let supervisor_stdin = child.stdin.take().expect("piped stdin");

        let data = dir.join("data");
        run_setup(
            as_owner(
                Command::new(bin_dir.join("initdb")).current_dir(&dir),
                owner,
            )
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .env("TZ", "UTC"),
            "initdb",
        )?;
        let t_initdb = t0.elapsed();

        // TLS: a self-signed certificate for localhost / 127.0.0.1, key 0600 owned by the server.
        let cert = dir.join("server.crt");
        let key = dir.join("server.key");
        run_setup(
            as_owner(Command::new("openssl").current_dir(&dir), owner)
                .env("HOME", &dir)
                .args([
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:prime256v1",
                ])
                .args(["-nodes", "-days", "3650", "-subj", "/CN=localhost"])
                .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
                .arg("-keyout")
                .arg(&key)
                .arg("-out")
                .arg(&cert),
            "openssl req (test server certificate)",
        )?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod server.key: {e}"))?;
        fs::set_permissions(&cert, fs::Permissions::from_mode(0o644))
            .map_err(|e| format!("chmod server.crt: {e}"))?;

        let hba = data.join("pg_hba.conf");
        fs::write(&hba, PG_HBA).map_err(|e| format!("writing pg_hba.conf: {e}"))?;
        chown(&hba, owner)?;

        let log = dir.join("server.log");
        let mut cluster = None;
        for _attempt in 0..10 {
            let port = free_port()?;
            match Self::start_server(&bin_dir, &dir, port, owner, (&cert, &key), &log, settings)? {
                StartOutcome::Ready => {
                    cluster = Some(Cluster {
                        dir: dir.clone(),
                        port,
                        bin_dir: bin_dir.clone(),
                        _supervisor: supervisor_stdin,
                        counter: AtomicU64::new(0),
                        settings: settings.iter().map(|s| (*s).to_string()).collect(),
                        pagila_template: tokio::sync::OnceCell::new(),
                        torture_template: tokio::sync::OnceCell::new(),
                    });
                    break;
                }
                StartOutcome::PortTaken => {}
            }
        }
        let cluster = cluster
            .ok_or_else(|| format!("no free port after 10 attempts; log:\n{}", read_log(&log)))?;
        let t_ready = t0.elapsed();

        run_setup(
            cluster
                .std_command("psql")
                .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
                .arg(cluster.url("postgres"))
                .arg("-c")
                .arg(format!("CREATE ROLE {PW_REQUIRED_ROLE} NOLOGIN; CREATE ROLE {SSL_REQUIRED_ROLE} NOLOGIN;")),
            "creating the harness roles",
        )?;
        eprintln!(
            "test PostgreSQL cluster at {} port {}: initdb {:?}, ready after {:?}, set up after {:?}",
            cluster.dir.display(),
            cluster.port,
            t_initdb,
            t_ready,
            t0.elapsed()
        );
        Ok(cluster)
    }

    fn start_server(
        bin_dir: &Path,
        dir: &Path,
        port: u16,
        owner: Option<(u32, u32)>,
        (cert, key): (&Path, &Path),
        log: &Path,
        settings: &[&str],
    ) -> Result<StartOutcome, String> {
        let data = dir.join("data");
        let log_file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        let log_err = log_file.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.current_dir(dir)
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ])
            .args([
                "-c",
                "max_connections=200",
                "-c",
                "password_encryption=scram-sha-256",
            ])
            .args(["-c", "ssl=on"])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .args(["-c", "max_wal_size=1GB", "-c", "checkpoint_timeout=30min"])
            .args([
                "-c",
                "log_min_messages=warning",
                "-c",
                "log_line_prefix=%m [%p] %q%u@%d ",
            ])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err)
            .process_group(0);
        let mut child = as_owner(&mut cmd, owner)
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let pid_file = data.join("postmaster.pid");
        let deadline = Instant::now() + Duration::from_mins(1);
        loop {
            if let Ok(contents) = fs::read_to_string(&pid_file)
                && contents.lines().nth(7).is_some_and(|l| l.trim() == "ready")
            {
                return Ok(StartOutcome::Ready);
            }
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                let text = read_log(log);
                if text.contains("could not bind") || text.contains("Address already in use") {
                    // Mark the attempt so the next one's messages are easy to tell apart.
                    let _ = fs::OpenOptions::new()
                        .append(true)
                        .open(log)
                        .and_then(|mut f| {
                            writeln!(f, "--- port {port} was taken, retrying on another ---")
                        });
                    return Ok(StartOutcome::PortTaken);
                }
                return Err(format!(
                    "postgres exited ({status}) before becoming ready; log:\n{text}"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!(
                    "postgres not ready after 60 s; log:\n{}",
                    read_log(log)
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

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

    /// Where `psql`, `pg_dump`, `pg_restore`, ... live (`/usr/lib/postgresql/15/bin`).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The server's self-signed certificate (PEM), usable as `sslrootcert` / a root certificate:
    /// valid for `localhost` and `127.0.0.1`.
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

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
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

mod private;
mod snapshot;

pub use snapshot::{DbSnapshot, UNPOPULATED, assert_same};
