//! `pgkeep run`, the daemon, as a real process: schedules, overlap and replica guards, SIGTERM,
//! health and metrics endpoints, notifications, clean-up after crashed runs.
//!
//! Schedules fire every one or two seconds so each test takes a few seconds of wall time.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::cli::{Pgkeep, fake_bin_dir};
use crate::common::pg::cluster;
use crate::common::s3;
use pgkeep::store::ObjectStore as _;

/// A running `pgkeep run`, its stderr going to a file.
struct Daemon {
    child: tokio::process::Child,
    log: PathBuf,
    port: u16,
}

impl Daemon {
    /// Starts `pgkeep run` on `p`'s config, serving HTTP on `port`, and waits for /healthz.
    async fn start(p: &Pgkeep, port: u16, extra_env: &[(&str, &str)]) -> Daemon {
        let log = p.dir.path().join(format!("daemon-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgkeep"));
        cmd.arg("--config").arg(p.config_path()).arg("run");
        cmd.current_dir(p.dir.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("PG") || k.starts_with("AWS") || k.starts_with("NOTIFY_SOCKET") {
                cmd.env_remove(k);
            }
        }
        cmd.env("HOME", p.dir.path())
            .env("PGKEEP_LOG", "pgkeep=debug")
            .env("PGKEEP_DAEMON__LISTEN", format!("127.0.0.1:{port}"))
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .envs(extra_env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true);
        let child = cmd.spawn().expect("starting pgkeep run");
        let d = Daemon { child, log, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = d.try_get("/healthz").await {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not serve /healthz:\n{}",
                d.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn try_get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.port, path).await
    }

    async fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    /// One sample's value from /metrics (`name{labels}` exactly as exposed).
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics").await;
        sample(&body, series)
    }

