//! One conformance suite for every `ObjectStore`: local directory, s3s-fs and Garage.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use pgkeep::store::{ByteReader, LocalStore, ObjectStore, S3Settings, S3Store, StoreError};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

use crate::common::faultproxy::FaultProxy;
use crate::common::s3::{self, S3Target, report};

/// Part size the S3 targets use (the S3 minimum), so multipart objects stay small.
const PART: usize = 5 * 1024 * 1024;

/// Deterministic, incompressible-looking bytes (xorshift), different for each `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn reader(bytes: Vec<u8>) -> ByteReader {
    Box::pin(io::Cursor::new(bytes))
}

/// Yields `data` in small chunks, then fails, like a pg_dump that dies mid-stream.
struct FailingReader {
    data: io::Cursor<Vec<u8>>,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let remaining = self.data.get_ref().len() as u64 - self.data.position();
        if remaining == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the source died",
            )));
        }
        // Through a buffer of its own, so the caller's may be uninitialized (an upload reads
        // into the spare capacity of its part buffer).
        let mut chunk = vec![0u8; buf.remaining().min(64 * 1024)];
        let mut limited = ReadBuf::new(&mut chunk);
        let poll = Pin::new(&mut self.data).poll_read(cx, &mut limited);
        buf.put_slice(limited.filled());
        poll
    }
}

fn failing(len: usize) -> ByteReader {
    Box::pin(FailingReader {
        data: io::Cursor::new(data(len, 99)),
    })
}

async fn get_all(store: &dyn ObjectStore, key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    store
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .read_to_end(&mut out)
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"));
    out
}

async fn roundtrip(store: &dyn ObjectStore, key: &str, bytes: Vec<u8>) {
    let len = bytes.len() as u64;
    let stored = store
        .put(key, reader(bytes.clone()))
        .await
        .unwrap_or_else(|e| panic!("put {key} ({len} bytes) on {}: {e}", store.describe()));
    assert_eq!(stored, len, "put {key} reports its size");
    let back = get_all(store, key).await;
    assert!(
        back == bytes,
        "{key}: read back {} bytes differing from the {len} stored",
        back.len()
    );
    let meta = store.head(key).await.unwrap().expect("head after put");
    assert_eq!(meta.key, key);
    assert_eq!(meta.size, len, "head size of {key}");
}

fn keys(objects: &[pgkeep::store::ObjectMeta]) -> Vec<&str> {
    objects.iter().map(|o| o.key.as_str()).collect()
}

