//! PostgreSQL faults: the dump's and the export's backends terminated mid-COPY, the server
//! stopped mid-run, and the restore target's backend terminated mid-load.

use std::time::Duration;

use super::{backend_running, big_db, listed, local_job};
use crate::common::pg::{Cluster, assert_same, cluster};
use crate::suite::damage::{populated_target, side_databases};

async fn terminate(c: &Cluster, pid: i32) {
    let client = c.connect("postgres").await;
    client
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_backend_mid_copy_fails_the_run_and_commits_nothing() {
    let c = cluster();
    for (kind, stage) in [
        ("dump", "failed at pg_dump"),
        ("export", "failed at the table export"),
    ] {
        let db = big_db(c, &format!("fault_term_{kind}")).await;
        let p = local_job(kind, &c.url(&db));
        let running = p.run(&["backup"]);
        let killer = async {
            let pid = backend_running(c, &db, "COPY").await;
            terminate(c, pid).await;
        };
        let (run, ()) = tokio::join!(running, killer);
        let run = run.expect_code(1);
        let line = run.error_line();
        assert!(line.contains(stage), "{kind}: {line}");
        // The server's FATAL, or (when the socket closes first) the client's view of it.
        assert!(
            [
                "terminating connection",
                "connection closed",
                "server closed the connection",
                // libpq over TLS, when the socket closes before the FATAL is read.
                "SSL SYSCALL error: EOF detected"
            ]
            .iter()
            .any(|why| line.contains(why)),
            "{kind}: {line}"
        );
        assert!(
            listed(&p).await.is_empty(),
            "{kind}: nothing may be committed"
        );
        assert!(
            p.stored_files().is_empty(),
            "{kind}: {:?}",
            p.stored_files()
        );
        let id = p.backup_ok().await;
        p.run(&["verify", &id]).await.expect_code(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stopped_mid_run_fails_the_run_and_the_next_one_succeeds() {
    let c = Cluster::private();
    for kind in ["dump", "export"] {
        let db = big_db(&c, &format!("fault_stop_{kind}")).await;
        let p = local_job(kind, &c.url(&db));
        let running = p.run(&["backup"]);
        let stopper = async {
            backend_running(&c, &db, "COPY").await;
            c.stop_now();
        };
        let (run, ()) = tokio::time::timeout(Duration::from_mins(2), async {
            tokio::join!(running, stopper)
        })
        .await
        .expect("a stopped server must fail the run, not hang it");
        let run = run.expect_code(1);
        assert!(
            run.error_line().contains("backup of job 'main' failed at"),
            "{}",
            run.stderr
        );
        c.start_again();
        assert!(
            listed(&p).await.is_empty(),
            "{kind}: nothing may be committed"
        );
        assert!(
            p.stored_files().is_empty(),
            "{kind}: {:?}",
            p.stored_files()
        );
        let id = p.backup_ok().await;
        p.run(&["verify", &id]).await.expect_code(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_restore_session_leaves_the_target_as_it_was() {
    let c = cluster();
    let db = big_db(c, "fault_restore_src").await;
    let p = local_job("export", &c.url(&db));
    let id = p.backup_ok().await;
    let (victim, before) = populated_target(c).await;
    let url = c.url(&victim);
    let args = ["restore", &id, "--target", &url, "--clean"];
    let running = p.run(&args);
    let killer = async {
        let client = c.connect("postgres").await;
        // The load runs in the database the restore builds beside the target.
        for _ in 0..1500 {
            let row = client
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE datname LIKE '%\\_pgkeep\\_new\\_%' \
                     AND state = 'active' AND query ILIKE 'COPY%' LIMIT 1",
                    &[],
                )
                .await
                .unwrap();
            if let Some(row) = row {
                terminate(c, row.get(0)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the restore never reached COPY");
    };
    let (run, ()) = tokio::join!(running, killer);
    let run = run.expect_code(1);
    let line = run.error_line();
    assert!(line.contains("loading table \"public\".\"big\""), "{line}");
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());
}
