//! What a restore does to its target: built beside it and swapped in, so a success leaves
//! exactly the backup's contents with the target's own properties (owner, privileges, settings,
//! comment, connection limit) and a failure — a usage error, a load that fails, a role that may
//! not, Ctrl-C, SIGKILL — leaves it exactly as it was.

use std::time::Duration;

use super::damage::{exists, populated_target, run, side_databases};
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{Cluster, assert_same, cluster, quote_ident};

async fn dump_job(c: &Cluster, prefix: &str) -> (Pgkeep, String, String) {
    let db = c.pagila_db(prefix).await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;
    (p, db, id)
}

/// The database-level facts a replacement must carry, as one comparable text.
async fn properties(c: &Cluster, db: &str) -> String {
    let client = c.connect("postgres").await;
    let row = client
        .query_one(
            "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, \
                    COALESCE(shobj_description(d.oid, 'pg_database'), ''), \
                    COALESCE((SELECT string_agg(format('%s %s %s', a.grantee::regrole, \
                        a.privilege_type, a.is_grantable), ', ' ORDER BY 1) \
                        FROM aclexplode(d.datacl) a), 'default'), \
                    COALESCE((SELECT string_agg(format('%s %s', s.setrole::regrole, c), ', ' ORDER BY 1) \
                        FROM pg_db_role_setting s, unnest(s.setconfig) c \
                        WHERE s.setdatabase = d.oid), '') \
             FROM pg_database d WHERE d.datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    format!(
        "owner {} limit {} comment '{}' acl [{}] settings [{}]",
        row.get::<_, String>(0),
        row.get::<_, i32>(1),
        row.get::<_, String>(2),
        row.get::<_, String>(3),
        row.get::<_, String>(4)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_replaces_the_contents_and_keeps_the_targets_own_properties() {
    let c = cluster();
    let (p, source, id) = dump_job(c, "swap_src").await;
    let expected = c.snapshot(&source).await;
    let (victim, _) = populated_target(c).await;
    let owner = c.unique_name("swap_owner");
    let reader = c.unique_name("swap_reader");
    let v = quote_ident(&victim);
    c.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE {owner} LOGIN; CREATE ROLE {reader} LOGIN; \
             ALTER DATABASE {v} OWNER TO {owner}; \
             REVOKE ALL ON DATABASE {v} FROM PUBLIC; GRANT CONNECT ON DATABASE {v} TO {reader}; \
             ALTER DATABASE {v} SET search_path = \"$user\", public, extra; \
             ALTER DATABASE {v} SET work_mem = '64MB'; \
             ALTER ROLE {reader} IN DATABASE {v} SET statement_timeout = '5s'; \
             ALTER DATABASE {v} CONNECTION LIMIT 40; \
             COMMENT ON DATABASE {v} IS 'orders, do not drop';"
        ),
    )
    .await;
    let props = properties(c, &victim).await;
    // A session on the target is ended by the swap, as --clean always did.
    let session = c.connect(&victim).await;
    let r = run(
        &p,
        &["restore", &id, "--target", &c.url(&victim), "--clean"],
    )
    .await
    .expect_code(0);
    assert!(
        r.stdout.contains("the previous database was dropped"),
        "{}",
        r.stdout
    );
    assert!(
        session.query_one("SELECT 1", &[]).await.is_err(),
        "the old session must be gone"
    );
    assert_same(&expected, &c.snapshot(&victim).await);
    assert_eq!(properties(c, &victim).await, props);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());

    // --keep-old keeps the replaced database under the name it prints.
    let before = c.snapshot(&victim).await;
    c.psql_sql(&victim, "CREATE TABLE added_later (x int)")
        .await;
    let changed = c.snapshot(&victim).await;
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&victim),
            "--clean",
            "--keep-old",
        ],
    )
    .await
    .expect_code(0);
    let kept = side_databases(c, &victim).await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(r.stdout.contains(&kept[0]), "{}", r.stdout);
    assert_same(&changed, &c.snapshot(&kept[0]).await);
    assert_same(&before, &c.snapshot(&victim).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_target_is_replaced_and_create_makes_a_missing_one() {
    let c = cluster();
    let (p, source, id) = dump_job(c, "swap_empty_src").await;
    let expected = c.snapshot(&source).await;
    let empty = c.create_db("swap_empty").await;
    c.psql_sql(
        "postgres",
        &format!("COMMENT ON DATABASE {} IS 'kept'", quote_ident(&empty)),
    )
    .await;
    let props = properties(c, &empty).await;
    run(&p, &["restore", &id, "--target", &c.url(&empty)])
        .await
        .expect_code(0);
    assert_same(&expected, &c.snapshot(&empty).await);
    assert_eq!(properties(c, &empty).await, props);

    let fresh = c.unique_name("swap_fresh");
    run(
        &p,
        &["restore", &id, "--target", &c.url(&fresh), "--create"],
    )
    .await
    .expect_code(0);
    assert_same(&expected, &c.snapshot(&fresh).await);
    assert_eq!(side_databases(c, &fresh).await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_errors_change_nothing_and_exit_2() {
    let c = cluster();
    let db = c.pagila_db("swap_usage_src").await;
    let p = Pgkeep::configured(|store| Toml::local(store).job("main", "export", &c.url(&db)));
    let id = p.backup_ok().await;
    let (victim, before) = populated_target(c).await;
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&victim),
            "--clean",
            "--tables",
            "public.nomatch*",
        ],
    )
    .await
    .expect_code(2);
    assert!(
        r.error_line().contains("no table of backup"),
        "{}",
        r.stderr
    );
    assert_same(&before, &c.snapshot(&victim).await);

    let fresh = c.unique_name("swap_usage_new");
    run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--tables",
            "nomatch",
        ],
    )
    .await
    .expect_code(2);
    assert!(
        !exists(c, &fresh).await,
        "--create must not create before refusing"
    );

    let r = run(&p, &["restore", &id, "--target", "bogus=1"])
        .await
        .expect_code(2);
    assert!(r.error_line().contains("--target"), "{}", r.stderr);
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&victim),
            "--clean",
            "--in-place",
        ],
    )
    .await
    .expect_code(2);
    assert!(r.error_line().contains("--in-place"), "{}", r.stderr);
    assert_same(&before, &c.snapshot(&victim).await);

    // A dry run prints the plan and changes nothing.
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&victim),
            "--clean",
            "--dry-run",
        ],
    )
    .await
    .expect_code(0);
    assert!(
        r.stdout.contains("restore plan")
            && r.stdout.contains("it is replaced (--clean)")
            && r.stdout.contains("nothing was changed"),
        "{}",
        r.stdout
    );
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());

    // `postgres` and `template1` are on every server, and often empty: a --target naming one
    // by mistake is refused, not replaced as an empty target would be (planned only, as
    // dry runs: the test cluster's own databases are never at stake).
    for maintenance in ["postgres", "template1"] {
        let target = c.url(maintenance);
        let r = run(&p, &["restore", &id, "--target", &target, "--dry-run"])
            .await
            .expect_code(1);
        assert!(
            r.error_line().contains(&format!(
                "target database '{maintenance}' is one every server has; refusing to replace it with the backup's database '{db}' without --clean"
            )),
            "{}",
            r.stderr
        );
        let r = run(
            &p,
            &["restore", &id, "--target", &target, "--clean", "--dry-run"],
        )
        .await
        .expect_code(0);
        assert!(r.stdout.contains("nothing was changed"), "{}", r.stdout);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::many_single_char_names)]
