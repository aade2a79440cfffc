//! Selective restores (`--tables`): of a dump, exactly the selected tables with their data,
//! indexes, triggers and the foreign keys among them (`--jobs 1` streamed, `--jobs 2`
//! staged), and none to tables left out; of an export with the captured schema, the foreign
//! keys between restored tables recreated and validated.

use super::damage::{exists, run};
use crate::common::cli::Pgkeep;
use crate::common::config::Toml;
use crate::common::pg::{Cluster, DbSnapshot, cluster};

const PICKED: &str = "public.film,public.language,public.film_actor,public.actor";

/// The user tables of `db`, `"schema"."name"` as pgkeep prints them, sorted.
pub async fn tables_of(c: &Cluster, db: &str) -> Vec<String> {
    let client = c.connect(db).await;
    client
        .query(
            "SELECT '\"' || replace(n.nspname, '\"', '\"\"') || '\".\"' \
                    || replace(r.relname, '\"', '\"\"') || '\"' \
             FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace \
             WHERE r.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Every foreign key of `db` as `table name -> referenced (validated)`, sorted.
pub async fn foreign_keys(c: &Cluster, db: &str) -> Vec<String> {
    let client = c.connect(db).await;
    client
        .query(
            "SELECT format('%s %s -> %s%s', conrelid::regclass, conname, confrelid::regclass, \
                    CASE WHEN convalidated THEN '' ELSE ' (not valid)' END) \
             FROM pg_constraint WHERE contype = 'f' AND conparentid = 0 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The indexes and triggers of `tables` in `db`, sorted.
async fn indexes_and_triggers(c: &Cluster, db: &str, tables: &[&str]) -> Vec<String> {
    let client = c.connect(db).await;
    let tables: Vec<String> = tables.iter().map(ToString::to_string).collect();
    client
        .query(
            "WITH t AS (SELECT r.oid, n.nspname || '.' || r.relname AS name FROM pg_class r \
                        JOIN pg_namespace n ON n.oid = r.relnamespace) \
             SELECT format('index %s on %s', i.relname, t.name) \
             FROM pg_index x JOIN t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid \
             WHERE t.name = ANY($1) \
             UNION ALL SELECT format('trigger %s on %s', g.tgname, t.name) \
             FROM pg_trigger g JOIN t ON t.oid = g.tgrelid \
             WHERE NOT g.tgisinternal AND t.name = ANY($1) \
             ORDER BY 1",
            &[&tables],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The selected tables' rows are exactly the source's.
fn assert_same_tables(source: &DbSnapshot, restored: &DbSnapshot, tables: &[&str]) {
    for t in tables {
        assert_eq!(
            restored.tables.get(*t),
            source.tables.get(*t),
            "content of {t} differs"
        );
        assert!(source.tables[*t].rows > 0, "{t} has rows in the source");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_restores_exactly_the_selected_tables_with_their_keys() {
    let c = cluster();
    let source = c.pagila_db("sel_dump_src").await;
    let p = Pgkeep::configured(|store| {
        Toml::local(store)
            .job("main", "dump", &c.url(&source))
            .set("globals", false)
    });
    let id = p.backup_ok().await;
    let expected = c.snapshot(&source).await;
    let four = [
        "public.actor",
        "public.film",
        "public.film_actor",
        "public.language",
    ];
    let fresh = c.unique_name("sel_dump_one");
    run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--tables",
            PICKED,
        ],
    )
    .await
    .expect_code(0);
    assert_eq!(
        tables_of(c, &fresh).await,
        [
            "\"public\".\"actor\"",
            "\"public\".\"film\"",
            "\"public\".\"film_actor\"",
            "\"public\".\"language\""
        ]
    );
    let got = c.snapshot(&fresh).await;
    assert_same_tables(&expected, &got, &four);
    assert_eq!(
        foreign_keys(c, &fresh).await,
        [
            "film film_language_id_fkey -> language",
            "film film_original_language_id_fkey -> language",
            "film_actor film_actor_actor_id_fkey -> actor",
            "film_actor film_actor_film_id_fkey -> film",
        ]
    );
    let shape = indexes_and_triggers(c, &fresh, &four).await;
    assert!(
        shape.contains(&"trigger film_fulltext_trigger on public.film".to_string()),
        "{shape:?}"
    );
    assert!(
        shape.contains(&"index film_pkey on public.film".to_string()),
        "{shape:?}"
    );
    assert_eq!(shape, indexes_and_triggers(c, &source, &four).await);

    // --jobs 2 (staged), with a table whose key to a table left out is not restored.
    let fresh2 = c.unique_name("sel_dump_two");
    let with_inventory = format!("{PICKED},public.inventory");
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh2),
            "--create",
            "--tables",
            &with_inventory,
            "--dry-run",
            "--json",
        ],
    )
    .await
    .expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        plan["content"]["foreign_keys_left_out"],
        serde_json::json!([{
            "table": "\"public\".\"inventory\"",
            "constraint": "inventory_store_id_fkey",
            "references": ["\"public\".\"store\""],
        }])
    );
    assert!(!exists(c, &fresh2).await, "a dry run creates nothing");
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh2),
            "--create",
            "--jobs",
            "2",
            "--tables",
            &with_inventory,
        ],
    )
    .await
    .expect_code(0);
    // The real restore names what it leaves out too.
    assert!(
        r.stderr.contains("inventory_store_id_fkey") && r.stderr.contains("VIEW public film_list"),
        "{}",
        r.stderr
    );
    let five = [
        "public.actor",
        "public.film",
        "public.film_actor",
        "public.inventory",
        "public.language",
    ];
    assert_eq!(tables_of(c, &fresh2).await.len(), 5);
    assert_same_tables(&expected, &c.snapshot(&fresh2).await, &five);
    let keys = foreign_keys(c, &fresh2).await;
    assert!(
        keys.contains(&"inventory inventory_film_id_fkey -> film".to_string()),
        "{keys:?}"
    );
    assert!(keys.iter().all(|k| !k.contains("store")), "{keys:?}");
    assert_eq!(keys.len(), 5, "{keys:?}");

    // A pattern that matches nothing is a usage error naming it; nothing is created.
    let none = c.unique_name("sel_dump_none");
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&none),
            "--create",
            "--tables",
            "public.film,public.nosuch*",
        ],
    )
    .await
    .expect_code(2);
    let line = r.error_line();
    assert!(
        line.contains("--tables public.nosuch*") && !line.contains("film"),
        "{line}"
    );
    assert!(!exists(c, &none).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_restore_keeps_the_foreign_keys_between_restored_tables() {
    let c = cluster();
    let source = c.pagila_db("sel_export_src").await;
    let p = Pgkeep::configured(|store| Toml::local(store).job("main", "export", &c.url(&source)));
    let id = p.backup_ok().await;
    let expected = c.snapshot(&source).await;
    let picked = "public.film,public.language,public.inventory";
    let fresh = c.unique_name("sel_export");
    let r = run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--tables",
            picked,
            "--schema-from",
            "dump",
            "--dry-run",
            "--json",
        ],
    )
    .await
    .expect_code(0);
    let plan: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(plan["content"]["kind"], "export");
    assert_eq!(
        plan["content"]["tables"],
        serde_json::json!([
            "\"public\".\"film\"",
            "\"public\".\"inventory\"",
            "\"public\".\"language\""
        ])
    );
    assert_eq!(
        plan["content"]["foreign_keys_left_out"][0]["constraint"],
        "inventory_store_id_fkey"
    );
    run(
        &p,
        &[
            "restore",
            &id,
            "--target",
            &c.url(&fresh),
            "--create",
            "--tables",
            picked,
            "--schema-from",
            "dump",
        ],
    )
    .await
    .expect_code(0);
    assert_same_tables(
        &expected,
        &c.snapshot(&fresh).await,
        &["public.film", "public.inventory", "public.language"],
    );
    let keys = foreign_keys(c, &fresh).await;
    assert_eq!(
        keys,
        [
            "film film_language_id_fkey -> language",
            "film film_original_language_id_fkey -> language",
            "inventory inventory_film_id_fkey -> film",
        ],
        "validated keys between restored tables only"
    );
}
