//! Export jobs end to end: one snapshot, per-table COPY objects, and both restore paths.

use std::path::Path;

use crate::common::cli::{Pgkeep, Run};
use crate::common::config::Toml;
use crate::common::pg::{assert_same, cluster};
use crate::common::s3;

/// A config with one export job of `database`, stored in the scratch dir's `backups/`.
fn local_export(database: &str, extra: &str) -> Pgkeep {
    Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "export", database)
            .set("parallel", 2)
            .raw(extra)
    })
}

/// `pgkeep restore ID --target URL --create --jobs JOBS`: a restore into a new database.
async fn restore_new(p: &Pgkeep, id: &str, target_url: &str, jobs: &str) -> Run {
    p.run(&[
        "restore", id, "--target", target_url, "--create", "--jobs", jobs,
    ])
    .await
}

fn manifest(p: &Pgkeep, id: &str) -> serde_json::Value {
    let text =
        std::fs::read_to_string(p.store_dir().join(format!("main/{id}/manifest.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn table_objects(m: &serde_json::Value) -> Vec<(String, u64)> {
    m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["role"] == "table")
        .map(|o| {
            (
                o["table"].as_str().unwrap().to_string(),
                o["rows"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagila_export_restores_both_ways_with_parallel_jobs() {
    let c = cluster();
    let db = c.pagila_db("export_pagila").await;
    let before = c.snapshot(&db).await;
    let p = local_export(&c.url(&db), "");
    let id = p.backup_ok().await;

    let m = manifest(&p, &id);
    assert_eq!(m["kind"], "export");
    assert!(m["snapshot"].as_str().is_some_and(|s| !s.is_empty()));
    let tables = table_objects(&m);
    // Partitioned `payment` is exported through its leaves; the parent has no object.
    assert!(
        tables
            .iter()
            .any(|(t, _)| t == "\"public\".\"payment_p2022_01\""),
        "{tables:?}"
    );
    assert!(
        !tables.iter().any(|(t, _)| t == "\"public\".\"payment\""),
        "{tables:?}"
    );
    let rows: u64 = tables.iter().map(|(_, r)| r).sum();
    assert_eq!(
        rows,
        before.total_rows() - matview_rows(&before),
        "{tables:?}"
    );
    assert!(
        m["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "\"public\".\"actor_actor_id_seq\"")
    );

    for jobs in ["1", "3"] {
        let restored = c.unique_name("export_pagila_restored");
        restore_new(&p, &id, &c.url(&restored), jobs)
            .await
            .expect_code(0);
        assert_same(&before, &c.snapshot(&restored).await);
    }
}

fn matview_rows(s: &crate::common::pg::DbSnapshot) -> u64 {
    s.tables
        .iter()
        .filter(|(name, _)| name.contains("rental_by_category"))
        .map(|(_, d)| d.rows)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_export_through_garage_restores_from_the_captured_schema() {
    let Some(target) = s3::garage("export_torture") else {
        return;
    };
    let c = cluster();
    let db = c.torture_db("export_torture").await;
    let before = c.snapshot(&db).await;
    let p = Pgkeep::with_config(&format!(
        "[jobs.main]\nkind = \"export\"\ndatabase = \"{}\"\nparallel = 2\n",
        c.url(&db)
    ))
    .envs(&target.pgkeep_env());
    let id = p.backup_ok().await;
    let restored = c.unique_name("export_torture_restored");
    restore_new(&p, &id, &c.url(&restored), "2")
        .await
        .expect_code(0);
    assert_same(&before, &c.snapshot(&restored).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_and_exclude_patterns_select_tables() {
    let c = cluster();
    let db = c.pagila_db("export_patterns").await;
    let p = local_export(
        &c.url(&db),
        "include = [\"public.film*\", \"public.payment\"]\nexclude = [\"public.film_text\", \"*.payment_p2022_07\"]\n",
    );
    let id = p.backup_ok().await;
    let mut names: Vec<String> = table_objects(&manifest(&p, &id))
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    names.sort();
    let expected: Vec<String> = [
        "film",
        "film_actor",
        "film_category",
        "payment_p2022_01",
        "payment_p2022_02",
        "payment_p2022_03",
        "payment_p2022_04",
        "payment_p2022_05",
        "payment_p2022_06",
    ]
    .iter()
    .map(|n| format!("\"public\".\"{n}\""))
    .collect();
    assert_eq!(names, expected);

    // A selective restore of one table from the captured schema.
    let restored = c.unique_name("export_one_table");
    p.run(&[
        "restore",
        &id,
        "--target",
        &c.url(&restored),
        "--create",
        "--tables",
        "public.film",
    ])
    .await
    .expect_code(0);
    let client = c.connect(&restored).await;
    let films: i64 = client
        .query_one("SELECT count(*) FROM film", &[])
        .await
        .unwrap()
        .get(0);
    let actors: i64 = client
        .query_one("SELECT count(*) FROM film_actor", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!((films, actors), (1000, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_makes_the_export_fail_loudly() {
    let c = cluster();
    let db = c.torture_db("export_rls").await;
    let role = c.unique_name("rls_reader");
    c.create_role_with_password(&role, "pw").await;
    c.psql_sql("postgres", &format!("GRANT pg_read_all_data TO {role}"))
        .await;
    let p = local_export(&c.url_as(&role, Some("pw"), &db), "globals = false\n");
    let run = p.run(&["backup"]).await.expect_code(1);
    let line = run.error_line();
    assert!(
        line.contains("row-level security") || line.contains("row security"),
        "{line}"
    );
    assert!(p.stored_files().is_empty(), "{:?}", p.stored_files());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inheritance_generated_columns_and_large_objects() {
    let c = cluster();
    let db = c.torture_db("export_inherit").await;
    c.psql_file(
        &db,
        crate::common::pg::fixtures_dir().join("large_objects.sql"),
    )
    .await;
    let p = local_export(&c.url(&db), "");
    let id = p.backup_ok().await;
    let m = manifest(&p, &id);
    let client = c.connect(&db).await;
    let own: i64 = client
        .query_one("SELECT count(*) FROM ONLY torture.vehicles", &[])
        .await
        .unwrap()
        .get(0);
    let objects = m["objects"].as_array().unwrap();
    let vehicles = objects
        .iter()
        .find(|o| o["table"] == "\"torture\".\"vehicles\"")
        .unwrap();
    assert_eq!(
        vehicles["rows"].as_i64().unwrap(),
        own,
        "a parent holds only its own rows"
    );
    let generated = objects
        .iter()
        .find(|o| o["table"] == "\"torture\".\"generated\"")
        .unwrap();
    let total = generated["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|col| col["name"] == "total")
        .unwrap();
    assert_eq!(total["generated"], true);
    // The stored data is plain COPY text without the generated columns.
    let key = generated["key"].as_str().unwrap();
    let out = std::process::Command::new("gunzip")
        .arg("-c")
        .arg(p.store_dir().join(format!("main/{id}/{key}")))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    let data_columns = generated["columns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["generated"] != true)
        .count();
    assert_eq!(first.split('\t').count(), data_columns, "{first}");
    assert!(m["large_objects"]["count"].as_i64().unwrap() > 0);
    assert_eq!(m["large_objects"]["included"], false);
}

/// `pg_dump` of `db` as SQL with psql's `\restrict` lines removed.
async fn dump_sql(db: &str, args: &[&str]) -> String {
    let c = cluster();
    let out = c
        .command("pg_dump")
        .args(args)
        .args(["--dbname", &c.url(db)])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .fold(String::new(), |mut acc, l| {
            acc.push_str(l);
            acc.push('\n');
            acc
        })
}

/// A migrations directory holding the schema of `db`: tables first, then what pg_dump puts
/// after the data (keys, indexes, foreign keys, triggers, NOT VALID checks).
async fn migrations_from(db: &str, dir: &Path) {
    let pre = dump_sql(db, &["--schema-only", "--section=pre-data"]).await;
    let post = dump_sql(db, &["--schema-only", "--section=post-data"]).await;
    std::fs::write(dir.join("0001_tables.sql"), pre).unwrap();
    std::fs::write(dir.join("0002_constraints.sql"), post).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torture_built_by_migrations_restores_both_ways() {
    let c = cluster();
    let template = c.torture_db("mig_template").await;
    let dir = tempfile::tempdir().unwrap();
    migrations_from(&template, dir.path()).await;

    // The application database: tables by `pgkeep migrate`, the data, then the rest.
    let app = c.create_db("mig_app").await;
    let migrate = Pgkeep::with_config("");
    let dir_arg = dir.path().display().to_string();
    migrate
        .run(&[
            "migrate",
            "--database",
            &c.url(&app),
            "--dir",
            &dir_arg,
            "--target-version",
            "1",
        ])
        .await
        .expect_code(0);
    let data_sql = dump_sql(&template, &["--data-only", "--disable-triggers"]).await;
    c.psql_sql(&app, &data_sql).await;
    migrate
        .run(&["migrate", "--database", &c.url(&app), "--dir", &dir_arg])
        .await
        .expect_code(0);
    let tracking = "pgkeep_schema_migrations";
    let before = c.snapshot_excluding(&app, &[tracking]).await;

    let target = s3::garage("export_migrations");
    let p = Pgkeep::with_config(&format!(
        "[jobs.main]\nkind = \"export\"\ndatabase = \"{}\"\nparallel = 2\nmigrations = {{ dir = \"{}\" }}\n",
        c.url(&app),
        dir.path().display()
    ));
    let p = if let Some(t) = &target {
        p.envs(&t.pgkeep_env())
    } else {
        let store = p.dir.path().join("backups");
        p.env(
            "PGKEEP_STORAGE__URL",
            &format!("file://{}", store.display()),
        )
    };
    let id = p.backup_ok().await;
    let show = p.run(&["show", &id, "--json"]).await.expect_code(0);
    let m: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(m["migration_version"], 2);

    for mode in ["migrations", "dump"] {
        let restored = c.unique_name(&format!("mig_restored_{mode}"));
        p.run(&[
            "restore",
            &id,
            "--target",
            &c.url(&restored),
            "--create",
            "--jobs",
            "2",
            "--schema-from",
            mode,
        ])
        .await
        .expect_code(0);
        assert_same(&before, &c.snapshot_excluding(&restored, &[tracking]).await);
    }

    // Drift: a migrations directory that no longer matches the backup is refused before any data.
    let drifted = tempfile::tempdir().unwrap();
    for f in ["0001_tables.sql", "0002_constraints.sql"] {
        std::fs::copy(dir.path().join(f), drifted.path().join(f)).unwrap();
    }
    let text = std::fs::read_to_string(drifted.path().join("0002_constraints.sql")).unwrap();
    std::fs::write(
        drifted.path().join("0002_constraints.sql"),
        format!("{text}\nALTER TABLE torture.people ADD COLUMN nickname text;\n"),
    )
    .unwrap();
    let cfg = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&cfg.replace(
        &dir.path().display().to_string(),
        &drifted.path().display().to_string(),
    ));
    let restored = c.unique_name("mig_drift");
    let run = p
        .run(&["restore", &id, "--target", &c.url(&restored), "--create"])
        .await
        .expect_code(1);
    assert!(
        run.stderr.contains("nickname") && run.stderr.contains("--allow-drift"),
        "{}",
        run.stderr
    );
}

mod early;