async fn a_load_that_fails_leaves_the_target_as_it_was() {
    use std::io::{Read as _, Write as _};
    let c = cluster();
    let db = c.pagila_db("swap_loadfail_src").await;
    let p = Pgkeep::configured(|store| Toml::local(store).job("main", "export", &c.url(&db)));
    let id = p.backup_ok().await;
    // A table object that is intact as stored (sizes, sha256 and manifest all agree) but holds
    // a row its table refuses: the backup passes every check and fails in COPY.
    let dir = p.store_dir().join("main").join(&id);
    let manifest_path = dir.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let object = m["objects"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|o| o["table"] == "\"public\".\"language\"")
        .unwrap();
    let path = dir.join(object["key"].as_str().unwrap());
    let mut data = Vec::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut data)
        .unwrap();
    data.extend_from_slice(b"not-a-number\tKlingon\t2026-01-01 00:00:00+00\n");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(1));
    e.write_all(&data).unwrap();
    let stored = e.finish().unwrap();
    std::fs::write(&path, &stored).unwrap();
    object["raw_bytes"] = data.len().into();
    object["stored_bytes"] = stored.len().into();
    object["sha256"] = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&stored)).into();
    object["rows"] = (object["rows"].as_u64().unwrap() + 1).into();
    pgkeep::manifest::seal(&mut m);
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    run(&p, &["verify", &id]).await.expect_code(0);

    for jobs in ["1", "2"] {
        let (victim, before) = populated_target(c).await;
        let r = run(
            &p,
            &[
                "restore",
                &id,
                "--target",
                &c.url(&victim),
                "--clean",
                "--jobs",
                jobs,
            ],
        )
        .await
        .expect_code(1);
        assert!(
            r.error_line().contains("\"public\".\"language\""),
            "{}",
            r.stderr
        );
        assert_same(&before, &c.snapshot(&victim).await);
        assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_may_not_create_databases_is_told_before_anything_changes() {
    let c = cluster();
    let (p, source, id) = dump_job(c, "swap_role_src").await;
    let role = c.unique_name("swap_nocreatedb");
    c.psql_sql("postgres", &format!("CREATE ROLE {role} LOGIN"))
        .await;
    let (victim, before) = populated_target(c).await;
    c.psql_sql(
        "postgres",
        &format!("ALTER DATABASE {} OWNER TO {role}", quote_ident(&victim)),
    )
    .await;
    let before_props = properties(c, &victim).await;
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url_as(&role, None, &victim),
            "--clean",
            "--no-owner",
        ],
    )
    .await
    .expect_code(1);
    let line = r.error_line();
    assert!(
        line.contains("CREATEDB") && line.contains("--in-place"),
        "{line}"
    );
    assert_same(&before, &c.snapshot(&victim).await);
    assert_eq!(properties(c, &victim).await, before_props);

    // --in-place restores into an empty database the role owns, without creating any.
    let empty = c.create_db("swap_inplace").await;
    c.psql_sql(
        "postgres",
        &format!(
            "ALTER DATABASE {} OWNER TO {role}; ALTER SCHEMA public OWNER TO {role}",
            quote_ident(&empty)
        ),
    )
    .await;
    c.psql_sql(&empty, &format!("ALTER SCHEMA public OWNER TO {role}"))
        .await;
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url_as(&role, None, &empty),
            "--in-place",
            "--no-owner",
        ],
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected = c.snapshot(&source).await;
    let got = c.snapshot(&empty).await;
    assert_eq!(got.total_rows(), expected.total_rows());
}

