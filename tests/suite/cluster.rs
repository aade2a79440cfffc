//! Dump jobs of a whole server (`databases = [...]`): every database the patterns select
//! (never a template, never one that refuses connections) and the roles, in one committed
//! backup; each database restores identically on its own, and all of them onto a new server
//! by the procedure docs/OPERATIONS.md gives; a drill restores and checks every one. A
//! database that fails part-way through the run fails it, names the database, and leaves
//! nothing committed.

use crate::common::cli::{Pgkeep, Run, fake_bin_dir};
use crate::common::config::Toml;
use crate::common::pg::{self, Cluster, assert_same, quote_ident};

/// A name with a space, quotes, a semicolon, a dot and a non-ASCII letter.
const ODD: &str = "Odd \"Name\" ü; x.y";

fn manifest(p: &Pgkeep, job: &str, id: &str) -> serde_json::Value {
    let path = p.store_dir().join(format!("{job}/{id}/manifest.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn server_job(store: &std::path::Path, url: &str) -> Toml {
    Toml::local(store)
        .job("server", "dump", url)
        .set("databases", &["*"][..])
        .set("exclude_databases", &["postgres", "scratch_*"][..])
}

/// Three databases of the source server (one with an odd name, one owned by a role of its
/// own), one that refuses connections, one excluded by pattern and one a restore on another
/// host is building (its mark says so); returns the three names.
async fn populate(src: &Cluster) -> Vec<String> {
    let app = src.pagila_db("app").await;
    src.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE cluster_owner LOGIN PASSWORD 'owner-secret';\n\
             CREATE DATABASE {odd};\n\
             CREATE DATABASE small OWNER cluster_owner;\n\
             CREATE DATABASE closed;\n\
             ALTER DATABASE closed WITH ALLOW_CONNECTIONS false;\n\
             CREATE DATABASE scratch_1;\n\
             CREATE DATABASE small_pgkeep_new_0badf00d;\n\
             COMMENT ON DATABASE small_pgkeep_new_0badf00d IS \
               'pgkeep: restore in progress of backup 20261202T000000.000Z by pid 4242 on elsewhere since 2026-12-02T00:00:00Z';",
            odd = quote_ident(ODD)
        ),
    )
    .await;
    src.load_torture(ODD).await;
    src.psql_sql(
        "small",
        "SET ROLE cluster_owner;\n\
         CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);\n\
         INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 500) g;\n\
         SELECT setval('notes_id_seq', 777);",
    )
    .await;
    let mut names = vec![app, ODD.to_string(), "small".to_string()];
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_is_backed_up_in_one_backup_and_every_database_restores_identically() {
    let src = Cluster::start_with(&[]).expect("source server");
    let new = Cluster::start_with(&[]).expect("new server");
    let names = populate(&src).await;
    let p = Pgkeep::configured(|store| server_job(store, &src.url("postgres")));

    let id = p.backup_ok().await;
    let m = manifest(&p, "server", &id);
    assert_eq!(m["kind"], "cluster", "{m:#}");
    let listed: Vec<&str> = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    // Byte order: templates, `closed` (no connections), `postgres` and `scratch_1` (excluded)
    // and the restore being built are not there.
    assert_eq!(listed, names, "{m:#}");
    let roles: Vec<&str> = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["dump", "dump", "dump", "globals"], "{m:#}");
    for d in m["databases"].as_array().unwrap() {
        let key = d["object"].as_str().unwrap();
        assert!(key.starts_with("databases/"), "{key}");
        assert!(p.store_dir().join(format!("server/{id}/{key}")).is_file());
    }
    let small = &m["databases"][2];
    assert_eq!(small["name"], "small");
    assert_eq!(small["tables"][0]["name"], "\"public\".\"notes\"");
    assert_eq!(small["tables"][0]["rows"], 500);

    let list: serde_json::Value =
        serde_json::from_str(&p.run(&["list", "--json"]).await.expect_code(0).stdout).unwrap();
    assert_eq!(list[0]["kind"], "cluster");
    assert_eq!(
        list[0]["databases"].as_array().unwrap().len(),
        3,
        "{list:#}"
    );
    let shown = p.run(&["show", &id]).await.expect_code(0).stdout;
    for name in &names {
        assert!(shown.contains(name.as_str()), "{name} not in:\n{shown}");
    }

    // A database must be named, and must be one of the backup's.
    let target = new.url("postgres");
    let r = p.run(&["restore", &id, "--target", &target]).await;
    let line = r.expect_code(2).error_line();
    assert!(
        line.contains("holds 3 databases") && line.contains("--database"),
        "{line}"
    );
    assert!(line.contains(ODD), "{line}");
    let r = p
        .run(&["restore", &id, "--database", "nope", "--target", &target])
        .await;
    let line = r.expect_code(2).error_line();
    assert!(line.contains("holds no database 'nope'"), "{line}");
    assert!(!new.database_exists("nope").await);

    p.run(&["verify", &id]).await.expect_code(0);

    // The whole server onto a new one, as docs/OPERATIONS.md does it: the roles, then each
    // database under its own name.
    let server = format!(
        "host={} port={} user=postgres",
        new.socket_dir().display(),
        new.port()
    );
    let script = format!(
        "set -euo pipefail\n\
         pgkeep() {{ '{bin}' --config '{config}' \"$@\"; }}\n\
         pgkeep restore {id} --globals-only --target '{target}'\n\
         pgkeep show {id} --json | jq -r '.databases[].name' | while IFS= read -r db; do\n\
           pgkeep restore {id} --database \"$db\" --target '{server}' --create\n\
         done\n",
        bin = env!("CARGO_BIN_EXE_pgkeep"),
        config = p.config_path().display(),
    );
    let run = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", p.config_path().parent().unwrap())
        .env("PGKEEP_LOG", "pgkeep=warn")
        .output()
        .await
        .unwrap();
    let run = Run::from(&run);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    for name in &names {
        assert_same(&src.snapshot(name).await, &new.snapshot(name).await);
    }
    // With the roles restored first, a database keeps its source owner.
    let owner = new
        .psql_sql(
            "postgres",
            "\\pset tuples_only on\nSELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'small'",
        )
        .await;
    assert_eq!(owner.trim(), "cluster_owner");

    // A drill restores and checks every database, and records one drill of the backup.
    let r = p
        .run(&["drill", "--target", &src.url("postgres")])
        .await
        .expect_code(0);
    assert!(
        r.stdout.contains(&format!("drill of backup {id}")),
        "{}",
        r.stdout
    );
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(p.store_dir().join(format!("server/{id}/drill.json"))).unwrap(),
    )
    .unwrap();
    let counted: u64 = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["tables"].as_array().map_or(0, Vec::len) as u64)
        .sum();
    assert_eq!(record["tables"], counted, "{record:#}");

    // The catalog records the run as one backup of kind `cluster`, with all of its objects.
    src.psql_sql("postgres", "CREATE DATABASE catalog").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!(
        "{config}\n[catalog]\ndatabase = \"{}\"\n",
        src.url("catalog")
    ));
    // A restore of one database of it, before any sync, records the backup as stored.
    p.run(&[
        "restore",
        &id,
        "--database",
        "small",
        "--target",
        &src.url("small_again"),
        "--create",
    ])
    .await
    .expect_code(0);
    let client = src.connect("catalog").await;
    let recorded = async || {
        let row = client
            .query_one(
                "SELECT kind, backup_id, (SELECT count(*) FROM pgkeep.backup_object o \
                 WHERE o.run_id = r.run_id), (SELECT string_agg(kind || ' ' || status, ',') \
                 FROM pgkeep.restore_run x WHERE x.run_id = r.run_id) FROM pgkeep.backup_run r",
                &[],
            )
            .await
            .unwrap();
        let (kind, backup, objects, restores): (String, String, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        (kind, backup, objects, restores)
    };
    let expected = (
        "cluster".to_string(),
        id.clone(),
        4,
        "restore succeeded".to_string(),
    );
    assert_eq!(recorded().await, expected);
    p.run(&["catalog", "sync"]).await.expect_code(0);
    assert_eq!(recorded().await, expected);
}

