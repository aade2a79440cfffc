//! The catalog's query plans across its migrations: on a catalog of realistic size, migration
//! 0002's indexes leave the plans of pgkeep's own queries (`LATEST_COMMITTED_SQL`,
//! `FAILURES_BETWEEN_SQL`) as they were, and give one job's history and the newest
//! verification and restore an index that returns them in order (no sort, no full read).

use chrono::{TimeZone, Utc};
use pgkeep::catalog::{self, CATALOG_MIGRATIONS_TABLE, FAILURES_BETWEEN_SQL, LATEST_COMMITTED_SQL};
use pgkeep::migrate::{self, MigrateOptions};
use tokio_postgres::types::ToSql;

use crate::common::pg::cluster;

/// The shape of an EXPLAIN (FORMAT JSON) plan: each node's type, relation and index, depth
/// first, without costs or estimates.
fn shape(plan: &serde_json::Value) -> Vec<String> {
    fn walk(node: &serde_json::Value, depth: usize, out: &mut Vec<String>) {
        let field = |k: &str| node[k].as_str().unwrap_or("-").to_string();
        out.push(format!(
            "{}{} on {} using {}",
            "  ".repeat(depth),
            field("Node Type"),
            field("Relation Name"),
            field("Index Name")
        ));
        if let Some(children) = node["Plans"].as_array() {
            for child in children {
                walk(child, depth + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], 0, &mut out);
    out
}

async fn plan(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Vec<String> {
    let plan: serde_json::Value = client
        .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), params)
        .await
        .unwrap_or_else(|e| panic!("EXPLAIN {sql}: {e}"))
        .get(0);
    shape(&plan)
}

/// 20 jobs with 1,000 committed runs each, 500 failures, 2,000 verifications and 500
/// restores: the size docs/DATABASE.md's plans were taken at.
const POPULATE: &str = "
INSERT INTO pgkeep.backup_run
       (job, kind, backup_id, status, started_at, finished_at, stored_bytes, manifest)
SELECT 'job' || (g % 20), 'dump', 'b' || g, 'committed', t, t + interval '1 minute', g,
       jsonb_build_object('id', 'b' || g)
  FROM generate_series(1, 20000) g,
       LATERAL (SELECT timestamptz '2024-01-01 00:00Z' + g * interval '1 hour' AS t) x;
INSERT INTO pgkeep.backup_run (job, kind, status, started_at, finished_at, error)
SELECT 'job' || (g % 20), 'dump', 'failed', t, t + interval '1 minute', 'boom ' || g
  FROM generate_series(1, 500) g,
       LATERAL (SELECT timestamptz '2024-01-01 00:30Z' + g * interval '10 hours' AS t) x;
INSERT INTO pgkeep.verification (run_id, status, started_at, finished_at)
SELECT run_id, 'ok', finished_at, finished_at + interval '5 minutes'
  FROM pgkeep.backup_run WHERE status = 'committed' AND run_id % 10 = 0;
INSERT INTO pgkeep.restore_run (run_id, target, status, started_at, finished_at)
SELECT run_id, 'postgres@scratch:5432/drill', 'succeeded', finished_at, finished_at + interval '9 minutes'
  FROM pgkeep.backup_run WHERE status = 'committed' AND run_id % 40 = 0;
ANALYZE pgkeep.backup_run; ANALYZE pgkeep.verification; ANALYZE pgkeep.restore_run;
";

/// The client's history and drill queries (clients/python/pgkeep_catalog/queries.py), with
/// psycopg2's parameters written in, as it sends them.
const HISTORY: &str = "SELECT r.run_id, r.job, r.backup_id, r.kind, r.status, r.started_at, \
     r.finished_at, r.stored_bytes, r.server_version, r.error, \
     (SELECT count(*) FROM pgkeep.backup_object o WHERE o.run_id = r.run_id) AS objects, \
     CASE WHEN false THEN r.manifest END AS manifest \
     FROM pgkeep.backup_run r WHERE r.job = 'job7' \
     ORDER BY r.started_at DESC, r.run_id DESC LIMIT 20";
const LAST_VERIFICATION: &str = "SELECT r.job, r.backup_id, v.status, v.started_at \
     FROM pgkeep.verification v JOIN pgkeep.backup_run r ON r.run_id = v.run_id \
     WHERE NULL::text IS NULL OR r.job = NULL \
     ORDER BY v.started_at DESC, v.verification_id DESC LIMIT 1";
const LAST_RESTORE: &str = "SELECT r.job, r.backup_id, x.target, x.status, x.started_at \
     FROM pgkeep.restore_run x JOIN pgkeep.backup_run r ON r.run_id = x.run_id \
     WHERE NULL::text IS NULL OR r.job = NULL \
     ORDER BY x.started_at DESC, x.restore_id DESC LIMIT 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0002_indexes_history_and_drills_and_keeps_the_status_plans() {
    let c = cluster();
    let db = c.create_db("catalog_plans").await;
    let mut client = c.connect(&db).await;
    let opts = |target_version| MigrateOptions {
        table: CATALOG_MIGRATIONS_TABLE.to_string(),
        target_version,
    };
    let at_1 = migrate::apply(&mut client, &catalog::migrations(), &opts(Some(1)))
        .await
        .expect("the catalog at version 1");
    assert_eq!(at_1.version, Some(1));
    client.batch_execute(POPULATE).await.expect("populating");

    let from = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    let to = Utc.with_ymd_and_hms(2024, 3, 8, 0, 0, 0).unwrap();
    let before = (
        plan(&client, LATEST_COMMITTED_SQL, &[]).await,
        plan(&client, FAILURES_BETWEEN_SQL, &[&from, &to]).await,
    );
    let history_before = plan(&client, HISTORY, &[]).await;
    assert!(
        history_before.iter().any(|n| n.trim().starts_with("Sort ")),
        "at version 1 the history sorts: {history_before:#?}"
    );

    let at_2 = migrate::apply(&mut client, &catalog::migrations(), &opts(Some(2)))
        .await
        .expect("migration 0002");
    assert_eq!(at_2.version, Some(2));
    client
        .batch_execute(
            "ANALYZE pgkeep.backup_run; ANALYZE pgkeep.verification; ANALYZE pgkeep.restore_run;",
        )
        .await
        .unwrap();
    let after = (
        plan(&client, LATEST_COMMITTED_SQL, &[]).await,
        plan(&client, FAILURES_BETWEEN_SQL, &[&from, &to]).await,
    );
    assert_eq!(before, after, "pgkeep's own plans changed with 0002");
    assert!(
        after.1.iter().any(|n| n.contains("backup_run_failed_idx")),
        "{after:#?}"
    );

    // The planner's own choice (no enable_* settings): each reads its new index in order.
    let history = plan(&client, HISTORY, &[]).await;
    assert_eq!(
        history[..2],
        [
            "Limit on - using -",
            "  Index Scan on backup_run using backup_run_job_started_idx"
        ],
        "{history:#?}"
    );
    assert!(!history.iter().any(|n| n.contains("Sort")), "{history:#?}");
    for (sql, index) in [
        (LAST_VERIFICATION, "verification_started_idx"),
        (LAST_RESTORE, "restore_run_started_idx"),
    ] {
        let shape = plan(&client, sql, &[]).await;
        assert_eq!(shape[0], "Limit on - using -", "{shape:#?}");
        assert!(
            shape.iter().any(|n| n.contains(index)) && !shape.iter().any(|n| n.contains("Sort")),
            "{sql}: {shape:#?}"
        );
    }

    // And the answers are the newest rows.
    let newest: (i64, String) = {
        let row = client
            .query_one(
                &LAST_VERIFICATION.replace(
                    "r.job, r.backup_id, v.status, v.started_at",
                    "v.run_id, r.backup_id",
                ),
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let expected: (i64, String) = {
        let row = client
            .query_one(
                "SELECT run_id, backup_id FROM pgkeep.backup_run \
                 WHERE status = 'committed' AND run_id % 10 = 0 ORDER BY started_at DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(newest, expected);
    c.drop_db(&db).await;
}
