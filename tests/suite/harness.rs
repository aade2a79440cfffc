//! Proves the PostgreSQL test harness (tests/common/pg.rs) and its fixtures work.

use std::time::Instant;

use crate::common::pg::{self, DbSnapshot};

#[tokio::test]
async fn cluster_starts_and_answers() {
    let pg = pg::cluster();
    let client = pg.connect("postgres").await;
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('ssl')",
            &[],
        )
        .await
        .unwrap();
    let version: i32 = row.get(0);
    let ssl: String = row.get(1);
    assert!((150_000..160_000).contains(&version), "{version}");
    assert_eq!(ssl, "on");
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists()
    );
    assert!(pg.bin_dir().join("pg_dump").exists());
}

#[tokio::test]
async fn parallel_create_db_gives_distinct_databases() {
    let pg = pg::cluster();
    let (a, b) = tokio::join!(pg.create_db("par"), pg.create_db("par"));
    assert_ne!(a, b);
    for db in [&a, &b] {
        let client = pg.connect(db).await;
        let row = client
            .query_one("SELECT current_database()::text", &[])
            .await
            .unwrap();
        assert_eq!(row.get::<_, String>(0), *db);
    }
    pg.drop_db(&a).await;
    pg.drop_db(&b).await;
}

#[tokio::test]
async fn password_role_needs_its_password_over_tcp() {
    let pg = pg::cluster();
    let db = pg.create_db("pw").await;
    let role = pg.unique_name("pw_user");
    pg.create_role_with_password(&role, "s3cret 'pw'").await;

    let wrong =
        tokio_postgres::connect(&pg.url_as(&role, Some("nope"), &db), tokio_postgres::NoTls).await;
    let err = wrong.err().expect("a wrong password must be refused");
    let msg = err
        .as_db_error()
        .map_or_else(|| err.to_string(), |e| e.message().to_owned());
    assert!(msg.contains("password authentication failed"), "{msg}");
    let none = tokio_postgres::connect(&pg.url_as(&role, None, &db), tokio_postgres::NoTls).await;
    assert!(none.is_err(), "no password must be refused");
    let (client, conn) = tokio_postgres::connect(
        &pg.url_as(&role, Some("s3cret 'pw'"), &db),
        tokio_postgres::NoTls,
    )
    .await
    .expect("the right password is accepted");
    tokio::spawn(conn);
    let row = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role);
}

