//! `restore --globals-only`: the backup's roles restored into a server that lacks them (a
//! login role with a password, a group, a membership, a role setting), passwords only with
//! `--role-passwords`, existing roles left alone unless `--update-roles`, and a failure in
//! the middle applying nothing. `show --globals` prints the verified SQL.

use super::damage::run;
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{Cluster, cluster, quote_ident};

/// The facts a roles restore sets about `role`, as one comparable text; `None` when the role
/// does not exist.
async fn role_facts(c: &Cluster, role: &str) -> Option<String> {
    let client = c.connect("postgres").await;
    let row = client
        .query_opt(
            "SELECT format('login %s super %s limit %s password %s members_of [%s] settings [%s]', \
                    a.rolcanlogin, a.rolsuper, a.rolconnlimit, a.rolpassword IS NOT NULL, \
                    (SELECT string_agg(g.rolname || CASE WHEN m.admin_option THEN ' admin' ELSE '' END, ', ' ORDER BY 1) \
                       FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid WHERE m.member = a.oid), \
                    (SELECT string_agg(c, ', ' ORDER BY c) FROM pg_db_role_setting s, unnest(s.setconfig) c \
                      WHERE s.setrole = a.oid AND s.setdatabase = 0)) \
             FROM pg_authid a WHERE a.rolname = $1",
            &[&role],
        )
        .await
        .unwrap();
    row.map(|r| r.get(0))
}

async fn password_hash(c: &Cluster, role: &str) -> Option<String> {
    let client = c.connect("postgres").await;
    client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
            &[&role],
        )
        .await
        .unwrap()
        .get(0)
}

async fn drop_roles(c: &Cluster, roles: &[&str]) {
    let names: Vec<String> = roles.iter().map(|r| quote_ident(r)).collect();
    c.psql_sql(
        "postgres",
        &format!("DROP ROLE IF EXISTS {}", names.join(", ")),
    )
    .await;
}

/// One test, its parts in sequence: a roles restore applies every missing role of the
/// cluster's backup, so two of them running side by side would create each other's roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_are_restored_created_when_missing_and_left_alone_when_there() {
    created_when_missing_and_left_alone_when_there().await;
    a_failure_in_the_middle_applies_no_role().await;
}

async fn created_when_missing_and_left_alone_when_there() {
    let c = cluster();
    let app = c.unique_name("roles_app");
    let readers = c.unique_name("roles_readers");
    c.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE {readers} NOLOGIN; \
             CREATE ROLE {app} LOGIN PASSWORD 'app-secret' CONNECTION LIMIT 7; \
             GRANT {readers} TO {app} WITH ADMIN OPTION; \
             ALTER ROLE {app} SET work_mem = '7MB'; \
             COMMENT ON ROLE {readers} IS 'read-only people';"
        ),
    )
    .await;
    let app_facts = role_facts(c, &app).await.unwrap();
    assert_eq!(
        app_facts,
        format!(
            "login t super f limit 7 password t members_of [{readers} admin] settings [work_mem=7MB]"
        )
    );
    let readers_facts = role_facts(c, &readers).await.unwrap();
    let hash = password_hash(c, &app).await.unwrap();
    let db = c.create_db("roles_src").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let id = p.backup_ok().await;

    // show --globals prints the SQL, verified.
    let r = run(&p, &["show", &id, "--globals"]).await.expect_code(0);
    assert!(
        r.stdout.contains(&format!("CREATE ROLE {app};")),
        "{}",
        r.stdout
    );

    // Missing roles are created, without the password.
    drop_roles(c, &[&app, &readers]).await;
    let target = c.url("postgres");
    let r = run(&p, &["restore", &id, "--globals-only", "--target", &target])
        .await
        .expect_code(0);
    assert!(
        r.stdout.contains(&format!(
            "role {app}: created (without its password: --role-passwords sets it)"
        )) && r.stdout.contains(&format!("role {readers}: created\n"))
            && r.stdout
                .contains("role postgres: left alone (it runs this restore)"),
        "{}",
        r.stdout
    );
    assert_eq!(
        role_facts(c, &app).await.unwrap(),
        app_facts.replace("password t", "password f")
    );
    assert_eq!(role_facts(c, &readers).await.unwrap(), readers_facts);
    let client = c.connect("postgres").await;
    let comment: Option<String> = client
        .query_one(
            "SELECT shobj_description(oid, 'pg_authid') FROM pg_roles WHERE rolname = $1",
            &[&readers],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(comment.as_deref(), Some("read-only people"));

    // With --role-passwords the password is the source's.
    drop_roles(c, &[&app, &readers]).await;
    run(
        &p,
        &[
            "restore",
            &id,
            "--globals-only",
            "--role-passwords",
            "--target",
            &target,
        ],
    )
    .await
    .expect_code(0);
    assert_eq!(role_facts(c, &app).await.unwrap(), app_facts);
    assert_eq!(password_hash(c, &app).await.as_deref(), Some(hash.as_str()));

    // Existing roles keep what they have now, unless --update-roles.
    c.psql_sql(
        "postgres",
        &format!("ALTER ROLE {app} NOLOGIN CONNECTION LIMIT 2; ALTER ROLE {app} RESET work_mem"),
    )
    .await;
    let changed = role_facts(c, &app).await.unwrap();
    let r = run(&p, &["restore", &id, "--globals-only", "--target", &target])
        .await
        .expect_code(0);
    assert!(
        r.stdout.contains(&format!(
            "role {app}: left alone (it exists; --update-roles updates it)"
        )),
        "{}",
        r.stdout
    );
    assert_eq!(role_facts(c, &app).await.unwrap(), changed);
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--globals-only",
            "--update-roles",
            "--target",
            &target,
        ],
    )
    .await
    .expect_code(0);
    assert!(
        r.stdout.contains(&format!("role {app}: updated")),
        "{}",
        r.stdout
    );
    // Attributes, settings and memberships are the backup's again; the password stays.
    assert_eq!(role_facts(c, &app).await.unwrap(), app_facts);
    drop_roles(c, &[&app, &readers]).await;
}

