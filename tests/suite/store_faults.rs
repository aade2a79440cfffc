//! The store under faults: S3 requests that stall, reset, fail or lose their answer, injected by
//! the fault proxy in front of s3s-fs and Garage; a local store on a full disk; the timeout keys.

mod downloads;
pub mod local;
mod proxy;
mod stalls;
mod uploads;

use std::collections::HashMap;
use std::time::Duration;

use pgkeep::config::{ConfigError, load_from};
use pgkeep::store::{ObjectStore, S3Settings, S3Store};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

use crate::common::faultproxy::FaultProxy;
use crate::common::s3::{S3Target, Server};

/// Part size of the S3 targets (S3's minimum, which s3s-fs enforces).
const PART: usize = 5 * 1024 * 1024;
/// An upper bound for any operation under faults: far above the 1-2 s timeouts the tests use,
/// far below anything that looks like a hang.
const NO_HANG: Duration = Duration::from_secs(20);

/// A store reaching its server through a fault proxy, with short timeouts.
struct Rig {
    target: S3Target,
    proxy: FaultProxy,
    /// Through the proxy.
    store: S3Store,
    /// Straight to the server, for assertions.
    direct: S3Store,
}

/// Timeouts of 1-2 s and two attempts, so that a stalled request fails in a few seconds.
fn quick(target: &S3Target) -> S3Settings {
    S3Settings {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(1),
        part_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(1),
        max_attempts: 2,
        ..target.settings.clone()
    }
}

async fn rig(target: S3Target) -> Rig {
    let settings = quick(&target);
    rig_with(target, settings).await
}

async fn rig_with(target: S3Target, settings: S3Settings) -> Rig {
    let proxy = FaultProxy::start(target.upstream());
    let settings = S3Settings {
        endpoint: Some(proxy.endpoint()),
        ..settings
    };
    let store = target.store_with(&settings).await;
    let direct = target.store().await;
    Rig {
        target,
        proxy,
        store,
        direct,
    }
}

impl Rig {
    /// Nothing is stored under `key` and (where the server lists them) no upload is left open.
    async fn assert_nothing_left(&self, key: &str) {
        assert!(
            self.direct.head(key).await.unwrap().is_none(),
            "an object was left under {key}"
        );
        if self.target.server == Server::Garage {
            assert_eq!(
                self.target.open_multipart_uploads().await,
                Vec::<String>::new(),
                "multipart uploads left open"
            );
        }
    }
}

/// Runs `operation`, failing the test (instead of hanging it) if it takes longer than `NO_HANG`.
async fn within<T>(what: &str, operation: impl Future<Output = T>) -> T {
    tokio::time::timeout(NO_HANG, operation)
        .await
        .unwrap_or_else(|_| panic!("{what} hung: still running after {NO_HANG:?}"))
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads the whole object through `store`.
async fn read_all(store: &dyn ObjectStore, key: &str) -> std::io::Result<Vec<u8>> {
    let mut reader = store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {}", crate::common::s3::report(&e)));
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await?;
    Ok(out)
}

/// One test per server for `$scenario(target)`: s3s-fs always, Garage when installed (required
/// in CI with `PGKEEP_TEST_REQUIRE_GARAGE=1`).
macro_rules! on_both_servers {
    ($($name:ident => $scenario:ident;)*) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn s3s_fs() {
                super::$scenario(crate::common::s3::s3s_fs(stringify!($name))).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn garage() {
                if let Some(target) = crate::common::s3::garage(stringify!($name)) {
                    super::$scenario(target).await;
                }
            }
        }
    )*};
}
use on_both_servers;

fn load(toml: &str) -> Result<pgkeep::config::Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pgkeep.toml");
    std::fs::write(&path, toml).unwrap();
    load_from(Some(&path), &HashMap::new())
}

const JOB: &str = "[jobs.nightly]\nkind = \"dump\"\n";

#[test]
fn timeouts_default_for_multi_gb_parts() {
    let config = load(&format!("[storage]\nurl = \"s3://bucket/p\"\n{JOB}")).unwrap();
    let s3 = &config.storage.s3;
    assert_eq!(s3.connect_timeout, Duration::from_secs(10));
    assert_eq!(s3.request_timeout, Duration::from_mins(1));
    assert_eq!(s3.part_timeout, Duration::from_mins(10));
    assert_eq!(s3.read_timeout, Duration::from_mins(1));
}

#[test]
fn timeouts_are_read_as_durations() {
    let toml = format!(
        "[storage.s3]\nconnect_timeout = \"3s\"\nrequest_timeout = \"45s\"\n\
         part_timeout = \"1h\"\nread_timeout = \"2m 30s\"\n{JOB}"
    );
    let s3 = load(&toml).unwrap().storage.s3;
    assert_eq!(s3.connect_timeout, Duration::from_secs(3));
    assert_eq!(s3.request_timeout, Duration::from_secs(45));
    assert_eq!(s3.part_timeout, Duration::from_hours(1));
    assert_eq!(s3.read_timeout, Duration::from_secs(150));
    let mut env = HashMap::new();
    env.insert(
        "PGKEEP_STORAGE__S3__READ_TIMEOUT".to_string(),
        "5s".to_string(),
    );
    env.insert("PGKEEP_JOBS__NIGHTLY__KIND".to_string(), "dump".to_string());
    let s3 = load_from(None, &env).unwrap().storage.s3;
    assert_eq!(s3.read_timeout, Duration::from_secs(5));
}

#[test]
fn zero_or_unreadable_timeouts_are_refused_with_their_keys() {
    let toml = format!(
        "[storage.s3]\nconnect_timeout = \"0s\"\nrequest_timeout = \"soon\"\n\
         part_timeout = \"0ms\"\nread_timeout = \"-1s\"\n{JOB}"
    );
    let Err(ConfigError::Invalid { problems }) = load(&toml) else {
        panic!("expected an invalid configuration");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "storage.s3.connect_timeout",
            "storage.s3.request_timeout",
            "storage.s3.part_timeout",
            "storage.s3.read_timeout"
        ]
    );
    assert!(
        problems[0].reason.contains("longer than zero"),
        "{problems:?}"
    );
    assert!(
        problems[1].reason.contains("'soon' is not a duration"),
        "{problems:?}"
    );
}
