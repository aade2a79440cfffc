//! Restoring a backup's roles (`restore --globals-only`): the globals object read verified,
//! its statements decided one by one against the target server's roles — missing roles
//! created, existing ones left alone unless `--update-roles`, passwords set only with
//! `--role-passwords`, tablespaces skipped (they name directories of the source host) — and
//! what is decided applied in one transaction, so a failure applies nothing.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use tokio_util::io::SyncIoBridge;

use super::RestoreError;
use super::globals::{self, Kind, Statement, Tok};
use super::stage::{self, read_error};
use crate::manifest::{Manifest, ObjectRole};
use crate::pg::{PgError, Target};
use crate::repository::Repository;
use crate::transfer;

/// A globals object bigger than this is not read into memory (roles take bytes each).
const GLOBALS_MAX_BYTES: u64 = 256 << 20;

/// Attributes a new role has without being given them: left out of its `ALTER ROLE`, so a
/// role with CREATEROLE (not superuser) can restore ordinary roles.
const DEFAULTS: &[&str] = &[
    "NOSUPERUSER",
    "INHERIT",
    "NOCREATEROLE",
    "NOCREATEDB",
    "NOLOGIN",
    "NOREPLICATION",
    "NOBYPASSRLS",
];

/// What `restore --globals-only` was asked.
#[derive(Debug, Clone, Default)]
pub struct RolesOptions {
    /// libpq conninfo of a database on the target server.
    pub target: String,
    /// Bring existing roles to the backup's attributes, settings, memberships and comments.
    pub update_existing: bool,
    /// Set the backup's role passwords (without it, none is set).
    pub passwords: bool,
    /// Decide and print, change nothing.
    pub dry_run: bool,
}

/// What became of each role, for people.
#[derive(Debug, Clone, Default)]
pub struct RolesReport {
    pub created: Vec<String>,
    pub updated: Vec<String>,
    pub left_alone: Vec<String>,
    /// One line per role and per note, in the order of the backup's SQL.
    pub lines: Vec<String>,
}

/// The backup's globals SQL, read verified (size, sha256, decoded, decrypted).
///
/// # Errors
/// A usage error when the backup holds no globals; damage or a failed read otherwise.
pub async fn globals_sql(repo: &Repository, manifest: &Manifest) -> Result<String, RestoreError> {
    let Some(object) = manifest.object(&ObjectRole::Globals) else {
        return Err(RestoreError::Usage(format!(
            "backup {} has no roles ({})",
            manifest.id,
            manifest
                .globals
                .note
                .as_deref()
                .unwrap_or("globals = false")
        )));
    };
    if object.raw_bytes > GLOBALS_MAX_BYTES {
        return Err(RestoreError::Step(format!(
            "the globals object {} is {} bytes, more than pgkeep reads into memory",
            object.key, object.raw_bytes
        )));
    }
    repo.check_identities(manifest)
        .await
        .map_err(RestoreError::Repo)?;
    let decoding = stage::decoding(repo, manifest, object)?;
    let expected = Repository::expected(manifest, object);
    let source = SyncIoBridge::new(repo.read(manifest, object).await?);
    let raw = object.raw_bytes;
    let bytes = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        transfer::copy_verified(source, expected, &decoding, raw, &mut out).map(|_| out)
    })
    .await
    .map_err(|e| RestoreError::Step(format!("reading the globals stopped: {e}")))?
    .map_err(read_error)?;
    String::from_utf8(bytes).map_err(|_| {
        RestoreError::Step(format!(
            "the globals object {} is not UTF-8 SQL",
            object.key
        ))
    })
}

/// One statement to run, and how to show it (a password never shown).
struct Step {
    sql: String,
    shown: String,
}

/// A roles restore decided against the target server, not yet applied: what
/// [`RolesPlan::apply`] runs, in one transaction, on the session that read the roles.
pub struct RolesPlan {
    client: tokio_postgres::Client,
    steps: Vec<Step>,
    report: RolesReport,
    /// The target server, as `user@host:port/dbname` (never a password).
    pub target: String,
}

impl RolesPlan {
    /// What the restore does (or, in a dry run, would do), role by role.
    pub fn report(&self) -> &RolesReport {
        &self.report
    }