/// What every store must do. The store must be empty.
pub async fn conformance(store: &dyn ObjectStore) {
    assert!(
        store.list("").await.unwrap().is_empty(),
        "the store starts empty"
    );

    // Round trips: empty, small, one byte short of a part, and several parts.
    roundtrip(store, "job/a/empty", Vec::new()).await;
    roundtrip(store, "job/a/small.txt", b"hello, pgkeep\n".to_vec()).await;
    roundtrip(store, "job/a/one-part", data(PART, 1)).await;
    roundtrip(store, "job/b/multi.bin", data(PART * 5 / 2 + 12_345, 2)).await;

    // Missing objects.
    match store.get("job/a/nothing-here").await {
        Err(StoreError::NotFound { key }) => assert_eq!(key, "job/a/nothing-here"),
        Err(e) => panic!("get of a missing key: expected NotFound, got {e}"),
        Ok(_) => panic!("get of a missing key succeeded"),
    }
    assert!(store.head("job/a/nothing-here").await.unwrap().is_none());

    // Listing: by prefix, sorted, keys relative to the store root, siblings excluded.
    store
        .put("job-other/x", reader(b"x".to_vec()))
        .await
        .unwrap();
    store.put("job/c", reader(b"c".to_vec())).await.unwrap();
    let all = store.list("").await.unwrap();
    assert_eq!(
        keys(&all),
        [
            "job-other/x",
            "job/a/empty",
            "job/a/one-part",
            "job/a/small.txt",
            "job/b/multi.bin",
            "job/c"
        ]
    );
    let job = store.list("job/").await.unwrap();
    assert_eq!(
        keys(&job),
        [
            "job/a/empty",
            "job/a/one-part",
            "job/a/small.txt",
            "job/b/multi.bin",
            "job/c"
        ]
    );
    assert_eq!(job[2].size, 14);
    assert_eq!(
        keys(&store.list("job/a/s").await.unwrap()),
        ["job/a/small.txt"]
    );
    assert_eq!(
        keys(&store.list("job").await.unwrap()).len(),
        6,
        "a bare prefix is a string prefix"
    );
    assert!(store.list("nope/").await.unwrap().is_empty());

    // Overwrite replaces the whole object.
    roundtrip(store, "job/a/small.txt", b"replaced".to_vec()).await;
    roundtrip(store, "job/b/multi.bin", b"now small".to_vec()).await;

    // A body that fails mid-stream leaves nothing behind, even past several parts...
    let err = store
        .put("job/d/broken", failing(PART * 2 + 1000))
        .await
        .expect_err("a failing body must fail the put");
    assert!(
        matches!(err, StoreError::Source { .. }),
        "expected Source, got {err}"
    );
    assert!(report(&err).contains("the source died"), "{}", report(&err));
    assert!(store.head("job/d/broken").await.unwrap().is_none());
    // ... or within the first part, and never replaces an existing object.
    let err = store
        .put("job/c", failing(10))
        .await
        .expect_err("failing small body");
    assert!(
        matches!(err, StoreError::Source { .. }),
        "expected Source, got {err}"
    );
    assert_eq!(get_all(store, "job/c").await, b"c");
    assert!(
        !keys(&store.list("").await.unwrap())
            .iter()
            .any(|k| k.starts_with("job/d"))
    );

    // Delete, and delete of a missing key.
    store.delete("job/a/empty").await.unwrap();
    store.delete("job/a/empty").await.unwrap();
    store.delete("never/was").await.unwrap();
    assert!(store.head("job/a/empty").await.unwrap().is_none());
    assert!(matches!(
        store.get("job/a/empty").await,
        Err(StoreError::NotFound { .. })
    ));
    for object in store.list("").await.unwrap() {
        store.delete(&object.key).await.unwrap();
    }
    assert!(
        store.list("").await.unwrap().is_empty(),
        "everything deleted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let store = LocalStore::new(root.to_str().unwrap());
    conformance(&store).await;
    // Deleting pruned the directories it emptied, and no temp files are left.
    let left: Vec<_> = std::fs::read_dir(&root).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_store_refuses_escaping_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().join("root").to_str().unwrap());
    for key in ["../outside", "a/../../outside", "/etc/passwd"] {
        assert!(
            store.put(key, reader(b"x".to_vec())).await.is_err(),
            "{key} accepted"
        );
    }
    assert!(!dir.path().join("outside").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn s3s_fs_store_conforms() {
    let target = s3::s3s_fs("conformance");
    conformance(&target.store().await).await;
    // The same behaviour under a prefix, with sibling prefixes in the same bucket.
    let prefixed = S3Target {
        prefix: "prod".into(),
        ..target.clone()
    };
    let sibling = S3Target {
        prefix: "production".into(),
        ..target.clone()
    };
    sibling
        .store()
        .await
        .put("job/x", reader(b"x".to_vec()))
        .await
        .unwrap();
    conformance(&prefixed.store().await).await;
}

/// The fault proxy with no rules is transparent: the whole suite passes through it, with the
/// SDK's checksummed (aws-chunked) bodies and without them, on keep-alive connections.
async fn conforms_through_the_proxy(target: S3Target) {
    let proxy = FaultProxy::start(target.upstream());
    for request_checksums in [true, false] {
        let place = S3Target {
            prefix: format!("proxied-{request_checksums}"),
            ..target.clone()
        };
        let via = place.via(&proxy.endpoint());
        let settings = S3Settings {
            request_checksums,
            ..via.settings.clone()
        };
        conformance(&via.store_with(&settings).await).await;
    }
    assert_eq!(proxy.injected(), 0);
    assert!(proxy.seen().len() > 30, "requests went through the proxy");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3s_fs_store_conforms_through_the_fault_proxy() {
    conforms_through_the_proxy(s3::s3s_fs("proxied")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_store_conforms_through_the_fault_proxy() {
    if let Some(target) = s3::garage("proxied") {
        conforms_through_the_proxy(target).await;
    }
}

/// Parallel uploads (an export's tables) share the store's part buffers: with room for only
/// two, four multipart uploads still all complete, and byte-exact.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_multipart_uploads_share_the_part_budget() {
    let target = s3::s3s_fs("part-budget");
    let settings = S3Settings {
        parts_in_flight: 1,
        ..target.settings.clone()
    };
    let store = target.store_with(&settings).await;
    let sizes = [PART + 1, PART * 2 + 7, PART * 3, PART * 2 + 1];
    let uploads = sizes.iter().enumerate().map(|(i, &len)| {
        let store = &store;
        async move {
            let key = format!("job/par/{i}");
            roundtrip(store, &key, data(len, 40 + i as u64)).await;
        }
    });
    tokio::time::timeout(Duration::from_mins(2), futures::future::join_all(uploads))
        .await
        .expect("uploads sharing the part budget finish");
}

#[tokio::test(flavor = "multi_thread")]
async fn s3s_fs_store_conforms_without_optional_checksums() {
    let target = s3::s3s_fs("no-checksums");
    let settings = S3Settings {
        request_checksums: false,
        ..target.settings.clone()
    };
    conformance(&target.store_with(&settings).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_store_conforms() {
    let Some(target) = s3::garage("conformance") else {
        return;
    };
    let store = target.store().await;
    conformance(&store).await;
    assert_eq!(
        target.open_multipart_uploads().await,
        Vec::<String>::new(),
        "uploads left open"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_store_conforms_without_optional_checksums() {
    let Some(target) = s3::garage("no-checksums") else {
        return;
    };
    let settings = S3Settings {
        request_checksums: false,
        ..target.settings.clone()
    };
    conformance(&target.store_with(&settings).await).await;
    assert!(
        target.open_multipart_uploads().await.is_empty(),
        "uploads left open"
    );
}

/// Yields `data`, then never finishes: an upload that hangs until its future is dropped.
struct StallingReader {
    data: io::Cursor<Vec<u8>>,
}

impl AsyncRead for StallingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.data.position() == self.data.get_ref().len() as u64 {
            return Poll::Pending;
        }
        Pin::new(&mut self.data).poll_read(cx, buf)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn garage_aborts_an_upload_whose_put_is_dropped() {
    let Some(target) = s3::garage("cancelled") else {
        return;
    };
    let store = target.store().await;
    let body: ByteReader = Box::pin(StallingReader {
        data: io::Cursor::new(data(PART * 2 + 1, 7)),
    });
    let put = tokio::spawn(async move { store.put("job/cancelled", body).await });

    let deadline = Instant::now() + Duration::from_secs(20);
    while target.open_multipart_uploads().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the multipart upload never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    put.abort();
    assert!(put.await.unwrap_err().is_cancelled());
    while !target.open_multipart_uploads().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the dropped upload was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// s3s-fs writes objects into a missing bucket (it creates the directory), so `puts` only
/// is checked where the server enforces it.
async fn assert_missing_bucket(target: &S3Target, puts: bool) {
    let store = target.store().await;
    let is_missing_bucket = |e: &StoreError| matches!(e, StoreError::NoSuchBucket { bucket } if *bucket == target.bucket);
    let err = store.list("").await.unwrap_err();
    assert!(is_missing_bucket(&err), "list: {err}");
    assert!(err.to_string().contains(&target.bucket), "{err}");
    let err = store.head("k").await.unwrap_err();
    assert!(is_missing_bucket(&err), "head: {err}");
    match store.get("k").await {
        Err(err) => assert!(is_missing_bucket(&err), "get: {err}"),
        Ok(_) => panic!("get from a missing bucket succeeded"),
    }
    if puts {
        let err = store.put("k", reader(b"x".to_vec())).await.unwrap_err();
        assert!(is_missing_bucket(&err), "put: {err}");
        let err = store
            .put("big", reader(data(PART * 2 + 1, 3)))
            .await
            .unwrap_err();
        assert!(is_missing_bucket(&err), "multipart put: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_bucket_is_reported_as_such() {
    assert_missing_bucket(&s3::s3s_fs_missing_bucket("missing"), false).await;
    if let Some(target) = s3::garage_missing_bucket("missing") {
        assert_missing_bucket(&target, true).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_access_denied() {
    let target = s3::s3s_fs("denied");
    let store = S3Store::with_credentials(
        &target.bucket,
        "",
        &target.settings,
        s3::ACCESS_KEY,
        "not-the-secret-key",
    )
    .await
    .unwrap();
    let err = store.list("").await.unwrap_err();
    assert!(matches!(err, StoreError::AccessDenied { .. }), "{err}");
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_endpoint_fails_fast_and_names_it() {
    let endpoint = format!("http://127.0.0.1:{}", s3::free_port());
    let settings = S3Settings {
        endpoint: Some(endpoint.clone()),
        region: Some("us-east-1".into()),
        force_path_style: true,
        max_attempts: 2,
        ..S3Settings::default()
    };
    let store = S3Store::with_credentials(
        "bucket",
        "prefix",
        &settings,
        s3::ACCESS_KEY,
        s3::SECRET_KEY,
    )
    .await
    .unwrap();
    let started = Instant::now();
    let err = store.head("k").await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
    let message = report(&err);
    assert!(message.contains(&endpoint), "{message}");
    assert!(message.contains("HeadObject"), "{message}");
    assert!(
        !message.contains('\n') && !message.contains("{ "),
        "one plain line: {message}"
    );
    eprintln!("unreachable: {message}");
    let err = store.put("k", reader(b"x".to_vec())).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
}
