//! `restore --dry-run`: it changes nothing on the server (the target's databases and their
//! comments, and the target's contents, compared before and after), its `--json` is one
//! object that says what the real restore then does, and a refused plan prints no JSON.

use super::damage::{populated_target, run, side_databases};
use super::restore_selective::tables_of;
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{Cluster, assert_same, cluster};

/// The databases whose names start with `target`'s (the target, its restores' new and old
/// ones) with their comments: what a restore into `target` could change at the server level.
async fn databases(c: &Cluster, target: &str) -> Vec<String> {
    let client = c.connect("postgres").await;
    client
        .query(
            "SELECT datname || ' ' || COALESCE(shobj_description(oid, 'pg_database'), '-') \
             FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
            &[&target],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_changes_nothing_and_its_json_is_what_the_restore_does() {
    let c = cluster();
    let source = c.pagila_db("dry_src").await;
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "dump", &c.url(&source))
            .set("globals", false)
    });
    let id = p.backup_ok().await;
    let (victim, before) = populated_target(c).await;
    let server_before = databases(c, &victim).await;
    let url = c.url(&victim);

    let r = run(
        &p,
        &["restore", &id, "--target", &url, "--clean", "--dry-run"],
    )
    .await
    .expect_code(0);
    for needle in [
        "reads:      1 objects",
        "it is replaced (--clean)",
        "tables:     all 22 of the archive",
        "exist side by side until the swap",
        "nothing was changed",
    ] {
        assert!(r.stdout.contains(needle), "{needle}:\n{}", r.stdout);
    }
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &url,
            "--clean",
            "--jobs",
            "2",
            "--dry-run",
            "--json",
        ],
    )
    .await
    .expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("one JSON object: {e}\n{}", r.stdout));
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(databases(c, &victim).await, server_before);

    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.store_dir().join("main").join(&id).join("manifest.json")).unwrap(),
    )
    .unwrap();
    let dump = manifest["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "dump")
        .unwrap();
    assert_eq!(plan["backup"]["id"], id.as_str());
    assert_eq!(plan["action"], "replace");
    assert_eq!(plan["target"]["database"], victim.as_str());
    assert_eq!(plan["target"]["exists"], true);
    assert_eq!(plan["target"]["holds_data"], true);
    assert_eq!(
        plan["target"]["examples"].as_array().unwrap().len(),
        5,
        "{plan:#}"
    );
    let build = plan["build_database"].as_str().unwrap();
    let old = plan["old_database"].as_str().unwrap();
    assert!(
        build.starts_with(&format!("{victim}_pgkeep_new_")),
        "{build}"
    );
    assert!(old.starts_with(&format!("{victim}_pgkeep_old_")), "{old}");
    assert_eq!(plan["keep_old"], false);
    assert_eq!(plan["jobs"], 2);
    assert_eq!(plan["objects"].as_array().unwrap().len(), 1);
    assert_eq!(plan["objects"][0]["key"], dump["key"]);
    assert_eq!(plan["objects"][0]["raw_bytes"], dump["raw_bytes"]);
    assert_eq!(plan["objects"][0]["stored_bytes"], dump["stored_bytes"]);
    assert_eq!(plan["space"]["loaded_bytes"], dump["raw_bytes"]);
    assert_eq!(plan["space"]["staged_bytes"], dump["raw_bytes"]);
    assert_eq!(plan["space"]["side_by_side"], true);
    assert!(
        plan["space"]["target_bytes"].as_u64().unwrap() > 1_000_000,
        "{plan:#}"
    );
    assert_eq!(plan["content"]["kind"], "dump");
    assert_eq!(plan["content"]["selective"], false);

    // The real restore does what the plan said: the same tables, the old database gone.
    let r = run(
        &p,
        &["restore", &id, "--target", &url, "--clean", "--jobs", "2"],
    )
    .await
    .expect_code(0);
    assert!(
        r.stdout.contains("the previous database was dropped"),
        "{}",
        r.stdout
    );
    let planned: Vec<String> = plan["content"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    let mut planned_sorted = planned.clone();
    planned_sorted.sort();
    assert_eq!(tables_of(c, &victim).await, planned_sorted);
    assert_eq!(planned.len(), 22);
    assert_same(&c.snapshot(&source).await, &c.snapshot(&victim).await);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());

    // Refused: a target with data and no --clean is the real restore's error, and no JSON.
    let server_before = databases(c, &victim).await;
    let r = run(
        &p,
        &["restore", &id, "--target", &url, "--dry-run", "--json"],
    )
    .await
    .expect_code(1);
    assert!(r.error_line().contains("--clean"), "{}", r.stderr);
    assert_eq!(r.stdout, "");
    assert_eq!(databases(c, &victim).await, server_before);
    // --json belongs to --dry-run.
    let r = run(&p, &["restore", &id, "--target", &url, "--json"])
        .await
        .expect_code(2);
    assert!(r.stderr.contains("--dry-run"), "{}", r.stderr);
}

/// The plan's sessions (`Target::read_only`) refuse every write, and keep the options the
/// conninfo already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plans_sessions_cannot_write() {
    let c = cluster();
    let db = c.create_db("dry_read_only").await;
    let url = format!("{}?options=-c%20lock_timeout%3D7s", c.url(&db));
    let client = pgkeep::pg::Target::resolve(&url, None)
        .unwrap()
        .read_only()
        .connect()
        .await
        .unwrap();
    let err = client
        .batch_execute("CREATE TABLE written (x int)")
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION),
        "{err}"
    );
    let row = client
        .query_one("SELECT current_setting('lock_timeout')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "7s");
    assert_eq!(tables_of(c, &db).await, Vec::<String>::new());
}
