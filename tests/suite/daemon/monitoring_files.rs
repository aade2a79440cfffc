//! The monitoring files against a live daemon: every metric name the alert rules and the
//! Grafana dashboard (deploy/monitoring/) use is one `pgkeep run` exports, with a backup and a
//! drill behind it, so the queries chart something real.

use std::collections::BTreeSet;

use super::*;
use crate::suite::deploy::{metric_names, monitoring_queries};

/// Names that come from Prometheus itself, not from the daemon.
const FROM_PROMETHEUS: &[&str] = &["up"];

/// The daemon's own series, without a `job` label (Prometheus gives them the scrape job's).
const DAEMON_WIDE: &[&str] = &["process_start_time_seconds"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exported() {
    let Some(queries) = monitoring_queries() else {
        return;
    };
    let c = cluster();
    let db = small_db("daemon_monitoring").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[jobs.watched]\ndatabase = \"{url}\"\nschedule = \"*/2 * * * * *\"\ncompression = \"gzip:1\"\n\
         [jobs.watched.retention]\nkeep_last = 2\n\
         [jobs.watched.drill]\nschedule = \"*/2 * * * * *\"\ntarget = \"{target}\"\nmax_age = \"1h\"\n",
        store_config(&p),
        url = c.url(&db),
        target = c.url("postgres"),
    ));
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    d.wait_metrics(
        Duration::from_secs(30),
        "a backup and a passed drill",
        |m| {
            sample(m, "pgkeep_backup_success_total{job=\"watched\"}").is_some_and(|v| v >= 1.0)
                && sample(m, "pgkeep_drill_success_total{job=\"watched\"}")
                    .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    let (_, metrics) = d.get("/metrics").await;
    let exported: BTreeSet<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let mut used = BTreeSet::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr}");
        for name in names {
            assert!(
                exported.contains(name.as_str()) || FROM_PROMETHEUS.contains(&name.as_str()),
                "{place} uses {name}, which the daemon does not export:\n{metrics}"
            );
            used.insert(name);
        }
    }
    // Every series the queries read has a sample for the job, and the ones that matter most
    // are not the start-up zeros.
    for name in used
        .iter()
        .filter(|n| !FROM_PROMETHEUS.contains(&n.as_str()) && !DAEMON_WIDE.contains(&n.as_str()))
    {
        let job_sample = metrics
            .lines()
            .any(|l| l.starts_with(&format!("{name}{{")) && l.contains("job=\"watched\""));
        assert!(job_sample, "no {name} sample for the job:\n{metrics}");
    }
    for series in [
        "pgkeep_backup_last_success_timestamp_seconds{job=\"watched\"}",
        "pgkeep_backup_bytes{job=\"watched\"}",
        "pgkeep_backup_max_age_seconds{job=\"watched\"}",
        "pgkeep_drill_last_success_timestamp_seconds{job=\"watched\"}",
        "pgkeep_prune_last_success_timestamp_seconds{job=\"watched\"}",
        "pgkeep_prune_success_total{job=\"watched\"}",
        "process_start_time_seconds",
    ] {
        assert!(
            sample(&metrics, series).is_some_and(|v| v > 0.0),
            "{series}:\n{metrics}"
        );
    }
    let (code, _, log) = d.terminate(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{log}");
}
