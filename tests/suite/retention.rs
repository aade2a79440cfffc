//! `pgkeep prune` and retention after `pgkeep backup`, through the real binary.

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

/// A local dump job of a tiny database, with `retention` appended to the job when given.
async fn tiny_job(prefix: &str) -> Pgkeep {
    let c = cluster();
    let db = c.create_db(prefix).await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2);",
    )
    .await;
    Pgkeep::local_dump(&c.url(&db))
}

fn set_retention(p: &Pgkeep, retention: &str) {
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    let base = config
        .split("[jobs.main.retention]")
        .next()
        .unwrap()
        .to_string();
    p.write_config(&format!("{base}[jobs.main.retention]\n{retention}\n"));
}

async fn listed_ids(p: &Pgkeep) -> Vec<String> {
    let run = p
        .run(&["list", "--job", "main", "--json"])
        .await
        .expect_code(0);
    let items: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// The backup directories left in the store, oldest first.
fn stored_backups(p: &Pgkeep) -> Vec<String> {
    let mut dirs: Vec<String> = p
        .stored_files()
        .iter()
        .map(|f| f.split('/').nth(1).unwrap().to_string())
        .collect();
    dirs.dedup();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_dry_run_changes_nothing_then_prune_keeps_the_newest_two() {
    let p = tiny_job("prune_keep_last").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(p.backup_ok().await);
    }
    let files_before = p.stored_files();
    assert_eq!(stored_backups(&p), ids);

    // Without a policy, prune does nothing and says so.
    let run = p.run(&["prune"]).await.expect_code(0);
    assert!(
        run.stdout.contains("no job has a retention policy"),
        "{}",
        run.stdout
    );
    let run = p.run(&["prune", "--job", "main"]).await.expect_code(0);
    assert!(
        run.stdout.contains("job 'main' has no retention policy"),
        "{}",
        run.stdout
    );
    assert_eq!(p.stored_files(), files_before);

    set_retention(&p, "keep_last = 2");
    let run = p.run(&["prune", "--dry-run"]).await.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains("keep_last=2"), "{out}");
    assert!(
        out.contains(&format!("keep     {}  last 1", ids[3])),
        "{out}"
    );
    assert!(
        out.contains(&format!("keep     {}  last 2", ids[2])),
        "{out}"
    );
    assert!(out.contains(&format!("delete   {}", ids[1])), "{out}");
    assert!(out.contains(&format!("delete   {}", ids[0])), "{out}");
    assert!(out.contains("would delete 2, keep 2"), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(p.stored_files(), files_before);

    let run = p.run(&["prune", "--job", "main"]).await.expect_code(0);
    let out = &run.stdout;
    assert!(out.contains(&format!("deleted  {}", ids[0])), "{out}");
    assert!(out.contains(&format!("deleted  {}", ids[1])), "{out}");
    assert!(
        out.contains(&format!("kept     {}  last 1", ids[3])),
        "{out}"
    );
    assert!(out.contains("deleted 2, kept 2"), "{out}");
    assert_eq!(listed_ids(&p).await, [ids[3].clone(), ids[2].clone()]);
    // Nothing of the deleted backups is left behind, not even empty directories.
    assert_eq!(stored_backups(&p), ids[2..]);
    for dir in &ids[..2] {
        assert!(!p.store_dir().join("main").join(dir).exists(), "{dir}");
    }

    // Pruning again changes nothing.
    let run = p.run(&["prune"]).await.expect_code(0);
    assert!(run.stdout.contains("deleted 0, kept 2"), "{}", run.stdout);
    assert_eq!(stored_backups(&p), ids[2..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_applies_retention_after_it_commits() {
    let p = tiny_job("prune_auto").await;
    set_retention(&p, "keep_last = 2");
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(p.backup_ok().await);
        let newest_two: Vec<String> = ids.iter().rev().take(2).cloned().collect();
        assert_eq!(listed_ids(&p).await, newest_two);
    }
    assert_eq!(stored_backups(&p), ids[1..]);

    // Periods are counted in the daemon's time zone; a daily rule keeps one per day.
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!("[daemon]\ntimezone = \"Europe/Berlin\"\n{config}"));
    set_retention(&p, "keep_daily = 1");
    let run = p.run(&["prune", "--dry-run"]).await.expect_code(0);
    assert!(
        run.stdout.contains("periods in Europe/Berlin")
            && run.stdout.contains(&format!("keep     {}  daily ", ids[2]))
            && run.stdout.contains(&format!("delete   {}", ids[1])),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_whose_objects_outlive_its_manifest_is_not_listed() {
    // What a prune interrupted between the manifest and the objects leaves: not a backup.
    let p = tiny_job("prune_half").await;
    let first = p.backup_ok().await;
    let second = p.backup_ok().await;
    std::fs::remove_file(
        p.store_dir()
            .join("main")
            .join(&first)
            .join("manifest.json"),
    )
    .unwrap();
    assert_eq!(listed_ids(&p).await, [second]);
    set_retention(&p, "keep_last = 1");
    let run = p.run(&["prune"]).await.expect_code(0);
    assert!(run.stdout.contains("deleted 0, kept 1"), "{}", run.stdout);
    p.run(&["verify", "--all"]).await.expect_code(0);
}
