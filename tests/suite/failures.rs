//! Fail closed: every broken backup exits 1 with one clear line and leaves no manifest.

use crate::common::cli::{Pgkeep, fake_bin_dir};
use crate::common::pg::cluster;
use crate::common::s3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_exist() {
    let c = cluster();
    let p = Pgkeep::local_dump(&c.url("no_such_database_here"));
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = run.error_line();
    assert!(
        line.contains("no_such_database_here") && line.contains("does not exist"),
        "{line}"
    );
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_and_never_printed() {
    let c = cluster();
    let db = c.pagila_db("wrong_pw").await;
    let role = c.unique_name("pw_user");
    c.create_role_with_password(&role, "right-password").await;
    let p = Pgkeep::local_dump(&c.url_as(&role, Some("hunter2-wrong"), &db));
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = run.error_line();
    assert!(line.contains("password authentication failed"), "{line}");
    assert!(
        !run.stderr.contains("hunter2") && !run.stdout.contains("hunter2"),
        "{}",
        run.stderr
    );
    assert!(p.stored_files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_reaches_pg_dump_through_the_environment_only() {
    let c = cluster();
    let db = c.pagila_db("pw_env").await;
    let role = c.unique_name("pw_reader");
    c.create_role_with_password(&role, "s3cret-pw").await;
    c.psql_sql("postgres", &format!("GRANT pg_read_all_data TO {role}"))
        .await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let bin = fake_bin_dir(
        c.bin_dir(),
        &format!(
            "echo \"argv: $*\" >> '{log}'\n[ -n \"$PGPASSWORD\" ] && echo 'env: PGPASSWORD set' >> '{log}'\nexec \"$REAL_BIN/pg_dump\" \"$@\"",
            log = log.path().display()
        ),
    );
    // password_file keeps the password out of the config as well.
    let pw_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pw_file.path(), "s3cret-pw\n").unwrap();
    let p = Pgkeep::local_dump(&c.url_as(&role, None, &db));
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!(
        "{cfg}password_file = \"{}\"\npg_bin_dir = \"{}\"\n",
        pw_file.path().display(),
        bin.path().display()
    ));
    p.backup_ok().await;
    let seen = std::fs::read_to_string(log.path()).unwrap();
    assert!(seen.contains("env: PGPASSWORD set"), "{seen}");
    assert!(seen.contains("argv: --format=custom"), "{seen}");
    assert!(!seen.contains("s3cret"), "password on argv: {seen}");
    let show = p.run(&["show", "latest", "--json"]).await.expect_code(0);
    assert!(!show.stdout.contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_killed_mid_stream() {
    let c = cluster();
    let db = c.pagila_db("killed").await;
    // Real dump output, cut off after 200 kB by a SIGKILL of the producer.
    let bin = fake_bin_dir(
        c.bin_dir(),
        "\"$REAL_BIN/pg_dump\" \"$@\" | head -c 200000\nkill -9 $$",
    );
    let p = Pgkeep::local_dump(&c.url(&db));
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!("{cfg}pg_bin_dir = \"{}\"\n", bin.path().display()));
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = run.error_line();
    assert!(
        line.contains("pg_dump") && line.contains("signal 9"),
        "{line}"
    );
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
    let list = p.run(&["list", "--json"]).await.expect_code(0);
    assert_eq!(list.stdout.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_failing_with_stderr_and_empty_output() {
    let c = cluster();
    let db = c.pagila_db("dump_fails").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();

    let failing = fake_bin_dir(
        c.bin_dir(),
        "echo 'pg_dump: error: query failed: ERROR:  simulated failure' >&2\nexit 1",
    );
    p.write_config(&format!(
        "{cfg}pg_bin_dir = \"{}\"\n",
        failing.path().display()
    ));
    let line = p.run(&["backup"]).await.expect_code(1).error_line();
    assert!(
        line.contains("simulated failure") && line.contains("exit code 1"),
        "{line}"
    );

    let silent = fake_bin_dir(c.bin_dir(), "exit 0");
    p.write_config(&format!(
        "{cfg}pg_bin_dir = \"{}\"\n",
        silent.path().display()
    ));
    let line = p.run(&["backup"]).await.expect_code(1).error_line();
    assert!(line.contains("no data"), "{line}");
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_older_than_the_server_is_refused_up_front() {
    let c = cluster();
    let db = c.pagila_db("old_pg_dump").await;
    let bin = fake_bin_dir(c.bin_dir(), "exec \"$REAL_BIN/pg_dump\" \"$@\"");
    let wrapper = bin.path().join("pg_dump");
    let text = std::fs::read_to_string(&wrapper).unwrap().replace(
        "exec \"$REAL_BIN/pg_dump\" --version;",
        "echo 'pg_dump (PostgreSQL) 14.11'; exit 0;",
    );
    std::fs::write(&wrapper, text).unwrap();
    let p = Pgkeep::local_dump(&c.url(&db));
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!("{cfg}pg_bin_dir = \"{}\"\n", bin.path().display()));
    let line = p.run(&["backup"]).await.expect_code(1).error_line();
    assert!(
        line.contains("14.11") && line.contains("older than the server"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_s3_endpoint() {
    let c = cluster();
    let db = c.pagila_db("s3_down").await;
    let target = s3::s3s_fs("unreachable");
    let port = s3::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut env = target.pgkeep_env();
    for (k, v) in &mut env {
        if k == "PGKEEP_STORAGE__S3__ENDPOINT" {
            v.clone_from(&endpoint);
        }
    }
    env.push(("PGKEEP_STORAGE__S3__MAX_ATTEMPTS".into(), "2".into()));
    let p =
        Pgkeep::with_config(&format!("[jobs.main]\ndatabase = \"{}\"\n", c.url(&db))).envs(&env);
    let started = std::time::Instant::now();
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = run.error_line();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket() {
    let c = cluster();
    let db = c.pagila_db("no_bucket").await;
    let mut targets = vec![s3::s3s_fs_missing_bucket("nobucket")];
    targets.extend(s3::garage_missing_bucket("nobucket"));
    for target in targets {
        let p = Pgkeep::with_config(&format!("[jobs.main]\ndatabase = \"{}\"\n", c.url(&db)))
            .envs(&target.pgkeep_env());
        let line = p.run(&["backup"]).await.expect_code(1).error_line();
        assert!(
            line.contains(&target.bucket) && line.contains("does not exist"),
            "{:?}: {line}",
            target.server
        );
        let list = p.run(&["list", "--json"]).await;
        assert_eq!(
            list.code, 1,
            "listing a missing bucket is an error: {}",
            list.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misspelled_config_key_exits_2_naming_it() {
    let p = Pgkeep::with_config("[jobs.main]\nkind = \"dump\"\ndatabse = \"postgres://x@y/z\"\n");
    let run = p.run(&["backup"]).await.expect_code(2);
    let line = run.error_line();
    assert!(
        line.contains("jobs.main.databse") && line.contains("unknown key"),
        "{line}"
    );
    assert_eq!(
        run.stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_exit_2() {
    let p = Pgkeep::with_config(
        "[jobs.a]\ndatabase = \"dbname=a\"\n[jobs.b]\ndatabase = \"dbname=b\"\n",
    );
    let run = p.run(&["backup"]).await.expect_code(2);
    assert!(run.error_line().contains("several jobs"), "{}", run.stderr);
    p.run(&["backup", "nope"]).await.expect_code(2);
    p.run(&["frobnicate"]).await.expect_code(2);
    let bad_cron = Pgkeep::with_config("[jobs.a]\nschedule = \"0 3 * * *\"\n");
    let line = bad_cron.run(&["list"]).await.expect_code(2).error_line();
    assert!(line.contains("jobs.a.schedule"), "{line}");
    let env_typo = Pgkeep::with_config("[jobs.a]\n").env("PGKEEP_STORAGE__URLL", "file:///tmp");
    let line = env_typo.run(&["list"]).await.expect_code(2).error_line();
    assert!(line.contains("storage.urll"), "{line}");
}
