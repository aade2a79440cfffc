//! The migration runner on a real server: order, idempotence, checksums, gaps, naming styles,
//! rollback of a failing file with its line:column, target versions, the advisory lock, the
//! no-transaction marker, and the CLI's exit codes.

use std::path::Path;

use pgkeep::migrate::{self, MigrateError, MigrateOptions, Migration};
use sha2::Digest as _;

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

/// A temporary migrations directory holding `files` (name, content).
fn migrations_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, sql) in files {
        std::fs::write(dir.path().join(name), sql).expect("writing a migration");
    }
    dir
}

const PEOPLE: &str = "CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);\n";
const SEED: &str = "INSERT INTO people (id, name) VALUES (1, 'ada'), (2, 'grace');\n";
const EMAIL: &str = "ALTER TABLE people ADD COLUMN email text;\n";

fn three() -> tempfile::TempDir {
    migrations_dir(&[
        ("0001_people.sql", PEOPLE),
        ("0002_seed.sql", SEED),
        ("0003_email.sql", EMAIL),
    ])
}

async fn apply_dir(
    client: &mut tokio_postgres::Client,
    dir: &Path,
    opts: &MigrateOptions,
) -> Result<migrate::MigrateReport, MigrateError> {
    let set = migrate::discover(dir)?;
    migrate::apply(client, &set, opts).await
}

