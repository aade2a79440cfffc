//! Restoring an export: the schema (captured, or from migrations with a drift check), then
//! every table's COPY data loaded in parallel with user triggers off and foreign keys added
//! afterwards, then sequences, materialized views and ANALYZE.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use futures::SinkExt;
use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::{RestoreError, RestoreOptions, RestorePlan, SchemaFrom, schema, stage};
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::introspect::{self, LoadConstraint, data_columns};
use crate::pg::{PgError, Target, describe_error, quote_ident};
use crate::source::TablePattern;
use crate::store::ObjectStore;

/// Session settings for loading COPY text data written by an export.
const LOAD_SETUP: &str = "SET client_encoding = 'UTF8'; SET DateStyle = ISO; \
     SET IntervalStyle = postgres; SET synchronous_commit = off; \
     SET maintenance_work_mem = '256MB'; SET statement_timeout = 0; SET lock_timeout = 0";
/// `maintenance_work_mem` for the load and for the index builds after it (`LOAD_SETUP`).
pub(super) const LOAD_MAINTENANCE_WORK_MEM: &str = "256MB";

fn schema_from(options: &RestoreOptions) -> SchemaFrom {
    options
        .schema_from
        .unwrap_or(if options.migrations.is_some() {
            SchemaFrom::Migrations
        } else {
            SchemaFrom::Dump
        })
}

/// Refuses option combinations that cannot work, before anything is touched.
pub(super) fn check_options(
    manifest: &Manifest,
    options: &RestoreOptions,
) -> Result<(), RestoreError> {
    for p in &options.tables {
        TablePattern::parse(p).map_err(RestoreError::Usage)?;
    }
    if schema_from(options) == SchemaFrom::Migrations {
        if options.migrations.is_none() {
            return Err(RestoreError::Usage(format!(
                "--schema-from migrations needs migrations.dir on job '{}' in the configuration",
                manifest.job
            )));
        }
        if manifest.migration_version.is_none() {
            return Err(RestoreError::Usage(format!(
                "backup {} records no migration version (the tracking table did not exist); use --schema-from dump",
                manifest.id
            )));
        }
    }
    Ok(())
}

/// `"schema"."name"` back into its two catalog names.
fn split_qualified(q: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut chars = q.chars().peekable();
    while chars.peek().is_some() {
        if chars.next() != Some('"') {
            return None;
        }
        let mut name = String::new();
        loop {
            match chars.next()? {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    name.push('"');
                }
                '"' => break,
                c => name.push(c),
            }
        }
        parts.push(name);
        if chars.peek() == Some(&'.') {
            chars.next();
        }
    }
    (parts.len() == 2).then(|| (parts[0].clone(), parts[1].clone()))
}