/// `pgkeep backup` that must fail: its error line, after checking that nothing of the run is
/// left in the store.
async fn fails_leaving_nothing(p: &Pgkeep) -> String {
    let r = p.run(&["backup"]).await;
    let line = r.expect_code(1).error_line();
    let left = p.stored_files();
    assert!(
        left.iter().all(|f| !f.starts_with("server/")),
        "the failed run left {left:?}"
    );
    let list = p.run(&["list"]).await.expect_code(0).stdout;
    assert!(list.starts_with("no backups"), "{list}");
    line
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_failing_part_way_fails_the_run_and_commits_nothing() {
    let pg = pg::cluster();
    let prefix = pg.unique_name("whole");
    let mut names = Vec::new();
    for suffix in ["a", "b", "c"] {
        let name = format!("{prefix}_{suffix}");
        pg.psql_sql(
            "postgres",
            &format!("CREATE DATABASE {}", quote_ident(&name)),
        )
        .await;
        pg.psql_sql(
            &name,
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g;",
        )
        .await;
        names.push(name);
    }
    let pattern = format!("{prefix}_*");
    let job = |store: &std::path::Path, url: &str| {
        Toml::local(store)
            .job("server", "dump", url)
            .set("databases", &[pattern.as_str()][..])
    };

    // pg_dump of the last database dies after part of its archive; the two before it are
    // stored by then.
    let bin = fake_bin_dir(
        pg.bin_dir(),
        &format!(
            "if [ \"$PGDATABASE\" = '{}' ]; then \"$REAL_BIN/pg_dump\" \"$@\" | head -c 20000; \
             echo 'pg_dump: error: connection lost' >&2; exit 1; fi\n\
             exec \"$REAL_BIN/pg_dump\" \"$@\"",
            names[2]
        ),
    );
    let p = Pgkeep::configured(|store| {
        job(store, &pg.url("postgres")).set("pg_bin_dir", bin.path().to_str().unwrap())
    });
    let line = fails_leaving_nothing(&p).await;
    assert!(line.contains("job 'server'"), "{line}");
    assert!(line.contains(&format!("database '{}'", names[2])), "{line}");
    assert!(line.contains("connection lost"), "{line}");

    // A database the backup role may not connect to: the server's own refusal, named.
    let role = pg.unique_name("whole_reader");
    pg.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE {r} LOGIN; GRANT pg_read_all_data TO {r};\n\
             REVOKE CONNECT ON DATABASE {b} FROM PUBLIC;",
            r = quote_ident(&role),
            b = quote_ident(&names[1])
        ),
    )
    .await;
    let p = Pgkeep::configured(|store| job(store, &pg.url_as(&role, None, "postgres")));
    // `check` says so before any run does.
    let check = p.run(&["check"]).await.expect_code(1).stdout;
    assert!(check.contains("would back up 3 databases"), "{check}");
    assert!(
        check.contains(&format!("FAIL job server: may not connect to {}", names[1])),
        "{check}"
    );
    let line = fails_leaving_nothing(&p).await;
    assert!(line.contains(&format!("database '{}'", names[1])), "{line}");
    assert!(line.contains("permission denied"), "{line}");

    // Patterns that select nothing take no backup of nothing.
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("server", "dump", &pg.url("postgres"))
            .set("databases", &[format!("{prefix}_none_*").as_str()][..])
    });
    let line = fails_leaving_nothing(&p).await;
    assert!(line.contains("no database of the server matches"), "{line}");

    // A name without wildcards is a database the run must back up: one the server lacks (a
    // typo), or one that refuses connections, fails the run instead of being passed over; a
    // wildcard passes over the closed one with a warning.
    let closed = format!("{prefix}_closed");
    pg.psql_sql(
        "postgres",
        &format!(
            "CREATE DATABASE {c}; ALTER DATABASE {c} ALLOW_CONNECTIONS false;",
            c = quote_ident(&closed)
        ),
    )
    .await;
    for (named, why) in [
        (format!("{prefix}_typo"), "the server has no such database"),
        (closed.clone(), "it does not accept connections"),
        ("template1".to_string(), "it is a template"),
    ] {
        let p = Pgkeep::configured(|store| {
            Toml::local(store)
                .job("server", "dump", &pg.url("postgres"))
                .set("databases", &[names[0].as_str(), named.as_str()][..])
        });
        let line = fails_leaving_nothing(&p).await;
        assert!(
            line.contains(&format!(
                "`databases` names '{named}', which cannot be backed up: {why}"
            )),
            "{line}"
        );
    }

    // With the role allowed in again, the same job commits all three.
    pg.psql_sql(
        "postgres",
        &format!(
            "GRANT CONNECT ON DATABASE {} TO PUBLIC",
            quote_ident(&names[1])
        ),
    )
    .await;
    let p = Pgkeep::configured(|store| job(store, &pg.url_as(&role, None, "postgres")));
    let r = p.run(&["backup"]).await.expect_code(0);
    assert!(
        r.stderr.contains("leaving out a database of the server") && r.stderr.contains(&closed),
        "{}",
        r.stderr
    );
    let m = manifest(&p, "server", &r.last_line());
    let backed_up: Vec<&str> = m["databases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(backed_up, names, "{m:#}");
    pg.psql_sql(
        "postgres",
        &format!(
            "ALTER DATABASE {} ALLOW_CONNECTIONS true",
            quote_ident(&closed)
        ),
    )
    .await;
    pg.drop_db(&closed).await;
    for n in &names {
        pg.drop_db(n).await;
    }
}
