//! The repository over a real local-directory store, with faults injected around it where a
//! test needs the store to lose an answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};

use super::*;
use crate::codec::Compression;
use crate::manifest::{BackupKind, FORMAT_VERSION, Globals, ObjectEntry, ObjectRole};
use crate::store::{ByteReader, LocalStore};

fn local() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path().to_str().unwrap());
    (dir, Repository::new(Arc::new(store)))
}

fn at(day: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 3, 0, 0).unwrap()
}

fn manifest_of(run: &Run, objects: Vec<ObjectEntry>) -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        id: run.id().to_string(),
        job: run.job().to_string(),
        kind: BackupKind::Dump,
        started_at: run.started_at(),
        finished_at: run.started_at(),
        pgkeep_version: "test".into(),
        source: "u@h:5432/db".into(),
        database: "db".into(),
        server_version: "15.18".into(),
        server_version_num: 150_018,
        pg_dump_version: "15.18".into(),
        wal_lsn: None,
        compression: "gzip:1".into(),
        globals: Globals {
            included: false,
            role_passwords: false,
            note: None,
        },
        objects,
        snapshot: None,
        encoding: None,
        migration_version: None,
        sequences: Vec::new(),
        tables: Vec::new(),
        large_objects: None,
        materialized_views: Vec::new(),
        databases: Vec::new(),
        encryption: None,
        checksum: None,
    }
}

async fn put(run: &Run, name: &str, data: &'static [u8]) -> ObjectEntry {
    run.put(
        name,
        ObjectRole::Dump,
        data,
        Compression::Gzip(1),
        false,
        async { Ok(()) },
    )
    .await
    .unwrap()
}

/// One committed dump backup of `job` started on `day`.
async fn backup(repo: &Repository, job: &str, day: u32) -> Manifest {
    let run = repo.begin(job, at(day));
    let entry = put(&run, "dump.pgdump.gz", b"PGDMP archive bytes").await;
    let m = manifest_of(&run, vec![entry]);
    run.commit(m).await.map_err(|(_, e)| e).unwrap()
}

fn path(dir: &tempfile::TempDir, key: &str) -> std::path::PathBuf {
    dir.path().join(key)
}

#[tokio::test]
async fn a_committed_run_is_listed_with_its_checksum() {
    let (_dir, repo) = local();
    let m = backup(&repo, "main", 1).await;
    assert!(m.checksum.is_some());
    let listing = repo.list(None).await.unwrap();
    assert_eq!(listing.backups, vec![m.clone()]);
    assert!(listing.damaged.is_empty());
    assert!(repo.check_objects(&m).await.unwrap().is_empty());
    let r = repo.resolve(Some("main"), "latest").await.unwrap();
    assert_eq!(r.manifest, m);
}

#[tokio::test]
async fn a_commit_must_describe_exactly_what_the_run_stored() {
    let (dir, repo) = local();
    let run = repo.begin("main", at(2));
    let entry = put(&run, "dump.pgdump.gz", b"archive").await;
    let mut forged = entry.clone();
    forged.stored_bytes += 1;
    let m = manifest_of(&run, vec![forged]);
    let (run, e) = run.commit(m).await.unwrap_err();
    assert!(matches!(e, CommitError::Invalid(_)), "{e}");
    let m = manifest_of(&run, Vec::new());
    let (run, e) = run.commit(m).await.unwrap_err();
    assert!(e.to_string().contains("stored 1 objects"), "{e}");
    run.abort().await;
    assert!(repo.list(None).await.unwrap().backups.is_empty());
    assert!(!path(&dir, "main").join("20261102T030000.000Z").exists());
}

#[tokio::test]
async fn one_damaged_manifest_never_hides_the_others() {
    let (dir, repo) = local();
    let old = backup(&repo, "main", 1).await;
    let newer = backup(&repo, "main", 2).await;
    let newest = backup(&repo, "main", 3).await;
    // An older one written over with garbage, the newest one edited.
    std::fs::write(
        path(&dir, &format!("main/{}/manifest.json", old.id)),
        b"\x00garbage",
    )
    .unwrap();
    let key = format!("main/{}/manifest.json", newest.id);
    let text = std::fs::read_to_string(path(&dir, &key)).unwrap();
    std::fs::write(
        path(&dir, &key),
        text.replace("\"database\": \"db\"", "\"database\": \"other\""),
    )
    .unwrap();
    let listing = repo.list(Some("main")).await.unwrap();
    assert_eq!(listing.backups, vec![newer.clone()]);
    let damaged: Vec<&str> = listing.damaged.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(damaged, [newest.id.as_str(), old.id.as_str()]);
    assert!(
        crate::error::report(&listing.damaged[0].error).contains("checksum does not match"),
        "{}",
        crate::error::report(&listing.damaged[0].error)
    );
    let r = repo.resolve(Some("main"), "latest").await.unwrap();
    assert_eq!(r.manifest, newer);
    assert_eq!(r.passed_over.len(), 1);
    assert_eq!(r.passed_over[0].id, newest.id);
    // Named, a damaged backup is an error that says so, not "not found".
    let e = repo.resolve(Some("main"), &old.id).await.unwrap_err();
    assert!(matches!(e, RepoError::Damaged { .. }), "{e}");
    let e = repo.resolve(None, &newest.id).await.unwrap_err();
    assert!(matches!(e, RepoError::Damaged { .. }), "{e}");
    let e = repo
        .resolve(Some("main"), "20201212T000000.000Z")
        .await
        .unwrap_err();
    assert!(e.is_usage(), "{e}");
}

