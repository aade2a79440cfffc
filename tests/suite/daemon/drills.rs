//! Scheduled drills: the daemon drills each job's newest backup on the drill's schedule; a
//! passed drill shows in the metrics and the store, a failing one is counted, sent to the
//! webhook, and turns `/readyz` unready once the last passed drill is older than its max age.

use super::http::capture_server;
use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_drills_pass_fail_notify_and_gate_readiness() {
    let c = cluster();
    let db = small_db("daemon_drill").await;
    let (hook, seen) = capture_server().await;
    // A port nothing listens on: the broken job's drills cannot reach their server.
    let closed = s3::free_port();
    let catalog = c.create_db("daemon_drill_catalog").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[catalog]\ndatabase = \"{catalog_url}\"\n\n[notifications]\nwebhook_url = \"http://127.0.0.1:{hook}/hook\"\n\n\
         [jobs.drilled]\ndatabase = \"{url}\"\ncompression = \"gzip:1\"\n\
         [jobs.drilled.drill]\nschedule = \"*/2 * * * * *\"\ntarget = \"{target}\"\nmax_age = \"1h\"\n\n\
         [jobs.undrillable]\ndatabase = \"{url}\"\ncompression = \"gzip:1\"\n\
         [jobs.undrillable.drill]\nschedule = \"*/2 * * * * *\"\n\
         target = \"host=127.0.0.1 port={closed} user=postgres connect_timeout=2\"\nmax_age = \"1s\"\n",
        store_config(&p),
        url = c.url(&db),
        target = c.url("postgres"),
        catalog_url = c.url(&catalog),
    ));
    p.run(&["backup", "drilled"]).await.expect_code(0);
    let undrillable = p.run(&["backup", "undrillable"]).await.expect_code(0);
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    d.wait_metrics(
        Duration::from_secs(30),
        "a passed and a failed drill",
        |m| {
            sample(
                m,
                "pgkeep_drill_last_success_timestamp_seconds{job=\"drilled\"}",
            )
            .is_some_and(|v| v > 0.0)
                && sample(m, "pgkeep_drill_failures_total{job=\"undrillable\"}")
                    .is_some_and(|v| v >= 1.0)
        },
    )
    .await;
    let (_, metrics) = d.get("/metrics").await;
    assert_eq!(
        sample(&metrics, "pgkeep_drill_failures_total{job=\"drilled\"}"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            "pgkeep_drill_last_success_timestamp_seconds{job=\"undrillable\"}"
        ),
        Some(0.0)
    );
    promtool_check(&metrics).await;

    let (code, body) = d.get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("job 'undrillable': drills: no passed drill since start-up"),
        "{body}"
    );
    assert!(!body.contains("job 'drilled'"), "{body}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, path, _)| path == "/hook")
            .map(|(_, _, b)| serde_json::from_str::<serde_json::Value>(b).unwrap())
            .find(|e| e["event"] == "drill_failure");
        if let Some(e) = found {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "no drill_failure webhook\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(event["job"], "undrillable", "{event}");
    assert_eq!(event["backup"], undrillable.last_line().as_str(), "{event}");
    assert!(
        event["error"].as_str().unwrap().contains("cannot connect"),
        "{event}"
    );

    let (code, _, log) = d.terminate(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{log}");
    let drilled = committed(&p.store_dir(), "drilled");
    assert_eq!(drilled.len(), 1, "drills make no backups");
    assert!(
        p.store_dir()
            .join("drilled")
            .join(&drilled[0])
            .join("drill.json")
            .is_file(),
        "{log}"
    );
    let client = c.connect("postgres").await;
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE starts_with(datname, 'pgkeep_drill_drilled_')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "scratch databases left:\n{log}");

    // Both jobs' drills are in the catalog, as drills, with their outcome.
    let catalog = c.connect(&catalog).await;
    let rows = catalog
        .query(
            "SELECT r.job, x.status, count(*) FROM pgkeep.restore_run x \
             JOIN pgkeep.backup_run r USING (run_id) WHERE x.kind = 'drill' \
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        seen,
        vec![
            ("drilled".to_string(), "succeeded".to_string()),
            ("undrillable".to_string(), "failed".to_string()),
        ],
        "{log}"
    );
}
