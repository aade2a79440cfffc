//! S3 faults between a pgkeep process and Garage, injected by the fault proxy: errors and
//! resets on a fraction of requests, blackholed uploads and downloads, lost answers to the
//! manifest write and to the multipart completion. Backups either succeed and verify or fail
//! closed; restores either succeed and equal the source or fail with the target unchanged; no
//! command hangs.

use std::time::{Duration, Instant};

use pgkeep::store::ObjectStore as _;

use super::listed;
use crate::common::cli::{Pgkeep, Run};
use crate::common::config::Toml;
use crate::common::faultproxy::{Fault, FaultProxy, Rule};
use crate::common::pg::{assert_same, cluster};
use crate::common::s3::{self, S3Target};
use crate::suite::damage::{populated_target, side_databases};

/// Far above the 1-3 s timeouts these runs use, far below a hang.
const NO_HANG: Duration = Duration::from_mins(1);

struct Rig {
    target: S3Target,
    proxy: FaultProxy,
    p: Pgkeep,
    db: String,
}

/// A job of `kind` (a pagila database, plus a table big enough for multipart uploads, stored
/// uncompressed: 5 MiB parts) kept in Garage through a fault proxy, with short timeouts and
/// three attempts per request.
async fn rig(kind: &str, label: &str) -> Option<Rig> {
    let target = s3::garage(label)?;
    let proxy = FaultProxy::start(target.upstream());
    let c = cluster();
    let db = c.pagila_db(&format!("s3fault_{kind}")).await;
    c.psql_sql(
        &db,
        "CREATE TABLE bulk (id int PRIMARY KEY, pad text); \
         INSERT INTO bulk SELECT g, md5(g::text) || md5((g + 7)::text) || md5((g + 9)::text) \
           FROM generate_series(1, 120000) g;",
    )
    .await;
    let toml = Toml::storage("s3://placeholder")
        .table("storage.s3")
        .set("part_size_mib", 5)
        .set("max_attempts", 3)
        .set("connect_timeout", "2s")
        .set("request_timeout", "2s")
        .set("part_timeout", "3s")
        .set("read_timeout", "2s")
        .job("main", kind, &c.url(&db))
        .set("compression", "none");
    let p = Pgkeep::with_config(&toml.render()).envs(&target.via(&proxy.endpoint()).pgkeep_env());
    Some(Rig {
        target,
        proxy,
        p,
        db,
    })
}

async fn timed(p: &Pgkeep, args: &[&str]) -> (Run, Duration) {
    let started = Instant::now();
    let run = tokio::time::timeout(NO_HANG, p.run(args))
        .await
        .unwrap_or_else(|_| panic!("pgkeep {args:?} hung"));
    (run, started.elapsed())
}

