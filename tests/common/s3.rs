//! S3 servers for tests: an in-process s3s-fs and, when its binary is installed, a single-node
//! Garage; one of each per test process, torn down when the process exits.
//!
//! Each test gets its own place: a fresh bucket on s3s-fs, a fresh key prefix in Garage's one
//! bucket. Credentials are fixed and identical for both servers; they are handed to stores
//! explicitly (`S3Store::with_credentials`) or to child processes as environment variables,
//! never set on this process.

use std::error::Error;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use pgkeep::store::{S3Settings, S3Store};

/// Access key for both servers (Garage's own format: `GK` and 24 hex digits).
pub const ACCESS_KEY: &str = "GK0123456789abcdef01234567";
/// Secret key for both servers (Garage's format: 64 hex digits).
pub const SECRET_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const S3S_REGION: &str = "us-east-1";
const GARAGE_REGION: &str = "garage";
const GARAGE_BUCKET: &str = "pgkeep-test";

/// Which server a target lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    S3sFs,
    Garage,
}

/// A private place on an S3 server for one test.
#[derive(Debug, Clone)]
pub struct S3Target {
    pub server: Server,
    /// `s3://bucket/prefix` (or `s3://bucket` when the prefix is empty).
    pub url: String,
    pub bucket: String,
    /// Key prefix inside the bucket, without slashes at either end; may be empty.
    pub prefix: String,
    /// Endpoint, region and path-style addressing for this server; small parts for quick tests.
    pub settings: S3Settings,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` (and IMDS off) for a child process.
    pub env: Vec<(String, String)>,
}

impl S3Target {
    fn new(server: Server, endpoint: &str, region: &str, bucket: &str, prefix: &str) -> S3Target {
        let url = if prefix.is_empty() {
            format!("s3://{bucket}")
        } else {
            format!("s3://{bucket}/{prefix}")
        };
        let settings = S3Settings {
            endpoint: Some(endpoint.to_string()),
            region: Some(region.to_string()),
            force_path_style: true,
            part_size: 5 * 1024 * 1024,
            max_attempts: 3,
            ..S3Settings::default()
        };
        let env = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_REGION", region),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        S3Target {
            server,
            url,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            settings,
            env,
        }
    }

    /// `env` plus pgkeep's own storage overrides, for running the CLI against this target.
    pub fn pgkeep_env(&self) -> Vec<(String, String)> {
        let mut env = self.env.clone();
        let endpoint = self.settings.endpoint.clone().unwrap_or_default();
        let region = self.settings.region.clone().unwrap_or_default();
        env.extend([
            ("PGKEEP_STORAGE__URL".to_string(), self.url.clone()),
            ("PGKEEP_STORAGE__S3__ENDPOINT".to_string(), endpoint),
            ("PGKEEP_STORAGE__S3__REGION".to_string(), region),
            (
                "PGKEEP_STORAGE__S3__FORCE_PATH_STYLE".to_string(),
                "true".to_string(),
            ),
        ]);
        env
    }

    /// The server's address, for a proxy in front of it (`faultproxy::FaultProxy::start`).
    pub fn upstream(&self) -> SocketAddr {
        let endpoint = self.settings.endpoint.as_deref().unwrap_or_default();
        endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("endpoint {endpoint} is not host:port: {e}"))
    }

    /// The same place reached through another endpoint (a proxy in front of the server); the
    /// original keeps talking to the server directly, for assertions.
    pub fn via(&self, endpoint: &str) -> S3Target {
        let mut target = self.clone();
        target.settings.endpoint = Some(endpoint.to_string());
        target
    }

    /// A store on this target with the test credentials.
    pub async fn store(&self) -> S3Store {
        self.store_with(&self.settings).await
    }

    /// A store on this target with other settings (part size, checksums, attempts...).
    pub async fn store_with(&self, settings: &S3Settings) -> S3Store {
        S3Store::with_credentials(&self.bucket, &self.prefix, settings, ACCESS_KEY, SECRET_KEY)
            .await
            .expect("building an S3 store for tests")
    }

    /// A raw SDK client for assertions the store API cannot make (multipart uploads left over).
    pub fn client(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(Credentials::new(
                ACCESS_KEY, SECRET_KEY, None, None, "tests",
            ))
            .region(Region::new(
                self.settings.region.clone().unwrap_or_default(),
            ))
            .endpoint_url(self.settings.endpoint.clone().unwrap_or_default())
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    /// Full keys of the multipart uploads still open under this target's prefix.
    pub async fn open_multipart_uploads(&self) -> Vec<String> {
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let listed = self
            .client()
            .list_multipart_uploads()
            .bucket(&self.bucket)
            .prefix(prefix)
            .send()
            .await
            .expect("ListMultipartUploads");
        listed
            .uploads()
            .iter()
            .filter_map(|u| u.key().map(str::to_string))
            .collect()
    }
}

/// An error and its causes joined as the CLI prints them: `outer: cause: root`.
pub fn report(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut current = e.source();
    while let Some(cause) = current {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        current = cause.source();
    }
    text
}

/// A unique, bucket-name-safe suffix for `label` within this test process.
fn unique(label: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let clean: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!("{}-{n}", clean.trim_matches('-'))
}

/// A free loopback port (bound then released; a small race that tests tolerate).
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// A child process that removes `dir` (after killing `pid`, if given) once this process exits:
/// its stdin is a pipe whose write end only this process holds, so it reads EOF when we are gone.
fn reaper(dir: &Path, pid: Option<u32>) -> (Child, ChildStdin) {
    let script = r#"read _
if [ -n "$2" ]; then
    kill -9 "$2" 2>/dev/null
    i=0; while kill -0 "$2" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done
fi
rm -rf "$1""#;
    let mut child = Command::new("sh")
        .args(["-c", script, "reaper"])
        .arg(dir)
        .arg(pid.map(|p| p.to_string()).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the cleanup helper");
    let stdin = child.stdin.take().expect("piped stdin");
    (child, stdin)
}

// ---- s3s-fs, in process ----

struct S3sFs {
    endpoint: String,
    root: PathBuf,
    _reaper: Mutex<(Child, ChildStdin)>,
}

fn s3s_fs_server() -> &'static S3sFs {
    static SERVER: OnceLock<S3sFs> = OnceLock::new();
    SERVER.get_or_init(|| {
        let root = tempfile::Builder::new()
            .prefix("pgkeep-s3s-")
            .tempdir()
            .expect("creating the s3s-fs root")
            .keep();
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding s3s-fs");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("s3s-fs address");
        let fs = s3s_fs::FileSystem::new(&root).expect("s3s-fs file system");
        std::thread::Builder::new()
            .name("s3s-fs".into())
            .spawn(move || serve_s3s(listener, fs))
            .expect("starting the s3s-fs thread");
        S3sFs {
            endpoint: format!("http://{addr}"),
            _reaper: Mutex::new(reaper(&root, None)),
            root,
        }
    })
}

/// Runs the server on its own runtime: tests come and go with their own runtimes.
fn serve_s3s(listener: TcpListener, fs: s3s_fs::FileSystem) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder as ConnBuilder;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("s3s-fs-worker")
        .enable_all()
        .build()
        .expect("s3s-fs runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        let service = {
            let mut builder = s3s::service::S3ServiceBuilder::new(fs);
            builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
            builder.build()
        };
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = connection.await;
            });
        }
    });
}

/// A fresh, empty bucket on the in-process s3s-fs server, with an empty prefix.
pub fn s3s_fs(label: &str) -> S3Target {
    s3s_fs_with_prefix(label, "")
}

/// A fresh, empty bucket on the in-process s3s-fs server, the store rooted at `prefix`.
pub fn s3s_fs_with_prefix(label: &str, prefix: &str) -> S3Target {
    let server = s3s_fs_server();
    let bucket = format!("t-{}", unique(label));
    // An s3s-fs bucket is a directory under its root.
    std::fs::create_dir(server.root.join(&bucket)).expect("creating an s3s-fs bucket");
    S3Target::new(Server::S3sFs, &server.endpoint, S3S_REGION, &bucket, prefix)
}

/// A bucket name that does not exist on the s3s-fs server.
pub fn s3s_fs_missing_bucket(label: &str) -> S3Target {
    let server = s3s_fs_server();
    let bucket = format!("missing-{}", unique(label));
    S3Target::new(Server::S3sFs, &server.endpoint, S3S_REGION, &bucket, "")
}

// ---- Garage, a child process ----

struct Garage {
    endpoint: String,
    _reaper: Mutex<(Child, ChildStdin)>,
}

/// Where the `garage` binary is: `$PGKEEP_GARAGE_BIN`, `PATH`, or `~/.cargo/bin`.
pub fn garage_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PGKEEP_GARAGE_BIN") {
        return Some(PathBuf::from(path));
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("garage"))
            .find(|p| p.is_file())
    });
    in_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        Some(home.join(".cargo/bin/garage")).filter(|p| p.is_file())
    })
}

fn garage_server() -> Option<&'static Garage> {
    static SERVER: OnceLock<Option<Garage>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let Some(binary) = garage_binary() else {
                assert!(
                    std::env::var("PGKEEP_TEST_REQUIRE_GARAGE").as_deref() != Ok("1"),
                    "PGKEEP_TEST_REQUIRE_GARAGE=1 but no garage binary was found \
                     (PATH, ~/.cargo/bin/garage or $PGKEEP_GARAGE_BIN)"
                );
                return None;
            };
            Some(start_garage(&binary))
        })
        .as_ref()
}

fn start_garage(binary: &Path) -> Garage {
    let dir = tempfile::Builder::new()
        .prefix("pgkeep-garage-")
        .tempdir()
        .expect("creating the Garage directory")
        .keep();
    let (rpc, s3, admin) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"metadata_dir = "{dir}/meta"
data_dir = "{dir}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{GARAGE_REGION}"
api_bind_addr = "127.0.0.1:{s3}"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
"#,
        dir = dir.display(),
        secret = SECRET_KEY,
    );
    let config_path = dir.join("garage.toml");
    std::fs::write(&config_path, config).expect("writing garage.toml");
    let log_path = dir.join("garage.log");
    let log = std::fs::File::create(&log_path).expect("creating garage.log");

    let child = Command::new(binary)
        .arg("-c")
        .arg(&config_path)
        .args(["server", "--single-node", "--default-bucket"])
        .env("GARAGE_DEFAULT_ACCESS_KEY", ACCESS_KEY)
        .env("GARAGE_DEFAULT_SECRET_KEY", SECRET_KEY)
        .env("GARAGE_DEFAULT_BUCKET", GARAGE_BUCKET)
        .env("RUST_LOG", "garage=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
    let pid = child.id();
    let reaper = reaper(&dir, Some(pid));

    let admin_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, admin));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut child = child;
    loop {
        if health_ok(admin_addr) {
            break;
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "Garage did not become ready ({}):\n{}",
                exited.map_or("timed out".to_string(), |s| format!("exited with {s}")),
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The child is reaped by the helper; dropping the handle neither kills nor waits.
    drop(child);
    Garage {
        endpoint: format!("http://127.0.0.1:{s3}"),
        _reaper: Mutex::new(reaper),
    }
}

/// Garage's admin `/health` answers 200 once the node serves requests.
fn health_ok(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") || response.starts_with("HTTP/1.0 200")
}

/// A fresh prefix in the shared Garage bucket, or `None` (after printing why) when Garage is
/// not installed. Panics instead when `PGKEEP_TEST_REQUIRE_GARAGE=1`.
pub fn garage(label: &str) -> Option<S3Target> {
    let Some(server) = garage_server() else {
        eprintln!(
            "skipping {label}: garage not installed (cargo install garage --locked --version 2.5.0)"
        );
        return None;
    };
    let prefix = format!("t-{}", unique(label));
    Some(S3Target::new(
        Server::Garage,
        &server.endpoint,
        GARAGE_REGION,
        GARAGE_BUCKET,
        &prefix,
    ))
}

/// A bucket name that does not exist on the Garage server.
pub fn garage_missing_bucket(label: &str) -> Option<S3Target> {
    let server = garage_server()?;
    let bucket = format!("missing-{}", unique(label));
    Some(S3Target::new(
        Server::Garage,
        &server.endpoint,
        GARAGE_REGION,
        &bucket,
        "",
    ))
}
