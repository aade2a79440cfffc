//! Starting the shared test cluster: `initdb` as the server's owner, the supervisor that tears
//! it down when the test process exits, TLS and `pg_hba.conf`, and the server on a free port.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use super::{BIN_DIR, Cluster, PW_REQUIRED_ROLE, SSL_REQUIRED_ROLE};

/// uid/gid to run `initdb`/`postgres` as: the `postgres` user when we are root, else ourselves.
pub(super) fn server_owner() -> Result<Option<(u32, u32)>, String> {
    if !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .map_err(|e| format!("looking up the postgres OS user: {e}"))?
        .ok_or("running as root but there is no `postgres` OS user to run the server as")?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

pub(super) fn as_owner(cmd: &mut Command, owner: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = owner {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

pub(super) fn chown(path: &Path, owner: Option<(u32, u32)>) -> Result<(), String> {
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs a setup command to completion; `Err` with its output if it fails.
pub(super) fn run_setup(cmd: &mut Command, what: &str) -> Result<(), String> {
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
pub(super) fn free_port() -> Result<u16, String> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

pub(super) enum StartOutcome {
    Ready,
    PortTaken,
}

impl Cluster {
    pub(super) fn start() -> Result<Cluster, String> {
        Self::start_with(&[])
    }

    /// A cluster of the caller's own, set up like the shared one plus `settings` (`name=value`,
    /// passed as `-c`): for a test that changes server settings or needs a library preloaded.
    /// Stopped and removed when dropped (or when the process exits).
    pub fn start_with(settings: &[&str]) -> Result<Cluster, String> {
        Self::start_in(Path::new(BIN_DIR), true, settings)
    }

    /// Like [`Cluster::start_with`] with the server and client programs of `bin_dir` (another
    /// PostgreSQL major), and TLS on only when `tls` (a build without OpenSSL cannot).
    pub fn start_in(bin_dir: &Path, tls: bool, settings: &[&str]) -> Result<Cluster, String> {
        let t0 = Instant::now();
        let owner = server_owner()?;
        let bin_dir = bin_dir.to_path_buf();

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
        let tls = tls.then_some((cert.as_path(), key.as_path()));
        if tls.is_some() {
            make_certificate(&dir, owner, &cert, &key)?;
        }

        let hba = data.join("pg_hba.conf");
        fs::write(&hba, PG_HBA).map_err(|e| format!("writing pg_hba.conf: {e}"))?;
        chown(&hba, owner)?;

        let log = dir.join("server.log");
        let mut cluster = None;
        for _attempt in 0..10 {
            let port = free_port()?;
            match Self::start_server(&bin_dir, &dir, port, owner, tls, &log, settings)? {
                StartOutcome::Ready => {
                    cluster = Some(Cluster {
                        dir: dir.clone(),
                        port,
                        bin_dir: bin_dir.clone(),
                        tls: tls.is_some(),
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

    pub(super) fn start_server(
        bin_dir: &Path,
        dir: &Path,
        port: u16,
        owner: Option<(u32, u32)>,
        tls: Option<(&Path, &Path)>,
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
            .args(tls.into_iter().flat_map(|(cert, key)| {
                [
                    "-c".to_string(),
                    "ssl=on".to_string(),
                    "-c".to_string(),
                    format!("ssl_cert_file={}", cert.display()),
                    "-c".to_string(),
                    format!("ssl_key_file={}", key.display()),
                ]
            }))
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
}

/// A self-signed certificate for localhost / 127.0.0.1, its key 0600 owned by the server.
fn make_certificate(
    dir: &Path,
    owner: Option<(u32, u32)>,
    cert: &Path,
    key: &Path,
) -> Result<(), String> {
    run_setup(
        as_owner(Command::new("openssl").current_dir(dir), owner)
            .env("HOME", dir)
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
            .arg(key)
            .arg("-out")
            .arg(cert),
        "openssl req (test server certificate)",
    )?;
    fs::set_permissions(key, fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod server.key: {e}"))?;
    fs::set_permissions(cert, fs::Permissions::from_mode(0o644))
        .map_err(|e| format!("chmod server.crt: {e}"))
}

pub(super) fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}
