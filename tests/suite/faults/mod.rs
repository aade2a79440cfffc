//! Faults injected into real runs — the database's backends terminated or its server stopped
//! mid-COPY — each asserting that nothing partial is committed, the exit code is 1 with a
//! message naming the stage, and the next run succeeds.

mod disk;
mod kills;
mod pg;
mod s3;

use std::time::Duration;

use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::Cluster;

/// A database with one table big enough that COPY of it takes a while, and a few small ones.
pub async fn big_db(c: &Cluster, prefix: &str) -> String {
    let db = c.create_db(prefix).await;
    c.psql_sql(
        &db,
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text); \
         INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g; \
         CREATE TABLE small (id serial PRIMARY KEY, v text); \
         INSERT INTO small (v) SELECT 'v' || g FROM generate_series(1, 100) g; \
         CREATE TABLE other (k text PRIMARY KEY); INSERT INTO other VALUES ('a'), ('b');",
    )
    .await;
    db
}

/// A job of `kind` backing up `database` into the scratch directory's store.
pub fn local_job(kind: &str, database: &str) -> Pgkeep {
    Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", kind, database)
            .set("globals", false)
    })
}

/// Waits until a backend of `db` runs a statement starting with `query_prefix` and returns its
/// pid.
pub async fn backend_running(c: &Cluster, db: &str, query_prefix: &str) -> i32 {
    let client = c.connect("postgres").await;
    for _ in 0..1500 {
        let row = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND state = 'active' \
                 AND query ILIKE $2 || '%' AND pid <> pg_backend_pid() LIMIT 1",
                &[&db, &query_prefix],
            )
            .await
            .unwrap();
        if let Some(row) = row {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("no backend of {db} ran {query_prefix}...");
}

/// The committed backups `list --json` shows.
pub async fn listed(p: &Pgkeep) -> Vec<serde_json::Value> {
    let run = p.run(&["list", "--json"]).await.expect_code(0);
    serde_json::from_str(&run.stdout).unwrap()
}
