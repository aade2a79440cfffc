//! Restoring an export into the database a plan builds it in: the schema (captured, or from
//! migrations with a drift check), checked against the manifest; then every table's COPY data
//! loaded in parallel with user triggers off and foreign keys added afterwards; then sequences
//! (checked against the manifest), materialized views and ANALYZE.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::load::{Load, exec, load_tables};
use super::plan::RestorePlan;
use super::plan_export::ExportPlan;
use super::{RestoreError, SchemaFrom, schema, toc};
use crate::manifest::{Manifest, ObjectEntry};
use crate::pg::introspect::split_qualified;
use crate::pg::introspect::{self, LoadConstraint};
use crate::pg::{DbError, PgError, Target, quote_ident};
use crate::repository::Repository;

/// Restores the export of `plan` into `target` (the database the plan builds in) and returns
/// the bytes of COPY data loaded.
pub(super) async fn restore(
    repo: &Repository,
    plan: &RestorePlan,
    export: &ExportPlan,
    target: &Target,
) -> Result<u64, RestoreError> {
    let manifest = &plan.manifest;
    let selective = export.selective;
    let mut tables: Vec<&ObjectEntry> = export.tables.iter().collect();
    let mode = export.schema_from;
    let schema_archive = &export.archive;

    // 1. Schema without constraints that could depend on load order.
    let progress = crate::progress::get();
    progress.phase("schema");
    let mut missing = Vec::new();
    match mode {
        SchemaFrom::Dump => {
            schema_archive.restore(target, "pre-data", None, 1).await?;
            check_schema(target, manifest, selective).await?;
        }
        SchemaFrom::Migrations => {
            let migrations = export.migrations.as_ref().expect("checked in plan");
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
                        toc::toc_entry(line).is_some_and(|(desc, rest)| {
                            matches!(desc, "TABLE" | "DEFAULT")
                                && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                        })
                    })
                    .await?;
                schema_archive
                    .restore(target, "pre-data", Some(list.path()), 1)
                    .await?;
                missing = absent;
            }
            let (still_absent, diff) = schema::drift(&client, &tables).await?;
            let mut lines: Vec<String> = still_absent
                .iter()
                .map(|t| format!("  {t}: table is missing"))
                .collect();
            lines.extend(diff);
            if !lines.is_empty() && !export.allow_drift {
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
    progress.phase("load");
    progress.items("tables", tables.len() as u64);
    let load = load_tables(
        Load {
            repo,
            manifest,
            target,
            jobs: plan.jobs as usize,
            schema: schema_archive,
            early: export.early.clone(),
        },
        &tables,
    )
    .await?;

    // 4. Sequences.
    progress.phase("indexes and keys");
    set_sequences(&admin, target, manifest, selective.then_some(&restored)).await?;

    // 5. Post-data: constraints, indexes, triggers, foreign keys.
    match mode {
        SchemaFrom::Dump => {
            for fk in &export.foreign_keys_left_out {
                tracing::warn!(table = %fk.table, constraint = %fk.constraint,
                    "foreign key not recreated: a table it links is not part of this selective restore");
            }
            // What the load did not build already; a selective restore's foreign keys only
            // between restored tables.
            let keep = |line: &str| {
                toc::line_id(line).is_none_or(|id| !load.built.contains(&id))
                    && (!selective
                        || toc::toc_entry(line).is_none_or(|(desc, _)| desc != "FK CONSTRAINT")
                        || toc::line_id(line).is_some_and(|id| export.keys_kept.contains(&id)))
            };
            let left = export.post_data.values().filter(|line| keep(line)).count();
            if left > 0 {
                let list = schema_archive.filtered_list(keep).await?;
                schema_archive
                    .restore(target, "post-data", Some(list.path()), plan.jobs)
                    .await?;
            }
        }
        SchemaFrom::Migrations => {
            if !missing.is_empty() {
                let wanted = toc_names(&missing);
                let list = schema_archive
                    .filtered_list(|line| {
                        toc::toc_entry(line).is_some_and(|(desc, rest)| {
                            desc == "CONSTRAINT"
                                && wanted.iter().any(|w| rest.starts_with(w.as_str()))
                        })
                    })
                    .await?;
                schema_archive
                    .restore(target, "post-data", Some(list.path()), plan.jobs)
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
    progress.phase("analyze");
    analyze(&admin, target, &loaded, plan.jobs as usize).await?;
    check_sequences(&admin, target, manifest, selective.then_some(&restored)).await?;
    Ok(load.raw_bytes)
}

/// The schema just restored must hold exactly the backup's tables and sequences: a table
/// without a data object (or an object for a table the schema lacks) is a backup that
/// contradicts itself, found before a row is loaded.
async fn check_schema(
    target: &Target,
    manifest: &Manifest,
    selective: bool,
) -> Result<(), RestoreError> {
    let client = target.connect().await?;
    let in_schema: BTreeSet<String> = introspect::data_tables(&client)
        .await?
        .iter()
        .map(introspect::TableInfo::qualified)
        .collect();
    let in_backup: BTreeSet<String> = manifest
        .objects_with_role(&crate::manifest::ObjectRole::Table)
        .filter_map(|o| o.table.clone())
        .collect();
    let mut problems: Vec<String> = in_backup
        .difference(&in_schema)
        .map(|t| format!("it holds rows of {t}, which its schema does not define"))
        .collect();
    if !selective {
        problems.extend(
            in_schema
                .difference(&in_backup)
                .map(|t| format!("its schema defines table {t}, but it holds no object for it")),
        );
    }
    let seq_schema: BTreeSet<String> = introspect::sequences(&client)
        .await?
        .into_iter()
        .map(|s| s.name)
        .collect();
    let seq_backup: BTreeSet<String> = manifest.sequences.iter().map(|s| s.name.clone()).collect();
    problems.extend(
        seq_backup
            .symmetric_difference(&seq_schema)
            .map(|s| format!("sequence {s} is in only one of its schema and its manifest")),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Inconsistent {
            id: manifest.id.clone(),
            problems,
        })
    }
}

/// The sequences a restore sets: all, or (selective) those owned by a restored table.
fn wanted_sequences<'a>(
    manifest: &'a Manifest,
    only: Option<&'a BTreeSet<String>>,
) -> impl Iterator<Item = &'a crate::manifest::SequenceState> {
    manifest.sequences.iter().filter(move |seq| {
        only.is_none_or(|set| seq.owned_by.as_ref().is_some_and(|t| set.contains(t)))
    })
}