async fn scalar_i64(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

async fn exists(client: &tokio_postgres::Client, relation: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&relation])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_in_order_then_finds_nothing_to_do() {
    let c = cluster();
    let db = c.create_db("migrate_order").await;
    let mut client = c.connect(&db).await;
    let table = pgkeep::config::default_migrations_table();
    assert_eq!(
        migrate::current_version(&client, &table).await.unwrap(),
        None
    );

    let dir = three();
    let opts = MigrateOptions::default();
    let report = apply_dir(&mut client, dir.path(), &opts).await.unwrap();
    assert_eq!(
        report.applied,
        vec![
            (1, "0001_people.sql".to_string()),
            (2, "0002_seed.sql".to_string()),
            (3, "0003_email.sql".to_string()),
        ]
    );
    assert_eq!(report.version, Some(3));
    assert_eq!(
        migrate::current_version(&client, &table).await.unwrap(),
        Some(3)
    );

    let rows = client
        .query(
            "SELECT version, name, checksum, applied_at IS NOT NULL \
             FROM pgkeep_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let recorded: Vec<(i64, String, String, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let sum = |s: &str| hex::encode(sha2::Sha256::digest(s.as_bytes()));
    assert_eq!(
        recorded,
        vec![
            (1, "people".to_string(), sum(PEOPLE), true),
            (2, "seed".to_string(), sum(SEED), true),
            (3, "email".to_string(), sum(EMAIL), true),
        ]
    );

    let again = apply_dir(&mut client, dir.path(), &opts).await.unwrap();
    assert!(again.applied.is_empty(), "{again:?}");
    assert_eq!(again.version, Some(3));
    assert_eq!(scalar_i64(&client, "SELECT count(*) FROM people").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_or_deleted_applied_file_is_an_error() {
    let c = cluster();
    let db = c.create_db("migrate_edited").await;
    let mut client = c.connect(&db).await;
    let dir = three();
    let opts = MigrateOptions::default();
    apply_dir(&mut client, dir.path(), &opts).await.unwrap();

    std::fs::write(
        dir.path().join("0002_seed.sql"),
        "INSERT INTO people (id, name) VALUES (3, 'edsger');\n",
    )
    .unwrap();
    let e = apply_dir(&mut client, dir.path(), &opts).await.unwrap_err();
    assert!(matches!(e, MigrateError::Edited { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("0002_seed.sql") && msg.contains("was edited after it was applied"),
        "{msg}"
    );

    std::fs::write(dir.path().join("0002_seed.sql"), SEED).unwrap();
    std::fs::remove_file(dir.path().join("0003_email.sql")).unwrap();
    let e = apply_dir(&mut client, dir.path(), &opts).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(e, MigrateError::Missing { version: 3, .. }) && msg.contains("email"),
        "{msg}"
    );
    assert_eq!(scalar_i64(&client, "SELECT count(*) FROM people").await, 2);
}

#[test]
fn gaps_duplicates_and_misnamed_files_are_errors_naming_the_files() {
    let gap = migrations_dir(&[
        ("0001_a.sql", "SELECT 1;"),
        ("0002_b.sql", "SELECT 2;"),
        ("0004_d.sql", "SELECT 4;"),
    ]);
    let e = migrate::discover(gap.path()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, MigrateError::Gap { .. }), "{msg}");
    assert!(
        msg.contains("0002_b.sql") && msg.contains("0004_d.sql"),
        "{msg}"
    );

    let dup = migrations_dir(&[
        ("0001_a.sql", "SELECT 1;"),
        ("0002_b.sql", "SELECT 2;"),
        ("V2__other.sql", "SELECT 2;"),
    ]);
    let msg = migrate::discover(dup.path()).unwrap_err().to_string();
    assert!(
        msg.contains("0002_b.sql") && msg.contains("V2__other.sql") && msg.contains("version 2"),
        "{msg}"
    );

    let misnamed = migrations_dir(&[("0001_a.sql", "SELECT 1;"), ("0002-b.sql", "SELECT 2;")]);
    let msg = migrate::discover(misnamed.path()).unwrap_err().to_string();
    assert!(msg.contains("0002-b.sql"), "{msg}");

    let missing = migrate::discover(&gap.path().join("nope")).unwrap_err();
    assert!(missing.is_usage(), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_naming_styles_are_accepted_and_down_files_ignored() {
    let c = cluster();
    let dir = migrations_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);"),
        ("V2__b.sql", "CREATE TABLE b (x int);"),
        ("3_c.up.sql", "CREATE TABLE c (x int);"),
        ("3_c.down.sql", "DROP TABLE c;"),
        ("README.md", "# migrations"),
        ("notes.txt", "not sql"),
        (".0004_hidden.sql", "DROP TABLE a;"),
    ]);
    std::fs::create_dir(dir.path().join("archive")).unwrap();
    std::fs::write(dir.path().join("archive/0004_old.sql"), "DROP TABLE a;").unwrap();

    let set = migrate::discover(dir.path()).unwrap();
    let seen: Vec<(i64, &str, &str)> = set
        .iter()
        .map(|m| (m.version, m.name.as_str(), m.file.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, "a", "0001_a.sql"),
            (2, "b", "V2__b.sql"),
            (3, "c", "3_c.up.sql"),
        ]
    );

    let db = c.create_db("migrate_styles").await;
    let mut client = c.connect(&db).await;
    let report = migrate::apply(&mut client, &set, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.version, Some(3));
    for t in ["a", "b", "c"] {
        assert!(exists(&client, t).await, "table {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_file_rolls_back_only_itself_and_names_line_and_column() {
    let c = cluster();
    let db = c.create_db("migrate_fail").await;
    let mut client = c.connect(&db).await;
    let dir = migrations_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);\n"),
        (
            "0002_bad.sql",
            "CREATE TABLE b (x int);\nINSERT INTO a (x) VALUES (1);\n  INSERT INTO nope (x) VALUES (1);\n",
        ),
        ("0003_c.sql", "CREATE TABLE c (x int);\n"),
    ]);
    let e = apply_dir(&mut client, dir.path(), &MigrateOptions::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("migration 0002_bad.sql:3:15 failed: relation \"nope\" does not exist"),
        "{msg}"
    );
    assert!(exists(&client, "a").await);
    assert!(
        !exists(&client, "b").await,
        "0002 must leave nothing behind"
    );
    assert!(
        !exists(&client, "c").await,
        "0003 must not run after a failure"
    );
    assert_eq!(scalar_i64(&client, "SELECT count(*) FROM a").await, 0);
    assert_eq!(
        migrate::current_version(&client, "pgkeep_schema_migrations")
            .await
            .unwrap(),
        Some(1)
    );

    // An error the server gives no position for: the failing statement is still located.
    let dir = migrations_dir(&[
        ("0001_a.sql", "CREATE TABLE a (x int);\n"),
        (
            "0002_dup.sql",
            "CREATE UNIQUE INDEX a_x ON a (x);\nINSERT INTO a (x) VALUES (1);\n\n\
             -- the same value again\nINSERT INTO a (x) VALUES (1);\n",
        ),
    ]);
    let e = apply_dir(&mut client, dir.path(), &MigrateOptions::default())
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("migration 0002_dup.sql:5:1 failed: duplicate key value"),
        "{msg}"
    );
    assert!(msg.contains("23505"), "{msg}");
    assert!(!exists(&client, "a_x").await);
    assert_eq!(scalar_i64(&client, "SELECT count(*) FROM a").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_version_stops_there() {
    let c = cluster();
    let db = c.create_db("migrate_target").await;
    let mut client = c.connect(&db).await;
    let dir = three();
    let to_two = MigrateOptions {
        target_version: Some(2),
        ..MigrateOptions::default()
    };
    let report = apply_dir(&mut client, dir.path(), &to_two).await.unwrap();
    assert_eq!(report.applied.len(), 2);
    assert_eq!(report.version, Some(2));
    assert_eq!(
        scalar_i64(
            &client,
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'people' \
             AND column_name = 'email'"
        )
        .await,
        0
    );
    let rest = apply_dir(&mut client, dir.path(), &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(rest.applied, vec![(3, "0003_email.sql".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runners_take_turns() {
    let c = cluster();
    let db = c.create_db("migrate_concurrent").await;
    let set = vec![
        Migration::new(
            "0001_hits.sql",
            "CREATE TABLE hits (n int PRIMARY KEY);\nSELECT pg_sleep(0.5);\n",
        )
        .unwrap(),
        Migration::new("0002_hit.sql", "INSERT INTO hits (n) VALUES (2);\n").unwrap(),
    ];
    let opts = MigrateOptions::default();
    let mut one = c.connect(&db).await;
    let mut two = c.connect(&db).await;
    let (a, b) = tokio::join!(
        migrate::apply(&mut one, &set, &opts),
        migrate::apply(&mut two, &set, &opts)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut all: Vec<i64> = a
        .applied
        .iter()
        .chain(&b.applied)
        .map(|(v, _)| *v)
        .collect();
    all.sort_unstable();
    assert_eq!(all, vec![1, 2], "{a:?} {b:?}");
    assert!(a.applied.is_empty() || b.applied.is_empty(), "{a:?} {b:?}");
    assert_eq!((a.version, b.version), (Some(2), Some(2)));
    assert_eq!(scalar_i64(&one, "SELECT count(*) FROM hits").await, 1);
    // The lock was released: a third run gets it at once.
    let third = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        migrate::apply(&mut one, &set, &opts),
    )
    .await
    .expect("the lock is free")
    .unwrap();
    assert!(third.applied.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_no_transaction_marker_allows_create_index_concurrently() {
    let c = cluster();
    let table = "CREATE TABLE t (x int);\nINSERT INTO t (x) SELECT generate_series(1, 100);\n";
    let index = "CREATE INDEX CONCURRENTLY t_x_idx ON t (x);\n";

    let db = c.create_db("migrate_concurrently").await;
    let mut client = c.connect(&db).await;
    let marked = format!("{}\n{index}", migrate::NO_TRANSACTION_MARKER);
    let set = vec![
        Migration::new("0001_t.sql", table).unwrap(),
        Migration::new("0002_index.sql", &marked).unwrap(),
    ];
    assert!(!set[1].transactional);
    let report = migrate::apply(&mut client, &set, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.version, Some(2));
    assert!(exists(&client, "t_x_idx").await);

    // A failing statement of a no-transaction file: located in the file, earlier ones stay.
    let mut more = set.clone();
    more.push(
        Migration::new(
            "0003_more.sql",
            &format!(
                "{}
CREATE INDEX CONCURRENTLY t_y_idx ON t (x);
  SELECT nope FROM t;
",
                migrate::NO_TRANSACTION_MARKER
            ),
        )
        .unwrap(),
    );
    let msg = migrate::apply(&mut client, &more, &MigrateOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("migration 0003_more.sql:3:10 failed: column \"nope\" does not exist")
            && msg.contains("earlier statements stay applied"),
        "{msg}"
    );
    assert!(exists(&client, "t_y_idx").await);
    assert_eq!(
        migrate::current_version(&client, "pgkeep_schema_migrations")
            .await
            .unwrap(),
        Some(2)
    );

    let db = c.create_db("migrate_concurrently_unmarked").await;
    let mut client = c.connect(&db).await;
    let set = vec![
        Migration::new("0001_t.sql", table).unwrap(),
        Migration::new("0002_index.sql", index).unwrap(),
    ];
    let msg = migrate::apply(&mut client, &set, &MigrateOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("0002_index.sql:1:1") && msg.contains("transaction block"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_qualified_tracking_table_is_created_with_its_schema() {
    let c = cluster();
    let db = c.create_db("migrate_schema_table").await;
    let mut client = c.connect(&db).await;
    let opts = MigrateOptions {
        table: "app_meta.Migrations".into(),
        target_version: None,
    };
    let report = apply_dir(&mut client, three().path(), &opts).await.unwrap();
    assert_eq!(report.version, Some(3));
    assert!(exists(&client, "app_meta.migrations").await);
    assert_eq!(
        migrate::current_version(&client, "app_meta.migrations")
            .await
            .unwrap(),
        Some(3)
    );
    assert_eq!(
        migrate::current_version(&client, "pgkeep_schema_migrations")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_do_not_leak_between_files() {
    let c = cluster();
    let db = c.create_db("migrate_search_path").await;
    let mut client = c.connect(&db).await;
    // pg_dump output empties the search_path for the session, as this file does.
    let set = vec![
        Migration::new(
            "0001_dumped.sql",
            "SELECT pg_catalog.set_config('search_path', '', false);\n\
             CREATE TABLE public.a (x int);\n",
        )
        .unwrap(),
        Migration::new("0002_plain.sql", "CREATE TABLE b (x int);\n").unwrap(),
    ];
    let report = migrate::apply(&mut client, &set, &MigrateOptions::default())
        .await
        .unwrap();
    assert_eq!(report.version, Some(2));
    assert!(exists(&client, "public.b").await);
}

mod cli;
