//! `pgkeep drill`: a backup restored into a scratch database, checked against what the backup
//! recorded, and dropped. A good backup passes and leaves nothing but its drill record;
//! content a resealed manifest hides (so `verify` passes) fails the drill naming the table or
//! sequence and the difference; a killed drill's database is dropped by the next drill; and
//! retention keeps the newest drilled backup.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::damage::{copy_dir, run};
use crate::common::cli::{Pgkeep, Run};
use crate::common::config::Toml;
use crate::common::pg::{Cluster, cluster};

/// A job named `job` (unique per test: scratch databases carry the job's name) of `kind`, of
/// a fresh pagila database.
async fn job(c: &Cluster, job: &str, kind: &str) -> (Pgkeep, String) {
    let db = c.pagila_db(job).await;
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job(job, kind, &c.url(&db))
            .set("globals", false)
    });
    (p, db)
}

async fn drill(c: &Cluster, p: &Pgkeep, args: &[&str]) -> Run {
    let target = c.url("postgres");
    let mut all = vec!["drill"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--target", &target]);
    run(p, &all).await
}

/// The scratch databases of `job`'s drills on the cluster.
async fn scratch_databases(c: &Cluster, job: &str) -> Vec<String> {
    let client = c.connect("postgres").await;
    client
        .query(
            "SELECT datname::text FROM pg_database WHERE starts_with(datname, $1) ORDER BY 1",
            &[&format!("pgkeep_drill_{job}_")],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn backup_dir(p: &Pgkeep, job: &str, id: &str) -> PathBuf {
    p.store_dir().join(job).join(id)
}

fn read_manifest(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
}

fn write_sealed(dir: &Path, mut m: serde_json::Value) {
    pgkeep::manifest::seal(&mut m);
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn good_dump_and_export_backups_pass_and_leave_only_their_drill_record() {
    let c = cluster();
    for kind in ["dump", "export"] {
        let name = format!("drill_good_{kind}");
        let (p, _db) = job(c, &name, kind).await;
        let id = p.backup_ok().await;
        let dir = backup_dir(&p, &name, &id);
        let m = read_manifest(&dir);
        let r = drill(c, &p, &[]).await.expect_code(0);
        let summary = r.last_line();
        assert!(
            summary.starts_with(&format!("drill of backup {id} of job '{name}' passed on ")),
            "{kind}: {}",
            r.stdout
        );
        // Every table and sequence the backup recorded was checked.
        let tables = if kind == "dump" {
            m["tables"].as_array().unwrap().len()
        } else {
            m["objects"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|o| o["role"] == "table")
                .count()
        };
        assert!(tables >= 15, "{kind}: pagila has its tables: {tables}");
        let sequences = m["sequences"].as_array().unwrap().len();
        assert!(sequences >= 10, "{kind}: {sequences}");
        assert!(
            summary.contains(&format!(": {tables} tables, ")),
            "{kind}: {summary}"
        );
        assert!(
            summary.contains(&format!(", {sequences} sequences checked")),
            "{kind}: {summary}"
        );
        assert_eq!(
            summary.contains(&format!("{tables} content digests")),
            kind == "export",
            "{kind}: {summary}"
        );
        assert_eq!(scratch_databases(c, &name).await, Vec::<String>::new());
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("drill.json")).unwrap()).unwrap();
        assert_eq!(record["backup"], id.as_str());
        assert_eq!(record["tables"], tables);
        assert!(record["rows"].as_u64().unwrap() > 1000, "{record}");
        // The record is not part of the backup: it still verifies, and lists as drilled.
        run(&p, &["verify", &id]).await.expect_code(0);
        let list = run(&p, &["list"]).await.expect_code(0);
        let row = list.stdout.lines().find(|l| l.starts_with(&id)).unwrap();
        assert!(row.ends_with("  drilled"), "{}", list.stdout);
        let listed: serde_json::Value =
            serde_json::from_str(&run(&p, &["list", "--json"]).await.expect_code(0).stdout)
                .unwrap();
        assert_eq!(listed[0]["drilled"], true, "{listed}");
        let show = run(&p, &["show", &id]).await.expect_code(0);
        assert!(
            show.stdout.contains(&format!(
                "last drill:      passed {}",
                record["drilled_at"].as_str().unwrap().get(..16).unwrap()
            )),
            "{}",
            show.stdout
        );
    }
}

/// Rewrites the gzip table object of `table` in an export backup with `edit` applied to its
/// COPY text, and reseals the manifest to match: only the restored content can tell.
fn edit_table_object(dir: &Path, table: &str, edit: impl Fn(&str) -> String) {
    let mut m = read_manifest(dir);
    let object = m["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["table"] == table)
        .unwrap_or_else(|| panic!("no object of {table}"));
    let path = dir.join(object["key"].as_str().unwrap());
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_string(&mut text)
        .unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changes the data");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(edited.as_bytes()).unwrap();
    let stored = e.finish().unwrap();
    std::fs::write(&path, &stored).unwrap();
    object["raw_bytes"] = edited.len().into();
    object["stored_bytes"] = stored.len().into();
    object["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)).into();
    write_sealed(dir, m);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_a_resealed_manifest_hides_fails_the_drill_naming_the_table() {
    let c = cluster();
    let name = "drill_hidden";
    let (p, _db) = job(c, name, "export").await;
    let id = p.backup_ok().await;
    let dir = backup_dir(&p, name, &id);
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(&dir, pristine.path());
    let put_back = || copy_dir(pristine.path(), &dir);

    // One value of one row changed, the row count the same: the backup verifies and restores.
    edit_table_object(&dir, "\"public\".\"language\"", |t| {
        t.replacen("English", "Engl1sh", 1)
    });
    run(&p, &["verify", &id]).await.expect_code(0);
    let r = drill(c, &p, &[]).await.expect_code(1);
    let e = r.error_line();
    assert!(
        e.contains(
            "\"public\".\"language\": its 6 rows differ from the backup's: digest xxh3-128-sum:"
        ),
        "{}",
        r.stderr
    );
    assert!(e.contains("1 difference"), "{e}");
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
    assert!(
        !dir.join("drill.json").exists(),
        "a failed drill is not recorded"
    );
    put_back();

    // A row taken out of a table's object (and the manifest resealed to match the bytes).
    edit_table_object(&dir, "\"public\".\"category\"", |t| {
        let mut lines: Vec<&str> = t.lines().collect();
        lines.pop();
        lines.join("\n") + "\n"
    });
    let r = drill(c, &p, &[]).await;
    // The restore itself may find the missing row (it counts what it loads) or the drill's
    // count does: either way the run fails naming the table, and nothing is left.
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.error_line().contains("\"public\".\"category\""),
        "{}",
        r.stderr
    );
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
    put_back();

    run(&p, &["verify", &id]).await.expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::many_single_char_names)]
async fn dump_row_counts_edited_in_the_manifest_fail_the_drill() {
    let c = cluster();
    let name = "drill_counts";
    let (p, _db) = job(c, name, "dump").await;
    let id = p.backup_ok().await;
    let dir = backup_dir(&p, name, &id);
    let mut m = read_manifest(&dir);
    let film = m["tables"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["name"] == "\"public\".\"film\"")
        .unwrap();
    assert_eq!(film["rows"], 1000, "the dump counted film in its snapshot");
    film["rows"] = 1001.into();
    // And a table the restore will not have.
    m["tables"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "\"public\".\"ghost\"", "rows": 3}));
    let seq = m["sequences"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["name"] == "\"public\".\"film_film_id_seq\"")
        .unwrap();
    seq["last_value"] = (seq["last_value"].as_i64().unwrap() + 5).into();
    write_sealed(&dir, m);
    run(&p, &["verify", &id]).await.expect_code(0);

    let r = drill(c, &p, &[]).await.expect_code(1);
    let e = r.error_line();
    assert!(e.contains("3 differences"), "{e}");
    assert!(
        e.contains("\"public\".\"film\": 1000 rows restored, the backup recorded 1001"),
        "{e}"
    );
    assert!(
        e.contains("\"public\".\"ghost\": missing from the restored database"),
        "{e}"
    );
    assert!(
        e.contains("\"public\".\"film_film_id_seq\": last_value 1000"),
        "{e}"
    );
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
    assert!(!dir.join("drill.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_drill_drops_its_database_and_a_killed_ones_is_dropped_next_time() {
    let c = cluster();
    let name = "drill_killed";
    let (p, _db) = job(c, name, "dump").await;
    p.backup_ok().await;
    let target = c.url("postgres");
    let args = ["drill", "--target", target.as_str()];

    // SIGKILL once the scratch database exists: it stays behind.
    let mut child = p.spawn(&args);
    let left = wait_for_scratch(c, name).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(scratch_databases(c, name).await, vec![left.clone()]);

    // The next drill drops it (or another test's drill on this cluster got there first) and
    // passes.
    let r = drill(c, &p, &[]).await.expect_code(0);
    assert!(
        r.stdout.contains(&format!(
            "dropped {left}, the scratch database of a killed drill"
        )) || !r.stdout.contains("dropped"),
        "{}",
        r.stdout
    );
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());

    // SIGINT: the drill undoes its database itself and exits 130.
    let mut child = p.spawn(&args);
    wait_for_scratch(c, name).await;
    let pid = child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_mins(1), child.wait())
        .await
        .expect("an interrupted drill ends")
        .unwrap();
    assert_eq!(status.code(), Some(130));
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
}

/// Waits until a drill of `job` has created its scratch database; returns its name.
async fn wait_for_scratch(c: &Cluster, job: &str) -> String {
    for _ in 0..3000 {
        if let Some(name) = scratch_databases(c, job).await.pop() {
            return name;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no scratch database of {job} appeared within 30s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_newest_drilled_backup() {
    let c = cluster();
    let name = "drill_keep";
    let (p, _db) = job(c, name, "dump").await;
    let drilled = p.backup_ok().await;
    drill(c, &p, &["--backup", &drilled]).await.expect_code(0);
    let newer = p.backup_ok().await;
    let newest = p.backup_ok().await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!("{config}[jobs.{name}.retention]\nkeep_last = 1\n"));
    let r = run(&p, &["prune", "--dry-run"]).await.expect_code(0);
    let line = |id: &str| {
        r.stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not in\n{}", r.stdout))
            .to_string()
    };
    assert!(
        line(&drilled).contains("newest drilled backup"),
        "{}",
        r.stdout
    );
    assert!(line(&newest).contains("keep"), "{}", r.stdout);
    assert!(
        !line(&newer).contains("newest drilled backup"),
        "{}",
        r.stdout
    );
    run(&p, &["prune"]).await.expect_code(0);
    assert!(
        backup_dir(&p, name, &drilled)
            .join("manifest.json")
            .exists()
    );
    assert!(!backup_dir(&p, name, &newer).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_objects_fail_the_drill_naming_them() {
    let c = cluster();
    let name = "drill_damaged";
    let (p, db) = job(c, name, "export").await;
    let older = p.backup_ok().await;
    c.psql_sql(&db, "UPDATE actor SET last_name = lower(last_name);")
        .await;
    let id = p.backup_ok().await;
    let dir = backup_dir(&p, name, &id);
    let m = read_manifest(&dir);
    let key_of = |table: &str| {
        m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["table"] == table)
            .unwrap()["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let actor = key_of("\"public\".\"actor\"");
    let pristine = std::fs::read(dir.join(&actor)).unwrap();

    // One flipped byte in the middle of a table object.
    let mut flipped = pristine.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    std::fs::write(dir.join(&actor), &flipped).unwrap();
    let r = drill(c, &p, &[]).await.expect_code(1);
    assert!(r.error_line().contains(&actor), "{}", r.stderr);
    assert!(r.error_line().contains("damaged"), "{}", r.stderr);
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());

    // The same table's object from the older backup (valid gzip, other rows).
    std::fs::copy(backup_dir(&p, name, &older).join(&actor), dir.join(&actor)).unwrap();
    let r = drill(c, &p, &[]).await.expect_code(1);
    assert!(r.error_line().contains(&actor), "{}", r.stderr);
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
    assert!(!dir.join("drill.json").exists());

    std::fs::write(dir.join(&actor), &pristine).unwrap();
    drill(c, &p, &[]).await.expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_from_the_command_line_stops_at_the_jobs_timeout_and_drops_its_database() {
    use std::os::unix::fs::PermissionsExt;
    let c = cluster();
    let name = "drill_timeout";
    let db = c.pagila_db(name).await;
    // A pg_restore that hangs (its --version answers, so pgkeep takes it): the drill would
    // wait on it for ever but for the job's timeout.
    let bin = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall", "psql"] {
        std::os::unix::fs::symlink(c.bin_dir().join(tool), bin.path().join(tool)).unwrap();
    }
    let script = bin.path().join("pg_restore");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nif [ \"$1\" = \"--version\" ]; then exec '{}/pg_restore' --version; fi\nexec sleep 600\n",
            c.bin_dir().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = |store: &Path, timeout: &str| {
        Toml::local(store)
            .job(name, "dump", &c.url(&db))
            .set("globals", false)
            .set("pg_bin_dir", bin.path().to_str().unwrap())
            .set("timeout", timeout)
    };
    let p = Pgkeep::configured(|store| config(store, "10m"));
    let id = p.backup_ok().await;
    p.write_config(&config(&p.store_dir(), "3s").render());

    let started = std::time::Instant::now();
    let r = drill(c, &p, &[]).await;
    let line = r.expect_code(1).error_line();
    assert!(line.contains("stopped after its timeout of 3s"), "{line}");
    assert!(started.elapsed() < std::time::Duration::from_mins(2));
    assert_eq!(scratch_databases(c, name).await, Vec::<String>::new());
    assert!(!backup_dir(&p, name, &id).join("drill.json").exists());
}
