//! Damaged backups, one damage at a time, through `pgkeep restore` with and without `--clean`
//! and `--create`, with `--jobs 1` and `--jobs 2`: every damage is named, nothing hangs, and the
//! target is left exactly as it was (its content fingerprint compared before and after), with
//! no database of the restore left behind.

mod manifests;
mod objects;

use std::path::PathBuf;
use std::time::Duration;

use crate::common::cli::{Pgkeep, Run};
use crate::common::config::Toml;
use crate::common::pg::{Cluster, DbSnapshot, assert_same, cluster};

/// Longer than any restore of these small databases takes; reaching it means a hang.
const NO_HANG: Duration = Duration::from_mins(2);

/// Two committed backups of one pagila database, of one kind: the newer is the one damaged,
/// the older supplies objects for the swapped-object damage (the data changed in between, so
/// its objects differ).
pub struct Fixture {
    pub p: Pgkeep,
    pub kind: &'static str,
    pub older: String,
    pub newer: String,
}

impl Fixture {
    pub async fn new(kind: &'static str) -> Fixture {
        let c = cluster();
        let db = c.pagila_db(&format!("damage_{kind}")).await;
        let p = Pgkeep::configured(|store| {
            let toml = Toml::local(store)
                .job("main", kind, &c.url(&db))
                .set("globals", false);
            if kind == "export" {
                toml.set("parallel", 2)
            } else {
                toml
            }
        });
        let older = p.backup_ok().await;
        // Data and schema both change, so every object differs between the two backups
        // (the archive header's time has only seconds: two quick backups can share it).
        c.psql_sql(
            &db,
            "UPDATE actor SET last_name = upper(last_name); UPDATE film SET rental_rate = rental_rate + 1; \
             COMMENT ON TABLE actor IS 'changed between the two backups';",
        )
        .await;
        let newer = p.backup_ok().await;
        Fixture {
            p,
            kind,
            older,
            newer,
        }
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.p.store_dir().join("main").join(id)
    }

    pub fn manifest(&self, id: &str) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir(id).join("manifest.json")).unwrap()).unwrap()
    }

    /// The object names of a backup with `role`, biggest first.
    pub fn objects(&self, id: &str, role: &str) -> Vec<String> {
        let m = self.manifest(id);
        let mut found: Vec<(u64, String)> = m["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["role"] == role)
            .map(|o| {
                (
                    o["stored_bytes"].as_u64().unwrap(),
                    o["key"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        found.sort_by(|a, b| b.cmp(a));
        found.into_iter().map(|(_, k)| k).collect()
    }

    /// Keeps a pristine copy of the newer backup to put back after each damage.
    pub fn save(&self) -> tempfile::TempDir {
        let keep = tempfile::tempdir().unwrap();
        copy_dir(&self.dir(&self.newer), keep.path());
        keep
    }

    pub fn restore_pristine(&self, saved: &tempfile::TempDir) {
        let dir = self.dir(&self.newer);
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        copy_dir(saved.path(), &dir);
    }
}

pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A target database that holds data the backup does not (so a restore that went through
/// would change it), and its fingerprint.
pub async fn populated_target(c: &Cluster) -> (String, DbSnapshot) {
    let db = c.pagila_db("damage_victim").await;
    c.psql_sql(
        &db,
        "CREATE TABLE precious (note text); INSERT INTO precious VALUES ('the only copy');",
    )
    .await;
    let before = c.snapshot(&db).await;
    (db, before)
}

/// Runs `pgkeep ARGS`; a run that outlives `NO_HANG` fails the test as a hang.
pub async fn run(p: &Pgkeep, args: &[&str]) -> Run {
    tokio::time::timeout(NO_HANG, p.run(args))
        .await
        .unwrap_or_else(|_| panic!("pgkeep {args:?} hung for {}s", NO_HANG.as_secs()))
}

/// Databases of this cluster a restore into `target` made and left.
pub async fn side_databases(c: &Cluster, target: &str) -> Vec<String> {
    let client = c.connect("postgres").await;
    client
        .query(
            "SELECT datname::text FROM pg_database WHERE datname LIKE $1 || '%\\_pgkeep\\_%'",
            &[&target],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn exists(c: &Cluster, db: &str) -> bool {
    let client = c.connect("postgres").await;
    client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&db])
        .await
        .unwrap()
        .is_some()
}

/// Restores `id` over a populated target with `--clean` and into a new database with
/// `--create`, and checks each failed with `code`, a message containing `needle`, an unchanged
/// (or still absent) target and no database left behind.
pub async fn expect_refused(
    f: &Fixture,
    id: &str,
    jobs: &str,
    code: i32,
    needle: &str,
    what: &str,
) {
    let c = cluster();
    let (victim, before) = populated_target(c).await;
    let r = run(
        &f.p,
        &[
            "restore",
            id,
            "--target",
            &c.url(&victim),
            "--clean",
            "--jobs",
            jobs,
        ],
    )
    .await;
    check_refusal(
        &r,
        code,
        needle,
        &format!("{what} ({}, --clean, --jobs {jobs})", f.kind),
    );
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(
        side_databases(c, &victim).await,
        Vec::<String>::new(),
        "{what}"
    );

    let fresh = c.unique_name("damage_new");
    let r = run(
        &f.p,
        &[
            "restore",
            id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--jobs",
            jobs,
        ],
    )
    .await;
    check_refusal(
        &r,
        code,
        needle,
        &format!("{what} ({}, --create, --jobs {jobs})", f.kind),
    );
    assert!(
        !exists(c, &fresh).await,
        "{what}: --create left {fresh} behind"
    );
    assert_eq!(
        side_databases(c, &fresh).await,
        Vec::<String>::new(),
        "{what}"
    );
    c.drop_db(&victim).await;
}

fn check_refusal(r: &Run, code: i32, needle: &str, what: &str) {
    assert_eq!(
        r.code, code,
        "{what}: exit code\n--- stdout\n{}\n--- stderr\n{}",
        r.stdout, r.stderr
    );
    let line = r.error_line();
    assert!(
        line.contains(needle),
        "{what}: {line} does not name {needle}"
    );
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("RUST_BACKTRACE"),
        "{what}: {}",
        r.stderr
    );
}
