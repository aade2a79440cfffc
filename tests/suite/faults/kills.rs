//! The pgkeep process SIGKILLed at points spread over a dump run and an export run — just
//! before and just after the manifest write among them — to a file:// store and to Garage:
//! after each kill, every listed backup verifies, and the next run succeeds and leaves no
//! debris (no manifest-less directory, no temp file, no unfinished multipart upload).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};

use super::listed;
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::cluster;
use crate::common::s3::{self, S3Target};
use pgkeep::repository::Repository;
use pgkeep::store::{LocalStore, ObjectStore};

/// Log lines a run prints at its most delicate moments: as it starts reading, just before the
/// manifest is written, and just after.
const LINES: [&str; 4] = [
    "reading the database",
    "committing: writing the manifest",
    "backup committed",
    "retention applied",
];

/// A database whose dump needs several multipart parts (5 MiB each in these tests).
async fn database() -> String {
    let c = cluster();
    let db = c.pagila_db("kill_src").await;
    c.psql_sql(
        &db,
        "CREATE TABLE bulk (id int PRIMARY KEY, pad text); \
         INSERT INTO bulk SELECT g, md5(g::text) || md5((g + 1)::text) || md5((g + 2)::text) \
           || md5((g + 3)::text) FROM generate_series(1, 100000) g;",
    )
    .await;
    db
}

fn job(kind: &str, database: &str, target: Option<&S3Target>) -> Pgkeep {
    let p = Pgkeep::configured(|store| {
        let toml = match target {
            Some(_) => Toml::storage("s3://placeholder"),
            None => Toml::local(store),
        };
        let toml = toml
            .table("storage.s3")
            .set("part_size_mib", 5)
            .job("main", kind, database);
        let toml = if kind == "export" {
            toml.set("parallel", 2)
        } else {
            toml
        };
        toml.table("jobs.main.retention").set("keep_last", 2)
    });
    match target {
        Some(t) => p.envs(&t.pgkeep_env()).env("PGKEEP_LOG", "pgkeep=debug"),
        None => p.env("PGKEEP_LOG", "pgkeep=debug"),
    }
}

/// When to SIGKILL a run.
#[derive(Debug, Clone, Copy)]
enum Kill {
    Never,
    /// Once it printed a log line containing this.
    AtLine(&'static str),
    After(Duration),
}

/// Runs `pgkeep backup`, SIGKILLs it as `kill` says, and returns how long it ran and the log
/// lines it printed.
async fn backup_killed(p: &Pgkeep, kill: Kill) -> (Duration, Vec<String>) {
    let started = Instant::now();
    let mut cmd = p.command(&["backup"]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let deadline = match kill {
        Kill::After(d) => Some(tokio::time::Instant::now() + d),
        _ => None,
    };
    loop {
        let next = match deadline {
            Some(at) => {
                let Ok(l) = tokio::time::timeout_at(at, lines.next_line()).await else {
                    child.start_kill().unwrap();
                    break;
                };
                l.unwrap()
            }
            None => lines.next_line().await.unwrap(),
        };
        let Some(line) = next else { break };
        let hit = matches!(kill, Kill::AtLine(needle) if line.contains(needle));
        seen.push(line);
        if hit {
            child.start_kill().unwrap();
            break;
        }
    }
    child.wait().await.unwrap();
    (started.elapsed(), seen)
}

/// The store the job writes to, for looking at what is left.
async fn store_of(p: &Pgkeep, target: Option<&S3Target>) -> Arc<dyn ObjectStore> {
    match target {
        Some(t) => Arc::new(t.store().await),
        None => Arc::new(LocalStore::new(p.store_dir().to_str().unwrap())),
    }
}

async fn kill_at_many_points(kind: &str, target: Option<&S3Target>) {
    let db = database().await;
    let p = job(kind, &cluster().url(&db), target);
    let (took, reference) = backup_killed(&p, Kill::Never).await;
    for needle in LINES {
        assert!(
            reference.iter().any(|l| l.contains(needle)),
            "no '{needle}' in {reference:#?}"
        );
    }
    // Moments spread over a whole run, and the log lines around the commit.
    let mut points: Vec<Kill> = (1..=7).map(|i| Kill::After(took * i / 8)).collect();
    points.extend(LINES.iter().map(|l| Kill::AtLine(l)));
    let repo = Repository::new(store_of(&p, target).await);
    let mut verified = std::collections::BTreeSet::new();
    for point in points {
        backup_killed(&p, point).await;
        let what = format!(
            "{kind} to {}, killed {point:?} into a {took:?} run",
            repo.describe()
        );
        // Whatever is listed is complete: it verifies.
        for b in listed(&p).await {
            let id = b["id"].as_str().unwrap().to_string();
            assert_eq!(b["damaged"], false, "{what}: {b}");
            if !verified.insert(id.clone()) {
                continue;
            }
            let id = id.as_str();
            let v = p.run(&["verify", id]).await;
            assert_eq!(
                v.code, 0,
                "{what}: {id} is listed but does not verify:\n{}",
                v.stdout
            );
        }
        // The next run succeeds and removes what the killed one left.
        p.backup_ok().await;
        assert_eq!(repo.orphans("main").await.unwrap(), Vec::new(), "{what}");
        if let Some(t) = target {
            assert_eq!(
                t.open_multipart_uploads().await,
                Vec::<String>::new(),
                "{what}"
            );
        } else {
            let temps: Vec<String> = p
                .stored_files()
                .into_iter()
                .filter(|f| f.contains(".tmp-"))
                .collect();
            assert!(temps.is_empty(), "{what}: {temps:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dump_runs_to_a_local_store_never_leave_a_partial_backup() {
    kill_at_many_points("dump", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_export_runs_to_a_local_store_never_leave_a_partial_backup() {
    kill_at_many_points("export", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_dump_and_export_runs_to_garage_never_leave_a_partial_backup() {
    let Some(target) = s3::garage("kills") else {
        eprintln!("SKIPPED: garage is not installed (scripts/test-deps.sh)");
        return;
    };
    kill_at_many_points("dump", Some(&target)).await;
    let Some(target) = s3::garage("kills-export") else {
        return;
    };
    kill_at_many_points("export", Some(&target)).await;
}
