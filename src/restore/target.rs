//! The target database of a restore, at the level of whole databases: the connection to its
//! server, what the restoring role may do, the names of the new database a restore is built in
//! and of the replaced one, leftovers of earlier restores, and the swap: one transaction renames
//! the target away and the new database into its place, so the target is at every moment either
//! wholly old or wholly new. (What the new database carries over is `properties`.)

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::RestoreError;
use crate::pg::{self, PgError, Target, quote_ident};

/// Marks a database a restore is being built in; the rest of the comment says which process.
const IN_PROGRESS: &str = "pgkeep: restore in progress";
/// Attempts of the swap when sessions keep connecting to the target.
const SWAP_ATTEMPTS: u32 = 5;

/// A connection to the target's server through a maintenance database (never the target or
/// the new database, which must be free to be renamed).
pub(super) struct Server {
    pub admin: Target,
    pub client: Client,
    pub version_num: i32,
}

impl Server {
    /// Connects to `postgres` (or `template1` when the target is `postgres` or `postgres` is
    /// missing) on the target's server.
    pub async fn connect(target: &Target) -> Result<Server, RestoreError> {
        let mut last = None;
        for maintenance in ["postgres", "template1"] {
            if maintenance == target.dbname() {
                continue;
            }
            let admin = target.with_dbname(maintenance);
            match admin.connect().await {
                Ok(client) => {
                    let row = client
                        .query_one("SELECT current_setting('server_version_num')::int", &[])
                        .await
                        .map_err(|e| {
                            PgError::query("reading the server version", &admin.describe(), e)
                        })?;
                    return Ok(Server {
                        version_num: row.get(0),
                        admin,
                        client,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("tried at least once").into())
    }

    pub(super) fn query_error(
        &self,
        what: &'static str,
    ) -> impl Fn(tokio_postgres::Error) -> RestoreError {
        let target = self.admin.describe();
        move |e| PgError::query(what, &target, e).into()
    }

    pub(super) async fn exec(&self, what: &'static str, sql: &str) -> Result<(), RestoreError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(self.query_error(what))
    }
}

/// What the restoring role may do on the server.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_excessive_bools)] // independent facts about a role
pub(super) struct Privileges {
    pub superuser: bool,
    pub createdb: bool,
    /// It has the privileges of the target's owner (it may rename it).
    pub owns_target: bool,
    /// It may create a database owned by the target's owner.
    pub may_give_to_owner: bool,
}

pub(super) async fn privileges(
    server: &Server,
    owner: Option<&str>,
) -> Result<Privileges, RestoreError> {
    let row = server
        .client
        .query_one(
            "SELECT r.rolsuper, r.rolcreatedb, \
                    COALESCE((SELECT pg_has_role(current_user, o.oid, 'USAGE') \
                              FROM pg_roles o WHERE o.rolname = $1), false), \
                    COALESCE((SELECT pg_has_role(current_user, o.oid, 'MEMBER') \
                              FROM pg_roles o WHERE o.rolname = $1), false) \
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&owner.unwrap_or("")],
        )
        .await
        .map_err(server.query_error("reading the restoring role's privileges"))?;
    let superuser: bool = row.get(0);
    Ok(Privileges {
        superuser,
        createdb: row.get(1),
        owns_target: superuser || (owner.is_some() && row.get::<_, bool>(2)),
        may_give_to_owner: superuser || (owner.is_some() && row.get::<_, bool>(3)),
    })
}

/// `<target>_pgkeep_<what>_<suffix>`, the target's part shortened so the name fits
/// PostgreSQL's 63 bytes.
pub(super) fn side_name(target: &str, what: &str, suffix: &str) -> String {
    let tail = format!("_pgkeep_{what}_{suffix}");
    let mut head = String::new();
    for c in target.chars() {
        if head.len() + c.len_utf8() + tail.len() > 63 {
            break;
        }
        head.push(c);
    }
    format!("{head}{tail}")
}

/// The marker comment of a database being built by this process.
pub(super) fn in_progress_comment(backup: &str) -> String {
    crate::marker::mark(&format!("{IN_PROGRESS} of backup {backup}"))
}

/// Puts `built` in the place of `target`: ends the target's sessions, then in one transaction
/// renames the target to `old` (when it exists) and `built` to the target's name. Retried when
/// sessions reconnect in between; on failure nothing was renamed.
pub(super) async fn swap(
    server: &mut Server,
    target: &str,
    built: &str,
    old: Option<&str>,
) -> Result<(), RestoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if old.is_some() {
            end_sessions(server, target).await?;
        }
        let tx = server
            .client
            .transaction()
            .await
            .map_err(server_query_error(&server.admin, "starting the swap"))?;
        let renamed = async {
            if let Some(old) = old {
                tx.batch_execute(&format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(target),
                    quote_ident(old)
                ))
                .await?;
            }
            tx.batch_execute(&format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(built),
                quote_ident(target)
            ))
            .await
        }
        .await;
        match renamed {
            Ok(()) => {
                return tx
                    .commit()
                    .await
                    .map_err(server_query_error(&server.admin, "committing the swap"));
            }
            Err(e) if e.code() == Some(&SqlState::OBJECT_IN_USE) && attempt < SWAP_ATTEMPTS => {
                std::mem::drop(tx);
                tracing::info!(
                    database = target,
                    attempt,
                    "sessions came back to the target: trying the swap again"
                );
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
            Err(e) => {
                return Err(RestoreError::Swap {
                    source: PgError::query("renaming the databases", &server.admin.describe(), e),
                });
            }
        }
    }
}

fn server_query_error(
    admin: &Target,
    what: &'static str,
) -> impl Fn(tokio_postgres::Error) -> RestoreError {
    let target = admin.describe();
    move |e| PgError::query(what, &target, e).into()
}

/// Terminates every other session on `database` (as `DROP DATABASE ... WITH (FORCE)` would)
/// and waits for them to end.
async fn end_sessions(server: &Server, database: &str) -> Result<(), RestoreError> {
    let wait = if server.version_num >= 140_000 {
        ", 5000"
    } else {
        ""
    };
    let sql = format!(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid{wait})) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()"
    );
    let row = server
        .client
        .query_one(&sql, &[&database])
        .await
        .map_err(server.query_error("ending the target's sessions"))?;
    let ended: i64 = row.get(0);
    if ended > 0 {
        tracing::warn!(
            database,
            sessions = ended,
            "ended the target's sessions for the swap"
        );
    }
    Ok(())
}

