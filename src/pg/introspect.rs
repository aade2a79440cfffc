//! Catalog queries for exports and their restores: tables with their columns, sequences,
//! large objects, triggers and foreign keys.

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{PgError, quote_ident};

/// A column of a table: its name (unquoted, as in the catalog), `format_type()`, and
/// whether it is generated (generated columns are not in COPY data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_name: String,
    pub generated: bool,
}

/// A materialized view, and whether it is populated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializedView {
    /// `"schema"."name"`.
    pub name: String,
    pub populated: bool,
}

/// A table whose rows an export reads: an ordinary table, a leaf partition, or an
/// inheritance parent (whose own rows only are read: COPY never includes children).
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub oid: u32,
    pub schema: String,
    pub name: String,
    pub columns: Vec<Column>,
    /// Size estimate, to start the biggest tables first.
    pub pages: i64,
    /// The partitioned tables above a partition, nearest first (schema, name).
    pub ancestors: Vec<(String, String)>,
}

impl TableInfo {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        qualify(&self.schema, &self.name)
    }

    /// The quoted names of the columns the data holds (generated columns excluded).
    pub fn data_columns(&self) -> Vec<String> {
        data_columns(self.columns.iter().map(|c| (c.name.as_str(), c.generated)))
    }
}

/// `"schema"."name"`, the one spelling of qualified names in manifests and comparisons.
pub fn qualify(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// `"schema"."name"` back into its two catalog names.
pub fn split_qualified(q: &str) -> Option<(String, String)> {
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

/// The quoted names of the non-generated columns, in order.
pub fn data_columns<'a>(columns: impl IntoIterator<Item = (&'a str, bool)>) -> Vec<String> {
    columns
        .into_iter()
        .filter(|(_, generated)| !generated)
        .map(|(name, _)| quote_ident(name))
        .collect()
}

fn query_error(what: &'static str) -> impl Fn(tokio_postgres::Error) -> PgError {
    move |e| PgError::query(what, "", e)
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog','information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'";

/// Every table holding rows of its own (relkind `r`, permanent or unlogged), outside system
/// schemas and extensions, with its columns.
///
/// # Errors
/// `PgError::Query`.
pub async fn data_tables(client: &Client) -> Result<Vec<TableInfo>, PgError> {
    let sql = format!(
        "SELECT c.oid, n.nspname::text, c.relname::text, c.relpages::bigint, \
           COALESCE((SELECT json_agg(json_build_array(an.nspname, ac.relname) ORDER BY pa.depth) \
                     FROM (SELECT relid, row_number() OVER () AS depth \
                           FROM pg_partition_ancestors(c.oid)) pa \
                     JOIN pg_class ac ON ac.oid = pa.relid \
                     JOIN pg_namespace an ON an.oid = ac.relnamespace \
                     WHERE pa.relid <> c.oid)::text, '[]') \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND c.relpersistence IN ('p','u') AND {USER_SCHEMAS} \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 2, 3"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(query_error("listing tables"))?;
    let mut tables: Vec<TableInfo> = rows
        .iter()
        .map(|r| {
            let ancestors: Vec<(String, String)> =
                serde_json::from_str(r.get::<_, &str>(4)).unwrap_or_default();
            TableInfo {
                oid: r.get(0),
                schema: r.get(1),
                name: r.get(2),
                columns: Vec::new(),
                pages: r.get(3),
                ancestors,
            }
        })
        .collect();
    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let mut columns = table_columns(client, &oids).await?;
    for t in &mut tables {
        t.columns = columns.remove(&t.oid).unwrap_or_default();
    }
    Ok(tables)
}

/// The columns (name, type, generated) of each relation, in attribute order.
///
/// # Errors
/// `PgError::Query`.
pub async fn table_columns(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<Column>>, PgError> {
    let rows = client
        .query(
            "SELECT attrelid, attname::text, format_type(atttypid, atttypmod), attgenerated <> '' \
             FROM pg_attribute WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped \
             ORDER BY attrelid, attnum",
            &[&oids],
        )
        .await
        .map_err(query_error("reading columns"))?;
    let mut out: HashMap<u32, Vec<Column>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_name: r.get(2),
            generated: r.get(3),
        });
    }
    Ok(out)
}

/// A sequence and the table column that owns it, if any.
#[derive(Debug, Clone)]
pub struct SequenceInfo {
    /// `"schema"."name"`.
    pub name: String,
    /// `"schema"."table"` of an owning column (serial, identity, OWNED BY).
    pub owned_by: Option<String>,
}

