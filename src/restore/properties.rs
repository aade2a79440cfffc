//! A database's own properties, which a dump does not hold and a replacement must carry:
//! reading them from the target, creating the database a restore is built in like it, and
//! giving the built database the target's owner, privileges, settings and comment.

use super::RestoreError;
use super::target::{Server, in_progress_comment};
use crate::pg::{quote_ident, quote_literal};

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

/// Gives the built database the target's own properties (or, for a new target, `owner` when
/// given and clears the in-progress mark): owner, privileges, settings, connection limit, comment, template and
/// connection flags. Done after the data is in and before the swap, so a failure here still
/// leaves the target untouched.
pub(super) async fn finish(
    server: &Server,
    name: &str,
    like: Option<&DbProperties>,
    owner: Option<&str>,
) -> Result<(), RestoreError> {
    let db = quote_ident(name);
    let Some(p) = like else {
        if let Some(owner) = owner {
            server
                .exec(
                    "giving the new database its source's owner",
                    &format!("ALTER DATABASE {db} OWNER TO {}", quote_ident(owner)),
                )
                .await?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
