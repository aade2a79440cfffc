//! `pgkeep verify` through the real binary: intact backups pass; flipped bytes, truncation,
//! wrong row counts and unreadable archives fail with exit 1 naming every damaged object.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::common::cli::Pgkeep;
use crate::common::pg::cluster;

fn manifest_path(p: &Pgkeep, id: &str) -> std::path::PathBuf {
    p.store_dir().join("main").join(id).join("manifest.json")
}

fn read_manifest(p: &Pgkeep, id: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(manifest_path(p, id)).unwrap()).unwrap()
}

/// Writes `m` as pgkeep would, with its checksum recomputed: these tests are about what
/// verify finds in the objects, behind a manifest that is (re)sealed as its own.
fn write_manifest(p: &Pgkeep, id: &str, m: &serde_json::Value) {
    let mut m = m.clone();
    pgkeep::manifest::seal(&mut m);
    std::fs::write(manifest_path(p, id), serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Stores `data` gzip-compressed at `path`; returns the manifest entry fields.
fn store_gzip(path: &Path, data: &[u8]) -> (u64, u64, String) {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(data).unwrap();
    let stored = e.finish().unwrap();
    std::fs::write(path, &stored).unwrap();
    (
        data.len() as u64,
        stored.len() as u64,
        hex::encode(Sha256::digest(&stored)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_intact_backups_and_names_every_damaged_object() {
    let c = cluster();
    let db = c.pagila_db("verify_pagila").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let first = p.backup_ok().await;
    let second = p.backup_ok().await;

    // Intact: latest (the default), by id, and --all.
    for args in [
        vec!["verify"],
        vec!["verify", "latest"],
        vec!["verify", first.as_str()],
        vec!["verify", "--all", "--job", "main"],
    ] {
        let run = p.run(&args).await.expect_code(0);
        assert!(
            run.stdout.contains("ok       main/")
                && run.stdout.contains("dump.pgdump.gz (dump:")
                && run.stdout.contains("pg_restore")
                && run.stdout.contains("globals.sql.gz (globals:")
                && run.stdout.contains("all intact"),
            "{args:?}\n{}",
            run.stdout
        );
        assert!(!run.stdout.contains("DAMAGED"), "{}", run.stdout);
    }
    let all = p.run(&["verify", "--all"]).await.expect_code(0);
    assert!(
        all.stdout.contains("verified 4 objects of 2 backups"),
        "{}",
        all.stdout
    );

    // One flipped byte in the middle of the first backup's dump.
    let dump = p
        .store_dir()
        .join("main")
        .join(&first)
        .join("dump.pgdump.gz");
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&dump, &bytes).unwrap();
    let run = p.run(&["verify", &first]).await.expect_code(1);
    let dump_key = format!("main/{first}/dump.pgdump.gz");
    assert!(run.error_line().contains(&dump_key), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!("DAMAGED  {dump_key} (dump)"))
            && run.stdout.contains("sha256"),
        "{}",
        run.stdout
    );
    // The other object of the backup is still checked and reported.
    assert!(
        run.stdout
            .contains(&format!("ok       main/{first}/globals.sql.gz")),
        "{}",
        run.stdout
    );

    // Truncate the second backup's globals: --all reports both backups' damage in one run.
    let globals = p
        .store_dir()
        .join("main")
        .join(&second)
        .join("globals.sql.gz");
    let len = std::fs::metadata(&globals).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&globals)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let run = p.run(&["verify", "--all"]).await.expect_code(1);
    let globals_key = format!("main/{second}/globals.sql.gz");
    let line = run.error_line();
    assert!(
        line.contains(&dump_key) && line.contains(&globals_key) && line.contains("2 of 4"),
        "{line}"
    );
    assert!(
        run.stdout
            .contains(&format!("DAMAGED  {globals_key} (globals)"))
            && run.stdout.contains("bytes but its manifest records"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("ok       main/{second}/dump.pgdump.gz")),
        "{}",
        run.stdout
    );

    // An unknown backup is a usage error.
    p.run(&["verify", "20000101T000000.000Z"])
        .await
        .expect_code(2);
}

/// An export-like backup made by hand from a dump: the dump is its `schema` (both are pg_dump
/// custom archives) and two `table` objects hold COPY text data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_checks_row_counts_of_table_objects_and_that_archives_are_readable() {
    let c = cluster();
    let db = c.create_db("verify_export").await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (a int, b text); INSERT INTO t VALUES (1, 'x');",
    )
    .await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;
    let dir = p.store_dir().join("main").join(&id);

    let mut m = read_manifest(&p, &id);
    m["kind"] = "export".into();
    // Only a dump lists the tables it counted; an export's counts are its table objects.
    m["tables"] = serde_json::json!([]);
    let mut schema = m["objects"][0].clone();
    assert_eq!(schema["role"], "dump");
    schema["role"] = "schema".into();
    let mut objects = vec![schema];
    let mut copy = String::new();
    for i in 0..5000 {
        writeln!(copy, "{i}\tname\\t{i}\t\\N").unwrap();
    }
    for (name, data, rows) in [
        ("public.film.copy.gz", copy.as_bytes(), 5000u64),
        ("public.empty.copy.gz", &b""[..], 0),
    ] {
        let (raw, stored, sha) = store_gzip(&dir.join(name), data);
        objects.push(serde_json::json!({
            "key": name,
            "role": "table",
            "table": format!("\"public\".\"{}\"", name.split('.').nth(1).unwrap()),
            "rows": rows,
            "compression": "gzip",
            "raw_bytes": raw,
            "stored_bytes": stored,
            "sha256": sha,
        }));
    }
    m["objects"] = serde_json::Value::Array(objects);
    write_manifest(&p, &id, &m);
    std::fs::remove_file(dir.join("globals.sql.gz")).unwrap();

    let run = p.run(&["verify", &id]).await.expect_code(0);
    assert!(
        run.stdout.contains("dump.pgdump.gz (schema:")
            && run.stdout.contains("public.film.copy.gz (table:")
            && run.stdout.contains("5000 rows")
            && run.stdout.contains("public.empty.copy.gz (table:")
            && run.stdout.contains("0 rows"),
        "{}",
        run.stdout
    );

    // The recorded row count is edited: the data no longer matches its manifest.
    m["objects"][1]["rows"] = 5001.into();
    write_manifest(&p, &id, &m);
    let run = p.run(&["verify", &id]).await.expect_code(1);
    let key = format!("main/{id}/public.film.copy.gz");
    assert!(run.error_line().contains(&key), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("holds 5000 rows but the manifest records 5001"),
        "{}",
        run.stdout
    );
    m["objects"][1]["rows"] = 5000.into();

    // Intact bytes that are not a pg_dump archive: pg_restore --list must read it.
    let (raw, stored, sha) = store_gzip(&dir.join("dump.pgdump.gz"), copy.as_bytes());
    m["objects"][0]["raw_bytes"] = raw.into();
    m["objects"][0]["stored_bytes"] = stored.into();
    m["objects"][0]["sha256"] = sha.into();
    write_manifest(&p, &id, &m);
    let run = p.run(&["verify", &id]).await.expect_code(1);
    assert!(
        run.error_line()
            .contains(&format!("main/{id}/dump.pgdump.gz")),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout
            .contains("pg_restore --list cannot read the archive"),
        "{}",
        run.stdout
    );

    // A missing object is damage too.
    std::fs::remove_file(dir.join("public.empty.copy.gz")).unwrap();
    let run = p.run(&["verify", &id]).await.expect_code(1);
    assert!(
        run.stdout.contains("missing from the store"),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_all_reports_an_unreadable_manifest_and_goes_on() {
    let c = cluster();
    let db = c.create_db("verify_badmanifest").await;
    c.psql_sql(&db, "CREATE TABLE t (a int); INSERT INTO t VALUES (1);")
        .await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let first = p.backup_ok().await;
    let second = p.backup_ok().await;
    std::fs::write(manifest_path(&p, &first), b"{ not json").unwrap();

    let run = p.run(&["verify", "--all"]).await.expect_code(1);
    assert!(
        run.stdout
            .contains(&format!("DAMAGED  main/{first}/manifest.json (manifest)")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("ok       main/{second}/dump.pgdump.gz")),
        "{}",
        run.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_real_export_and_catches_an_edited_row_count() {
    let c = cluster();
    let db = c.torture_db("verify_torture_export").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "[storage]\nurl = \"file://{}\"\n\n[jobs.main]\nkind = \"export\"\ndatabase = \"{}\"\ncompression = \"gzip:1\"\nparallel = 2\n",
        p.store_dir().display(),
        c.url(&db)
    ));
    let id = p.backup_ok().await;
    let run = p.run(&["verify"]).await.expect_code(0);
    assert!(
        run.stdout.contains("(schema:")
            && run.stdout.contains("reads the archive")
            && run.stdout.contains("(table:")
            && run.stdout.contains("all intact"),
        "{}",
        run.stdout
    );

    let mut m = read_manifest(&p, &id);
    let objects = m["objects"].as_array_mut().unwrap();
    let table = objects
        .iter_mut()
        .find(|o| o["role"] == "table" && o["rows"].as_u64().unwrap() > 0)
        .expect("a table object with rows");
    let rows = table["rows"].as_u64().unwrap();
    table["rows"] = (rows - 1).into();
    let key = format!("main/{id}/{}", table["key"].as_str().unwrap());
    write_manifest(&p, &id, &m);
    let run = p.run(&["verify", "latest"]).await.expect_code(1);
    assert!(run.error_line().contains(&key), "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "holds {rows} rows but the manifest records {}",
            rows - 1
        )),
        "{}",
        run.stdout
    );
}
