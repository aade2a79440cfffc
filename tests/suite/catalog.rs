//! The catalog on a real server: its migrations, recording a real backup, rebuilding from the
//! manifests, the operator queries' indexes (EXPLAIN), and the constraints.

use chrono::{TimeZone, Utc};
use pgkeep::catalog::{self, CATALOG_MIGRATIONS_TABLE, FAILURES_BETWEEN_SQL, LATEST_COMMITTED_SQL};
use pgkeep::repository::Repository;
use pgkeep::store::LocalStore;

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

/// A new database with the catalog schema applied.
async fn catalog_db(prefix: &str) -> (String, tokio_postgres::Client) {
    let c = cluster();
    let db = c.create_db(prefix).await;
    let mut client = c.connect(&db).await;
    assert_eq!(catalog::prepare(&mut client).await.unwrap(), Some(5));
    (db, client)
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Every "Index Name" in an EXPLAIN (FORMAT JSON) plan.
fn indexes_in(plan: &serde_json::Value, out: &mut Vec<String>) {
    match plan {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "Index Name" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                }
                indexes_in(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| indexes_in(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_migrations_apply_once_through_the_cli() {
    let c = cluster();
    let db = c.create_db("catalog_cli_migrate").await;
    let p = Pgkeep::with_config("");
    let run = p
        .run(&["migrate", "--database", &c.url(&db)])
        .await
        .expect_code(0);
    assert!(
        run.stdout.contains("applied 0001_catalog.sql")
            && run.stdout.contains("applied 0002_history_indexes.sql"),
        "{}",
        run.stdout
    );
    let run = p
        .run(&["migrate", "--database", &c.url(&db)])
        .await
        .expect_code(0);
    assert!(run.stdout.contains("nothing to apply"), "{}", run.stdout);

    let mut client = c.connect(&db).await;
    assert_eq!(
        pgkeep::migrate::current_version(&client, CATALOG_MIGRATIONS_TABLE)
            .await
            .unwrap(),
        Some(5)
    );
    for t in [
        "pgkeep.backup_run",
        "pgkeep.backup_object",
        "pgkeep.restore_run",
        "pgkeep.verification",
        "pgkeep.latest_backup",
    ] {
        let found: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t])
            .await
            .unwrap()
            .get(0);
        assert!(found, "{t}");
    }
    // The library's prepare agrees with the CLI's run.
    assert_eq!(catalog::prepare(&mut client).await.unwrap(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_backup_is_recorded_and_sync_rebuilds_it_from_the_manifests() {
    let c = cluster();
    let src = c.create_db("catalog_src").await;
    c.psql_sql(
        &src,
        "CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL);\n\
         INSERT INTO items (id, label) SELECT g, 'item ' || g FROM generate_series(1, 200) g;",
    )
    .await;
    let p = Pgkeep::local_dump(&c.url(&src));
    let id = p.backup_ok().await;
    let catalog_name = c.create_db("catalog_sync").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!(
        "{config}\n[catalog]\ndatabase = \"{}\"\n",
        c.url(&catalog_name)
    ));

    let run = p.run(&["catalog", "sync"]).await.expect_code(0);
    assert!(
        run.stdout
            .contains("1 committed backups (1 new), 0 marked pruned"),
        "{}",
        run.stdout
    );

    let store = Repository::new(std::sync::Arc::new(LocalStore::new(
        p.store_dir().to_str().unwrap(),
    )));
    let manifest = store.list(None).await.unwrap().backups.remove(0);
    let mut client = c.connect(&catalog_name).await;
    let row = client
        .query_one(
            "SELECT run_id, job, kind, backup_id, status, stored_bytes, started_at, \
             manifest->>'id' FROM pgkeep.backup_run",
            &[],
        )
        .await
        .unwrap();
    let run_id: i64 = row.get(0);
    assert_eq!(row.get::<_, String>(1), "main");
    assert_eq!(row.get::<_, String>(2), "dump");
    assert_eq!(row.get::<_, String>(3), id);
    assert_eq!(row.get::<_, String>(4), "committed");
    assert_eq!(row.get::<_, i64>(5) as u64, manifest.stored_bytes());
    // timestamptz keeps microseconds.
    assert_eq!(
        row.get::<_, chrono::DateTime<Utc>>(6).timestamp_micros(),
        manifest.started_at.timestamp_micros()
    );
    assert_eq!(row.get::<_, String>(7), id);
    let objects = client
        .query(
            "SELECT key, role, sha256, stored_bytes FROM pgkeep.backup_object \
             WHERE run_id = $1 ORDER BY key",
            &[&run_id],
        )
        .await
        .unwrap();
    let mut expected: Vec<(String, String, String, i64)> = manifest
        .objects
        .iter()
        .map(|o| {
            (
                o.key.clone(),
                o.role.to_string(),
                o.sha256.clone(),
                o.stored_bytes as i64,
            )
        })
        .collect();
    expected.sort();
    let got: Vec<(String, String, String, i64)> = objects
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(got, expected);

    // Recording the same backup again through the library changes nothing.
    assert_eq!(
        catalog::record_backup(&mut client, &manifest)
            .await
            .unwrap(),
        run_id
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM pgkeep.backup_run").await,
        1
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM pgkeep.backup_object").await,
        manifest.objects.len() as i64
    );

    // The manifests are the truth: an emptied catalog is rebuilt from them.
    client
        .batch_execute("TRUNCATE pgkeep.backup_run, pgkeep.backup_object CASCADE")
        .await
        .unwrap();
    let report = catalog::sync(&mut client, &store).await.unwrap();
    assert_eq!((report.manifests, report.added, report.pruned), (1, 1, 0));
    let latest = catalog::latest_committed(&client).await.unwrap();
    assert_eq!(latest.len(), 1);
    assert_eq!(
        (latest[0].job.as_str(), latest[0].backup_id.as_str()),
        ("main", id.as_str())
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM pgkeep.backup_object").await,
        manifest.objects.len() as i64
    );

    // A backup whose manifest is gone is marked pruned, not forgotten.
    std::fs::remove_dir_all(p.store_dir().join("main").join(&id)).unwrap();
    let report = catalog::sync(&mut client, &store).await.unwrap();
    assert_eq!((report.manifests, report.pruned), (0, 1));
    assert!(catalog::latest_committed(&client).await.unwrap().is_empty());
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM pgkeep.backup_run WHERE status = 'pruned'"
        )
        .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_queries_use_their_indexes() {
    let (_db, client) = catalog_db("catalog_explain").await;
    client
        .batch_execute(
            "INSERT INTO pgkeep.backup_run \
               (job, kind, backup_id, status, started_at, finished_at, stored_bytes, manifest) \
             SELECT 'job' || (g % 5), 'dump', 'b' || g, 'committed', t, t + interval '1 minute', \
                    g * 1000, jsonb_build_object('id', 'b' || g) \
               FROM generate_series(1, 3000) g, \
                    LATERAL (SELECT timestamptz '2026-01-01 00:00Z' + g * interval '1 hour' AS t) x;\n\
             INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at, error) \
             SELECT 'job' || (g % 5), 'export', 'failed', t, t + interval '1 minute', 'boom ' || g \
               FROM generate_series(1, 300) g, \
                    LATERAL (SELECT timestamptz '2026-01-01 00:30Z' + g * interval '10 hours' AS t) x;\n\
             ANALYZE pgkeep.backup_run;\n\
             SET enable_seqscan = off;",
        )
        .await
        .unwrap();

    let plan: serde_json::Value = client
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) {LATEST_COMMITTED_SQL}"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let mut used = Vec::new();
    indexes_in(&plan, &mut used);
    assert!(
        used.iter().any(|i| i == "backup_run_committed_idx"),
        "latest committed per job: {used:?}\n{plan:#}"
    );

    let from = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2026, 1, 20, 0, 0, 0).unwrap();
    let plan: serde_json::Value = client
        .query_one(
            &format!("EXPLAIN (FORMAT JSON) {FAILURES_BETWEEN_SQL}"),
            &[&from, &to],
        )
        .await
        .unwrap()
        .get(0);
    let mut used = Vec::new();
    indexes_in(&plan, &mut used);
    assert!(
        used.iter().any(|i| i == "backup_run_failed_idx"),
        "failures in a time range: {used:?}\n{plan:#}"
    );

    // And they answer correctly.
    let latest = catalog::latest_committed(&client).await.unwrap();
    let jobs: Vec<(&str, &str)> = latest
        .iter()
        .map(|r| (r.job.as_str(), r.backup_id.as_str()))
        .collect();
    assert_eq!(
        jobs,
        vec![
            ("job0", "b3000"),
            ("job1", "b2996"),
            ("job2", "b2997"),
            ("job3", "b2998"),
            ("job4", "b2999"),
        ]
    );
    let failures = catalog::failures_between(&client, from, to).await.unwrap();
    // Failures start at 00:30 + 10h * g: g = 22..=45 fall in [Jan 10, Jan 20).
    assert_eq!(failures.len(), 24, "{failures:?}");
    assert!(
        failures
            .windows(2)
            .all(|w| w[0].started_at < w[1].started_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn constraints_reject_impossible_rows() {
    let (_db, client) = catalog_db("catalog_constraints").await;
    let t0 = Utc.with_ymd_and_hms(2026, 3, 1, 3, 0, 0).unwrap();
    let t1 = t0 + chrono::Duration::minutes(5);

    let failed = catalog::record_failure(&client, "nightly", "dump", t0, t1, "pg_dump exited 1")
        .await
        .unwrap();
    assert!(failed > 0);
    let found = catalog::failures_between(&client, t0, t1).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].error, "pg_dump exited 1");
    let e = catalog::record_failure(&client, "nightly", "dump", t1, t0, "x")
        .await
        .unwrap_err();
    assert!(
        pgkeep::error::report(&e).contains("backup_run_finished_after_started"),
        "{e}"
    );

    let committed = "INSERT INTO pgkeep.backup_run \
         (job, kind, backup_id, status, started_at, finished_at, stored_bytes, manifest) \
         VALUES ('nightly', 'dump', 'b1', 'committed', now() - interval '1 hour', now(), 10, '{}')";
    client.batch_execute(committed).await.unwrap();

    let cases: &[(&str, &str)] = &[
        (
            "a status outside the list",
            "INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at, error) \
             VALUES ('nightly', 'dump', 'exploded', now(), now(), 'x')",
        ),
        (
            "a negative size",
            "INSERT INTO pgkeep.backup_run \
             (job, kind, backup_id, status, started_at, finished_at, stored_bytes, manifest) \
             VALUES ('nightly', 'dump', 'b2', 'committed', now(), now(), -1, '{}')",
        ),
        (
            "finished before started",
            "INSERT INTO pgkeep.backup_run \
             (job, kind, backup_id, status, started_at, finished_at, manifest) \
             VALUES ('nightly', 'dump', 'b3', 'committed', now(), now() - interval '1 second', '{}')",
        ),
        (
            "a committed run without its manifest",
            "INSERT INTO pgkeep.backup_run (job, kind, backup_id, status, started_at, finished_at) \
             VALUES ('nightly', 'dump', 'b4', 'committed', now(), now())",
        ),
        (
            "a failed run without an error",
            "INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at) \
             VALUES ('nightly', 'dump', 'failed', now(), now())",
        ),
        (
            "an unknown kind",
            "INSERT INTO pgkeep.backup_run (job, kind, status, started_at) \
             VALUES ('nightly', 'basebackup', 'running', now())",
        ),
        (
            "an object with a malformed sha256",
            "INSERT INTO pgkeep.backup_object \
             (run_id, key, role, compression, raw_bytes, stored_bytes, sha256) \
             SELECT run_id, 'dump.pgdump.gz', 'dump', 'gzip', 1, 1, 'not-a-sum' \
             FROM pgkeep.backup_run WHERE backup_id = 'b1'",
        ),
        (
            "a damaged verification without damaged objects",
            "INSERT INTO pgkeep.verification (run_id, status, started_at, finished_at) \
             SELECT run_id, 'damaged', now(), now() FROM pgkeep.backup_run WHERE backup_id = 'b1'",
        ),
        (
            "a restore target with a password",
            "INSERT INTO pgkeep.restore_run (run_id, target, status, started_at, finished_at) \
             SELECT run_id, 'postgres://app:s3cret@db:5432/app', 'succeeded', now(), now() \
             FROM pgkeep.backup_run WHERE backup_id = 'b1'",
        ),
        (
            "an unknown restore kind",
            "INSERT INTO pgkeep.restore_run (run_id, kind, target, status, started_at, finished_at) \
             SELECT run_id, 'rehearsal', 'app@db:5432/app', 'succeeded', now(), now() \
             FROM pgkeep.backup_run WHERE backup_id = 'b1'",
        ),
    ];
    for (what, sql) in cases {
        let e = client.batch_execute(sql).await.expect_err(what);
        let code = e.code().map(|c| c.code().to_string());
        assert_eq!(code.as_deref(), Some("23514"), "{what}: {e:?}");
    }
    let e = client
        .batch_execute(committed)
        .await
        .expect_err("duplicate");
    assert_eq!(
        e.code().map(tokio_postgres::error::SqlState::code),
        Some("23505"),
        "{e:?}"
    );

    // The well-formed versions are accepted.
    client
        .batch_execute(
            "INSERT INTO pgkeep.verification \
               (run_id, status, started_at, finished_at, damaged_objects) \
             SELECT run_id, 'damaged', now(), now(), ARRAY['main/b1/dump.pgdump.gz'] \
               FROM pgkeep.backup_run WHERE backup_id = 'b1';\n\
             INSERT INTO pgkeep.restore_run (run_id, target, status, started_at, finished_at) \
             SELECT run_id, 'app@db:5432/app', 'succeeded', now(), now() \
               FROM pgkeep.backup_run WHERE backup_id = 'b1';\n\
             INSERT INTO pgkeep.restore_run (run_id, kind, target, status, started_at, finished_at) \
             SELECT run_id, 'roles', 'app@db:5432/postgres', 'succeeded', now(), now() \
               FROM pgkeep.backup_run WHERE backup_id = 'b1';",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_sync_without_a_catalog_is_a_usage_error() {
    let c = cluster();
    let p = Pgkeep::local_dump(&c.url("postgres"));
    let run = p.run(&["catalog", "sync"]).await.expect_code(2);
    assert!(
        run.error_line().contains("no catalog is configured")
            && run.error_line().contains("[catalog]"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_record_their_runs_and_a_down_catalog_catches_up() {
    let c = cluster();
    let db = c.pagila_db("catalog_runs_src").await;
    let catalog_name = c.unique_name("catalog_runs");
    let p = Pgkeep::local_dump(&c.url(&db));
    let base = std::fs::read_to_string(p.config_path()).unwrap();

    // The catalog database does not exist yet: the backup still succeeds.
    let with_catalog = format!(
        "{base}\n[catalog]\ndatabase = \"{}\"\n",
        c.url(&catalog_name)
    );
    p.write_config(&with_catalog.replace("[jobs.main]", "[jobs.main]\n"));
    let first = p.backup_ok().await;

    // Now it exists: the next run records itself and catches up on the first.
    c.psql_sql("postgres", &format!("CREATE DATABASE {catalog_name}"))
        .await;
    let second = p.backup_ok().await;
    // A failing run is recorded as failed.
    let broken = with_catalog.replace(&c.url(&db), &c.url("no_such_db_for_catalog"));
    p.write_config(&broken);
    p.run(&["backup"]).await.expect_code(1);

    let client = c.connect(&catalog_name).await;
    let ids: Vec<String> = client
        .query(
            "SELECT backup_id FROM pgkeep.backup_run WHERE status = 'committed' ORDER BY backup_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![first, second]);
    let failed: i64 = count(
        &client,
        "SELECT count(*) FROM pgkeep.backup_run WHERE status = 'failed' AND error LIKE '%no_such_db_for_catalog%'",
    )
    .await;
    assert_eq!(failed, 1);
}