#[tokio::test]
async fn tls_verify_full_works_and_ssl_required_role_is_refused_without_it() {
    let pg = pg::cluster();
    let db = pg.create_db("tls").await;
    // psql (libpq) with verify-full against the harness certificate.
    let out = pg
        .command("psql")
        .args(["-X", "-At", "-d"])
        .arg(pg.url_verify_full(&db))
        .args([
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "t");

    let role = pg.unique_name("tls_user");
    pg.psql_sql("postgres", &format!("CREATE ROLE {role} LOGIN"))
        .await;
    pg.require_ssl(&role).await;
    let plain = pg
        .command("psql")
        .args(["-X", "-At", "-d"])
        .arg(format!("{}?sslmode=disable", pg.url_as(&role, None, &db)))
        .args(["-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert!(
        !plain.status.success(),
        "a non-TLS connection of an ssl-required role must be refused"
    );
    let tls = pg
        .command("psql")
        .args(["-X", "-At", "-d"])
        .arg(format!("{}?sslmode=require", pg.url_as(&role, None, &db)))
        .args(["-c", "SELECT 1"])
        .output()
        .await
        .unwrap();
    assert!(
        tls.status.success(),
        "{}",
        String::from_utf8_lossy(&tls.stderr)
    );
}

#[tokio::test]
async fn tokio_postgres_tls_verifies_the_harness_certificate() {
    let pg = pg::cluster();
    for host in ["127.0.0.1", "localhost"] {
        let url = format!(
            "postgres://postgres@{host}:{}/postgres?sslmode=require",
            pg.port()
        );
        let (client, conn) = tokio_postgres::connect(&url, pg.tls_connector())
            .await
            .unwrap_or_else(|e| panic!("TLS to {host}: {e:?}"));
        tokio::spawn(conn);
        let row = client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(0));
    }
    // A connector that does not trust the certificate is refused.
    let untrusting =
        postgres_native_tls::MakeTlsConnector::new(native_tls::TlsConnector::new().unwrap());
    let url = format!("{}?sslmode=require", pg.url("postgres"));
    assert!(tokio_postgres::connect(&url, untrusting).await.is_err());
}

fn assert_differs_only_in(a: &DbSnapshot, b: &DbSnapshot, needle: &str) {
    let diff = b.diff(a);
    assert!(!diff.is_empty(), "snapshots should differ ({needle})");
    assert_ne!(a, b);
    assert!(
        diff.iter().any(|l| l.contains(needle)),
        "diff should mention {needle}:\n{}",
        diff.join("\n")
    );
}

#[tokio::test]
async fn pagila_snapshot_has_every_table_and_detects_changes() {
    let pg = pg::cluster();
    let db = pg.create_db("pagila_load").await;
    let t = Instant::now();
    pg.load_pagila(&db).await;
    eprintln!("pagila load: {:?}", t.elapsed());
    let t = Instant::now();
    let snap = pg.snapshot(&db).await;
    eprintln!("pagila snapshot: {:?}", t.elapsed());

    for table in [
        "public.actor",
        "public.film",
        "public.customer",
        "public.rental",
        "public.payment_p2022_01",
        "public.payment_p2022_07",
    ] {
        let digest = snap
            .tables
            .get(table)
            .unwrap_or_else(|| panic!("{table} missing: {:?}", snap.tables.keys()));
        assert!(digest.rows > 0, "{table} is empty");
    }
    // pagila creates it WITH NO DATA.
    assert_eq!(
        snap.tables["public.rental_by_category"].sha256,
        pg::UNPOPULATED
    );
    assert!(
        !snap.tables.contains_key("public.payment"),
        "a partitioned parent holds no rows of its own"
    );
    assert!(
        !snap.tables.contains_key("public.actor_info"),
        "views hold no rows"
    );
    assert_eq!(snap.tables["public.actor"].rows, 200);
    assert!(snap.total_rows() > 45_000, "{}", snap.total_rows());
    assert!(snap.sequences["public.actor_actor_id_seq"].is_called);
    assert!(
        snap.schema
            .iter()
            .any(|l| l.starts_with("CREATE TABLE public.payment_p2022_01"))
    );
    assert!(
        !snap
            .schema
            .iter()
            .any(|l| l.starts_with("\\restrict") || l.starts_with("--"))
    );

    // A second snapshot of the same database is identical.
    pg::assert_same(&snap, &pg.snapshot(&db).await);

    // One row changed.
    pg.psql_sql(
        &db,
        "UPDATE public.actor SET first_name = 'PENELOPE ' WHERE actor_id = 1",
    )
    .await;
    let changed = pg.snapshot(&db).await;
    assert_differs_only_in(
        &snap,
        &changed,
        "table public.actor: 200 rows in both, content differs",
    );
    assert_eq!(changed.diff(&snap).len(), 1, "{:?}", changed.diff(&snap));

    // One row deleted in a partition (count changes).
    pg.psql_sql(&db, "DELETE FROM public.payment WHERE payment_id = (SELECT min(payment_id) FROM public.payment_p2022_03)")
        .await;
    let deleted = pg.snapshot(&db).await;
    assert_differs_only_in(&changed, &deleted, "table public.payment_p2022_03:");

    // A sequence advanced.
    pg.psql_sql(&db, "SELECT nextval('public.actor_actor_id_seq')")
        .await;
    let seq = pg.snapshot(&db).await;
    assert_differs_only_in(&deleted, &seq, "sequence public.actor_actor_id_seq");

    // A schema change.
    pg.psql_sql(
        &db,
        "CREATE INDEX actor_first_name_idx ON public.actor (first_name)",
    )
    .await;
    let schema = pg.snapshot(&db).await;
    assert_differs_only_in(
        &seq,
        &schema,
        "+ CREATE INDEX actor_first_name_idx ON public.actor USING btree (first_name);",
    );

    // Excluding a table hides its data and its schema; pagila's sequences are not OWNED BY their
    // tables, so the sequence is excluded by (bare) name.
    let without = pg
        .snapshot_excluding(&db, &["public.actor", "actor_actor_id_seq"])
        .await;
    assert!(!without.tables.contains_key("public.actor"));
    assert!(!without.sequences.contains_key("public.actor_actor_id_seq"));
    assert!(
        !without
            .schema
            .iter()
            .any(|l| l.contains("CREATE TABLE public.actor "))
    );
    assert!(without.tables.contains_key("public.film"));
    pg.drop_db(&db).await;
}

#[tokio::test]
async fn pagila_template_clones_are_identical() {
    let pg = pg::cluster();
    let (a, b) = tokio::join!(pg.pagila_db("clone_a"), pg.pagila_db("clone_b"));
    assert_ne!(a, b);
    pg::assert_same(&pg.snapshot(&a).await, &pg.snapshot(&b).await);
}

/// The torture fixture loads cleanly, and `pg_dump -Fc` + `pg_restore` into a fresh database
/// reproduces it exactly: proves the fixture is restorable and the comparison is sound.
#[tokio::test]
async fn torture_round_trips_through_pg_dump_and_pg_restore() {
    let pg = pg::cluster();
    let src = pg.create_db("torture_src").await;
    let t = Instant::now();
    pg.load_torture(&src).await;
    eprintln!("torture load: {:?}", t.elapsed());
    let before = pg.snapshot(&src).await;

    // The fixture really has its traps.
    for table in [
        "torture.all_types",
        "torture.\"Robert'); DROP TABLE students;--\"",
        "\"ünïcødé_схема_数据\".\"café ☕\"",
        "\"we;ird \"\"sch'ema $1 --\".\"ta\"\"ble; DROP SCHEMA public;\"",
        "\"ünïcødé_схема_数据\".events_2025",
        "torture.events_2024_other",
        "torture.vehicles",
        "torture.trucks",
        "torture.blobs",
        "torture.scratch",
    ] {
        let digest = before
            .tables
            .get(table)
            .unwrap_or_else(|| panic!("{table} missing: {:?}", before.tables.keys()));
        assert!(digest.rows > 0, "{table} is empty");
    }
    assert_eq!(before.tables["torture.empty"].rows, 0);
    assert_eq!(before.tables["torture.no_columns"].rows, 2);
    assert_eq!(
        before.tables["torture.vehicles"].rows, 2,
        "ONLY: the parent's own rows"
    );
    assert_eq!(before.tables["torture.people"].rows, 3);
    assert!(!before.sequences["torture.serials_big_seq"].is_called);
    assert_eq!(before.sequences["torture.serials_id_seq"].last_value, 500);

    let dir = tempfile::tempdir().unwrap();
    let dump = dir.path().join("torture.dump");
    let t = Instant::now();
    let out = pg
        .command("pg_dump")
        .args(["-Fc", "-f"])
        .arg(&dump)
        .arg("-d")
        .arg(pg.url(&src))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dst = pg.create_db("torture_dst").await;
    let out = pg
        .command("pg_restore")
        .args(["--exit-on-error", "-d"])
        .arg(pg.url(&dst))
        .arg(&dump)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "pg_restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("torture pg_dump + pg_restore: {:?}", t.elapsed());

    let after = pg.snapshot(&dst).await;
    pg::assert_same(&before, &after);

    // A restore that fires triggers would not be the same: prove the comparison would notice.
    pg.psql_sql(&dst, "INSERT INTO torture.people VALUES (4, 'dave', false)")
        .await;
    let fired = pg.snapshot(&dst).await;
    let diff = fired.diff(&before);
    assert!(
        diff.iter().any(|l| l.starts_with("table torture.people:")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|l| l.starts_with("table torture.audit_log:")),
        "{diff:?}"
    );
    assert!(
        diff.iter()
            .any(|l| l.starts_with("sequence torture.audit_log_id_seq:")),
        "{diff:?}"
    );
}

#[tokio::test]
async fn large_objects_are_part_of_the_snapshot() {
    let pg = pg::cluster();
    let db = pg.create_db("lo").await;
    pg.psql_file(&db, pg::fixtures_dir().join("large_objects.sql"))
        .await;
    let snap = pg.snapshot(&db).await;
    assert_eq!(snap.large_objects.len(), 2, "{:?}", snap.large_objects);
    pg.psql_sql(&db, "SELECT lo_put(424242, 0, '\\xff')").await;
    let changed = pg.snapshot(&db).await;
    assert_differs_only_in(&snap, &changed, "large object 424242");
}
