//! Planning a restore: every check and decision that needs no change to the target. The
//! backup's kind and objects (each present with its recorded size), the options and table
//! patterns, the schema source, the target's state and what the restoring role may do, the
//! names of the database the restore is built in and of the replaced one; for an export, the
//! schema archive staged (fully verified) and checked against the manifest, and the post-data
//! entries to build during the load (in `plan_export`). The plan prints itself
//! (`restore --dry-run`, in `describe`).

use std::path::PathBuf;

use super::properties::{self, DbProperties};
use super::select::{self, Selection};
use super::target::{self, Server, side_name};
use super::{RestoreError, RestoreOptions, dump, plan_export, stage, toc};
use crate::manifest::{BackupKind, Manifest, ObjectEntry, ObjectRole};
use crate::pg::Target;
use crate::process::Tool;
use crate::repository::Repository;
use crate::source::TablePattern;

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
        /// Its size now (`pg_database_size`): the old and the new exist side by side until
        /// the swap.
        bytes: Option<i64>,
    },
    /// `--in-place`: straight into the existing, empty target. Not atomic.
    InPlace,
}

/// What is restored.
#[derive(Debug)]
pub enum Content {
    Dump {
        object: ObjectEntry,
        /// Every table of the archive, `"schema"."name"`.
        tables: Vec<String>,
        /// What `--tables` restores of it.
        selection: Option<Box<Selection>>,
    },
    Export(Box<plan_export::ExportPlan>),
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
    /// `Create` of a dump: the source database's owner (from the archive), which the new
    /// database is given, when that role exists on the target and may be given it.
    pub owner: Option<String>,
}

impl RestorePlan {
    /// The connection settings of the database the restore is built in.
    pub fn build_target(&self) -> Target {
        self.target.with_dbname(&self.build)
    }
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
    let manifest = pick_database(manifest, options.database.as_deref())?;
    if !matches!(manifest.kind, BackupKind::Dump | BackupKind::Export) {
        return Err(RestoreError::UnsupportedKind {
            id: manifest.id.clone(),
            kind: manifest.kind.to_string(),
        });
    }
    let export = manifest.kind == BackupKind::Export;
    if !export && (options.schema_from.is_some() || options.allow_drift) {
        return Err(usage(
            "--schema-from and --allow-drift apply to export backups only".into(),
        ));
    }
    let patterns = options
        .tables
        .iter()
        .map(|p| TablePattern::parse(p).map_err(|e| usage(format!("--tables: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let tables = if export {
        plan_export::check_export_options(&manifest, &options)?;
        plan_export::select_tables(&manifest, &patterns)?
    } else {
        Vec::new()
    };
    let target = target_of(&options)
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

    // The target, and what may be done to it, through sessions that cannot write.
    let reading = target.read_only();
    let server = Server::connect(&reading).await?;
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
        Some(_) if is_maintenance(&name) && name != manifest.database && !options.clean => {
            return Err(RestoreError::MaintenanceTarget {
                database: name,
                backup_database: manifest.database.clone(),
            });
        }
        Some(properties) => {
            let examples = target::user_relations(&reading, 5).await?;
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
                    bytes: target::size(&server, &name).await?,
                },
            }
        }
    };
    check_privileges(&server, &name, &action).await?;
    let (leftovers, strays) = target::leftovers(&server, &name).await?;
    let tool = stage::pg_restore(repo, &manifest, options.pg_bin_dir.as_deref()).await?;
    let staging_dir = options
        .staging_dir
        .clone()
        .unwrap_or_else(std::env::temp_dir);

    let (content, listing) = if export {
        let (plan, listing) = plan_export::plan_export(
            repo,
            &manifest,
            &options,
            tables,
            tool.clone(),
            &staging_dir,
        )
        .await?;
        (Content::Export(Box::new(plan)), listing)
    } else {
        let object = manifest
            .object(&ObjectRole::Dump)
            .cloned()
            .expect("a consistent dump manifest has a dump object");
        let listing = dump::read_toc(repo, &manifest, &object, &tool).await?;
        let tables = select::archived_tables(&toc::parse(&listing))
            .into_iter()
            .map(|t| t.name)
            .collect();
        let selection = if patterns.is_empty() {
            None
        } else {
            let chosen = select::select(&listing, &patterns)
                .map_err(|e| usage(format!("backup {}: {e}", manifest.id)))?;
            Some(Box::new(chosen))
        };
        let content = Content::Dump {
            object,
            tables,
            selection,
        };
        (content, listing)
    };
    let owner = if matches!(action, Action::Create) && !options.no_owner {
        giveable_owner(&server, &listing, &manifest.database).await?
    } else {
        None
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
        owner,
    })
}

/// `postgres` and `template1`: there, and empty, on every server. Replacing one with another
/// database is never what an empty target means, so it takes `--clean`.
fn is_maintenance(name: &str) -> bool {
    matches!(name, "postgres" | "template1")
}

/// The owner a database created by a restore gets: the archive's `DATABASE` entry's, as
/// `pg_restore --create` would give it, when the role exists on the target's server and the
/// restoring role may give it a database; else (with a warning) the restoring role keeps it.
async fn giveable_owner(
    server: &Server,
    listing: &str,
    database: &str,
) -> Result<Option<String>, RestoreError> {
    let Some(owner) = toc::database_owner(listing, database) else {
        return Ok(None);
    };
    if target::privileges(server, Some(&owner))
        .await?
        .may_give_to_owner
    {
        return Ok(Some(owner));
    }
    tracing::warn!(owner = %owner, role = %server.admin.user(),
        "the source database's owner does not exist on the target server, or the restoring role may not give it a database: the new database is owned by the restoring role");
    Ok(None)
}

/// The target database: `--target`'s, or for a database of a cluster backup the database's
/// own name on the server `--target` names when it names no database.
fn target_of(options: &RestoreOptions) -> Result<Target, crate::pg::PgError> {
    let mut info = crate::pg::ConnInfo::parse(&options.target)?;
    if let Some(database) = &options.database
        && info.get("dbname").is_none()
    {
        info.set("dbname", database.clone());
    }
    Target::from_conninfo(&info, None)
}

/// What is restored of `manifest`: a cluster backup's database `database` (as the dump backup
/// of it alone), or the backup itself.
///
/// # Errors
/// A usage error when a cluster backup is restored without `--database`, names a database it
/// does not hold, or `--database` names another database than a single-database backup's.
pub fn pick_database(manifest: Manifest, database: Option<&str>) -> Result<Manifest, RestoreError> {
    let names = || {
        manifest
            .database_names()
            .iter()
            .map(|n| format!("'{}'", crate::human::name(n)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match (manifest.kind == BackupKind::Cluster, database) {
        (true, None) => Err(RestoreError::Usage(format!(
            "backup {} holds {} databases of a server ({}): name the one to restore with --database (to restore them all onto a new server, see docs/OPERATIONS.md)",
            manifest.id,
            manifest.databases.len(),
            names()
        ))),
        (true, Some(name)) => manifest.database_backup(name).ok_or_else(|| {
            RestoreError::Usage(format!(
                "backup {} holds no database '{}'; it holds {}",
                manifest.id,
                crate::human::name(name),
                names()
            ))
        }),
        (false, Some(name)) if name != manifest.database => Err(RestoreError::Usage(format!(
            "--database picks a database of a cluster backup; backup {} is a {} backup of database '{}' alone",
            manifest.id,
            manifest.kind,
            crate::human::name(&manifest.database)
        ))),
        (false, _) => Ok(manifest),
    }
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

#[cfg(test)]
mod tests {
    use crate::pg::introspect::split_qualified;

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