    /// Applies every step in one transaction: all of them, or (on any failure) none.
    ///
    /// # Errors
    /// The failed statement, or the server's error on commit; nothing is applied then.
    pub async fn apply(mut self) -> Result<RolesReport, RestoreError> {
        if self.steps.is_empty() {
            return Ok(self.report);
        }
        let describe = self.target.clone();
        let query = |what: &'static str| {
            let d = describe.clone();
            move |e| RestoreError::Pg(PgError::query(what, &d, e))
        };
        let tx = self
            .client
            .transaction()
            .await
            .map_err(query("starting the roles transaction"))?;
        for step in &self.steps {
            if let Err(e) = tx.batch_execute(&step.sql).await {
                return Err(RestoreError::Step(format!(
                    "restoring roles: `{}` failed: {}; nothing was applied",
                    step.shown,
                    crate::error::report(&crate::pg::DbError(e))
                )));
            }
        }
        tx.commit()
            .await
            .map_err(query("committing the roles transaction"))?;
        Ok(self.report)
    }
}

/// Reads the backup's roles (the globals object verified) and decides each against the roles
/// of the server of `options.target`; changes nothing (a dry run connects read-only).
///
/// # Errors
/// A usage error for a backup without globals or a bad conninfo; damage; the server's errors
/// reading its roles.
pub async fn plan_roles(
    repo: &Repository,
    manifest: &Manifest,
    options: &RolesOptions,
) -> Result<RolesPlan, RestoreError> {
    let sql = globals_sql(repo, manifest).await?;
    let statements = globals::parse(&sql).map_err(|e| RestoreError::Inconsistent {
        id: manifest.id.clone(),
        problems: vec![format!("its globals SQL cannot be read: {e}")],
    })?;
    let target = Target::resolve(&options.target, None)
        .map_err(|e| RestoreError::Usage(format!("--target: {}", crate::error::report(&e))))?;
    let session = if options.dry_run {
        target.read_only()
    } else {
        target.clone()
    };
    let client = session.connect().await?;
    let describe = target.describe();
    let rows = client
        .query(
            "SELECT rolname::text, rolname = current_user FROM pg_roles",
            &[],
        )
        .await
        .map_err(|e| {
            RestoreError::Pg(PgError::query("reading the target's roles", &describe, e))
        })?;
    let existing: BTreeSet<String> = rows.iter().map(|r| r.get(0)).collect();
    let me: Option<String> = rows.iter().find(|r| r.get(1)).map(|r| r.get(0));
    let (steps, report) = decide(
        &statements,
        &existing,
        me.as_deref(),
        options,
        manifest.globals.role_passwords,
    );
    Ok(RolesPlan {
        client,
        steps: if options.dry_run { Vec::new() } else { steps },
        report,
        target: describe,
    })
}

