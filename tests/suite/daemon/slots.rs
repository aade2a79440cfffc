//! Two daemons on one job: one backup per schedule slot.

use super::*;

/// Two daemons on one configuration (two replicas): the advisory lock and the slot check make
/// each scheduled slot produce one backup, not two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_take_one_backup_per_slot() {
    let c = cluster();
    let db = small_db("daemon_replicas").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[jobs.shared]\ndatabase = \"{}\"\nschedule = \"*/2 * * * * *\"\ncompression = \"gzip:1\"\n",
        store_config(&p),
        c.url(&db)
    ));
    let (first, second) = tokio::join!(
        Daemon::start(&p, s3::free_port(), &[]),
        Daemon::start(&p, s3::free_port(), &[])
    );
    let skipped = |m: &str| {
        ["locked", "already_done"]
            .iter()
            .map(|r| {
                sample(
                    m,
                    &format!("pgkeep_backup_skipped_total{{job=\"shared\",reason=\"{r}\"}}"),
                )
                .unwrap_or(0.0)
            })
            .sum::<f64>()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, metrics_1) = first.get("/metrics").await;
        let (_, metrics_2) = second.get("/metrics").await;
        if committed(&p.store_dir(), "shared").len() >= 3
            && skipped(&metrics_1) + skipped(&metrics_2) >= 3.0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "first:\n{}\nsecond:\n{}",
            first.log(),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code_1, _, log_1) = first.terminate(Duration::from_secs(10)).await;
    let (code_2, _, log_2) = second.terminate(Duration::from_secs(10)).await;
    assert_eq!(
        (code_1, code_2),
        (0, 0),
        "first:\n{log_1}\nsecond:\n{log_2}"
    );
    let ids = committed(&p.store_dir(), "shared");
    // Ids are start times; a run starts in the two seconds after its slot.
    let mut slots: Vec<String> = ids
        .iter()
        .map(|id| {
            let t = pgkeep::manifest::id_time(id).unwrap();
            (t.timestamp() - t.timestamp().rem_euclid(2)).to_string()
        })
        .collect();
    let all = slots.len();
    slots.dedup();
    assert_eq!(
        slots.len(),
        all,
        "two backups in one slot: {ids:?}\nfirst:\n{log_1}\nsecond:\n{log_2}"
    );
}