/// Every listed backup verifies (with no faults).
async fn everything_listed_verifies(rig: &Rig, what: &str) {
    rig.proxy.clear();
    for b in listed(&rig.p).await {
        let id = b["id"].as_str().unwrap();
        let v = rig.p.run(&["verify", id]).await;
        assert_eq!(
            v.code, 0,
            "{what}: {id} is listed but does not verify: {}",
            v.stdout
        );
    }
    assert_eq!(
        rig.target.open_multipart_uploads().await,
        Vec::<String>::new(),
        "{what}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_resets_on_a_fraction_of_requests_are_survived_or_fail_closed() {
    for kind in ["dump", "export"] {
        let Some(rig) = rig(kind, &format!("s3fault-fraction-{kind}")).await else {
            eprintln!("SKIPPED: garage is not installed (scripts/test-deps.sh)");
            return;
        };
        let c = cluster();
        let source = c.snapshot(&rig.db).await;
        for (seed, fault) in [
            (1, Fault::Status(503)),
            (2, Fault::Status(500)),
            (3, Fault::ResetRequestAfter(300)),
            (4, Fault::ResetResponseAfter(40)),
        ] {
            rig.proxy.clear();
            rig.proxy.add(Rule::new(fault).fraction(0.15, seed));
            let (run, _) = timed(&rig.p, &["backup"]).await;
            let what = format!("{kind} backup under {fault:?}");
            assert!(run.code == 0 || run.code == 1, "{what}: {}", run.stderr);
            if run.code == 1 {
                assert!(
                    run.error_line().contains("backup of job 'main' failed at"),
                    "{what}"
                );
            }
            everything_listed_verifies(&rig, &what).await;

            // Restores through the same faults: equal to the source, or the target unchanged.
            rig.proxy.add(Rule::new(fault).fraction(0.15, seed + 10));
            let Some(latest) = listed(&rig.p)
                .await
                .first()
                .map(|b| b["id"].as_str().unwrap().to_string())
            else {
                continue;
            };
            let (victim, before) = populated_target(c).await;
            let (run, _) = timed(
                &rig.p,
                &[
                    "restore",
                    &latest,
                    "--target",
                    &c.url(&victim),
                    "--clean",
                    "--jobs",
                    "2",
                ],
            )
            .await;
            match run.code {
                0 => assert_same(&source, &c.snapshot(&victim).await),
                1 => assert_same(&before, &c.snapshot(&victim).await),
                other => panic!("{what}: restore exited {other}: {}", run.stderr),
            }
            assert_eq!(
                side_databases(c, &victim).await,
                Vec::<String>::new(),
                "{what}"
            );
            c.drop_db(&victim).await;
        }
        rig.proxy.clear();
        rig.p.backup_ok().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_part_upload_fails_the_backup_within_its_timeout() {
    let Some(rig) = rig("dump", "s3fault-blackhole-up").await else {
        return;
    };
    rig.proxy
        .add(Rule::new(Fault::Stall).method("PUT").query("partNumber"));
    let (run, took) = timed(&rig.p, &["backup"]).await;
    let run = run.expect_code(1);
    let line = run.error_line();
    assert!(
        line.contains("UploadPart") && line.contains("timed out"),
        "{line}"
    );
    assert!(
        !line.contains("signal 13"),
        "the store's error, not its echo: {line}"
    );
    assert!(took < Duration::from_secs(45), "took {took:?}");
    everything_listed_verifies(&rig, "blackholed upload").await;
    assert!(listed(&rig.p).await.is_empty());
    rig.p.backup_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_part_uploads_are_blamed_on_the_store_not_on_pg_dump() {
    let Some(rig) = rig("dump", "s3fault-reject").await else {
        return;
    };
    rig.proxy.add(
        Rule::new(Fault::Status(500))
            .method("PUT")
            .query("partNumber"),
    );
    let (run, _) = timed(&rig.p, &["backup"]).await;
    let line = run.expect_code(1).error_line();
    assert!(
        line.contains("UploadPart") && line.contains("500"),
        "{line}"
    );
    assert!(
        !line.contains("signal 13") && !line.contains("pg_dump failed"),
        "{line}"
    );
    everything_listed_verifies(&rig, "rejected parts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blackholed_download_is_reported_as_unreadable_not_as_damage() {
    let Some(rig) = rig("dump", "s3fault-blackhole-down").await else {
        return;
    };
    let id = rig.p.backup_ok().await;
    rig.proxy.add(
        Rule::new(Fault::StallResponseAfter(1000))
            .method("GET")
            .path("dump.pgdump"),
    );
    let (run, took) = timed(&rig.p, &["verify", &id]).await;
    let run = run.expect_code(1);
    assert!(
        run.stdout.contains("UNREAD") && !run.stdout.contains("DAMAGED"),
        "{}",
        run.stdout
    );
    assert!(
        run.error_line().contains("could not read"),
        "{}",
        run.stderr
    );
    assert!(took < Duration::from_secs(45), "took {took:?}");

    let c = cluster();
    let (victim, before) = populated_target(c).await;
    let (run, _) = timed(
        &rig.p,
        &["restore", &id, "--target", &c.url(&victim), "--clean"],
    )
    .await;
    let line = run.expect_code(1).error_line();
    assert!(
        !line.contains("damaged"),
        "a stalled download is not damage: {line}"
    );
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());

    // A reset in the middle of the download is resumed: verify passes.
    rig.proxy.clear();
    rig.proxy.add(
        Rule::new(Fault::ResetResponseAfter(200_000))
            .method("GET")
            .path("dump.pgdump")
            .times(2),
    );
    rig.p.run(&["verify", &id]).await.expect_code(0);
    assert!(rig.proxy.injected() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_manifest_write_or_the_completion_still_commits() {
    let Some(rig) = rig("dump", "s3fault-lost").await else {
        return;
    };
    // Every attempt's answer is lost (the SDK's own retries too): pgkeep reads it back.
    rig.proxy.add(
        Rule::new(Fault::DropResponse)
            .method("PUT")
            .path("manifest.json"),
    );
    let run = rig.p.run(&["backup"]).await.expect_code(0);
    assert!(rig.proxy.injected() >= 1);
    let id = run.last_line();
    rig.proxy.clear();
    rig.p.run(&["verify", &id]).await.expect_code(0);

    rig.proxy.add(
        Rule::new(Fault::DropResponse)
            .method("POST")
            .query("uploadId")
            .times(1),
    );
    let before = rig.proxy.injected();
    let run = rig.p.run(&["backup"]).await.expect_code(0);
    assert!(
        rig.proxy.injected() > before,
        "a completion answer must have been lost"
    );
    let id = run.last_line();
    rig.proxy.clear();
    rig.p.run(&["verify", &id]).await.expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_commit_outcome_removes_nothing_and_is_settled_later() {
    let Some(rig) = rig("dump", "s3fault-unknown").await else {
        return;
    };
    // The manifest's answers are lost, and reading it back fails too.
    rig.proxy.add(
        Rule::new(Fault::DropResponse)
            .method("PUT")
            .path("manifest.json"),
    );
    rig.proxy.add(
        Rule::new(Fault::Status(503))
            .method("GET")
            .path("manifest.json"),
    );
    let (run, _) = timed(&rig.p, &["backup"]).await;
    let line = run.expect_code(1).error_line();
    assert!(line.contains("not known whether backup"), "{line}");
    // The manifest did reach the store: once it can be read, it is a complete backup.
    rig.proxy.clear();
    let after = listed(&rig.p).await;
    assert_eq!(after.len(), 1, "{after:?}");
    everything_listed_verifies(&rig, "unknown commit").await;
    rig.p.backup_ok().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_a_backup_aborts_its_uploads_and_removes_its_objects() {
    let Some(rig) = rig("dump", "s3fault-ctrl-c").await else {
        return;
    };
    // Slow the part uploads down so the run is surely in the middle of one.
    rig.proxy.add(
        Rule::new(Fault::StallResponseAfter(0))
            .method("PUT")
            .query("partNumber"),
    );
    let mut child = rig.p.spawn(&["backup"]);
    for _ in 0..500 {
        if rig.proxy.injected() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        rig.proxy.injected() > 0,
        "the run never reached a part upload"
    );
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("Ctrl-C must stop the backup within seconds")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    rig.proxy.clear();
    assert!(listed(&rig.p).await.is_empty());
    let store = rig.target.store().await;
    assert_eq!(store.list("main/").await.unwrap(), Vec::new());
    assert_eq!(
        rig.target.open_multipart_uploads().await,
        Vec::<String>::new()
    );
}