#[tokio::test]
async fn deletion_takes_the_manifest_first_and_abort_spares_a_committed_run() {
    let (dir, repo) = local();
    let m = backup(&repo, "main", 1).await;
    // Discarding a run that did commit keeps it.
    assert!(repo.discard("main", &m.id).await.is_none());
    assert_eq!(repo.list(None).await.unwrap().backups.len(), 1);
    repo.delete_backup("main", &m.id).await.unwrap();
    assert!(repo.list(None).await.unwrap().backups.is_empty());
    assert!(!path(&dir, &format!("main/{}/dump.pgdump.gz", m.id)).exists());
}

#[tokio::test]
async fn the_lock_holder_sweeps_debris_of_any_age_others_only_old_debris() {
    let (dir, repo) = local();
    let kept = backup(&repo, "main", 1).await;
    for day in [2, 3] {
        let run = repo.begin("main", at(day));
        put(&run, "dump.pgdump.gz", b"never committed").await;
        drop(run);
    }
    let orphans = repo.orphans("main").await.unwrap();
    assert_eq!(orphans.len(), 2);
    // Without the lock: only what is older than the cutoff (day 2's run started before it,
    // but its file was written just now, so it may still be going).
    let swept = repo.sweep("main", Some(at(3))).await.unwrap();
    assert_eq!(swept.objects, 0);
    // With the lock: everything.
    let swept = repo.sweep("main", None).await.unwrap();
    assert_eq!(swept.objects, 2);
    assert!(repo.orphans("main").await.unwrap().is_empty());
    assert_eq!(repo.list(None).await.unwrap().backups, vec![kept]);
    assert!(path(&dir, "main").exists());
}

fn unreachable(why: &str) -> StoreError {
    StoreError::Unreachable {
        endpoint: "flaky".into(),
        operation: "PutObject",
        location: "flaky".into(),
        source: why.to_string().into(),
    }
}

/// A local store whose manifest writes fail in chosen ways.
#[derive(Debug)]
struct Flaky {
    inner: LocalStore,
    /// The write happens, then the answer is lost.
    lose_answer: AtomicBool,
    /// Reads of the manifest fail too.
    fail_reads: AtomicBool,
    puts: AtomicUsize,
}

#[async_trait]
impl ObjectStore for Flaky {
    async fn put(&self, key: &str, body: ByteReader) -> Result<u64, StoreError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        if key.ends_with(MANIFEST_NAME) && self.lose_answer.load(Ordering::Relaxed) {
            self.inner.put(key, body).await?;
            return Err(unreachable("connection reset after the request was sent"));
        }
        if key.ends_with(MANIFEST_NAME) && self.fail_reads.load(Ordering::Relaxed) {
            return Err(unreachable("timed out"));
        }
        self.inner.put(key, body).await
    }
    async fn get(&self, key: &str) -> Result<ByteReader, StoreError> {
        if key.ends_with(MANIFEST_NAME) && self.fail_reads.load(Ordering::Relaxed) {
            return Err(unreachable("timed out"));
        }
        self.inner.get(key).await
    }
    async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.inner.delete(key).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

fn flaky() -> (tempfile::TempDir, Arc<Flaky>, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky {
        inner: LocalStore::new(dir.path().to_str().unwrap()),
        lose_answer: AtomicBool::new(false),
        fail_reads: AtomicBool::new(false),
        puts: AtomicUsize::new(0),
    });
    let repo = Repository::new(store.clone());
    (dir, store, repo)
}

#[tokio::test]
async fn a_manifest_written_despite_an_error_is_a_commit() {
    let (_dir, store, repo) = flaky();
    store.lose_answer.store(true, Ordering::Relaxed);
    let m = backup(&repo, "main", 5).await;
    assert_eq!(repo.list(None).await.unwrap().backups, vec![m]);
}

#[tokio::test]
async fn an_unknown_commit_outcome_removes_nothing() {
    let (dir, store, repo) = flaky();
    store.fail_reads.store(true, Ordering::Relaxed);
    let run = repo.begin("main", at(6));
    let entry = put(&run, "dump.pgdump.gz", b"archive").await;
    let m = manifest_of(&run, vec![entry]);
    let (run, e) = run.commit(m).await.unwrap_err();
    assert!(matches!(e, CommitError::Unknown { .. }), "{e}");
    assert!(e.to_string().contains("not known whether backup"), "{e}");
    drop(run);
    assert!(path(&dir, "main/20261106T030000.000Z/dump.pgdump.gz").exists());
}
