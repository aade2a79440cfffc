//! Uploads and reads through failing answers: 5xx on a fraction of requests are retried, a lost
//! CompleteMultipartUpload answer is recognised, a completion that really failed fails.

use pgkeep::store::{ObjectStore, S3Settings, StoreError};

use super::{PART, on_both_servers, quick, read_all, rig, rig_with, sha256, within};
use crate::common::faultproxy::{Fault, Rule};
use crate::common::s3::{S3Target, report};
use crate::suite::store_conformance::{data, reader};

/// Puts `bytes` under `key` and reads them back through the same (faulty) store.
async fn round_trip(store: &dyn ObjectStore, key: &str, bytes: &[u8]) {
    let stored = within("the put", store.put(key, reader(bytes.to_vec())))
        .await
        .unwrap_or_else(|e| panic!("put {key}: {}", report(&e)));
    assert_eq!(stored, bytes.len() as u64, "{key}");
    let back = within("the read", read_all(store, key))
        .await
        .unwrap_or_else(|e| panic!("read {key}: {e}"));
    assert_eq!(sha256(&back), sha256(bytes), "{key}");
}

async fn some_answers_fail(target: S3Target) {
    // Requests one at a time (one part in flight), so a request's attempts meet consecutive
    // decisions of the rule; with this seed no run of them is as long as the retry budget.
    let settings = S3Settings {
        max_attempts: 3,
        parts_in_flight: 1,
        ..quick(&target)
    };
    let rule = Rule::new(Fault::Status(503)).fraction(0.3, 20_240_620);
    assert!(rule.longest_run(200) < 3, "pick another seed");
    let rig = rig_with(target, settings).await;
    rig.proxy.add(rule);

    round_trip(&rig.store, "job/run/manifest.json", b"{\"ok\":true}").await;
    round_trip(&rig.store, "job/run/dump", &data(PART * 2 + 321, 5)).await;
    let listed = rig.store.list("job/run/").await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        rig.proxy.injected() >= 2,
        "too few 503s to show anything: {}",
        rig.proxy.injected()
    );
    // What was stored is right when read without faults too.
    let back = read_all(&rig.direct, "job/run/dump").await.unwrap();
    assert_eq!(sha256(&back), sha256(&data(PART * 2 + 321, 5)));
    rig.assert_nothing_left("job/run/missing").await;
}

/// The store completes the upload; its answer is dropped once, or on every attempt.
async fn lost_completion(target: S3Target, rule: Rule) {
    let rig = rig(target).await;
    rig.proxy.add(rule);
    let bytes = data(PART * 2 + 1234, 6);
    let put = rig.store.put("job/run/big", reader(bytes.clone()));
    let stored = within("the put", put)
        .await
        .unwrap_or_else(|e| panic!("the completed upload was reported failed: {}", report(&e)));
    assert_eq!(stored, bytes.len() as u64);
    assert!(rig.proxy.injected() >= 1);
    // The failed completion was checked on the object itself.
    let seen = rig.proxy.seen();
    let completions = seen
        .iter()
        .filter(|s| s.query.contains("uploadId") && s.method == "POST");
    assert!(
        completions.count() >= 2,
        "the SDK retried the completion: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s.method == "HEAD" && s.path.ends_with("job/run/big")),
        "no HeadObject after the lost answer: {seen:?}"
    );
    let back = read_all(&rig.direct, "job/run/big").await.unwrap();
    assert_eq!(
        sha256(&back),
        sha256(&bytes),
        "the object is complete and right"
    );
    rig.assert_nothing_left("job/run/none").await;
}

async fn lost_completion_answer(target: S3Target) {
    let rule = Rule::new(Fault::DropResponse)
        .method("POST")
        .query("uploadId")
        .nth(1);
    lost_completion(target, rule).await;
}

async fn every_completion_answer_lost(target: S3Target) {
    let rule = Rule::new(Fault::DropResponse)
        .method("POST")
        .query("uploadId");
    lost_completion(target, rule).await;
}

/// Completion never reaches the store: the put fails, and the upload is aborted.
async fn failed_completion(target: S3Target) {
    let rig = rig(target).await;
    rig.proxy.add(
        Rule::new(Fault::Status(500))
            .method("POST")
            .query("uploadId"),
    );
    let put = rig.store.put("job/run/big", reader(data(PART + 10, 7)));
    let err = within("the put", put)
        .await
        .expect_err("a completion that failed must fail the put");
    let text = report(&err);
    assert!(
        matches!(
            err,
            StoreError::S3 {
                status: Some(500),
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("S3 CompleteMultipartUpload on s3://") && text.contains("InternalError"),
        "{text}"
    );
    assert_eq!(rig.proxy.injected(), 2, "both attempts failed");
    rig.assert_nothing_left("job/run/big").await;
}

on_both_servers! {
    puts_and_gets_survive_503s => some_answers_fail;
    a_lost_completion_answer_is_recognised => lost_completion_answer;
    completion_answers_lost_on_every_attempt => every_completion_answer_lost;
    a_failed_completion_fails_and_aborts => failed_completion;
}
