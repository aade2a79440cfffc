//! What the daemon cleans up: leftovers of crashed runs and stale multipart uploads.

use super::*;
use pgkeep::repository::Repository;

/// At start-up the daemon removes what crashed runs left: old manifest-less backups and temp
/// files; recent ones (maybe a run in progress elsewhere) and committed backups stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_removes_what_crashed_runs_left() {
    let c = cluster();
    let db = small_db("daemon_orphans").await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[daemon]\norphan_age = \"1h\"\n\n[jobs.main]\ndatabase = \"{}\"\ncompression = \"gzip:1\"\n",
        store_config(&p),
        c.url(&db)
    ));
    let kept = p.backup_ok().await;
    let old = std::time::SystemTime::now() - Duration::from_hours(2);
    let write = |rel: &str, mtime: Option<std::time::SystemTime>| {
        let path = p.store_dir().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"partial").unwrap();
        if let Some(t) = mtime {
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    };
    let recent_id = pgkeep::manifest::new_id(chrono::Utc::now());
    write("main/20200101T000000.000Z/dump.pgdump.gz", Some(old));
    write(
        "main/20200101T000000.000Z/.tmp-globals.sql.gz-0123456789abcdef",
        Some(old),
    );
    write(&format!("main/{recent_id}/dump.pgdump.gz"), None);
    write(
        &format!("main/{recent_id}/.tmp-globals.sql.gz-0123456789abcdef"),
        None,
    );
    let d = Daemon::start(&p, s3::free_port(), &[]).await;
    d.wait_metrics(Duration::from_secs(10), "the start-up sweep", |m| {
        sample(
            m,
            "pgkeep_cleanup_removed_total{job=\"main\",kind=\"object\"}",
        ) == Some(1.0)
            && sample(
                m,
                "pgkeep_cleanup_removed_total{job=\"main\",kind=\"upload\"}",
            ) == Some(1.0)
    })
    .await;
    let (code, _, log) = d.terminate(Duration::from_secs(10)).await;
    assert_eq!(code, 0, "{log}");
    let files = p.stored_files();
    assert!(!files.iter().any(|f| f.contains("20200101")), "{files:?}");
    assert!(files.iter().any(|f| f.contains(&recent_id)), "{files:?}");
    assert_eq!(committed(&p.store_dir(), "main"), [kept]);
    let tmp_left = walk_all(&p.store_dir());
    assert!(
        tmp_left
            .iter()
            .any(|f| f.contains(&recent_id) && f.contains(".tmp-"))
    );
}

fn walk_all(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.path().is_dir() {
            out.extend(walk_all(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// On S3, stale multipart uploads are aborted (Garage lists them); a store without
/// ListMultipartUploads (s3s-fs answers 501) is tolerated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_multipart_uploads_are_aborted() {
    let fs_target = s3::s3s_fs("daemon-stale-uploads");
    let store = fs_target.store().await;
    let listed = store
        .remove_stale_uploads("main/", chrono::Utc::now())
        .await;
    assert!(
        matches!(listed, Ok(None)),
        "s3s-fs cannot list uploads: {listed:?}"
    );
    let repo = Repository::new(std::sync::Arc::new(store));
    let swept = repo
        .sweep("main", Some(chrono::Utc::now() - Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(swept, pgkeep::repository::Swept::default());

    let Some(target) = s3::garage("daemon-stale-uploads") else {
        eprintln!("SKIPPED the Garage half: garage is not installed (scripts/test-deps.sh)");
        return;
    };
    let repo = Repository::new(std::sync::Arc::new(target.store().await));
    let client = target.client();
    let full = |k: &str| format!("{}/{k}", target.prefix);
    for key in [
        "main/20200101T000000.000Z/dump.pgdump.gz",
        "other/20200101T000000.000Z/x",
    ] {
        client
            .create_multipart_upload()
            .bucket(&target.bucket)
            .key(full(key))
            .send()
            .await
            .unwrap();
    }
    // Not stale yet at an age of an hour.
    let swept = repo
        .sweep("main", Some(chrono::Utc::now() - Duration::from_hours(1)))
        .await
        .unwrap();
    assert_eq!(swept.uploads, 0);
    let later = chrono::Utc::now() + chrono::Duration::seconds(5);
    let swept = repo
        .sweep("main", Some(later - Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(swept.uploads, 1);
    let open = target.open_multipart_uploads().await;
    assert_eq!(open, [full("other/20200101T000000.000Z/x")]);
}