async fn a_failure_in_the_middle_applies_no_role() {
    let c = cluster();
    // Names sort in the order pg_dumpall writes them: the superuser last.
    let plain = c.unique_name("rolesfail_a_plain");
    let member = c.unique_name("rolesfail_b_member");
    let boss = c.unique_name("rolesfail_c_super");
    c.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE {plain} LOGIN; CREATE ROLE {member} NOLOGIN IN ROLE {plain}; \
             CREATE ROLE {boss} SUPERUSER;"
        ),
    )
    .await;
    let db = c.create_db("rolesfail_src").await;
    let p = Pgkeep::local_dump(&c.url(&db));
    let catalog = c.create_db("rolesfail_catalog").await;
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!(
        "{config}\n[catalog]\ndatabase = \"{}\"\n",
        c.url(&catalog)
    ));
    let id = p.backup_ok().await;
    drop_roles(c, &[&member, &plain, &boss]).await;

    // A role that may create roles, but not superusers: the ordinary roles go through, the
    // superuser fails, and nothing is applied.
    let restorer = c.unique_name("rolesfail_restorer");
    c.psql_sql(
        "postgres",
        &format!("CREATE ROLE {restorer} LOGIN CREATEROLE"),
    )
    .await;
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--globals-only",
            "--target",
            &c.url_as(&restorer, None, "postgres"),
        ],
    )
    .await
    .expect_code(1);
    let line = r.error_line();
    assert!(
        line.contains("superuser") && line.contains("nothing was applied"),
        "{line}"
    );
    for role in [&plain, &member, &boss] {
        assert_eq!(role_facts(c, role).await, None, "{role} must not exist");
    }

    // A dry run decides the same and changes nothing.
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--globals-only",
            "--dry-run",
            "--target",
            &c.url("postgres"),
        ],
    )
    .await
    .expect_code(0);
    assert!(
        r.stdout.contains(&format!("role {boss}: would be created"))
            && r.stdout.contains("(dry run: nothing was changed)"),
        "{}",
        r.stdout
    );
    assert_eq!(role_facts(c, &boss).await, None);

    // As a superuser it applies; the catalog holds both roles restores that ran (the failed
    // one with its error), not the dry run.
    run(
        &p,
        &[
            "restore",
            &id,
            "--globals-only",
            "--target",
            &c.url("postgres"),
        ],
    )
    .await
    .expect_code(0);
    assert!(role_facts(c, &boss).await.is_some());
    let recorded = c
        .connect(&catalog)
        .await
        .query(
            "SELECT x.kind, x.status, x.target, coalesce(x.error, '') FROM pgkeep.restore_run x \
             JOIN pgkeep.backup_run USING (run_id) WHERE backup_id = $1 ORDER BY restore_id",
            &[&id],
        )
        .await
        .unwrap();
    let recorded: Vec<[String; 4]> = recorded
        .iter()
        .map(|r| [r.get(0), r.get(1), r.get(2), r.get(3)])
        .collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert_eq!(recorded[0][..2], ["roles", "failed"], "{recorded:?}");
    assert!(
        recorded[0][2].starts_with(&format!("{restorer}@")) && recorded[0][3].contains("superuser"),
        "{recorded:?}"
    );
    assert_eq!(recorded[1][..2], ["roles", "succeeded"], "{recorded:?}");
    assert!(recorded[1][2].ends_with("/postgres"), "{recorded:?}");
    drop_roles(c, &[&member, &plain, &boss]).await;

    // A backup without globals says so: a usage error.
    let p2 = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "dump", &c.url(&db))
            .set("globals", false)
    });
    let id2 = p2.backup_ok().await;
    let r = run(
        &p2,
        &[
            "restore",
            &id2,
            "--globals-only",
            "--target",
            &c.url("postgres"),
        ],
    )
    .await
    .expect_code(2);
    assert!(
        r.error_line()
            .contains(&format!("backup {id2} has no roles")),
        "{}",
        r.stderr
    );
    // Options of a database restore are usage errors with --globals-only.
    let r = run(
        &p2,
        &[
            "restore",
            &id2,
            "--globals-only",
            "--jobs",
            "2",
            "--target",
            &c.url("postgres"),
        ],
    )
    .await
    .expect_code(2);
    assert!(
        r.stderr
            .contains("'--globals-only' cannot be used with '--jobs"),
        "{}",
        r.stderr
    );
    drop_roles(c, &[&restorer]).await;
}
