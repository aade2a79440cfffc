//! Dump jobs end to end through the real binary: backup, list, show, restore, on real servers.

use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{assert_same, cluster};
use crate::common::s3::{self, S3Target};

fn s3_config(database: &str, extra_job_keys: &str) -> String {
    Toml::storage("s3://placeholder")
        .table("jobs.main")
        .set("kind", "dump")
        .set("database", database)
        .raw(extra_job_keys)
        .render()
}

/// Backs up `db` to `target`, restores it into a new database with `restore_args`, and
/// checks every table, sequence and the schema.
async fn roundtrip_on_s3(target: &S3Target, db: &str, restore_args: &[&str]) {
    let c = cluster();
    let before = c.snapshot(db).await;
    let p = Pgkeep::with_config(&s3_config(&c.url(db), "")).envs(&target.pgkeep_env());
    let id = p.backup_ok().await;

    let listed = p
        .run(&["list", "--job", "main", "--json"])
        .await
        .expect_code(0);
    let items: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1, "{}", listed.stdout);
    assert_eq!(items[0]["id"], id.as_str());
    assert_eq!(items[0]["job"], "main");
    assert_eq!(items[0]["kind"], "dump");
    assert!(items[0]["bytes"].as_u64().unwrap() > 1000);
    assert!(items[0]["started_at"].is_string() && items[0]["finished_at"].is_string());

    let restored = c.unique_name("restored");
    let target_url = c.url(&restored);
    let mut args = vec![
        "restore",
        id.as_str(),
        "--target",
        target_url.as_str(),
        "--create",
    ];
    args.extend_from_slice(restore_args);
    let run = p.run(&args).await.expect_code(0);
    assert!(
        run.stdout.contains(&format!("restored backup {id}")),
        "{}",
        run.stdout
    );
    assert_same(&before, &c.snapshot(&restored).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagila_roundtrip_through_a_local_directory() {
    let c = cluster();
    let db = c.pagila_db("pagila_local").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;

    let files = p.stored_files();
    assert_eq!(
        files,
        vec![
            format!("main/{id}/dump.pgdump.gz"),
            format!("main/{id}/globals.sql.gz"),
            format!("main/{id}/manifest.json"),
        ]
    );
    let show = p.run(&["show", "latest", "--json"]).await.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["format_version"], 1);
    assert_eq!(m["globals"]["included"], true);
    assert_eq!(m["objects"][0]["role"], "dump");
    assert!(m["server_version"].as_str().unwrap().starts_with("15."));
    assert!(m["wal_lsn"].as_str().unwrap().contains('/'));
    let human = p.run(&["show", &id]).await.expect_code(0);
    assert!(human.stdout.contains("dump.pgdump.gz"), "{}", human.stdout);
    let list = p.run(&["list"]).await.expect_code(0);
    assert!(list.stdout.contains(&id), "{}", list.stdout);

    let restored = c.unique_name("pagila_restored");
    p.run(&[
        "restore",
        "latest",
        "--target",
        &c.url(&restored),
        "--create",
    ])
    .await
    .expect_code(0);
    assert_same(&before, &c.snapshot(&restored).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagila_roundtrip_through_s3s_fs_with_parallel_restore() {
    let db = cluster().pagila_db("pagila_s3s").await;
    roundtrip_on_s3(&s3::s3s_fs("pagila"), &db, &["--jobs", "2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_roundtrip_through_garage() {
    let Some(target) = s3::garage("torture") else {
        return;
    };
    let db = cluster().torture_db("torture_garage").await;
    roundtrip_on_s3(&target, &db, &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_roundtrip_through_garage_with_parallel_restore() {
    let Some(target) = s3::garage("torture_j2") else {
        return;
    };
    let db = cluster().torture_db("torture_garage_j2").await;
    roundtrip_on_s3(&target, &db, &["--jobs", "2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_into_a_non_empty_database_is_refused_and_changes_nothing() {
    let c = cluster();
    let db = c.torture_db("nonempty_src").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;

    let victim = c.pagila_db("nonempty_victim").await;
    let before = c.snapshot(&victim).await;
    let run = p
        .run(&["restore", &id, "--target", &c.url(&victim)])
        .await
        .expect_code(1);
    let line = run.error_line();
    assert!(
        line.contains("not empty") && line.contains("--clean"),
        "{line}"
    );
    assert_same(&before, &c.snapshot(&victim).await);

    // --clean replaces the database: objects created after the backup do not survive.
    let source_before = c.snapshot(&db).await;
    c.psql_sql(&db, "CREATE TABLE added_after_backup (x int)")
        .await;
    p.run(&["restore", &id, "--target", &c.url(&db), "--clean"])
        .await
        .expect_code(0);
    assert_same(&source_before, &c.snapshot(&db).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_without_create_of_a_missing_database_is_an_error() {
    let c = cluster();
    let db = c.pagila_db("missing_target_src").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;
    let missing = c.unique_name("never_created");
    let run = p
        .run(&["restore", &id, "--target", &c.url(&missing)])
        .await
        .expect_code(1);
    assert!(run.error_line().contains("--create"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_fails_the_restore_and_leaves_the_target_empty() {
    let c = cluster();
    let db = c.pagila_db("damaged_src").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;
    let dump = p.store_dir().join(format!("main/{id}/dump.pgdump.gz"));
    let mut bytes = std::fs::read(&dump).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&dump, bytes).unwrap();

    for jobs in ["1", "2"] {
        let target = c.create_db("damaged_target").await;
        let run = p
            .run(&["restore", &id, "--target", &c.url(&target), "--jobs", jobs])
            .await
            .expect_code(1);
        assert!(
            run.error_line().contains("dump.pgdump.gz"),
            "{}",
            run.stderr
        );
        let client = c.connect(&target).await;
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname NOT IN ('pg_catalog','information_schema','pg_toast')",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 0, "--jobs {jobs}: the target must be left untouched");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_over_verified_tls() {
    let c = cluster();
    let db = c.pagila_db("tls_src").await;
    let p = Pgkeep::local_dump(&c.url_verify_full(&db));
    p.backup_ok().await;

    // The same server, but a CA that did not sign its certificate: refused.
    let other_ca = p.dir.path().join("other-ca.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(p.dir.path().join("other.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(status.status.success());
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        c.url(&db),
        other_ca.display()
    );
    let bad = Pgkeep::local_dump(&url);
    let run = bad.run(&["backup"]).await.expect_code(1);
    assert!(run.error_line().contains("connecting"), "{}", run.stderr);
    assert!(bad.stored_files().is_empty());
}