async fn wait_for_copy(c: &Cluster) {
    let client = c.connect("postgres").await;
    for _ in 0..300 {
        let n: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE '%\\_pgkeep\\_new\\_%' \
                 AND query ILIKE 'COPY%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the restore never reached COPY");
}

/// A big table, so that a restore spends long enough loading to be interrupted.
async fn big_export(c: &Cluster, prefix: &str) -> (Pgkeep, String) {
    let db = c.create_db(prefix).await;
    c.psql_sql(
        &db,
        "CREATE TABLE big (id bigint PRIMARY KEY, pad text); \
         INSERT INTO big SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 600000) g;",
    )
    .await;
    let p = Pgkeep::configured(|store| Toml::local(store).job("main", "export", &c.url(&db)));
    let id = p.backup_ok().await;
    (p, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigkill_mid_restore_leave_the_target_as_it_was() {
    let c = cluster();
    let (p, id) = big_export(c, "swap_signal_src").await;
    let (victim, before) = populated_target(c).await;
    let url = c.url(&victim);
    for (signal, code) in [(libc_sigint(), 130), (9, -1)] {
        let mut child = p.spawn(&["restore", &id, "--target", &url, "--clean"]);
        wait_for_copy(c).await;
        let pid = child.id().expect("running");
        std::process::Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .unwrap();
        let status = tokio::time::timeout(Duration::from_mins(1), child.wait())
            .await
            .expect("pgkeep must stop within seconds")
            .unwrap();
        assert_eq!(status.code().unwrap_or(-1), code, "signal {signal}");
        assert_same(&before, &c.snapshot(&victim).await);
        if signal == 9 {
            // Killed outright, it left its unfinished database; the next restore removes it.
            assert_eq!(side_databases(c, &victim).await.len(), 1);
        } else {
            assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());
        }
    }
    run(&p, &["restore", &id, "--target", &url, "--clean"])
        .await
        .expect_code(0);
    assert_eq!(side_databases(c, &victim).await, Vec::<String>::new());
}

fn libc_sigint() -> i32 {
    2
}
