//! A local store on a full filesystem: the backup fails with the store's "no space" error (not
//! pg_dump's SIGPIPE echo), nothing is committed, and a run with room succeeds.

use super::{big_db, listed, local_job};
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::cluster;
use crate::suite::store_faults::local::SmallDisk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_the_backup_naming_the_store() {
    let Some(disk) = SmallDisk::mount_sized("8m") else {
        return;
    };
    let c = cluster();
    let db = big_db(c, "fault_disk").await;
    for kind in ["dump", "export"] {
        let store = disk.path.join(kind);
        let p = Pgkeep::with_config("");
        let toml = Toml::local(&store)
            .job("main", kind, &c.url(&db))
            .set("compression", "none")
            .set("globals", false);
        p.write_config(&toml.render());
        let run = p.run(&["backup"]).await.expect_code(1);
        let line = run.error_line();
        assert!(line.contains("No space left on device"), "{kind}: {line}");
        assert!(
            line.contains(&store.display().to_string()),
            "{kind}: {line}"
        );
        assert!(!line.contains("signal 13"), "{kind}: {line}");
        assert!(listed(&p).await.is_empty());
        let leftovers: Vec<_> = walk(&store);
        assert!(leftovers.is_empty(), "{kind}: {leftovers:?}");
    }
    // With room, the same job works.
    let p = local_job("dump", &c.url(&db));
    p.backup_ok().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|e| {
            if e.path().is_dir() {
                walk(&e.path())
            } else {
                vec![e.path()]
            }
        })
        .collect()
}
