//! What a drill checks in the restored database against what the backup recorded: the set of
//! tables, every table's row count, for exports every table's content digest (the same
//! `digest` of the same COPY text the backup computed), and every sequence's state.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use futures::{StreamExt, pin_mut};
use tokio_postgres::Client;

use crate::digest::RowDigest;
use crate::manifest::{BackupKind, Manifest, ObjectRole};
use crate::pg::{PgError, introspect};

/// One difference between the restored database and the backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The table or sequence, `"schema"."name"`.
    pub relation: String,
    pub difference: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.relation, self.difference)
    }
}

/// What the checks compared, and what differed.
#[derive(Debug, Default)]
pub struct Checked {
    pub tables: u64,
    pub rows: u64,
    pub digests: u64,
    pub sequences: u64,
    pub failures: Vec<Failure>,
    /// A backup made before pgkeep recorded row counts: only that it restores was checked.
    pub no_counts: bool,
}

impl Checked {
    /// Adds one database's checks to these; for a cluster backup `database` names it in each
    /// of its differences.
    pub fn absorb(&mut self, other: Checked, database: Option<&str>) {
        self.tables += other.tables;
        self.rows += other.rows;
        self.digests += other.digests;
        self.sequences += other.sequences;
        self.no_counts |= other.no_counts;
        self.failures
            .extend(other.failures.into_iter().map(|f| match database {
                Some(db) => Failure {
                    relation: format!("database '{}': {}", crate::human::name(db), f.relation),
                    difference: f.difference,
                },
                None => f,
            }));
    }
}

/// What the backup says a table holds.
struct Expected {
    rows: u64,
    /// Export tables: the digest and the data's columns, quoted, in the backup's order.
    digest: Option<(String, Vec<String>)>,
}

fn expected(manifest: &Manifest) -> BTreeMap<String, Expected> {
    match manifest.kind {
        BackupKind::Export => manifest
            .objects
            .iter()
            .filter(|o| o.role == ObjectRole::Table)
            .filter_map(|o| {
                let table = o.table.clone()?;
                let columns = introspect::data_columns(
                    o.columns.iter().map(|c| (c.name.as_str(), c.generated)),
                );
                Some((
                    table,
                    Expected {
                        rows: o.rows.unwrap_or(0),
                        digest: o.digest.clone().map(|d| (d, columns)),
                    },
                ))
            })
            .collect(),
        _ => manifest
            .tables
            .iter()
            .map(|t| {
                (
                    t.name.clone(),
                    Expected {
                        rows: t.rows,
                        digest: None,
                    },
                )
            })
            .collect(),
    }
}

/// Runs every check on `client`, a session in the restored database set up as a backup's
/// (`source::SESSION_SETUP`). `describe` names the database in errors.
///
/// # Errors
/// A query that failed; differences are `Checked::failures`, not errors.
pub async fn run(client: &Client, describe: &str, manifest: &Manifest) -> Result<Checked, PgError> {
    let query = |what: &'static str| {
        let describe = describe.to_string();
        move |e| PgError::query(what, &describe, e)
    };
    let mut checked = Checked::default();
    let expected = expected(manifest);
    let restored: BTreeSet<String> = introspect::data_tables(client)
        .await?
        .iter()
        .map(introspect::TableInfo::qualified)
        .collect();
    let is_dump = manifest.kind != BackupKind::Export;
    checked.no_counts = is_dump && expected.is_empty() && !restored.is_empty();

    let progress = crate::progress::get();
    progress.items("tables", expected.len() as u64);
    for (table, want) in &expected {
        progress.item_done();
        if !restored.contains(table) {
            checked.failures.push(Failure {
                relation: table.clone(),
                difference: "missing from the restored database".into(),
            });
            continue;
        }
        checked.tables += 1;
        let rows = if let Some((digest, columns)) = &want.digest {
            let got = digest_of(client, table, columns)
                .await
                .map_err(query("reading a restored table's rows"))?;
            checked.digests += 1;
            if got.rows == want.rows && &got.digest != digest {
                checked.failures.push(Failure {
                    relation: table.clone(),
                    difference: format!(
                        "its {} rows differ from the backup's: digest {}, the backup recorded {digest}",
                        got.rows, got.digest
                    ),
                });
            }
            got.rows
        } else {
            let row = client
                .query_one(&format!("SELECT count(*) FROM ONLY {table}"), &[])
                .await
                .map_err(query("counting a restored table's rows"))?;
            u64::try_from(row.get::<_, i64>(0)).unwrap_or(0)
        };
        checked.rows += rows;
        if rows != want.rows {
            checked.failures.push(Failure {
                relation: table.clone(),
                difference: format!("{rows} rows restored, the backup recorded {}", want.rows),
            });
        }
    }
    if is_dump && !checked.no_counts {
        for table in restored.iter().filter(|t| !expected.contains_key(*t)) {
            checked.failures.push(Failure {
                relation: table.clone(),
                difference: "restored, but the backup recorded no such table".into(),
            });
        }
    }

    for s in &manifest.sequences {
        checked.sequences += 1;
        // The name is the manifest's: quoted again from its parts, never pasted into SQL.
        let Some((schema, name)) = introspect::split_qualified(&s.name) else {
            checked.failures.push(Failure {
                relation: s.name.clone(),
                difference: "the backup records a sequence name that is not a quoted schema.name"
                    .into(),
            });
            continue;
        };
        let got = client
            .query_opt(
                &format!(
                    "SELECT last_value, is_called FROM {}",
                    introspect::qualify(&schema, &name)
                ),
                &[],
            )
            .await;
        let difference = match got {
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
                Some("missing from the restored database".to_string())
            }
            Err(e) => return Err(query("reading a restored sequence")(e)),
            Ok(None) => Some("missing from the restored database".to_string()),
            Ok(Some(row)) => {
                let (last_value, is_called): (i64, bool) = (row.get(0), row.get(1));
                (last_value != s.last_value || is_called != s.is_called).then(|| {
                    format!(
                        "last_value {last_value} (is_called {is_called}) restored, the backup recorded {} (is_called {})",
                        s.last_value, s.is_called
                    )
                })
            }
        };
        if let Some(difference) = difference {
            checked.failures.push(Failure {
                relation: s.name.clone(),
                difference,
            });
        }
    }
    Ok(checked)
}

/// The digest of `table`'s rows as `COPY (columns) TO STDOUT` prints them.
async fn digest_of(
    client: &Client,
    table: &str,
    columns: &[String],
) -> Result<crate::digest::TableDigest, tokio_postgres::Error> {
    let sql = if columns.is_empty() {
        format!("COPY {table} TO STDOUT")
    } else {
        format!("COPY {table} ({}) TO STDOUT", columns.join(", "))
    };
    let stream = client.copy_out(&sql).await?;
    pin_mut!(stream);
    let mut digest = RowDigest::new();
    while let Some(chunk) = stream.next().await {
        digest.update(&chunk?);
    }
    Ok(digest.finish())
}
