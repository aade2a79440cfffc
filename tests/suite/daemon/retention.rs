//! Retention failing in the daemon, against a real store: Garage (or s3s-fs) behind the
//! fault proxy refuses every deletion with 403 AccessDenied (a bucket policy without delete rights), so
//! each run's backup commits but its prune fails; /metrics says so, in the shape the
//! PgkeepRetentionFailing rule reads, and once deletions are allowed the next run's prune
//! catches up.

use super::*;
use crate::common::faultproxy::{Fault, FaultProxy, Rule};

/// `job`'s committed backups, as `pgkeep list --json` shows them.
async fn listed_ids(p: &Pgkeep) -> Vec<String> {
    let run = p.run(&["list", "--json"]).await.expect_code(0);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    listed
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_prune_shows_on_metrics_and_recovers() {
    // Garage where it is installed, else the in-process s3s-fs server: never skipped.
    let target = s3::garage_binary()
        .and_then(|_| s3::garage("daemon-prune"))
        .unwrap_or_else(|| s3::s3s_fs("daemon-prune"));
    eprintln!("retention failing on {:?}", target.server);
    let proxy = FaultProxy::start(target.upstream());
    proxy.add(Rule::new(Fault::Status(403)).method("DELETE"));
    let c = cluster();
    let db = small_db("daemon_prune_fails").await;
    let p = Pgkeep::with_config("").envs(&target.via(&proxy.endpoint()).pgkeep_env());
    p.write_config(&format!(
        "[storage.s3]\nmax_attempts = 2\n\n\
         [jobs.kept]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\ncompression = \"gzip:1\"\n\
         [jobs.kept.retention]\nkeep_last = 1\n",
        c.url(&db)
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    let series = |name: &str| format!("{name}{{job=\"kept\"}}");
    let value = |m: &str, name: &str| sample(m, &series(name)).unwrap_or(0.0);
    // The first run has nothing to delete (keep_last = 1); the second must delete the first.
    // The run's success is counted once its prune is over: wait for both.
    d.wait_metrics(Duration::from_secs(30), "a failed prune", |m| {
        value(m, "pgkeep_prune_failures_total") >= 1.0
            && value(m, "pgkeep_backup_success_total") >= 2.0
    })
    .await;
    let (_, failing) = d.get("/metrics").await;
    let v = |name| value(&failing, name);
    assert!(
        v("pgkeep_prune_last_failure_timestamp_seconds")
            > v("pgkeep_prune_last_success_timestamp_seconds"),
        "the alert's condition does not hold:\n{failing}"
    );
    assert_eq!(
        sample(&failing, &series("pgkeep_prune_deleted_total")),
        Some(0.0),
        "{failing}"
    );
    // The first run had nothing to delete: its prune completed.
    assert!(v("pgkeep_prune_success_total") >= 1.0, "{failing}");
    // The backups themselves commit: a failed prune is not a failed run.
    assert_eq!(
        sample(&failing, &series("pgkeep_backup_failures_total")),
        Some(0.0),
        "{failing}"
    );
    assert!(proxy.injected() >= 1);
    assert!(
        listed_ids(&p).await.len() >= 2,
        "retention should have been kept from deleting"
    );

    proxy.clear();
    d.wait_metrics(Duration::from_secs(30), "a prune that recovered", |m| {
        value(m, "pgkeep_prune_last_success_timestamp_seconds")
            > value(m, "pgkeep_prune_last_failure_timestamp_seconds")
            && value(m, "pgkeep_prune_deleted_total") >= 1.0
    })
    .await;
    let (_, recovered) = d.get("/metrics").await;
    promtool_check(&recovered).await;
    let (code, _, log) = d.terminate(Duration::from_secs(15)).await;
    assert_eq!(code, 0, "{log}");
    assert!(
        log.contains("retention failed after the backup") && log.contains("AccessDenied"),
        "{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
    // Every run's prune completes under its lock before the daemon exits: one backup is left.
    assert_eq!(listed_ids(&p).await.len(), 1, "{log}");
}
