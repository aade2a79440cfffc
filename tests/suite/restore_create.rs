//! `restore --create`: the new database gets its source owner, from a dump's archive and from an
//! export's schema archive alike, as `pg_restore --create` gives it.

use super::damage::run;
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{assert_same, cluster, quote_ident};

/// `--create` gives the new database its source owner, from a dump's archive and from an
/// export's schema archive alike, as `pg_restore --create` does; with `--no-owner` the
/// restoring role keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_gives_the_source_owner_to_dump_and_export_restores() {
    let c = cluster();
    let source = c.pagila_db("owner_src").await;
    let owner = c.unique_name("owner_role");
    c.psql_sql(
        "postgres",
        &format!(
            "CREATE ROLE {owner} LOGIN; ALTER DATABASE {} OWNER TO {owner};",
            quote_ident(&source)
        ),
    )
    .await;
    let expected = c.snapshot(&source).await;
    let owner_of = |db: String| async move {
        let client = c.connect("postgres").await;
        let row = client
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[&db],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    };
    let restoring = owner_of("postgres".to_string()).await;
    assert_ne!(restoring, owner);
    for kind in ["dump", "export"] {
        let p = Pgkeep::configured(|store| Toml::local(store).job("main", kind, &c.url(&source)));
        let id = p.backup_ok().await;
        for (extra, want) in [(None, &owner), (Some("--no-owner"), &restoring)] {
            let fresh = c.unique_name("owner_fresh");
            let target = c.url(&fresh);
            let mut args = vec!["restore", id.as_str(), "--target", &target, "--create"];
            args.extend(extra);
            run(&p, &args).await.expect_code(0);
            assert_eq!(&owner_of(fresh.clone()).await, want, "{kind} {extra:?}");
            // (--no-owner leaves every object to the restoring role, the public schema too:
            // not the source's content, by request.)
            if extra.is_none() {
                assert_same(&expected, &c.snapshot(&fresh).await);
            }
        }
    }
}