    /// Waits until `cond` holds on /metrics, or panics after `limit`.
    async fn wait_metrics(&self, limit: Duration, what: &str, cond: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let (_, body) = self.get("/metrics").await;
            if cond(&body) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; metrics:\n{body}\nlog:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGTERM, then waits (at most `limit`) for the exit; returns the exit code and how long
    /// the exit took.
    async fn terminate(mut self, limit: Duration) -> (i32, Duration, String) {
        signal(self.pid(), "TERM");
        let t0 = Instant::now();
        let status = tokio::time::timeout(limit, self.child.wait()).await;
        let log = self.log();
        let status = status
            .unwrap_or_else(|_| {
                panic!("pgkeep run did not exit within {limit:?} of SIGTERM:\n{log}")
            })
            .unwrap();
        (status.code().unwrap_or(-1), t0.elapsed(), log)
    }
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// A minimal HTTP/1.1 GET on 127.0.0.1:`port`: (status, body).
async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .map_err(|_| std::io::Error::other("response timed out"))??;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {response}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of `series` (e.g. `pgkeep_backup_failures_total{job="x"}`) in exposition text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

/// Committed backup ids of `job` in a local store directory, oldest first.
fn committed(store: &Path, job: &str) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(store.join(job))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("manifest.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    ids.sort();
    ids
}

/// A small database: one table of 1000 rows.
async fn small_db(prefix: &str) -> String {
    let c = cluster();
    let db = c.create_db(prefix).await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g;",
    )
    .await;
    db
}

/// Checks `metrics` with `promtool check metrics`; skips (saying why) without promtool.
async fn promtool_check(metrics: &str) {
    let child = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Some(mut child) = crate::common::tools::required(child.ok(), "promtool is not installed")
    else {
        return;
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(metrics.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn store_config(p: &Pgkeep) -> String {
    format!("[storage]\nurl = \"file://{}\"\n", p.store_dir().display())
}

/// The done-when scenario: a healthy job and a broken one, every two seconds, side by side.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_and_a_broken_job_run_side_by_side() {
    let c = cluster();
    let db = small_db("daemon_healthy").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[daemon]\nshutdown_grace = \"8s\"\nretries = 1\nretry_backoff = \"100ms\"\n\n\
         [jobs.healthy]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\ncompression = \"gzip:1\"\n\
         [jobs.healthy.retention]\nkeep_last = 2\n\n\
         [jobs.broken]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\n",
        store_config(&p),
        c.url(&db),
        c.url("no_such_database_for_the_daemon")
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    let t0 = Instant::now();
    let healthy_ok = "pgkeep_backup_success_total{job=\"healthy\"}";
    let broken_failed = "pgkeep_backup_failures_total{job=\"broken\"}";
    // Three healthy runs (so retention has pruned) and two failures, in about 6 to 9 seconds.
    d.wait_metrics(Duration::from_secs(14), "3 successes and 2 failures", |m| {
        sample(m, healthy_ok).unwrap_or(0.0) >= 3.0
            && sample(m, broken_failed).unwrap_or(0.0) >= 2.0
    })
    .await;
    assert_eq!(d.get("/healthz").await, (200, "ok\n".to_string()));
    let (_, metrics) = d.get("/metrics").await;
    promtool_check(&metrics).await;
    let last = sample(
        &metrics,
        "pgkeep_backup_last_success_timestamp_seconds{job=\"healthy\"}",
    )
    .unwrap();
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        now - last < 10.0,
        "last success {last} is not recent ({now})\n{metrics}"
    );
    assert!(sample(&metrics, "pgkeep_backup_bytes{job=\"healthy\"}").unwrap() > 1000.0);
    assert_eq!(
        sample(&metrics, "pgkeep_backup_success_total{job=\"broken\"}"),
        Some(0.0)
    );
    // A missing database is permanent: never retried.
    assert_eq!(
        sample(&metrics, "pgkeep_backup_retries_total{job=\"broken\"}"),
        Some(0.0)
    );
    let (code, took, log) = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{log}");
    eprintln!("ran {:?}; exited {took:?} after SIGTERM", t0.elapsed());
    assert!(log.contains("does not exist"), "{log}");
    assert_eq!(
        committed(&p.store_dir(), "healthy").len(),
        2,
        "{:?}",
        p.stored_files()
    );
    assert!(
        p.stored_files().iter().all(|f| f.starts_with("healthy/")),
        "{:?}",
        p.stored_files()
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// A run still going when its schedule fires again is not overlapped; SIGTERM then cancels
/// it: the child is killed, the upload removed, no manifest written; the next run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_run_is_never_overlapped_and_sigterm_cancels_it_cleanly() {
    let c = cluster();
    let db = small_db("daemon_slow").await;
    let pid_file = tempfile::NamedTempFile::new().unwrap();
    // Writes the whole dump, then keeps stdout open: the upload stays in progress.
    let bin = fake_bin_dir(
        c.bin_dir(),
        &format!(
            "echo $$ > '{}'\n\"$REAL_BIN/pg_dump\" \"$@\"\nexec sleep 60",
            pid_file.path().display()
        ),
    );
    let p = Pgkeep::with_config("");
    let base = format!(
        "{}\n[daemon]\nshutdown_grace = \"1s\"\n\n[jobs.slow]\ndatabase = \"{}\"\nschedule = \"* * * * * *\"\ncompression = \"gzip:1\"\n",
        store_config(&p),
        c.url(&db)
    );
    p.write_config(&format!(
        "{base}pg_bin_dir = \"{}\"\n",
        bin.path().display()
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    d.wait_metrics(Duration::from_secs(10), "two skipped triggers", |m| {
        sample(
            m,
            "pgkeep_backup_skipped_total{job=\"slow\",reason=\"overlap\"}",
        )
        .unwrap_or(0.0)
            >= 2.0
    })
    .await;
    assert_eq!(
        d.metric("pgkeep_backup_running{job=\"slow\"}").await,
        Some(1.0)
    );
    let child_pid: u32 = std::fs::read_to_string(pid_file.path())
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        p.stored_files().iter().any(|f| f.contains(".tmp-")),
        "the upload should be in progress: {:?}",
        p.stored_files()
    );

    let (code, took, log) = d.terminate(Duration::from_secs(8)).await;
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(5), "exit took {took:?}\n{log}");
    assert!(log.contains("cancel"), "{log}");
    assert!(
        !process_alive(child_pid),
        "pg_dump {child_pid} outlived the daemon"
    );
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());

    p.write_config(&base);
    p.backup_ok().await;
    assert_eq!(committed(&p.store_dir(), "slow").len(), 1);
}

/// The same on S3: the cancelled run's multipart upload is aborted, nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_upload_aborts_the_multipart_upload() {
    let Some(target) = s3::garage("daemon-sigterm") else {
        eprintln!("SKIPPED: garage is not installed (scripts/test-deps.sh)");
        return;
    };
    let c = cluster();
    let db = small_db("daemon_sigterm_s3").await;
    let started = tempfile::NamedTempFile::new().unwrap();
    // Over two 8 MiB parts, then the stream stays open: the multipart upload is under way.
    let bin = fake_bin_dir(
        c.bin_dir(),
        &format!(
            "head -c 20000000 /dev/urandom\necho started > '{}'\nexec sleep 60",
            started.path().display()
        ),
    );
    let p = Pgkeep::with_config("").envs(&target.pgkeep_env());
    p.write_config(&format!(
        "[daemon]\nshutdown_grace = \"1s\"\n\n[jobs.big]\ndatabase = \"{}\"\nschedule = \"* * * * * *\"\ncompression = \"none\"\npg_bin_dir = \"{}\"\n",
        c.url(&db),
        bin.path().display()
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while target.open_multipart_uploads().await.is_empty()
        || std::fs::read_to_string(started.path())
            .unwrap_or_default()
            .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "no multipart upload started:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, log) = d.terminate(Duration::from_secs(8)).await;
    assert_eq!(code, 0, "{log}");
    assert_eq!(
        target.open_multipart_uploads().await,
        Vec::<String>::new(),
        "{log}"
    );
    let listed = target
        .client()
        .list_objects_v2()
        .bucket(&target.bucket)
        .prefix(format!("{}/", target.prefix))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.key_count(), Some(0), "{listed:?}");
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// A run over its timeout is cancelled and counted as failed; an unreachable server is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_fail_the_run_and_transient_failures_are_retried() {
    let c = cluster();
    let db = small_db("daemon_timeout").await;
    let bin = fake_bin_dir(c.bin_dir(), "\"$REAL_BIN/pg_dump\" \"$@\"\nexec sleep 60");
    let closed = s3::free_port();
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[daemon]\nretries = 2\nretry_backoff = \"100ms\"\n\n\
         [jobs.slow]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\ntimeout = \"1s\"\npg_bin_dir = \"{}\"\n\n\
         [jobs.unreachable]\ndatabase = \"postgres://postgres@127.0.0.1:{closed}/x\"\nschedule = \"*/2 * * * * *\"\n",
        store_config(&p),
        c.url(&db),
        bin.path().display()
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    d.wait_metrics(
        Duration::from_secs(10),
        "a timeout and a retried failure",
        |m| {
            sample(m, "pgkeep_backup_failures_total{job=\"slow\"}").unwrap_or(0.0) >= 1.0
                && sample(m, "pgkeep_backup_failures_total{job=\"unreachable\"}").unwrap_or(0.0)
                    >= 1.0
        },
    )
    .await;
    let (_, metrics) = d.get("/metrics").await;
    let (code, _, log) = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("timed out"), "{log}");
    assert!(
        sample(&metrics, "pgkeep_backup_retries_total{job=\"unreachable\"}").unwrap() >= 2.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "pgkeep_backup_retries_total{job=\"slow\"}"),
        Some(0.0)
    );
    assert!(committed(&p.store_dir(), "slow").is_empty());
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
}

mod cleanup;
mod drills;
mod http;
mod monitoring_files;
mod retention;
mod slots;