async fn set_sequences(
    admin: &Client,
    target: &Target,
    manifest: &Manifest,
    only: Option<&BTreeSet<String>>,
) -> Result<(), RestoreError> {
    for seq in wanted_sequences(manifest, only) {
        admin
            .query_one(
                "SELECT setval(c, $2, $3) FROM to_regclass($1) c WHERE c IS NOT NULL \
                 UNION ALL SELECT NULL LIMIT 1",
                &[&seq.name, &seq.last_value, &seq.is_called],
            )
            .await
            .map_err(query_error(target, "setting a sequence"))?;
    }
    Ok(())
}

/// Reads every sequence back: a restore ends with exactly the recorded values.
async fn check_sequences(
    admin: &Client,
    target: &Target,
    manifest: &Manifest,
    only: Option<&BTreeSet<String>>,
) -> Result<(), RestoreError> {
    for seq in wanted_sequences(manifest, only) {
        let row = admin
            .query_one(
                &format!("SELECT last_value, is_called FROM {}", seq.name),
                &[],
            )
            .await
            .map_err(query_error(target, "reading a sequence back"))?;
        let (last_value, is_called): (i64, bool) = (row.get(0), row.get(1));
        if last_value != seq.last_value || is_called != seq.is_called {
            return Err(RestoreError::Sequence {
                name: seq.name.clone(),
                expected: format!("last_value {}, is_called {}", seq.last_value, seq.is_called),
                actual: format!("last_value {last_value}, is_called {is_called}"),
            });
        }
    }
    Ok(())
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
            .map_err(|e| RestoreError::Constraint {
                table: fk.table.clone(),
                constraint: fk.name.clone(),
                source: DbError(e),
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
                last_error = Some(e);
                failed.push(*name);
            }
        }
        if failed.len() == pending.len()
            && let Some(e) = last_error
        {
            return Err(RestoreError::Refresh {
                views: failed.join(", "),
                source: DbError(e),
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
    move |e| RestoreError::Pg(PgError::query(what, &t, e))
}
