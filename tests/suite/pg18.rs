//! The round trips on PostgreSQL 18 (the second shared cluster, [`pg18::cluster`]): a dump and
//! an export backed up and restored with the content unchanged, pgkeep choosing PostgreSQL
//! 18's programs by itself (on `PATH`: this machine's Debian layout holds only 15); and the
//! refusals when only older programs are there.

use std::io::Read as _;
use std::path::Path;

use crate::common::cli::{Pgkeep, Run};
use crate::common::config::Toml;
use crate::common::pg::{Cluster, assert_same, pg18};

/// PostgreSQL 15's programs, the only ones in this machine's Debian layout.
const PG15_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The PostgreSQL 18 cluster and bin directory, or `None` to skip.
fn pg18() -> Option<(&'static Cluster, std::path::PathBuf)> {
    let c = pg18::cluster()?;
    Some((c, pg18::bin_dir()?))
}

fn manifest(p: &Pgkeep, id: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p.store_dir().join(format!("main/{id}/manifest.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The first bytes of a stored gzip archive, decompressed: its pg_dump header.
fn archive_start(p: &Pgkeep, id: &str, name: &str) -> Vec<u8> {
    let file = std::fs::File::open(p.store_dir().join(format!("main/{id}/{name}"))).unwrap();
    let mut start = vec![0u8; 8];
    flate2::read::GzDecoder::new(file)
        .read_exact(&mut start)
        .unwrap();
    start
}

/// The versions a backup records, checked to be PostgreSQL 18's on both sides.
fn assert_made_by_18(m: &serde_json::Value) {
    let server = m["server_version"].as_str().unwrap();
    let pg_dump = m["pg_dump_version"].as_str().unwrap();
    assert!(server.starts_with("18."), "server_version {server}");
    assert!(pg_dump.starts_with("18."), "pg_dump_version {pg_dump}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagila_dump_round_trip_on_postgresql_18() {
    let Some((c, bin)) = pg18() else { return };
    let db = c.pagila_db("pg18_dump").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::local_dump(&c.url(&db)).env("PATH", &pg18::path_with(&bin));
    let id = p.backup_ok().await;

    let m = manifest(&p, &id);
    assert_made_by_18(&m);
    assert_eq!(m["objects"][0]["role"], "dump");
    // pg_dump 18's custom format: PGDMP, then format 1.16.0.
    assert_eq!(
        archive_start(&p, &id, "dump.pgdump.gz")[..8],
        *b"PGDMP\x01\x10\x00"
    );

    let restored = c.unique_name("pg18_dump_restored");
    let run = p
        .run(&["restore", &id, "--target", &c.url(&restored), "--create"])
        .await
        .expect_code(0);
    assert!(
        run.stdout.contains(&format!("restored backup {id}")),
        "{}",
        run.stdout
    );
    assert_same(&before, &c.snapshot(&restored).await);

    // verify lists the archive with the pg_restore its header asks for.
    let verify = p.run(&["verify", &id]).await.expect_code(0);
    let dump_line = verify
        .stdout
        .lines()
        .find(|l| l.contains("dump.pgdump.gz"))
        .unwrap_or_else(|| panic!("{}", verify.stdout));
    assert!(dump_line.contains("pg_restore 18."), "{dump_line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagila_export_round_trip_on_postgresql_18() {
    let Some((c, bin)) = pg18() else { return };
    let db = c.pagila_db("pg18_export").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "export", &c.url(&db))
            .set("parallel", 2)
    })
    .env("PATH", &pg18::path_with(&bin));
    let id = p.backup_ok().await;

    let m = manifest(&p, &id);
    assert_made_by_18(&m);
    assert_eq!(m["kind"], "export");
    let tables = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["role"] == "table")
        .count();
    assert!(tables >= 15, "{tables} table objects: {m}");
    assert_eq!(
        archive_start(&p, &id, "schema.pgdump.gz")[..8],
        *b"PGDMP\x01\x10\x00"
    );

    let restored = c.unique_name("pg18_export_restored");
    p.run(&[
        "restore",
        &id,
        "--target",
        &c.url(&restored),
        "--create",
        "--jobs",
        "2",
    ])
    .await
    .expect_code(0);
    assert_same(&before, &c.snapshot(&restored).await);
}

/// The one error line of a failed run, checked to be the only one.
fn only_error_line(run: &Run) -> String {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{}", run.stderr);
    errors[0].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_client_programs_are_refused_before_anything_is_stored() {
    let Some((c, bin)) = pg18() else { return };
    let db = c.create_db("pg18_old_tools").await;
    c.psql_sql(&db, "CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
        .await;

    // PostgreSQL 15's pg_dump, configured: refused, though 18's is on PATH.
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "dump", &c.url(&db))
            .set("pg_bin_dir", PG15_BIN)
    })
    .env("PATH", &pg18::path_with(&bin));
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = only_error_line(&run);
    assert!(
        line.contains(&format!("{PG15_BIN}/pg_dump is version 15."))
            && line.contains("older than the server (PostgreSQL 18.")
            && line.contains("install the PostgreSQL 18 client programs")
            && line.contains("pg_bin_dir"),
        "{line}"
    );
    assert_eq!(p.stored_files(), Vec::<String>::new());

    // 18's pg_dump beside 15's pg_dumpall: the globals' tool is refused before the dump runs.
    let mixed = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(bin.join("pg_dump"), mixed.path().join("pg_dump")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(PG15_BIN).join("pg_dumpall"),
        mixed.path().join("pg_dumpall"),
    )
    .unwrap();
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "dump", &c.url(&db))
            .set("pg_bin_dir", mixed.path().display().to_string().as_str())
    });
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = only_error_line(&run);
    assert!(
        line.contains("pg_dumpall is version 15.") && line.contains("PostgreSQL 18."),
        "{line}"
    );
    assert!(
        !run.stderr.contains("reading the database"),
        "pg_dump started: {}",
        run.stderr
    );
    assert_eq!(p.stored_files(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_of_pg_dump_18_is_not_given_to_an_older_pg_restore() {
    let Some((c, bin)) = pg18() else { return };
    let db = c.create_db("pg18_old_restore").await;
    c.psql_sql(&db, "CREATE TABLE t AS SELECT generate_series(1, 10) AS n")
        .await;
    let p = Pgkeep::local_dump(&c.url(&db)).env("PATH", &pg18::path_with(&bin));
    let id = p.backup_ok().await;

    // Without 18's programs on PATH, only 15's pg_restore is found: refused in the plan,
    // naming what the archive's own header says, and the target is never created.
    let mut p = p;
    p.env.clear();
    let target = c.unique_name("pg18_never_created");
    let run = p
        .run(&["restore", &id, "--target", &c.url(&target), "--create"])
        .await
        .expect_code(1);
    let line = only_error_line(&run);
    assert!(
        line.contains(&format!("{PG15_BIN}/pg_restore is version 15."))
            && line.contains("older than the archive (format 1.16.0, written by pg_dump 18.")
            && line.contains("install the PostgreSQL 18 client programs")
            && line.contains("PATH"),
        "{line}"
    );
    assert!(!c.database_exists(&target).await);

    // verify cannot check the archive either: not called damage, and exit 1.
    let run = p.run(&["verify", &id]).await.expect_code(1);
    let key = format!("main/{id}/dump.pgdump.gz");
    assert!(
        run.stdout.contains(&format!("NOTOOL   {key} (dump): ")) && !run.stdout.contains("DAMAGED"),
        "{}",
        run.stdout
    );
    let line = only_error_line(&run);
    assert!(
        line.contains("could not check 1 of 2 objects") && line.ends_with(&key),
        "{line}"
    );

    // The job's pg_bin_dir names 18's programs: the restore takes its pg_restore from there.
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&config.replace(
        "[jobs.main]\n",
        &format!("[jobs.main]\npg_bin_dir = \"{}\"\n", bin.display()),
    ));
    assert!(
        std::fs::read_to_string(p.config_path())
            .unwrap()
            .contains("pg_bin_dir"),
        "the config names the directory"
    );
    let restored = c.unique_name("pg18_restored_with_bin_dir");
    p.run(&["restore", &id, "--target", &c.url(&restored), "--create"])
        .await
        .expect_code(0);
    assert!(c.database_exists(&restored).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_15_database_keeps_its_own_programs_with_18_on_path() {
    // pg_restore 17 and later open every restore with `SET transaction_timeout`, which a
    // PostgreSQL 15 server rejects: a 15 backup must be taken and restored with 15's programs
    // even when newer ones come first on PATH.
    let Some(bin) = pg18::bin_dir() else { return };
    let c = crate::common::pg::cluster();
    let db = c.pagila_db("pg15_with_18_on_path").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::local_dump(&c.url(&db)).env("PATH", &pg18::path_with(&bin));
    let id = p.backup_ok().await;
    let m = manifest(&p, &id);
    let pg_dump = m["pg_dump_version"].as_str().unwrap();
    assert!(pg_dump.starts_with("15."), "pg_dump_version {pg_dump}");
    assert_eq!(
        archive_start(&p, &id, "dump.pgdump.gz")[..8],
        *b"PGDMP\x01\x0e\x00"
    );
    let restored = c.unique_name("pg15_with_18_restored");
    p.run(&["restore", &id, "--target", &c.url(&restored), "--create"])
        .await
        .expect_code(0);
    assert_same(&before, &c.snapshot(&restored).await);
}
