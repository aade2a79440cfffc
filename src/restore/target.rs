//! The target database of a restore, at the level of whole databases: what it is (absent,
//! empty, or holding data; its owner, locale, privileges, settings and comment), what the
//! restoring role may do, the new database a restore is built in beside it (carrying the
//! target's properties), and the swap: one transaction renames the target away and the new
//! database into its place, so the target is at every moment either wholly old or wholly new.

use std::time::Duration;

use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use super::RestoreError;
use crate::pg::{self, PgError, Target, quote_ident, quote_literal};

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

    fn query_error(&self, what: &'static str) -> impl Fn(tokio_postgres::Error) -> RestoreError {
        let target = self.admin.describe();
        move |e| PgError::query(what, &target, e).into()
    }

    async fn exec(&self, what: &'static str, sql: &str) -> Result<(), RestoreError> {
        self.client
            .batch_execute(sql)
            .await
            .map_err(self.query_error(what))
    }
}

/// A database's own properties, which a dump does not hold and a replacement must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbProperties {
    pub owner: String,
    pub encoding: String,
    pub collate: String,
    pub ctype: String,
    /// `c` libc, `i` ICU, `b` builtin.
    pub locale_provider: String,
    pub locale: Option<String>,
    pub icu_rules: Option<String>,
    pub connection_limit: i32,
    pub tablespace: String,
    pub allow_connections: bool,
    pub is_template: bool,
    /// `None`: the default privileges; else every (grantee, privilege, grantable), PUBLIC as
    /// `PUBLIC`, roles quoted.
    pub acl: Option<Vec<(String, String, bool)>>,
    pub comment: Option<String>,
    /// `(role, "name=value")`: the database's settings (`role` empty) and the per-role
    /// settings in it (`ALTER ROLE ... IN DATABASE`).
    pub settings: Vec<(String, String)>,
}

/// Reads `name`'s properties, or `None` when there is no such database.
pub(super) async fn properties(
    server: &Server,
    name: &str,
) -> Result<Option<DbProperties>, RestoreError> {
    let locale = match server.version_num {
        v if v >= 170_000 => "d.datlocprovider::text, d.datlocale, d.daticurules",
        v if v >= 160_000 => "d.datlocprovider::text, d.daticulocale, d.daticurules",
        v if v >= 150_000 => "d.datlocprovider::text, d.daticulocale, NULL::text",
        _ => "'c'::text, NULL::text, NULL::text",
    };
    let sql = format!(
        "SELECT pg_get_userbyid(d.datdba)::text, pg_encoding_to_char(d.encoding)::text, \
                d.datcollate::text, d.datctype::text, {locale}, d.datconnlimit, \
                (SELECT spcname::text FROM pg_tablespace WHERE oid = d.dattablespace), \
                d.datallowconn, d.datistemplate, d.datacl IS NULL, \
                shobj_description(d.oid, 'pg_database'), d.oid \
         FROM pg_database d WHERE d.datname = $1"
    );
    let Some(row) = server
        .client
        .query_opt(&sql, &[&name])
        .await
        .map_err(server.query_error("reading the target database's properties"))?
    else {
        return Ok(None);
    };
    let oid: u32 = row.get(13);
    let acl = if row.get::<_, bool>(11) {
        None
    } else {
        let rows = server
            .client
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' \
                             ELSE quote_ident(pg_get_userbyid(a.grantee)) END, \
                        a.privilege_type::text, a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a WHERE d.oid = $1 ORDER BY 1, 2",
                &[&oid],
            )
            .await
            .map_err(server.query_error("reading the target database's privileges"))?;
        Some(
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect(),
        )
    };
    let settings = server
        .client
        .query(
            "SELECT COALESCE(quote_ident(r.rolname), ''), c \
             FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole, \
                  unnest(s.setconfig) c WHERE s.setdatabase = $1 ORDER BY 1, 2",
            &[&oid],
        )
        .await
        .map_err(server.query_error("reading the target database's settings"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Some(DbProperties {
        owner: row.get(0),
        encoding: row.get(1),
        collate: row.get(2),
        ctype: row.get(3),
        locale_provider: row.get(4),
        locale: row.get(5),
        icu_rules: row.get(6),
        connection_limit: row.get(7),
        tablespace: row.get(8),
        allow_connections: row.get(9),
        is_template: row.get(10),
        acl,
        comment: row.get(12),
        settings,
    }))
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
    format!(
        "{IN_PROGRESS} of backup {backup} by pid {} on {} since {}",
        std::process::id(),
        hostname(),
        crate::human::time(chrono::Utc::now())
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// Creates the database the restore is built in: from template0, with the target's properties
/// when it is replaced (ownership, privileges, settings and comment are carried when the build
/// is done, see `finish`), marked as a restore in progress.
pub(super) async fn create(
    server: &Server,
    name: &str,
    like: Option<&DbProperties>,
    backup: &str,
) -> Result<(), RestoreError> {
    use std::fmt::Write as _;
    let mut sql = format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name));
    if let Some(p) = like {
        let _ = write!(
            sql,
            " ENCODING {} LC_COLLATE {} LC_CTYPE {}",
            quote_literal(&p.encoding),
            quote_literal(&p.collate),
            quote_literal(&p.ctype)
        );
        match (p.locale_provider.as_str(), &p.locale) {
            ("i", Some(locale)) => {
                let _ = write!(
                    sql,
                    " LOCALE_PROVIDER icu ICU_LOCALE {}",
                    quote_literal(locale)
                );
                if let Some(rules) = &p.icu_rules {
                    let _ = write!(sql, " ICU_RULES {}", quote_literal(rules));
                }
            }
            ("b", Some(locale)) => {
                let _ = write!(
                    sql,
                    " LOCALE_PROVIDER builtin BUILTIN_LOCALE {}",
                    quote_literal(locale)
                );
            }
            _ => {}
        }
        if p.tablespace != "pg_default" {
            let _ = write!(sql, " TABLESPACE {}", quote_ident(&p.tablespace));
        }
    }
    server.exec("CREATE DATABASE", &sql).await?;
    let comment = format!(
        "COMMENT ON DATABASE {} IS {}",
        quote_ident(name),
        quote_literal(&in_progress_comment(backup))
    );
    server.exec("marking the new database", &comment).await?;
    tracing::info!(
        database = name,
        "created the database the restore is built in"
    );
    Ok(())
}