/// Drops a database the restore made (or replaced), ending its sessions.
pub(super) async fn drop(server: &Server, name: &str) -> Result<(), RestoreError> {
    let force = if server.version_num >= 130_000 {
        " WITH (FORCE)"
    } else {
        ""
    };
    server
        .exec(
            "DROP DATABASE",
            &format!("DROP DATABASE IF EXISTS {}{force}", quote_ident(name)),
        )
        .await
}

/// Databases that restores into `target` left: new ones whose builder (a process of this
/// host) is gone, to drop; and any others (built elsewhere, or replaced targets kept by a swap
/// that was killed before dropping them), to name in a warning.
pub(super) async fn leftovers(
    server: &Server,
    target: &str,
) -> Result<(Vec<String>, Vec<String>), RestoreError> {
    let rows = server
        .client
        .query(
            "SELECT datname::text, COALESCE(shobj_description(oid, 'pg_database'), '') \
             FROM pg_database WHERE datname LIKE '%\\_pgkeep\\_%' ORDER BY 1",
            &[],
        )
        .await
        .map_err(server.query_error("looking for leftovers of earlier restores"))?;
    let (mut dead, mut others) = (Vec::new(), Vec::new());
    for r in rows {
        let name: String = r.get(0);
        let comment: String = r.get(1);
        if !is_side_of(&name, target) {
            continue;
        }
        let builder_gone =
            comment.starts_with(IN_PROGRESS) && crate::marker::builder_gone(&comment);
        if builder_gone {
            dead.push(name);
        } else {
            others.push(name);
        }
    }
    Ok((dead, others))
}

/// Whether `name` is a `side_name` of `target` (a new or old database of its restores).
fn is_side_of(name: &str, target: &str) -> bool {
    ["new", "old"].iter().any(|what| {
        let marker = format!("_pgkeep_{what}_");
        name.rfind(&marker).is_some_and(|at| {
            let suffix = &name[at + marker.len()..];
            side_name(target, what, suffix) == name
        })
    })
}

/// The size of database `name` (`pg_database_size`), `None` when the role may not see it.
pub(super) async fn size(server: &Server, name: &str) -> Result<Option<i64>, RestoreError> {
    let row = server
        .client
        .query_one(
            "SELECT CASE WHEN has_database_privilege(d.oid, 'CONNECT') \
                    THEN pg_database_size(d.oid) END FROM pg_database d WHERE d.datname = $1",
            &[&name],
        )
        .await
        .map_err(server.query_error("reading the target database's size"))?;
    Ok(row.get(0))
}

/// Whether a database has user relations, as a restore counts them (up to `limit` names).
pub(super) async fn user_relations(target: &Target, limit: i64) -> Result<Vec<String>, PgError> {
    let client = target.connect().await?;
    pg::user_relations(&client, target, limit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_names_fit_in_63_bytes() {
        assert_eq!(
            side_name("app", "new", "1a2b3c4d"),
            "app_pgkeep_new_1a2b3c4d"
        );
        let long = "é".repeat(40);
        let name = side_name(&long, "old", "20261124T030000");
        assert!(name.len() <= 63, "{}", name.len());
        assert!(name.ends_with("_pgkeep_old_20261124T030000"));
    }
}
