//! Planning a restore: every check and decision that needs no change to the target. The
//! backup's kind and objects (each present with its recorded size), the options and table
//! patterns, the schema source, the target's state and what the restoring role may do, the
//! names of the database the restore is built in and of the replaced one; for an export, the
//! schema archive staged (fully verified) and checked against the manifest, and the post-data
//! entries to build during the load. The plan prints itself
//! (`restore --dry-run`, in `describe`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::properties::{self, DbProperties};
use super::schema::SchemaArchive;
use super::target::{self, Server, side_name};
use super::{RestoreError, RestoreOptions, SchemaFrom, stage, toc};
use crate::config::Migrations;
use crate::manifest::{BackupKind, Manifest, ObjectEntry, ObjectRole};
use crate::pg::Target;
use crate::process::Tool;
use crate::repository::Repository;
use crate::source::TablePattern;

/// Post-data entries of tables smaller than this wait for the pass after the load: each
/// entry built during the load costs a `pg_restore` run, worth it only when the build is long.
const EARLY_BUILD_MIN_BYTES: u64 = 16 << 20;

/// What happens to the target database.
#[derive(Debug)]
pub enum Action {
    /// It does not exist (`--create`): the restore is built under another name and renamed
    /// to the target's at the end.
    Create,
    /// It exists (empty, or holding data with `--clean`): the restore is built beside it with
    /// its properties, then swapped in; the replaced database is dropped, or kept.
    Replace {
        properties: DbProperties,
        /// Some of its relations, when it held data.
        examples: Vec<String>,
        keep_old: bool,
    },
    /// `--in-place`: straight into the existing, empty target. Not atomic.
    InPlace,
}

/// What is restored.
#[derive(Debug)]
pub enum Content {
    Dump { object: ObjectEntry },
    Export(Box<ExportPlan>),
}

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
    pub allow_drift: bool,
}

/// A checked restore, ready to apply.
#[derive(Debug)]
pub struct RestorePlan {
    pub manifest: Manifest,
    /// The target database.
    pub target: Target,
    pub action: Action,
    /// The database the restore is built in (the target's own name for `InPlace`).
    pub build: String,
    /// The name the replaced target takes at the swap.
    pub old: Option<String>,
    /// Databases earlier, killed restores into this target left, to drop first.
    pub leftovers: Vec<String>,
    /// Other databases of earlier restores into this target, named in a warning.
    pub strays: Vec<String>,
    pub content: Content,
    pub(super) tool: Tool,
    pub jobs: u32,
    pub no_owner: bool,
    pub staging_dir: PathBuf,
}

impl RestorePlan {
    /// The connection settings of the database the restore is built in.
    pub fn build_target(&self) -> Target {
        self.target.with_dbname(&self.build)
    }
}

fn schema_from(options: &RestoreOptions) -> SchemaFrom {
    options
        .schema_from
        .unwrap_or(if options.migrations.is_some() {
            SchemaFrom::Migrations
        } else {
            SchemaFrom::Dump
        })
}