/// Decides every statement: what runs, and the report.
fn decide(
    statements: &[Statement],
    existing: &BTreeSet<String>,
    me: Option<&str>,
    options: &RolesOptions,
    backup_has_passwords: bool,
) -> (Vec<Step>, RolesReport) {
    let mut declared: Vec<String> = Vec::new();
    for s in statements {
        if let Kind::CreateRole { role } | Kind::Attributes { role, .. } = &s.kind
            && !declared.contains(role)
        {
            declared.push(role.clone());
        }
    }
    let created: BTreeSet<&str> = declared
        .iter()
        .filter(|r| !existing.contains(*r))
        .map(String::as_str)
        .collect();
    let updated: BTreeSet<&str> = declared
        .iter()
        .filter(|r| options.update_existing && existing.contains(*r) && Some(r.as_str()) != me)
        .map(String::as_str)
        .collect();
    let touched = |r: &str| created.contains(r) || updated.contains(r);
    let would = if options.dry_run { "would be " } else { "" };

    let mut steps = Vec::new();
    let mut report = RolesReport::default();
    let mut without_password: BTreeSet<&str> = BTreeSet::new();
    let mut notes = Vec::new();
    for s in statements {
        let run = match &s.kind {
            Kind::CreateRole { role } => created.contains(role.as_str()),
            Kind::Attributes { role, attributes } => {
                let new = created.contains(role.as_str());
                if new || updated.contains(role.as_str()) {
                    let (kept, had_password) = attributes_for(attributes, new, options.passwords);
                    if had_password && !options.passwords {
                        without_password.insert(role);
                    }
                    if !kept.is_empty() {
                        let head = globals::join(&s.tokens[..4]);
                        steps.push(Step {
                            sql: format!("{head} {}", globals::join(&kept)),
                            shown: format!("{head} {}", shown(&kept)),
                        });
                    }
                }
                false
            }
            Kind::Setting { role } | Kind::Comment { role } => touched(role),
            Kind::Membership { member, .. } => touched(member),
            Kind::Parameter { grantee } => touched(grantee),
            Kind::Tablespace {
                created: Some(name),
            } => {
                notes.push(format!(
                    "tablespace {name} skipped: it names a directory of the source host; create it by hand if the restored databases need it"
                ));
                false
            }
            Kind::Tablespace { created: None } | Kind::Session => false,
            Kind::Other => {
                let text: String = shown(&s.tokens).chars().take(80).collect();
                notes.push(format!(
                    "not applied (not a role statement pgkeep knows): {text}"
                ));
                false
            }
        };
        if run {
            steps.push(Step {
                sql: s.sql(),
                shown: shown(&s.tokens).chars().take(200).collect(),
            });
        }
    }
    for role in &declared {
        let r = role.as_str();
        let line = if created.contains(r) {
            report.created.push(role.clone());
            let pw = if without_password.contains(r) {
                " (without its password: --role-passwords sets it)"
            } else {
                ""
            };
            format!("role {role}: {would}created{pw}")
        } else if updated.contains(r) {
            report.updated.push(role.clone());
            format!("role {role}: {would}updated")
        } else {
            report.left_alone.push(role.clone());
            if Some(r) == me {
                format!("role {role}: left alone (it runs this restore)")
            } else {
                format!("role {role}: left alone (it exists; --update-roles updates it)")
            }
        };
        report.lines.push(line);
    }
    if options.passwords && !backup_has_passwords {
        notes.push(
            "the backup holds no role passwords (the backup role could not read them)".into(),
        );
    }
    report.lines.extend(notes);
    let mut summary = String::new();
    let _ = write!(
        summary,
        "{} roles {would}created, {} {would}updated, {} left alone",
        report.created.len(),
        report.updated.len(),
        report.left_alone.len()
    );
    if options.dry_run {
        summary.push_str(" (dry run: nothing was changed)");
    }
    report.lines.push(summary);
    (steps, report)
}

/// The attributes to give: without the password unless `passwords` (and whether there was
/// one), and for a new role without those it has already.
fn attributes_for(attributes: &[Tok], new: bool, passwords: bool) -> (Vec<Tok>, bool) {
    let mut kept = Vec::new();
    let mut had_password = false;
    let mut i = 0;
    while i < attributes.len() {
        let t = &attributes[i];
        let is = |w: &str| matches!(t, Tok::Word(x) if x.eq_ignore_ascii_case(w));
        if is("ENCRYPTED") || is("UNENCRYPTED") {
            i += 1;
            continue;
        }
        if is("PASSWORD") {
            let value = attributes.get(i + 1);
            let null = matches!(value, Some(Tok::Word(w)) if w.eq_ignore_ascii_case("NULL"));
            had_password |= !null;
            if passwords && !null {
                kept.push(t.clone());
                kept.extend(value.cloned());
            }
            i += 2;
            continue;
        }
        let default =
            matches!(t, Tok::Word(w) if DEFAULTS.iter().any(|d| w.eq_ignore_ascii_case(d)));
        if !(new && default) {
            kept.push(t.clone());
        }
        i += 1;
    }
    (kept, had_password)
}

/// Tokens as SQL with a password's value hidden.
fn shown(attributes: &[Tok]) -> String {
    let mut out = Vec::new();
    let mut hide = false;
    for t in attributes {
        out.push(if hide { "'***'".to_string() } else { t.sql() });
        hide = matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("PASSWORD"));
    }
    out.join(" ")
}

#[cfg(test)]
mod tests;
