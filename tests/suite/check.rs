//! `pgkeep check`: one line per check, exit 1 when any fails, exit 2 for a bad configuration.

use std::os::unix::fs::PermissionsExt as _;

use crate::common::cli::Pgkeep;
use crate::common::pg::{cluster, quote_ident};
use crate::common::s3;

/// A `pg_bin_dir` whose pg_dump (and pg_dumpall) claim to be PostgreSQL 12.
fn old_pg_dump() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tool in ["pg_dump", "pg_dumpall"] {
        let path = dir.path().join(tool);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho '{tool} (PostgreSQL) 12.22'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_problem_gets_its_own_failed_line() {
    let c = cluster();
    let db = c.create_db("check_access").await;
    let role = c.unique_name("check_reader");
    c.psql_sql(
        &db,
        &format!(
            "CREATE ROLE {r} LOGIN; \
             CREATE TABLE visible (id int); CREATE TABLE secret (id int); \
             CREATE SCHEMA hidden; CREATE TABLE hidden.t (id int); \
             GRANT SELECT ON visible TO {r}; GRANT SELECT ON hidden.t TO {r};",
            r = quote_ident(&role)
        ),
    )
    .await;
    let old = old_pg_dump();
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "[storage]\nurl = \"file://{store}\"\n\n\
         [jobs.good]\ndatabase = \"{good}?sslmode=disable\"\nschedule = \"0 0 3 * * *\"\n\n\
         [jobs.limited]\ndatabase = \"{limited}\"\n\n\
         [jobs.missing]\ndatabase = \"{missing}\"\n\n\
         [jobs.oldtools]\ndatabase = \"{good}\"\npg_bin_dir = \"{old}\"\n",
        store = p.store_dir().display(),
        good = c.url(&db),
        limited = c.url_as(&role, None, &db),
        missing = c.url("no_such_database_to_check"),
        old = old.path().display(),
    ));
    let run = p.run(&["check"]).await.expect_code(1);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let line = |prefix: &str, needle: &str| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && l.contains(needle))
    };
    let out = &run.stdout;
    assert!(line("ok   config: ", "4 jobs, 1 scheduled"), "{out}");
    assert!(
        line("ok   storage: ", "wrote, read back and deleted"),
        "{out}"
    );
    assert!(line("ok   job good: ", "TLS off"), "{out}");
    assert!(line("ok   job good: ", "(superuser)"), "{out}");
    assert!(line("ok   job good: ", "pg_dump 15."), "{out}");
    assert!(line("ok   job limited: ", "connected to"), "{out}");
    assert!(
        line(
            "FAIL job limited: ",
            "may not read 2 table(s): hidden.t, public.secret"
        ),
        "{out}"
    );
    assert!(line("FAIL job missing: ", "does not exist"), "{out}");
    assert!(
        line("FAIL job oldtools: ", "12.22, older than the server"),
        "{out}"
    );
    assert_eq!(lines.len(), 12, "{out}");
    assert!(
        run.error_line().contains("3 of 12 checks failed"),
        "{}",
        run.stderr
    );
    // The probe object is gone again.
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_setup_on_s3_passes_every_check() {
    let c = cluster();
    let db = c.create_db("check_s3").await;
    let target = s3::s3s_fs("check-s3");
    let p = Pgkeep::with_config("").envs(&target.pgkeep_env());
    p.write_config(&format!(
        "[jobs.main]\ndatabase = \"{}?sslmode=require\"\n",
        c.url(&db)
    ));
    let run = p.run(&["check"]).await.expect_code(0);
    assert!(
        run.stdout.lines().all(|l| l.starts_with("ok ")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("ok   storage: {}", target.url)),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("TLS on (TLSv1."), "{}", run.stdout);
    let left = target
        .client()
        .list_objects_v2()
        .bucket(&target.bucket)
        .send()
        .await
        .unwrap();
    assert_eq!(left.key_count(), Some(0), "{left:?}");
}

#[tokio::test]
async fn a_bad_schedule_is_a_configuration_error() {
    for (schedule, reason) in [
        ("0 3 * * *", "has 5 fields"),
        ("0 0 25 * * *", "is not a valid schedule"),
        ("0 0 0 30 2 *", "never fires"),
    ] {
        let p = Pgkeep::with_config(&format!(
            "[jobs.nightly]\ndatabase = \"postgres://u@h/db\"\nschedule = \"{schedule}\"\n"
        ));
        let run = p.run(&["check"]).await.expect_code(2);
        let line = run.error_line();
        assert!(
            line.contains("jobs.nightly.schedule") && line.contains(reason),
            "{schedule}: {line}"
        );
    }
}