pub(super) async fn apply(
    store: &dyn ObjectStore,
    plan: &RestorePlan,
) -> Result<u64, RestoreError> {
    let manifest = &plan.manifest;
    let options = &plan.options;
    let target = &plan.target;
    let patterns: Vec<TablePattern> = options
        .tables
        .iter()
        .filter_map(|p| TablePattern::parse(p).ok())
        .collect();
    let selective = !patterns.is_empty();
    let tables: Vec<&ObjectEntry> = manifest
        .objects_with_role("table")
        .filter(|o| {
            !selective
                || o.table
                    .as_deref()
                    .and_then(split_qualified)
                    .is_some_and(|(s, n)| patterns.iter().any(|p| p.matches(&s, &n)))
        })
        .collect();
    if selective && tables.is_empty() {
        return Err(RestoreError::Usage(format!(
            "no table of backup {} matches --tables {}",
            manifest.id,
            options.tables.join(",")
        )));
    }
    let mut tables = tables;
    let tool = stage::pg_restore(manifest).await?;
    let archive = stage::stage(store, plan, &plan.object).await?;
    let mode = schema_from(options);
    let no_owner = options.no_owner;

    // 1. Schema without constraints that could depend on load order.
    let mut missing = Vec::new();
    match mode {
        SchemaFrom::Dump => {
            schema::pg_restore_section(
                &tool,
                target,
                archive.path(),
                "pre-data",
                None,
                no_owner,
                1,
            )
            .await?;
        }
        SchemaFrom::Migrations => {
            let migrations = options.migrations.as_ref().expect("checked in plan");
            let version = manifest.migration_version.expect("checked in plan");
            schema::migrate(target, migrations, version).await?;
            let client = target.connect().await?;
            // The runner's tracking table is the runner's: its rows are never loaded.
            let tracking: Option<String> = client
                .query_one(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
                    &[&migrations.table],
                )
                .await
                .ok()
                .map(|r| introspect::qualify(r.get(0), r.get(1)));
            tables.retain(|o| o.table != tracking);
            let (absent, _) = schema::drift(&client, &tables).await?;
            if !absent.is_empty() {
                tracing::info!(tables = ?absent, "creating tables the migrations do not define from the captured schema");
                let wanted = toc_names(&absent);
                let list = schema::filtered_list(&tool, archive.path(), |line| {
                    schema::toc_entry(line).is_some_and(|(desc, rest)| {
                        matches!(desc, "TABLE" | "DEFAULT")
                            && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                    })
                })
                .await?;
                schema::pg_restore_section(
                    &tool,
                    target,
                    archive.path(),
                    "pre-data",
                    Some(list.path()),
                    no_owner,
                    1,
                )
                .await?;
                missing = absent;
            }
            let (still_absent, diff) = schema::drift(&client, &tables).await?;
            let mut lines: Vec<String> = still_absent
                .iter()
                .map(|t| format!("  {t}: table is missing"))
                .collect();
            lines.extend(diff);
            if !lines.is_empty() && !options.allow_drift {
                return Err(RestoreError::Drift {
                    diff: lines.join("\n"),
                });
            }
            for l in &lines {
                tracing::warn!(difference = %l, "schema drift (--allow-drift)");
            }
        }
    }

    let restored: BTreeSet<String> = tables.iter().filter_map(|o| o.table.clone()).collect();

    // 2. Foreign keys and NOT VALID checks come off while data loads and go back on afterwards
    //    (foreign keys validated then, as pg_restore does).
    let admin = target.connect().await?;
    let foreign_keys = introspect::load_constraints(&admin).await?;
    for fk in &foreign_keys {
        exec(
            &admin,
            &format!(
                "ALTER TABLE {} DROP CONSTRAINT {}",
                fk.table,
                quote_ident(&fk.name)
            ),
            "dropping a constraint for the load",
        )
        .await?;
    }

    // 3. Data.
    let raw = load_tables(
        store,
        manifest,
        target,
        &tables,
        options.jobs.max(1) as usize,
    )
    .await?;

    // 4. Sequences.
    for seq in &manifest.sequences {
        let wanted = !selective || seq.owned_by.as_ref().is_some_and(|t| restored.contains(t));
        if !wanted {
            continue;
        }
        admin
            .query_one(
                "SELECT setval(c, $2, $3) FROM to_regclass($1) c WHERE c IS NOT NULL \
                 UNION ALL SELECT NULL LIMIT 1",
                &[&seq.name, &seq.last_value, &seq.is_called],
            )
            .await
            .map_err(query_error(target, "setting a sequence"))?;
    }

    // 5. Post-data: constraints, indexes, triggers, foreign keys.
    match mode {
        SchemaFrom::Dump => {
            let list = if selective {
                Some(
                    schema::filtered_list(&tool, archive.path(), |line| {
                        schema::toc_entry(line).is_none_or(|(desc, _)| desc != "FK CONSTRAINT")
                    })
                    .await?,
                )
            } else {
                None
            };
            if selective {
                tracing::warn!("a selective restore does not recreate foreign keys");
            }
            schema::pg_restore_section(
                &tool,
                target,
                archive.path(),
                "post-data",
                list.as_ref().map(tempfile::NamedTempFile::path),
                no_owner,
                options.jobs,
            )
            .await?;
        }
        SchemaFrom::Migrations => {
            if !missing.is_empty() {
                let wanted = toc_names(&missing);
                let list = schema::filtered_list(&tool, archive.path(), |line| {
                    schema::toc_entry(line).is_some_and(|(desc, rest)| {
                        desc == "CONSTRAINT" && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                    })
                })
                .await?;
                schema::pg_restore_section(
                    &tool,
                    target,
                    archive.path(),
                    "post-data",
                    Some(list.path()),
                    no_owner,
                    options.jobs,
                )
                .await?;
            }
            restore_foreign_keys(&admin, &foreign_keys, selective.then_some(&restored)).await?;
        }
    }
    // A schema-only archive holds no materialized view data: refresh what was populated.
    refresh_materialized_views(&admin, manifest).await?;
    if mode == SchemaFrom::Dump && !foreign_keys.is_empty() {
        restore_foreign_keys(&admin, &foreign_keys, selective.then_some(&restored)).await?;
    }
    let loaded: Vec<String> = tables.iter().filter_map(|o| o.table.clone()).collect();
    analyze(&admin, target, &loaded, options.jobs.max(1) as usize).await?;
    Ok(raw)
}