/// Gives the built database the target's own properties (or, for a new target, clears the
/// in-progress mark): owner, privileges, settings, connection limit, comment, template and
/// connection flags. Done after the data is in and before the swap, so a failure here still
/// leaves the target untouched.
pub(super) async fn finish(
    server: &Server,
    name: &str,
    like: Option<&DbProperties>,
) -> Result<(), RestoreError> {
    let db = quote_ident(name);
    let Some(p) = like else {
        return server
            .exec(
                "clearing the in-progress mark",
                &format!("COMMENT ON DATABASE {db} IS NULL"),
            )
            .await;
    };
    let mut sql = vec![format!(
        "ALTER DATABASE {db} OWNER TO {}",
        quote_ident(&p.owner)
    )];
    if let Some(acl) = &p.acl {
        sql.push(format!("REVOKE ALL ON DATABASE {db} FROM PUBLIC"));
        sql.push(format!(
            "REVOKE ALL ON DATABASE {db} FROM {}",
            quote_ident(&p.owner)
        ));
        for (grantee, privilege, grantable) in acl {
            sql.push(format!(
                "GRANT {privilege} ON DATABASE {db} TO {grantee}{}",
                if *grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
    }
    for (role, setting) in &p.settings {
        let Some(set) = set_clause(setting) else {
            continue;
        };
        if role.is_empty() {
            sql.push(format!("ALTER DATABASE {db} {set}"));
        } else {
            sql.push(format!("ALTER ROLE {role} IN DATABASE {db} {set}"));
        }
    }
    sql.push(format!(
        "ALTER DATABASE {db} WITH CONNECTION LIMIT {}",
        p.connection_limit
    ));
    sql.push(match &p.comment {
        Some(c) => format!("COMMENT ON DATABASE {db} IS {}", quote_literal(c)),
        None => format!("COMMENT ON DATABASE {db} IS NULL"),
    });
    if p.is_template {
        sql.push(format!("ALTER DATABASE {db} WITH IS_TEMPLATE true"));
    }
    if !p.allow_connections {
        sql.push(format!("ALTER DATABASE {db} WITH ALLOW_CONNECTIONS false"));
    }
    for statement in sql {
        server
            .exec("carrying the target's properties", &statement)
            .await?;
    }
    Ok(())
}

/// `SET name TO value` for a stored `name=value` setting, quoted as pg_dump quotes it: the
/// list-valued settings element by element, every other one as one literal.
fn set_clause(setting: &str) -> Option<String> {
    const LIST_QUOTE: &[&str] = &[
        "local_preload_libraries",
        "search_path",
        "session_preload_libraries",
        "shared_preload_libraries",
        "temp_tablespaces",
        "unix_socket_directories",
    ];
    let (name, value) = setting.split_once('=')?;
    let value = if LIST_QUOTE.contains(&name.to_ascii_lowercase().as_str()) {
        split_guc_list(value)
            .iter()
            .map(|v| quote_literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        quote_literal(value)
    };
    Some(format!("SET {} TO {value}", quote_ident(name)))
}

/// The elements of a list-valued setting as stored (`"$user", public`), as PostgreSQL's
/// `SplitGUCList` reads them: comma-separated, each optionally double-quoted.
fn split_guc_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut item = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    out
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
    let me = hostname();
    let (mut dead, mut others) = (Vec::new(), Vec::new());
    for r in rows {
        let name: String = r.get(0);
        let comment: String = r.get(1);
        if !is_side_of(&name, target) {
            continue;
        }
        let builder_gone = comment
            .strip_prefix(IN_PROGRESS)
            .and_then(|rest| {
                let pid: u32 = rest
                    .split(" by pid ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()?;
                let host = rest.split(" on ").nth(1)?.split(' ').next()?;
                Some(host == me && !std::path::Path::new(&format!("/proc/{pid}")).exists())
            })
            .unwrap_or(false);
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

    #[test]
    fn settings_are_quoted_as_pg_dump_quotes_them() {
        assert_eq!(
            set_clause("work_mem=64MB").unwrap(),
            "SET \"work_mem\" TO '64MB'"
        );
        assert_eq!(
            set_clause("search_path=\"$user\", public, \"My \"\"S\"\"\"").unwrap(),
            "SET \"search_path\" TO '$user', 'public', 'My \"S\"'"
        );
        assert_eq!(
            set_clause("TimeZone=Europe/Paris").unwrap(),
            "SET \"TimeZone\" TO 'Europe/Paris'"
        );
        assert!(set_clause("garbage").is_none());
    }
}