/// Checks everything that can be checked without changing anything, and decides what the
/// restore will do.
///
/// # Errors
/// `RestoreError` saying what is wrong; nothing has been changed.
pub async fn plan(
    repo: &Repository,
    manifest: Manifest,
    options: RestoreOptions,
) -> Result<RestorePlan, RestoreError> {
    let usage = RestoreError::Usage;
    if !matches!(manifest.kind, BackupKind::Dump | BackupKind::Export) {
        return Err(RestoreError::UnsupportedKind {
            id: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let export = manifest.kind == BackupKind::Export;
    if !export
        && (!options.tables.is_empty() || options.schema_from.is_some() || options.allow_drift)
    {
        return Err(usage(
            "--tables, --schema-from and --allow-drift apply to export backups only".into(),
        ));
    }
    let tables = if export {
        check_export_options(&manifest, &options)?;
        select_tables(&manifest, &options.tables)?
    } else {
        Vec::new()
    };
    let target = Target::resolve(&options.target, None)
        .map_err(|e| usage(format!("--target: {}", crate::error::report(&e))))?;
    for o in &manifest.objects {
        stage::decoding(repo, &manifest, o)?;
    }
    repo.check_identities(&manifest)
        .await
        .map_err(RestoreError::Repo)?;
    let problems = repo.check_objects(&manifest).await?;
    if !problems.is_empty() {
        return Err(RestoreError::Objects {
            id: manifest.id.clone(),
            problems,
        });
    }

    // The target, and what may be done to it.
    let server = Server::connect(&target).await?;
    let name = target.dbname().to_string();
    let properties = properties::properties(&server, &name).await?;
    let action = match properties {
        None if options.in_place => {
            return Err(usage(format!(
                "--in-place restores into an existing, empty database; '{name}' does not exist"
            )));
        }
        None if options.create => Action::Create,
        None => return Err(RestoreError::MissingDatabase { database: name }),
        Some(properties) => {
            let examples = target::user_relations(&target, 5).await?;
            match (examples.is_empty(), options.clean, options.in_place) {
                (false, false, _) => {
                    return Err(RestoreError::TargetNotEmpty {
                        database: name,
                        examples: examples.join(", "),
                    });
                }
                (false, true, true) => {
                    return Err(usage(
                        "--in-place restores into an empty database only; --clean replaces one that holds data (atomically, without --in-place)".into(),
                    ));
                }
                (true, _, true) => Action::InPlace,
                _ => Action::Replace {
                    properties,
                    examples,
                    keep_old: options.keep_old,
                },
            }
        }
    };
    check_privileges(&server, &name, &action).await?;
    let (leftovers, strays) = target::leftovers(&server, &name).await?;
    let tool = stage::pg_restore(repo, &manifest).await?;
    let staging_dir = options
        .staging_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);

    let content = if export {
        Content::Export(Box::new(
            plan_export(
                repo,
                &manifest,
                &options,
                tables,
                tool.clone(),
                &staging_dir,
            )
            .await?,
        ))
    } else {
        let object = manifest
            .object(&ObjectRole::Dump)
            .cloned()
            .expect("a consistent dump manifest has a dump object");
        Content::Dump { object }
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S").to_string();
    let (build, old) = match &action {
        Action::InPlace => (name.clone(), None),
        Action::Create => (
            side_name(&name, "new", &format!("{:08x}", rand::random::<u32>())),
            None,
        ),
        Action::Replace { .. } => (
            side_name(&name, "new", &format!("{:08x}", rand::random::<u32>())),
            Some(side_name(&name, "old", &stamp)),
        ),
    };
    Ok(RestorePlan {
        manifest,
        target,
        action,
        build,
        old,
        leftovers,
        strays,
        content,
        tool,
        jobs: options.jobs.max(1),
        no_owner: options.no_owner,
        staging_dir,
    })
}

/// Refuses, before anything is touched, a restore the role could not finish: building beside
/// the target needs CREATEDB (or superuser), and replacing it needs its ownership (to rename
/// it) and the right to give the new database the same owner.
async fn check_privileges(
    server: &Server,
    name: &str,
    action: &Action,
) -> Result<(), RestoreError> {
    let owner = match action {
        Action::InPlace => return Ok(()),
        Action::Create => None,
        Action::Replace { properties, .. } => Some(properties.owner.as_str()),
    };
    let p = target::privileges(server, owner).await?;
    let role = server.admin.user().to_string();
    let in_place = "or restore into an empty database with --in-place (not atomic)";
    if !p.superuser && !p.createdb {
        return Err(RestoreError::Privileges(format!(
            "role '{role}' may not create databases: a restore is built in a new database beside '{name}' and swapped in; grant CREATEDB (ALTER ROLE {role} CREATEDB), {in_place}"
        )));
    }
    if let Some(owner) = owner
        && !(p.owns_target && p.may_give_to_owner)
    {
        return Err(RestoreError::Privileges(format!(
            "role '{role}' may not replace '{name}', which is owned by '{owner}': swapping in the restored database needs the owner's privileges (GRANT {owner} TO {role}), {in_place}"
        )));
    }
    Ok(())
}

fn check_export_options(manifest: &Manifest, options: &RestoreOptions) -> Result<(), RestoreError> {
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

/// The table objects `patterns` select (all when there are none).
fn select_tables(
    manifest: &Manifest,
    patterns: &[String],
) -> Result<Vec<ObjectEntry>, RestoreError> {
    let parsed = patterns
        .iter()
        .map(|p| TablePattern::parse(p).map_err(|e| RestoreError::Usage(format!("--tables: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let chosen: Vec<ObjectEntry> = manifest
        .objects_with_role(&ObjectRole::Table)
        .filter(|o| {
            parsed.is_empty()
                || o.table
                    .as_deref()
                    .and_then(split_qualified)
                    .is_some_and(|(s, n)| parsed.iter().any(|p| p.matches(&s, &n)))
        })
        .cloned()
        .collect();
    if !parsed.is_empty() && chosen.is_empty() {
        return Err(RestoreError::Usage(format!(
            "no table of backup {} matches --tables {}",
            manifest.id,
            patterns.join(",")
        )));
    }
    Ok(chosen)
}

/// Stages the schema archive (every byte checked), reads its table of contents, checks it
/// against the manifest and plans the load.
async fn plan_export(
    repo: &Repository,
    manifest: &Manifest,
    options: &RestoreOptions,
    tables: Vec<ObjectEntry>,
    tool: Tool,
    staging_dir: &std::path::Path,
) -> Result<ExportPlan, RestoreError> {
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
    Ok(ExportPlan {
        archive,
        schema_from: mode,
        migrations: options.migrations.clone(),
        tables,
        selective,
        early,
        post_data,
        allow_drift: options.allow_drift,
    })
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

/// `"schema"."name"` back into its two catalog names.
pub(super) fn split_qualified(q: &str) -> Option<(String, String)> {
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