/// ANALYZE of what the load did not analyze already (`loaded`): partitioned tables,
/// materialized views, tables that were not loaded, and loaded tables with expression indexes
/// (whose statistics need the index). With the load's own ANALYZEs this covers what a
/// database-wide ANALYZE does, catalogs aside. Biggest first, on `jobs` sessions at once.
async fn analyze(
    admin: &Client,
    target: &Target,
    loaded: &[String],
    jobs: usize,
) -> Result<(), RestoreError> {
    let names: Vec<String> = admin
        .query(
            "SELECT c.oid::regclass::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> 'information_schema' \
             AND n.nspname !~ '^pg_' AND (c.relkind <> 'r' \
             OR c.oid <> ALL (SELECT to_regclass(t) FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL) \
             OR EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL)) \
             ORDER BY pg_relation_size(c.oid) DESC",
            &[&loaded],
        )
        .await
        .map_err(query_error(target, "listing tables to ANALYZE"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let queue = Arc::new(Mutex::new(VecDeque::from(names)));
    let workers = (0..jobs.max(1)).map(|_| {
        let queue = Arc::clone(&queue);
        async move {
            let client = target.connect().await?;
            loop {
                let next = queue.lock().await.pop_front();
                let Some(name) = next else { break };
                exec(&client, &format!("ANALYZE {name}"), "ANALYZE").await?;
            }
            Ok::<(), RestoreError>(())
        }
    });
    futures::future::try_join_all(workers).await?;
    Ok(())
}

/// `schema name ` prefixes as they appear in `pg_restore --list` for these tables.
fn toc_names(tables: &[String]) -> Vec<String> {
    tables
        .iter()
        .filter_map(|t| split_qualified(t))
        .map(|(s, n)| format!("{s} {n} "))
        .collect()
}

async fn restore_foreign_keys(
    client: &Client,
    keys: &[LoadConstraint],
    only_within: Option<&BTreeSet<String>>,
) -> Result<(), RestoreError> {
    for fk in keys {
        if let Some(set) = only_within
            && let Some(references) = &fk.references
            && !(set.contains(&fk.table) && set.contains(references))
        {
            tracing::warn!(table = %fk.table, constraint = %fk.name, "foreign key not recreated: a table it links is not part of this selective restore");
            continue;
        }
        client
            .batch_execute(&format!(
                "ALTER TABLE {} ADD CONSTRAINT {} {}",
                fk.table,
                quote_ident(&fk.name),
                fk.definition
            ))
            .await
            .map_err(|e| RestoreError::Load {
                table: fk.table.clone(),
                reason: format!(
                    "constraint {} does not hold: {}",
                    fk.name,
                    describe_error(&e)
                ),
            })?;
    }
    Ok(())
}

/// Refreshes the materialized views that were populated in the source, retrying in passes
/// so views built on other views come out right.
async fn refresh_materialized_views(
    client: &Client,
    manifest: &Manifest,
) -> Result<(), RestoreError> {
    let mut pending: Vec<&str> = manifest
        .materialized_views
        .iter()
        .filter(|m| m.populated)
        .map(|m| m.name.as_str())
        .collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_error = None;
        for name in &pending {
            if let Err(e) = client
                .batch_execute(&format!("REFRESH MATERIALIZED VIEW {name}"))
                .await
            {
                last_error = Some(describe_error(&e));
                failed.push(*name);
            }
        }
        if failed.len() == pending.len() {
            return Err(RestoreError::Load {
                table: failed.join(", "),
                reason: format!(
                    "refreshing materialized views: {}",
                    last_error.unwrap_or_default()
                ),
            });
        }
        pending = failed;
    }
    Ok(())
}

/// Loads every table with `jobs` parallel connections, biggest first.
async fn load_tables(
    store: &dyn ObjectStore,
    manifest: &Manifest,
    target: &Target,
    tables: &[&ObjectEntry],
    jobs: usize,
) -> Result<u64, RestoreError> {
    let mut ordered: Vec<&ObjectEntry> = tables.to_vec();
    ordered.sort_by_key(|o| std::cmp::Reverse(o.raw_bytes));
    let queue = Arc::new(Mutex::new(VecDeque::from(ordered)));
    let workers = (0..jobs.min(tables.len()).max(1)).map(|_| {
        let queue = Arc::clone(&queue);
        async move {
            let client = target.connect().await?;
            exec(&client, LOAD_SETUP, "setting up a load session").await?;
            let mut bytes = 0;
            loop {
                let next = queue.lock().await.pop_front();
                let Some(object) = next else { break };
                bytes += load_table(&client, store, manifest, object).await?;
                // Statistics now, while other sessions still load: the core this one would
                // leave idle at the end of the load does the work of a final ANALYZE.
                if let Some(table) = &object.table {
                    exec(&client, &format!("ANALYZE {table}"), "ANALYZE").await?;
                }
            }
            Ok::<u64, RestoreError>(bytes)
        }
    });
    let done = futures::future::try_join_all(workers).await?;
    Ok(done.into_iter().sum())
}

/// One table in one transaction: user triggers disabled by name (and put back exactly as
/// they were), COPY FROM STDIN fed with verified data, the row count checked.
async fn load_table(
    client: &Client,
    store: &dyn ObjectStore,
    manifest: &Manifest,
    object: &ObjectEntry,
) -> Result<u64, RestoreError> {
    let table = object.table.clone().unwrap_or_default();
    let fail = |reason: String| RestoreError::Load {
        table: table.clone(),
        reason,
    };
    exec(client, "BEGIN", "BEGIN").await?;
    let triggers = introspect::enabled_user_triggers(client, &table).await?;
    for t in &triggers {
        client
            .batch_execute(&format!(
                "ALTER TABLE {table} DISABLE TRIGGER {}",
                quote_ident(&t.name)
            ))
            .await
            .map_err(|e| {
                fail(format!(
                    "disabling trigger {}: {}",
                    t.name,
                    describe_error(&e)
                ))
            })?;
    }
    let columns = data_columns(&object.columns);
    let copy = |freeze: &str| {
        if columns.is_empty() {
            format!("COPY {table} FROM STDIN{freeze}")
        } else {
            format!("COPY {table} ({}) FROM STDIN{freeze}", columns.join(", "))
        }
    };
    // COPY FREEZE when possible (see `empty_again`); the server refuses it up front, before
    // any data, when something else in the transaction prevents it: then a plain COPY.
    let frozen = if empty_again(client, &table).await? {
        match client.copy_in::<_, bytes::Bytes>(&copy(" (FREEZE)")).await {
            Ok(sink) => Some(sink),
            Err(e) => {
                tracing::debug!(table = %table, error = %describe_error(&e), "COPY FREEZE refused");
                exec(
                    client,
                    "ROLLBACK TO SAVEPOINT pgkeep_load",
                    "ROLLBACK TO SAVEPOINT",
                )
                .await?;
                None
            }
        }
    } else {
        None
    };
    let sink = match frozen {
        Some(sink) => sink,
        None => client
            .copy_in::<_, bytes::Bytes>(&copy(""))
            .await
            .map_err(|e| fail(describe_error(&e)))?,
    };
    futures::pin_mut!(sink);
    let mut chunks = stage::decoded_chunks(store, manifest, object).await?;
    while let Some(chunk) = chunks.recv().await {
        match chunk {
            Ok(bytes) => sink
                .send(bytes)
                .await
                .map_err(|e| fail(describe_error(&e)))?,
            Err(e) => {
                // Dropping the sink aborts the COPY; the transaction is rolled back.
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(RestoreError::Damaged(e));
            }
        }
    }
    let loaded = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| fail(describe_error(&e)))?;
    let expected = object.rows.unwrap_or(0);
    if loaded != expected {
        let _ = client.batch_execute("ROLLBACK").await;
        return Err(RestoreError::RowCount {
            table,
            loaded,
            expected,
        });
    }
    for t in &triggers {
        let how = match t.enabled {
            'A' => "ENABLE ALWAYS",
            'R' => "ENABLE REPLICA",
            _ => "ENABLE",
        };
        exec(
            client,
            &format!("ALTER TABLE {table} {how} TRIGGER {}", quote_ident(&t.name)),
            "re-enabling a trigger",
        )
        .await?;
    }
    exec(client, "COMMIT", "COMMIT").await?;
    tracing::debug!(table = %table, rows = loaded, "table loaded");
    Ok(object.raw_bytes)
}

