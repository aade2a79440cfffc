//! Downloads through transport faults: a reset, a stall or a short body mid-download is resumed
//! and the bytes are exactly the object's; faults that never stop give a wrapped `StoreError`
//! ("could not read"), never `InvalidData` ("the bytes are wrong").

use std::io;

use pgkeep::store::{ObjectStore, StoreError, store_error_of};

use super::{Rig, on_both_servers, read_all, rig, sha256, within};
use crate::common::faultproxy::{Fault, Rule};
use crate::common::s3::{S3Target, report};
use crate::suite::store_conformance::{data, reader};

const KEY: &str = "job/run/table.gz";
/// Three megabytes: one PutObject, many body chunks.
const SIZE: usize = 3 * 1024 * 1024 + 17;
/// Where the first response is cut.
const CUT: usize = 256 * 1024;

/// A rig with the object stored (directly, without faults); returns its bytes.
async fn stored(target: S3Target) -> (Rig, Vec<u8>) {
    let rig = rig(target).await;
    let bytes = data(SIZE, 11);
    rig.direct.put(KEY, reader(bytes.clone())).await.unwrap();
    (rig, bytes)
}

/// The first GET of the object meets `fault`; the read must resume and deliver every byte.
async fn resumes_after(target: S3Target, fault: Fault) {
    let (rig, bytes) = stored(target).await;
    rig.proxy
        .add(Rule::new(fault).method("GET").path(KEY).nth(1));
    let back = within("the read", read_all(&rig.store, KEY))
        .await
        .unwrap_or_else(|e| panic!("{fault:?}: the read did not resume: {e}"));
    assert_eq!(back.len(), bytes.len(), "{fault:?}: length");
    assert_eq!(sha256(&back), sha256(&bytes), "{fault:?}: content");
    assert_eq!(rig.proxy.injected(), 1);

    // The resumed request asked for the rest of the same object.
    let gets: Vec<_> = rig
        .proxy
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET" && s.path.ends_with(KEY))
        .collect();
    assert!(gets.len() >= 2, "{fault:?}: no resumed GET: {gets:?}");
    let resumed = &gets[1];
    let range = resumed.range.as_deref().expect("a Range header");
    let offset: usize = range
        .strip_prefix("bytes=")
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|o| o.parse().ok())
        .unwrap_or_else(|| panic!("unexpected Range '{range}'"));
    assert!(offset <= CUT, "resumed at {offset}, past the cut at {CUT}");
    let etag = resumed.if_match.as_deref().expect("an If-Match header");
    assert!(etag.len() > 2, "If-Match '{etag}'");
}

async fn reset_mid_download(target: S3Target) {
    resumes_after(target, Fault::ResetResponseAfter(CUT)).await;
}

async fn stalled_download_body(target: S3Target) {
    resumes_after(target, Fault::StallResponseAfter(CUT)).await;
}

async fn short_download_body(target: S3Target) {
    resumes_after(target, Fault::CloseResponseAfter(CUT)).await;
}

/// Every request after the first is cut before its body: the read fails, as a transport fault,
/// which is returned.
async fn faults_on_every_retry(target: S3Target, every_time: Fault) -> StoreError {
    let (rig, _) = stored(target).await;
    rig.proxy.add(
        Rule::new(Fault::ResetResponseAfter(CUT))
            .method("GET")
            .path(KEY)
            .nth(1),
    );
    rig.proxy.add(Rule::new(every_time).method("GET").path(KEY));
    let err = within("the read", read_all(&rig.store, KEY))
        .await
        .expect_err("a read whose every resume fails must fail");
    assert_ne!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    let Some(cause) = store_error_of(&err) else {
        panic!("the read error wraps no StoreError: {err:?}");
    };
    let text = report(cause);
    assert!(cause.is_retryable(), "{text}");
    assert!(
        text.contains("s3://") && text.contains(KEY),
        "names the object: {text}"
    );
    match cause {
        StoreError::Interrupted { offset, size, .. } => {
            assert!(*offset <= CUT as u64, "{text}");
            assert_eq!(*size, Some(SIZE as u64), "{text}");
        }
        // A resume whose answer never arrived fails as that request.
        StoreError::Unreachable { .. } | StoreError::TimedOut { .. } => {}
        other => panic!("expected a transport fault, got {}", report(other)),
    }
    // What upper layers get from it: the same store error, not "the bytes are wrong".
    let unwrapped = StoreError::from_read(KEY, err);
    assert!(unwrapped.is_retryable(), "{}", report(&unwrapped));
    assert!(rig.proxy.injected() >= 3, "{}", rig.proxy.injected());
    unwrapped
}

async fn resets_on_every_retry(target: S3Target) {
    faults_on_every_retry(target, Fault::ResetResponseAfter(0)).await;
}

async fn stalls_on_every_retry(target: S3Target) {
    let error = faults_on_every_retry(target, Fault::StallResponseAfter(0)).await;
    // Each resumed response arrives and then sends nothing: the idle timeout ends the read.
    let text = report(&error);
    assert!(matches!(error, StoreError::Interrupted { .. }), "{text}");
    assert!(
        text.contains("S3 GetObject on s3://")
            && text.contains("timed out after 1s without receiving a byte"),
        "{text}"
    );
}

on_both_servers! {
    reset_mid_download_resumes => reset_mid_download;
    stalled_download_body_resumes => stalled_download_body;
    short_download_body_resumes => short_download_body;
    resets_on_every_retry_are_transport_errors => resets_on_every_retry;
    stalls_on_every_retry_are_transport_errors => stalls_on_every_retry;
}
