//! Restoring an export: the schema (captured, or from migrations with a drift check), then
//! every table's COPY data loaded in parallel with user triggers off and foreign keys added
//! afterwards, then sequences, materialized views and ANALYZE.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::load::{Load, exec, load_tables};
use super::schema::SchemaArchive;
use super::{RestoreError, RestoreOptions, RestorePlan, SchemaFrom, schema, stage, toc};
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::introspect::{self, LoadConstraint};
use crate::pg::{PgError, Target, describe_error, quote_ident};
use crate::source::TablePattern;
use crate::store::ObjectStore;

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
    let schema_archive = SchemaArchive {
        tool: &tool,
        target,
        path: archive.path(),
        no_owner: options.no_owner,
    };

    // 1. Schema without constraints that could depend on load order.
    let mut missing = Vec::new();
    match mode {
        SchemaFrom::Dump => {
            schema_archive.restore("pre-data", None, 1).await?;
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
                let list = schema_archive
                    .filtered_list(|line| {
                        schema::toc_entry(line).is_some_and(|(desc, rest)| {
                            matches!(desc, "TABLE" | "DEFAULT")
                                && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                        })
                    })
                    .await?;
                schema_archive
                    .restore("pre-data", Some(list.path()), 1)
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

    // 3. Data; with the captured schema, big tables' indexes and keys as soon as their data
    //    is in.
    let (early, post_data) = match mode {
        SchemaFrom::Dump => early_post_data(&schema_archive, &tables, !selective).await?,
        SchemaFrom::Migrations => (Vec::new(), BTreeMap::new()),
    };
    let load = load_tables(
        Load {
            store,
            manifest,
            target,
            jobs: options.jobs.max(1) as usize,
            schema: &schema_archive,
            early,
        },
        &tables,
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
            if selective {
                tracing::warn!("a selective restore does not recreate foreign keys");
            }
            // What the load did not build already.
            let keep = |line: &str| {
                toc::line_id(line).is_none_or(|id| !load.built.contains(&id))
                    && (!selective
                        || schema::toc_entry(line).is_none_or(|(desc, _)| desc != "FK CONSTRAINT"))
            };
            let left = post_data.values().filter(|line| keep(line)).count();
            if left > 0 {
                let list = schema_archive.filtered_list(keep).await?;
                schema_archive
                    .restore("post-data", Some(list.path()), options.jobs)
                    .await?;
            }
        }
        SchemaFrom::Migrations => {
            if !missing.is_empty() {
                let wanted = toc_names(&missing);
                let list = schema_archive
                    .filtered_list(|line| {
                        schema::toc_entry(line).is_some_and(|(desc, rest)| {
                            desc == "CONSTRAINT"
                                && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                        })
                    })
                    .await?;
                schema_archive
                    .restore("post-data", Some(list.path()), options.jobs)
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
    Ok(load.raw_bytes)
}

/// Post-data entries of tables smaller than this wait for the pass after the load: each
/// entry built during the load costs a `pg_restore` run, worth it only when the build is long.
const EARLY_BUILD_MIN_BYTES: u64 = 16 << 20;

/// The post-data entries to build during the load (see `toc::early`; foreign keys only with
/// `foreign_keys`), and all post-data entries by id.
async fn early_post_data(
    archive: &SchemaArchive<'_>,
    tables: &[&ObjectEntry],
    foreign_keys: bool,
) -> Result<(Vec<toc::Early>, BTreeMap<u32, String>), RestoreError> {
    let post_data: BTreeMap<u32, String> = archive
        .list(false, Some("post-data"))
        .await?
        .lines()
        .filter_map(|l| Some((toc::line_id(l)?, l.to_string())))
        .collect();
    let loaded: Vec<toc::Loaded> = tables
        .iter()
        .filter_map(|o| {
            let name = o.table.clone()?;
            let (schema, table) = split_qualified(&name)?;
            Some(toc::Loaded {
                name,
                prefix: format!("{schema} {table} "),
                big: o.raw_bytes >= EARLY_BUILD_MIN_BYTES,
            })
        })
        .collect();
    if post_data.is_empty() || !loaded.iter().any(|t| t.big) {
        return Ok((Vec::new(), post_data));
    }
    let entries = toc::parse(&archive.list(true, None).await?);
    let ids: BTreeSet<u32> = post_data.keys().copied().collect();
    Ok((toc::early(&entries, &ids, &loaded, foreign_keys), post_data))
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
