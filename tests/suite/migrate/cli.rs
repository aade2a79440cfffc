//! `pgkeep migrate` from the command line: no configuration needed, errors mapped to exit codes.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_migrate_needs_no_config_and_maps_errors_to_exit_codes() {
    let c = cluster();
    let db = c.create_db("migrate_cli").await;
    let url = c.url(&db);
    // An unparseable config file: `migrate` must not read it.
    let p = Pgkeep::with_config("this is [not toml");
    let dir = three();
    let dir_arg = dir.path().to_str().unwrap();

    let run = p
        .run(&[
            "migrate",
            "--database",
            &url,
            "--dir",
            dir_arg,
            "--target-version",
            "2",
        ])
        .await
        .expect_code(0);
    assert!(
        run.stdout.contains("applied 0001_people.sql (version 1)")
            && run.stdout.contains("applied 0002_seed.sql (version 2)")
            && run.stdout.contains("now at version 2"),
        "{}",
        run.stdout
    );
    let run = p
        .run(&["migrate", "--database", &url, "--dir", dir_arg])
        .await
        .expect_code(0);
    assert!(
        run.stdout.contains("applied 0003_email.sql"),
        "{}",
        run.stdout
    );
    let run = p
        .run(&["migrate", "--database", &url, "--dir", dir_arg])
        .await
        .expect_code(0);
    assert!(run.stdout.contains("nothing to apply"), "{}", run.stdout);

    // Usage errors: exit 2.
    let missing = dir.path().join("missing");
    let run = p
        .run(&[
            "migrate",
            "--database",
            &url,
            "--dir",
            missing.to_str().unwrap(),
        ])
        .await
        .expect_code(2);
    assert!(run.error_line().contains("missing"), "{}", run.stderr);
    let run = p
        .run(&[
            "migrate",
            "--database",
            &url,
            "--dir",
            dir_arg,
            "--table",
            "a.b.c",
        ])
        .await
        .expect_code(2);
    assert!(run.error_line().contains("a.b.c"), "{}", run.stderr);
    p.run(&["migrate", "--dir", dir_arg]).await.expect_code(2);

    // Failed runs: exit 1, naming the file (and the position).
    std::fs::write(dir.path().join("0001_people.sql"), "-- changed\n").unwrap();
    let run = p
        .run(&["migrate", "--database", &url, "--dir", dir_arg])
        .await
        .expect_code(1);
    assert!(
        run.error_line().contains("0001_people.sql was edited"),
        "{}",
        run.stderr
    );
    let bad = migrations_dir(&[("0001_bad.sql", "SELECT 1;\nSELEC 2;\n")]);
    let other = c.create_db("migrate_cli_bad").await;
    let run = p
        .run(&[
            "migrate",
            "--database",
            &c.url(&other),
            "--dir",
            bad.path().to_str().unwrap(),
        ])
        .await
        .expect_code(1);
    assert!(
        run.error_line().contains("0001_bad.sql:2:1") && run.error_line().contains("SELEC"),
        "{}",
        run.stderr
    );
}
