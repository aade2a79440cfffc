//! Requests that are never answered fail within their timeout, retried, with an error that names
//! the operation and says it timed out; nothing is left behind.

use pgkeep::store::{ObjectStore, StoreError};

use super::{PART, on_both_servers, rig, within};
use crate::common::faultproxy::{Fault, Rule};
use crate::common::s3::{S3Target, report};
use crate::suite::store_conformance::{data, reader};

/// `err` is a timeout of `operation` after `after`, and is retryable.
fn assert_timed_out(err: &StoreError, operation: &str, after: &str) {
    let text = report(err);
    assert!(matches!(err, StoreError::TimedOut { .. }), "{text}");
    assert!(
        text.contains(&format!("S3 {operation} on s3://")),
        "names the operation: {text}"
    );
    assert!(
        text.contains(&format!("timed out after {after}")),
        "says it timed out: {text}"
    );
    assert!(err.is_retryable());
}

async fn stalled_part_upload(target: S3Target) {
    let rig = rig(target).await;
    rig.proxy
        .add(Rule::new(Fault::Stall).method("PUT").query("partNumber"));
    let put = rig.store.put("job/run/big", reader(data(PART + 4096, 1)));
    let err = within("the put", put)
        .await
        .expect_err("a put whose parts are never answered must fail");
    assert_timed_out(&err, "UploadPart", "2s");
    assert!(
        rig.proxy.injected() >= 2,
        "every attempt stalled: {}",
        rig.proxy.injected()
    );
    let seen = rig.proxy.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "DELETE" && s.query.contains("uploadId")),
        "the upload was not aborted: {seen:?}"
    );
    rig.assert_nothing_left("job/run/big").await;
}

async fn stalled_small_put(target: S3Target) {
    let rig = rig(target).await;
    rig.proxy.add(Rule::new(Fault::Stall).method("PUT"));
    let put = rig
        .store
        .put("job/run/manifest.json", reader(b"{}".to_vec()));
    let err = within("the put", put)
        .await
        .expect_err("an unanswered PutObject must fail");
    assert_timed_out(&err, "PutObject", "1s");
    assert_eq!(rig.proxy.injected(), 2, "both attempts were sent");
    rig.assert_nothing_left("job/run/manifest.json").await;
}

async fn stalled_list(target: S3Target) {
    let rig = rig(target).await;
    rig.direct
        .put("job/a", reader(b"a".to_vec()))
        .await
        .unwrap();
    rig.proxy
        .add(Rule::new(Fault::Stall).method("GET").query("list-type"));
    let err = within("the list", rig.store.list("job/"))
        .await
        .expect_err("a stalled list");
    assert_timed_out(&err, "ListObjectsV2", "1s");
    // The same store works again once the server answers.
    rig.proxy.clear();
    let listed = rig.store.list("job/").await.unwrap();
    assert_eq!(listed.len(), 1);
}

async fn stalled_get_response(target: S3Target) {
    let rig = rig(target).await;
    rig.direct
        .put("job/obj", reader(data(1000, 2)))
        .await
        .unwrap();
    rig.proxy
        .add(Rule::new(Fault::Stall).method("GET").path("job/obj"));
    let Err(err) = within("the get", rig.store.get("job/obj")).await else {
        panic!("a GetObject that is never answered must fail");
    };
    assert_timed_out(&err, "GetObject", "1s");
}

/// A reset while sending a part is retried by the SDK; the upload then completes intact.
async fn reset_part_upload_is_retried(target: S3Target) {
    let rig = rig(target).await;
    rig.proxy.add(
        Rule::new(Fault::ResetRequestAfter(64 * 1024))
            .method("PUT")
            .query("partNumber")
            .nth(2),
    );
    let bytes = data(PART * 2 + 100, 3);
    let put = rig.store.put("job/run/reset", reader(bytes.clone()));
    let stored = within("the put", put)
        .await
        .unwrap_or_else(|e| panic!("{}", report(&e)));
    assert_eq!(stored, bytes.len() as u64);
    assert_eq!(rig.proxy.injected(), 1);
    let back = super::read_all(&rig.direct, "job/run/reset").await.unwrap();
    assert_eq!(super::sha256(&back), super::sha256(&bytes));
}

on_both_servers! {
    stalled_part_upload_times_out => stalled_part_upload;
    stalled_small_put_times_out => stalled_small_put;
    stalled_list_times_out => stalled_list;
    stalled_get_response_times_out => stalled_get_response;
    reset_part_upload_is_retried_by_the_sdk => reset_part_upload_is_retried;
}