/// Makes COPY FREEZE possible for an empty table: truncated in this transaction, its rows can
/// be written already frozen and its pages marked all-visible, so the index builds and ANALYZE
/// that follow need not set hint bits on (and rewrite) every page, as `pg_restore` leaves them
/// to. Done in a savepoint and only when the table is empty; if the table has rows or cannot be
/// truncated (privileges, a foreign key from outside the restore), nothing changes and the load
/// goes on without FREEZE.
async fn empty_again(client: &Client, table: &str) -> Result<bool, RestoreError> {
    exec(client, "SAVEPOINT pgkeep_load", "SAVEPOINT").await?;
    // The simple protocol: an extended-protocol portal left open would itself rule out FREEZE.
    let has_rows = client
        .simple_query(&format!("SELECT EXISTS (SELECT FROM ONLY {table})"))
        .await
        .ok()
        .and_then(|messages| {
            messages.into_iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
                _ => None,
            })
        });
    let truncated = has_rows == Some(false)
        && client
            .batch_execute(&format!("TRUNCATE ONLY {table}"))
            .await
            .is_ok();
    if !truncated {
        exec(
            client,
            "ROLLBACK TO SAVEPOINT pgkeep_load",
            "ROLLBACK TO SAVEPOINT",
        )
        .await?;
    }
    Ok(truncated)
}

