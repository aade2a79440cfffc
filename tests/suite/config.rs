//! Configuration input that must not surprise anyone, through the real binary: strict types,
//! one-line errors with a key or a file position, no secrets, case-insensitive job overrides,
//! and environments that are not UTF-8.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use crate::common::cli::{Pgkeep, Run};
use crate::common::pg::cluster;

/// `pgkeep ARGS` as `Pgkeep::run` runs it, plus variables whose values need not be UTF-8.
async fn run_with_os_env(p: &Pgkeep, args: &[&str], extra: &[(&str, OsString)]) -> Run {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgkeep"));
    cmd.arg("--config").arg(p.config_path()).args(args);
    cmd.current_dir(p.dir.path());
    for (k, _) in std::env::vars_os() {
        let name = k.to_string_lossy();
        if name.starts_with("PG") || name.starts_with("AWS") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", p.dir.path());
    cmd.env("PGKEEP_LOG", "pgkeep=info");
    cmd.env("RUST_BACKTRACE", "1");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("running pgkeep");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn local_store(p: &Pgkeep) -> String {
    format!("[storage]\nurl = \"file://{}\"\n", p.store_dir().display())
}

/// The one error line, after checking it is the only line on stderr.
fn only_error_line(run: &Run) -> String {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", run.stderr);
    lines[0].to_string()
}

#[tokio::test]
async fn a_non_utf8_environment_variable_is_named_or_ignored() {
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[jobs.a]\ndatabase = \"dbname=a\"\n",
        local_store(&p)
    ));
    let bad = || OsString::from_vec(b"x\xffy".to_vec());

    // A variable pgkeep does not read is ignored.
    let run = run_with_os_env(&p, &["list"], &[("UNRELATED_VAR", bad())]).await;
    let run = run.expect_code(0);
    assert!(run.stdout.starts_with("no backups in "), "{run:?}");

    // One it reads is a configuration error naming it, never showing the value.
    for var in ["PGHOST", "HOME", "PGKEEP_JOBS__A__KIND"] {
        let run = run_with_os_env(&p, &["check"], &[(var, bad())]).await;
        let run = run.expect_code(2);
        let line = only_error_line(&run);
        assert_eq!(
            line,
            format!(
                "error: invalid configuration: {var}: the environment variable's value is not valid UTF-8"
            )
        );
        assert!(!run.stderr.contains("panicked") && !run.stderr.contains("backtrace"));
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[tokio::test]
async fn a_password_with_a_slash_is_never_shown() {
    let p = Pgkeep::with_config("");
    for database in [
        "postgres://u:Secret/x@host/db",
        "postgres://u:Sec?ret@host:5432/db",
        "host=h passwordSecret",
    ] {
        p.write_config(&format!(
            "{}\n[jobs.a]\ndatabase = \"{database}\"\n",
            local_store(&p)
        ));
        for args in [&["check"][..], &["list"], &["backup"]] {
            let run = p.run(args).await.expect_code(2);
            let line = only_error_line(&run);
            assert!(
                line.starts_with(
                    "error: invalid configuration: jobs.a.database: invalid connection string"
                ),
                "{line}"
            );
            for secret in ["Secret", "Sec", "ret@"] {
                assert!(
                    !run.stderr.contains(secret) && !run.stdout.contains(secret),
                    "{database} {args:?}: {run:?}"
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_overrides_name_jobs_case_insensitively() {
    let c = cluster();
    let db = c.create_db("cfg_case").await;
    c.psql_sql(
        &db,
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
    )
    .await;
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[jobs.Nightly]\ndatabase = \"postgres://nobody@127.0.0.1:1/nothing\"\nglobals = false\n",
        local_store(&p)
    ));
    // The override lands on the file's `Nightly`: one job, backed up from the overriding
    // database, stored under the file's spelling.
    let p = p.env("PGKEEP_JOBS__NIGHTLY__DATABASE", &c.url(&db));
    let id = p.backup_ok().await;
    let files = p.stored_files();
    assert!(
        files.contains(&format!("Nightly/{id}/manifest.json")),
        "{files:?}"
    );
    let list = p.run(&["list", "--json"]).await.expect_code(0);
    let backups: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(backups.as_array().map(Vec::len), Some(1), "{backups}");
    assert_eq!(backups[0]["job"], "Nightly");

    // An override for a job the file lacks creates it, in lower case.
    let p = p.env("PGKEEP_JOBS__WEEKLY__DATABASE", &c.url(&db));
    let line = only_error_line(&p.run(&["backup"]).await.expect_code(2));
    assert!(line.contains("several jobs (Nightly, weekly)"), "{line}");

    // Two jobs no override could tell apart are refused.
    let twins = Pgkeep::with_config(
        "[jobs.app]\ndatabase = \"dbname=a\"\n[jobs.App]\ndatabase = \"dbname=b\"\n",
    );
    let line = only_error_line(&twins.run(&["list"]).await.expect_code(2));
    assert!(
        line.starts_with(
            "error: invalid configuration: jobs.app: differs from job 'App' only in case"
        ),
        "{line}"
    );
}

#[tokio::test]
async fn a_toml_syntax_error_is_one_line_with_its_position() {
    let p =
        Pgkeep::with_config("[storage]\nurl = \"file:///tmp/x\"\n[jobs.a]\nkind = = \"dump\"\n");
    let run = p.run(&["list"]).await.expect_code(2);
    let line = only_error_line(&run);
    assert_eq!(
        line,
        format!(
            "error: config file {}: line 4, column 8: extra `=`, expected nothing",
            p.config_path().display()
        )
    );
    // Nesting too deep to parse also names its position.
    let p = Pgkeep::with_config(&format!("x = {}{}\n", "[".repeat(200), "]".repeat(200)));
    let line = only_error_line(&p.run(&["list"]).await.expect_code(2));
    assert!(line.contains(": line 1, column "), "{line}");
}

#[tokio::test]
async fn types_are_strict_and_every_problem_is_reported() {
    let p = Pgkeep::with_config("");
    p.write_config(&format!(
        "{}\n[storage.s3]\nparts_in_flight = 3.7\n\n[jobs.x]\nkind = \"export\"\nparallel = true\nglobals = 7\ntimeout = \"0s\"\n",
        local_store(&p)
    ));
    let run = p.run(&["list"]).await.expect_code(2);
    let line = only_error_line(&run);
    for part in [
        "jobs.x.globals: expected true or false, found an integer (7)",
        "jobs.x.parallel: expected a whole number, found a boolean (true)",
        "storage.s3.parts_in_flight: expected a whole number, found a float (3.7)",
        "jobs.x.timeout: '0s' must be longer than zero",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }

    // Environment strings parse by the key's type: "2" is an integer, "2.5" is not, and
    // "123" is a string.
    let export_job = |vars: &[(&str, &str)]| {
        let p = Pgkeep::with_config("");
        p.write_config(&format!(
            "{}\n[jobs.x]\nkind = \"export\"\n",
            local_store(&p)
        ));
        vars.iter().fold(p, |p, (k, v)| p.env(k, v))
    };
    let ok = export_job(&[
        ("PGKEEP_JOBS__X__PARALLEL", "2"),
        ("PGKEEP_JOBS__X__GLOBALS", "false"),
        ("PGKEEP_DAEMON__TIMEZONE", "UTC"),
    ]);
    ok.run(&["list"]).await.expect_code(0);
    let bad = export_job(&[
        ("PGKEEP_JOBS__X__PARALLEL", "2.5"),
        ("PGKEEP_JOBS__X__GLOBALS", "1"),
        ("PGKEEP_JOBS__X__COMPRESSION", "123"),
    ]);
    let line = only_error_line(&bad.run(&["list"]).await.expect_code(2));
    for part in [
        "jobs.x.parallel: expected a whole number, found '2.5' (set by PGKEEP_JOBS__X__PARALLEL)",
        "jobs.x.globals: expected true or false, found '1' (set by PGKEEP_JOBS__X__GLOBALS)",
        "jobs.x.compression: '123' is not a compression",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
}

#[tokio::test]
async fn values_are_checked_at_load_and_echoed_short() {
    let p = Pgkeep::with_config("");
    let huge = "z".repeat(1 << 20);
    p.write_config(&format!(
        "[storage]\nurl = \"s3://bucket name/x\"\n[storage.s3]\nendpoint = \"http://\"\n\
         [daemon]\ntimezone = \"{huge}\"\n\
         [notifications]\nwebhook_url = \"ftp://hooks.example.com/T0/tok3n?k=tok3n\"\n\
         [jobs.a]\npg_bin_dir = \"/nonexistent/bin\"\n"
    ));
    let run = p.run(&["check"]).await.expect_code(2);
    let line = only_error_line(&run);
    assert!(
        line.len() < 1200,
        "{} bytes: {}",
        line.len(),
        line.chars().take(300).collect::<String>()
    );
    assert!(!line.contains("tok3n"), "{line}");
    for part in [
        "storage.url: 'bucket name' is not a valid bucket name",
        "storage.s3.endpoint: 'http://' has no host",
        "daemon.timezone: 'zzzzzzzzzz",
        "…' is not an IANA time zone",
        "notifications.webhook_url: 'ftp://hooks.example.com/…' must be an http:// or https:// URL",
        "jobs.a.pg_bin_dir: /nonexistent/bin is not a directory",
    ] {
        assert!(line.contains(part), "{part}: {line}");
    }
}
