//! Planning the export side of a restore: the options an export needs, the table objects
//! `--tables` selects, and the schema archive staged, checked against the manifest and read
//! for the post-data entries to build during the load and the foreign keys kept.

use std::collections::{BTreeMap, BTreeSet};

use super::schema::SchemaArchive;
use super::select::{self, LeftOutKey};
use super::{RestoreError, RestoreOptions, SchemaFrom, stage, toc};
use crate::config::Migrations;
use crate::manifest::{Manifest, ObjectEntry, ObjectRole};
use crate::pg::introspect::split_qualified;
use crate::process::Tool;
use crate::repository::Repository;
use crate::source::TablePattern;

/// The decisions of an export restore.
#[derive(Debug)]
pub struct ExportPlan {
    pub(super) archive: SchemaArchive,
    pub schema_from: SchemaFrom,
    pub migrations: Option<Migrations>,
    /// The table objects loaded (all, or those `--tables` selects).
    pub tables: Vec<ObjectEntry>,
    pub selective: bool,
    pub(super) early: Vec<toc::Early>,
    pub(super) post_data: BTreeMap<u32, String>,
    /// Selective, with the captured schema: the foreign keys between restored tables (their
    /// entry ids), recreated.
    pub(super) keys_kept: BTreeSet<u32>,
    /// Selective: the foreign keys of restored tables that link a table left out.
    pub foreign_keys_left_out: Vec<LeftOutKey>,
    pub allow_drift: bool,
}

pub(super) fn schema_from(options: &RestoreOptions) -> SchemaFrom {
    options
        .schema_from
        .unwrap_or(if options.migrations.is_some() {
            SchemaFrom::Migrations
        } else {
            SchemaFrom::Dump
        })
}

/// Post-data entries of tables smaller than this wait for the pass after the load: each
/// entry built during the load costs a `pg_restore` run, worth it only when the build is long.
const EARLY_BUILD_MIN_BYTES: u64 = 16 << 20;

pub(super) fn check_export_options(
    manifest: &Manifest,
    options: &RestoreOptions,
) -> Result<(), RestoreError> {
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

/// The table objects `patterns` select (all when there are none); each pattern must match.
pub(super) fn select_tables(
    manifest: &Manifest,
    patterns: &[TablePattern],
) -> Result<Vec<ObjectEntry>, RestoreError> {
    let name = |o: &ObjectEntry| o.table.as_deref().and_then(split_qualified);
    let unmatched: Vec<&str> = patterns
        .iter()
        .filter(|p| {
            !manifest
                .objects_with_role(&ObjectRole::Table)
                .any(|o| name(o).is_some_and(|(s, n)| p.matches(&s, &n)))
        })
        .map(TablePattern::as_str)
        .collect();
    if !unmatched.is_empty() {
        return Err(RestoreError::Usage(format!(
            "no table of backup {} matches --tables {}",
            manifest.id,
            unmatched.join(",")
        )));
    }
    Ok(manifest
        .objects_with_role(&ObjectRole::Table)
        .filter(|o| {
            patterns.is_empty()
                || name(o).is_some_and(|(s, n)| patterns.iter().any(|p| p.matches(&s, &n)))
        })
        .cloned()
        .collect())
}

/// Stages the schema archive (every byte checked), reads its table of contents, checks it
/// against the manifest and plans the load. Returns the plan and the verbose table of
/// contents (which, unlike the plain one, lists the `DATABASE` entry and its owner).
pub(super) async fn plan_export(
    repo: &Repository,
    manifest: &Manifest,
    options: &RestoreOptions,
    tables: Vec<ObjectEntry>,
    tool: Tool,
    staging_dir: &std::path::Path,
) -> Result<(ExportPlan, String), RestoreError> {
    let object = manifest
        .object(&ObjectRole::Schema)
        .expect("a consistent export manifest has a schema object");
    let file = stage::stage(repo, manifest, object, staging_dir).await?;
    let archive = SchemaArchive {
        tool,
        file,
        no_owner: options.no_owner,
    };
    let listing = archive.list(false, None).await?;
    let archived: Vec<&str> = listing
        .lines()
        .filter_map(|l| match toc::toc_entry(l) {
            Some(("TABLE", rest)) => Some(rest),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    for o in manifest.objects_with_role(&ObjectRole::Table) {
        let name = o.table.as_deref().unwrap_or_default();
        let found = split_qualified(name).is_some_and(|(s, n)| {
            let prefix = format!("{s} {n} ");
            archived.iter().any(|rest| rest.starts_with(&prefix))
        });
        if !found {
            problems.push(format!(
                "its schema archive defines no table {name}, which object {} holds rows of",
                o.key
            ));
        }
    }
    if !problems.is_empty() {
        return Err(RestoreError::Inconsistent {
            id: manifest.id.clone(),
            problems,
        });
    }
    let mode = schema_from(options);
    let selective = !options.tables.is_empty();
    let (early, post_data) = match mode {
        SchemaFrom::Dump => early_post_data(&archive, &tables, !selective).await?,
        SchemaFrom::Migrations => (Vec::new(), BTreeMap::new()),
    };
    let (keys_kept, foreign_keys_left_out) = if selective && mode == SchemaFrom::Dump {
        selective_keys(&archive, &tables).await?
    } else {
        (BTreeSet::new(), Vec::new())
    };
    let plan = ExportPlan {
        archive,
        schema_from: mode,
        migrations: options.migrations.clone(),
        tables,
        selective,
        early,
        post_data,
        keys_kept,
        foreign_keys_left_out,
        allow_drift: options.allow_drift,
    };
    let verbose = plan.archive.list(true, None).await?;
    Ok((plan, verbose))
}

/// A selective restore with the captured schema recreates the foreign keys between restored
/// tables and leaves out (naming them) those of restored tables to tables left out.
async fn selective_keys(
    archive: &SchemaArchive,
    tables: &[ObjectEntry],
) -> Result<(BTreeSet<u32>, Vec<LeftOutKey>), RestoreError> {
    let entries = toc::parse(&archive.list(true, None).await?);
    let loaded: BTreeSet<&str> = tables.iter().filter_map(|o| o.table.as_deref()).collect();
    let mut names = BTreeMap::new();
    let mut restored = BTreeSet::new();
    for e in &entries {
        let Some(("TABLE", rest)) = toc::toc_entry(&e.line) else {
            continue;
        };
        let readings = select::readings(rest);
        match readings.iter().find(|r| loaded.contains(r.as_str())) {
            Some(r) => {
                names.insert(e.id, r.clone());
                restored.insert(e.id);
            }
            None => {
                if let Some(r) = readings.first() {
                    names.insert(e.id, r.clone());
                }
            }
        }
    }
    Ok(select::split_foreign_keys(&entries, &names, &restored))
}

/// The post-data entries to build during the load (see `toc::early`; foreign keys only with
/// `foreign_keys`), and all post-data entries by id.
async fn early_post_data(
    archive: &SchemaArchive,
    tables: &[ObjectEntry],
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