async fn exec(client: &Client, sql: &str, what: &'static str) -> Result<(), RestoreError> {
    client.batch_execute(sql).await.map_err(|e| {
        RestoreError::Pg(PgError::Query {
            what,
            target: String::new(),
            reason: describe_error(&e),
        })
    })
}

fn query_error(
    target: &Target,
    what: &'static str,
) -> impl Fn(tokio_postgres::Error) -> RestoreError {
    let t = target.describe();
    move |e| {
        RestoreError::Pg(PgError::Query {
            what,
            target: t.clone(),
            reason: describe_error(&e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::split_qualified;

    #[test]
    fn index_builds_get_the_loads_maintenance_work_mem() {
        let setting = format!(
            "maintenance_work_mem = '{}'",
            super::LOAD_MAINTENANCE_WORK_MEM
        );
        assert!(super::LOAD_SETUP.contains(&setting));
    }

    #[test]
    fn qualified_names_split_back() {
        assert_eq!(
            split_qualified("\"public\".\"film\""),
            Some(("public".into(), "film".into()))
        );
        assert_eq!(
            split_qualified("\"we;ird \"\"s\".\"a.b\""),
            Some(("we;ird \"s".into(), "a.b".into()))
        );
        assert_eq!(split_qualified("public.film"), None);
    }
}