/// Every user sequence outside extensions.
///
/// # Errors
/// `PgError::Query`.
pub async fn sequences(client: &Client) -> Result<Vec<SequenceInfo>, PgError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, \
           (SELECT json_build_array(tn.nspname, t.relname)::text FROM pg_depend d \
              JOIN pg_class t ON t.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = t.relnamespace \
            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid \
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a','i') LIMIT 1) \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'S' AND {USER_SCHEMAS} \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(query_error("listing sequences"))?;
    Ok(rows
        .iter()
        .map(|r| SequenceInfo {
            name: qualify(r.get(0), r.get(1)),
            owned_by: r
                .get::<_, Option<&str>>(2)
                .and_then(|j| serde_json::from_str::<(String, String)>(j).ok())
                .map(|(s, n)| qualify(&s, &n)),
        })
        .collect())
}

/// Reads a sequence's state (`last_value`, `is_called`).
///
/// # Errors
/// `PgError::Query`.
pub async fn sequence_state(client: &Client, name: &str) -> Result<(i64, bool), PgError> {
    let row = client
        .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
        .await
        .map_err(query_error("reading a sequence"))?;
    Ok((row.get(0), row.get(1)))
}

/// The number of large objects in the database.
///
/// # Errors
/// `PgError::Query`.
pub async fn large_object_count(client: &Client) -> Result<i64, PgError> {
    let row = client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(query_error("counting large objects"))?;
    Ok(row.get(0))
}

/// `max(version)` of a migrations tracking table, or `None` when the table does not exist.
///
/// # Errors
/// `PgError::Query` (e.g. a table without a `version` column).
pub async fn migration_version(client: &Client, table: &str) -> Result<Option<i64>, PgError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&table])
        .await
        .map_err(query_error("looking up the migrations table"))?
        .get(0);
    let Some(regclass) = exists else {
        return Ok(None);
    };
    let row = client
        .query_one(&format!("SELECT max(version)::bigint FROM {regclass}"), &[])
        .await
        .map_err(query_error("reading the migration version"))?;
    Ok(row.get(0))
}

/// Every materialized view in user schemas, and whether it is populated.
///
/// # Errors
/// `PgError::Query`.
pub async fn materialized_views(client: &Client) -> Result<Vec<MaterializedView>, PgError> {
    let rows = client
        .query(
            "SELECT schemaname::text, matviewname::text, ispopulated FROM pg_matviews \
             WHERE schemaname NOT IN ('pg_catalog','information_schema') ORDER BY 1",
            &[],
        )
        .await
        .map_err(query_error("listing materialized views"))?;
    Ok(rows
        .iter()
        .map(|r| MaterializedView {
            name: qualify(r.get(0), r.get(1)),
            populated: r.get(2),
        })
        .collect())
}

/// A user trigger that is enabled on a table (state `O` origin, `A` always, `R` replica).
#[derive(Debug, Clone)]
pub struct TriggerState {
    pub name: String,
    pub enabled: char,
}

/// The enabled user (non-internal) triggers of a table.
///
/// # Errors
/// `PgError::Query`.
pub async fn enabled_user_triggers(
    client: &Client,
    table: &str,
) -> Result<Vec<TriggerState>, PgError> {
    let rows = client
        .query(
            "SELECT tgname::text, tgenabled::text FROM pg_trigger \
             WHERE tgrelid = $1::text::regclass AND NOT tgisinternal AND tgenabled <> 'D'",
            &[&table],
        )
        .await
        .map_err(query_error("listing triggers"))?;
    Ok(rows
        .iter()
        .map(|r| TriggerState {
            name: r.get(0),
            enabled: r.get::<_, String>(1).chars().next().unwrap_or('O'),
        })
        .collect())
}

/// A constraint that must be off while data loads, as `ALTER TABLE ... ADD CONSTRAINT`
/// recreates it: a foreign key (its check depends on load order) or a NOT VALID check
/// (existing rows may violate it; COPY would refuse them).
#[derive(Debug, Clone)]
pub struct LoadConstraint {
    /// `"schema"."table"`.
    pub table: String,
    pub name: String,
    pub definition: String,
    /// `"schema"."table"` a foreign key references; `None` for a check.
    pub references: Option<String>,
}

/// Every top-level foreign key (not the per-partition clones) and every NOT VALID check
/// constraint defined on its own table (not inherited) in user schemas.
///
/// # Errors
/// `PgError::Query`.
pub async fn load_constraints(client: &Client) -> Result<Vec<LoadConstraint>, PgError> {
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, con.conname::text, \
                pg_get_constraintdef(con.oid), rn.nspname::text, r.relname::text \
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_class r ON r.oid = con.confrelid \
         LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE ((con.contype = 'f' AND con.conparentid = 0) \
                OR (con.contype = 'c' AND NOT con.convalidated AND con.coninhcount = 0)) \
           AND {USER_SCHEMAS} ORDER BY con.contype DESC, 1, 2, 3"
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(query_error("listing constraints"))?;
    Ok(rows
        .iter()
        .map(|r| LoadConstraint {
            table: qualify(r.get(0), r.get(1)),
            name: r.get(2),
            definition: r.get(3),
            references: r
                .get::<_, Option<&str>>(4)
                .zip(r.get::<_, Option<&str>>(5))
                .map(|(s, n)| qualify(s, n)),
        })
        .collect())
}
