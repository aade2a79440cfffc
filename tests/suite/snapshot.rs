//! The single-snapshot guarantee: writes during an export never tear a cross-table invariant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use pgkeep::store::{ByteReader, LocalStore, ObjectMeta, ObjectStore, StoreError};

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

/// A local store whose uploads finish slowly, so an export spans many concurrent commits.
#[derive(Debug)]
struct SlowStore(LocalStore);

#[async_trait]
impl ObjectStore for SlowStore {
    async fn put(&self, key: &str, body: ByteReader) -> Result<u64, StoreError> {
        let n = self.0.put(key, body).await?;
        tokio::time::sleep(Duration::from_millis(250)).await;
        Ok(n)
    }
    async fn get(&self, key: &str) -> Result<ByteReader, StoreError> {
        self.0.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.0.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.0.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.0.delete(key).await
    }
    fn describe(&self) -> String {
        self.0.describe()
    }
}

const ACCOUNTS: i64 = 50;
const OPENING: i64 = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_during_an_export_never_tear_the_ledger() {
    let c = cluster();
    let db = c.create_db("snapshot_bank").await;
    // Several tables so the export takes many slow uploads; ledger and balances in separate ones.
    c.psql_sql(
        &db,
        &format!(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, src int NOT NULL, dst int NOT NULL, amount bigint NOT NULL);
             CREATE TABLE audit (id bigserial PRIMARY KEY, note text);
             CREATE TABLE filler_a AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
             CREATE TABLE filler_b AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;
             INSERT INTO accounts SELECT g, {OPENING} FROM generate_series(1, {ACCOUNTS}) g;"
        ),
    )
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let transfers = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, transfers, url) = (Arc::clone(&stop), Arc::clone(&transfers), c.url(&db));
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let mut i: i64 = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (src, dst) = (i % ACCOUNTS + 1, (i * 7 + 3) % ACCOUNTS + 1);
                if src == dst {
                    continue;
                }
                let amount = i % 13 + 1;
                client
                    .batch_execute(&format!(
                        "BEGIN;
                         INSERT INTO ledger (src, dst, amount) VALUES ({src}, {dst}, {amount});
                         UPDATE accounts SET balance = balance - {amount} WHERE id = {src};
                         UPDATE accounts SET balance = balance + {amount} WHERE id = {dst};
                         INSERT INTO audit (note) VALUES ('t{i}');
                         COMMIT;"
                    ))
                    .await
                    .unwrap();
                transfers.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let p = Pgkeep::with_config(&format!(
        "[jobs.bank]\nkind = \"export\"\ndatabase = \"{}\"\nparallel = 1\nglobals = false\n",
        c.url(&db)
    ));
    let config = pgkeep::config::load_from(
        Some(&p.config_path()),
        &std::collections::HashMap::default(),
    )
    .unwrap();
    let store = pgkeep::repository::Repository::new(std::sync::Arc::new(SlowStore(
        LocalStore::new(&p.store_dir().display().to_string()),
    )));
    let during = transfers.load(Ordering::Relaxed);
    let manifest = pgkeep::backup::run(&config.jobs["bank"], &store)
        .await
        .unwrap();
    let after = transfers.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert!(
        after - during > 20,
        "the writer must commit during the export ({during} -> {after})"
    );

    let restored = c.create_db("snapshot_bank_restored").await;
    let store_url = format!("file://{}", p.store_dir().display());
    let p = p.env("PGKEEP_STORAGE__URL", &store_url);
    p.run(&[
        "restore",
        &manifest.id,
        "--target",
        &c.url(&restored),
        "--clean",
    ])
    .await
    .expect_code(0);
    let client = c.connect(&restored).await;
    let (total, ledger, audit): (i64, i64, i64) = {
        let r = client
            .query_one(
                "SELECT (SELECT sum(balance)::bigint FROM accounts), (SELECT count(*) FROM ledger), (SELECT count(*) FROM audit)",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(total, ACCOUNTS * OPENING, "money appeared or vanished");
    assert_eq!(
        ledger, audit,
        "ledger and audit were read at different moments"
    );
    assert!(ledger > 0);
    // Every balance is its opening plus what the restored ledger says moved.
    let torn: i64 = client
        .query_one(
            &format!(
                "SELECT count(*) FROM accounts a WHERE a.balance <> {OPENING} \
                 + COALESCE((SELECT sum(amount) FROM ledger WHERE dst = a.id), 0) \
                 - COALESCE((SELECT sum(amount) FROM ledger WHERE src = a.id), 0)"
            ),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(torn, 0, "balances disagree with the ledger");
}
