//! Fidelity snapshots of a database — every table's rows and content hash, sequences, large
//! objects and the schema as pg_dump prints it — and their comparison.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;

use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

use super::{Cluster, quote_ident};

impl Cluster {
    /// A fidelity snapshot of `db`: see [`DbSnapshot`].
    pub async fn snapshot(&self, db: &str) -> DbSnapshot {
        self.snapshot_excluding(db, &[]).await
    }

    /// Like [`Cluster::snapshot`], ignoring some relations entirely (data, sequences and schema),
    /// e.g. a migration runner's tracking table.
    ///
    /// Each entry is either `schema.name` (unquoted, exact) or a bare `name` matching in any
    /// schema; it can name a table, view, materialized view or sequence. Sequences OWNED BY an
    /// excluded table (serial, identity) are excluded with it; a sequence merely used in a
    /// column default (as in pagila) must be listed itself.
    pub async fn snapshot_excluding(&self, db: &str, exclude: &[&str]) -> DbSnapshot {
        let client = self.connect(db).await;
        client
            .batch_execute(&format!(
                "{SNAPSHOT_SESSION}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            ))
            .await
            .unwrap_or_else(|e| panic!("snapshot of {db}: {e}"));

        let rows = client
            .query(
                r"SELECT n.nspname::text, c.relname::text, c.relkind::text, c.relispopulated,
                         format('%I.%I', n.nspname, c.relname), o.nspname::text, o.relname::text
                    FROM pg_class c
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    LEFT JOIN LATERAL (
                         -- the table owning a serial (deptype a) or identity (i) sequence
                         SELECT tn.nspname, tc.relname
                           FROM pg_depend d
                           JOIN pg_class tc ON tc.oid = d.refobjid
                           JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                          WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass
                            AND d.objid = c.oid AND d.refclassid = 'pg_class'::regclass
                            AND d.deptype IN ('a', 'i')
                          LIMIT 1) o ON true
                   WHERE c.relkind IN ('r', 'p', 'm', 'v', 'f', 'S')
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                     AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
                   ORDER BY 5",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("snapshot of {db}: listing relations: {e}"));

        let is_excluded = |schema: &str, name: &str| {
            let qualified = format!("{schema}.{name}");
            exclude.iter().any(|e| *e == qualified || *e == name)
        };
        let mut tables = BTreeMap::new();
        let mut sequences = BTreeMap::new();
        let mut excluded_quoted = Vec::new();
        for row in &rows {
            let schema: String = row.get(0);
            let name: String = row.get(1);
            let kind: String = row.get(2);
            let populated: bool = row.get(3);
            let qname: String = row.get(4);
            let owner_schema: Option<String> = row.get(5);
            let owner_name: Option<String> = row.get(6);
            let owner_excluded = match (&owner_schema, &owner_name) {
                (Some(s), Some(n)) => is_excluded(s, n),
                _ => false,
            };
            if is_excluded(&schema, &name) || owner_excluded {
                excluded_quoted.push(format!(
                    "{}.{}",
                    quote_pattern(&schema),
                    quote_pattern(&name)
                ));
                continue;
            }
            match kind.as_str() {
                "r" | "m" => {
                    let digest = if populated {
                        table_digest(&client, &qname).await
                    } else {
                        TableDigest {
                            rows: 0,
                            sha256: "(materialized view not populated)".into(),
                        }
                    };
                    tables.insert(qname, digest);
                }
                "S" => {
                    let r = client
                        .query_one(&format!("SELECT last_value, is_called FROM {qname}"), &[])
                        .await
                        .unwrap_or_else(|e| {
                            panic!("snapshot of {db}: reading sequence {qname}: {e}")
                        });
                    sequences.insert(
                        qname,
                        SequenceState {
                            last_value: r.get(0),
                            is_called: r.get(1),
                        },
                    );
                }
                _ => {}
            }
        }

        let lo_rows = client
            .query(
                "SELECT m.oid::bigint, pg_get_userbyid(m.lomowner)::text, md5(lo_get(m.oid))
                   FROM pg_largeobject_metadata m ORDER BY m.oid",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("snapshot of {db}: large objects: {e}"));
        let large_objects = lo_rows
            .iter()
            .map(|r| {
                let oid: i64 = r.get(0);
                let owner: String = r.get(1);
                let md5: String = r.get(2);
                (oid as u32, format!("owner={owner} md5={md5}"))
            })
            .collect();
        client
            .batch_execute("COMMIT")
            .await
            .expect("commit snapshot transaction");

        let schema = self.schema_lines(db, &excluded_quoted).await;
        DbSnapshot {
            tables,
            sequences,
            large_objects,
            schema,
        }
    }

    /// `pg_dump --schema-only` of `db`, minus comments, blank lines and `\restrict` lines.
    async fn schema_lines(&self, db: &str, exclude_patterns: &[String]) -> Vec<String> {
        let mut cmd = self.command("pg_dump");
        cmd.arg("--schema-only").arg("-d").arg(self.url(db));
        for p in exclude_patterns {
            cmd.arg(format!("--exclude-table={p}"));
        }
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .await
            .expect("starting pg_dump");
        assert!(
            out.status.success(),
            "pg_dump --schema-only {db} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("pg_dump output is UTF-8")
            .lines()
            .filter(|l| {
                !(l.trim().is_empty()
                    || l.starts_with("--")
                    || l.starts_with("\\restrict ")
                    || l.starts_with("\\unrestrict "))
            })
            .map(str::to_owned)
            .collect()
    }

    /// Every row of `table` (a quoted, qualified name as in [`DbSnapshot::tables`]) as text, in
    /// the order the snapshot hashes them; for debugging a content mismatch.
    pub async fn table_rows(&self, db: &str, table: &str) -> Vec<String> {
        let client = self.connect(db).await;
        client
            .batch_execute(SNAPSHOT_SESSION)
            .await
            .expect("session settings");
        client
            .query(&row_text_query(table), &[])
            .await
            .unwrap_or_else(|e| panic!("reading {table} in {db}: {e}"))
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }
}

/// Canonical output formats for snapshots, independent of per-database or per-role settings.
const SNAPSHOT_SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET lc_monetary = 'C'; SET xmloption = 'content'; SET row_security = off; \
     SET statement_timeout = 0";

fn row_text_query(qname: &str) -> String {
    format!(
        "SELECT pgkeep_row FROM (SELECT ROW(pgkeep_t.*)::text AS pgkeep_row FROM ONLY {qname} pgkeep_t) q \
         ORDER BY pgkeep_row COLLATE \"C\""
    )
}

/// Streams a table's rows (as text, sorted bytewise) and hashes them client-side: no size limit
/// on the table, unlike `string_agg` on the server.
async fn table_digest(client: &tokio_postgres::Client, qname: &str) -> TableDigest {
    let copy = format!("COPY ({}) TO STDOUT", row_text_query(qname));
    let stream = client
        .copy_out(copy.as_str())
        .await
        .unwrap_or_else(|e| panic!("snapshot: reading {qname}: {e}"));
    let mut stream = std::pin::pin!(stream);
    let mut hasher = Sha256::new();
    let mut rows = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap_or_else(|e| panic!("snapshot: reading {qname}: {e}"));
        // COPY text format escapes newlines inside values, so each row is exactly one line.
        #[allow(clippy::naive_bytecount)]
        let lines = chunk.iter().filter(|&&b| b == b'\n').count() as u64;
        rows += lines;
        hasher.update(&chunk);
    }
    TableDigest {
        rows,
        sha256: hex::encode(hasher.finalize()),
    }
}

/// A name as an exact pg_dump pattern part: double-quoted, so no case folding or wildcards.
fn quote_pattern(s: &str) -> String {
    quote_ident(s)
}

/// [`TableDigest::sha256`] of a materialized view that was never refreshed (`WITH NO DATA`).
pub const UNPOPULATED: &str = "(materialized view not populated)";

/// Row count and content hash of one table or materialized view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDigest {
    pub rows: u64,
    /// SHA-256 (hex) of `COPY (SELECT ROW(t.*)::text ... ORDER BY 1 COLLATE "C") TO STDOUT`,
    /// or [`UNPOPULATED`].
    pub sha256: String,
}

/// A sequence's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceState {
    pub last_value: i64,
    pub is_called: bool,
}

/// What a restored database must share with its source.
///
/// Keys are `format('%I.%I', schema, name)`, e.g. `public.actor`, `"we;ird ""sch".t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSnapshot {
    /// Every ordinary table (each partition and inheritance child on its own, rows read with
    /// `ONLY`) and materialized view outside the system schemas.
    pub tables: BTreeMap<String, TableDigest>,
    /// Every sequence (including serial and identity sequences): `last_value`, `is_called`.
    pub sequences: BTreeMap<String, SequenceState>,
    /// Large objects: oid → owner and md5 of the content.
    pub large_objects: BTreeMap<u32, String>,
    /// `pg_dump --schema-only` (owners and privileges kept) without comments, blank lines and
    /// the `\restrict`/`\unrestrict` lines with their random key.
    pub schema: Vec<String>,
}

impl DbSnapshot {
    /// Total rows over all tables.
    pub fn total_rows(&self) -> u64 {
        self.tables.values().map(|t| t.rows).sum()
    }

    /// Human-readable differences from `expected` to `self`; empty when equal.
    pub fn diff(&self, expected: &DbSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        diff_maps(
            "table",
            &expected.tables,
            &self.tables,
            &mut out,
            |t| format!("{} rows", t.rows),
            |e, a| {
                if e.rows == a.rows {
                    format!("{} rows in both, content differs", e.rows)
                } else {
                    format!("{} rows expected, {} actual", e.rows, a.rows)
                }
            },
        );
        diff_maps(
            "sequence",
            &expected.sequences,
            &self.sequences,
            &mut out,
            |s| format!("last_value={} is_called={}", s.last_value, s.is_called),
            |e, a| {
                format!(
                    "expected last_value={} is_called={}, actual last_value={} is_called={}",
                    e.last_value, e.is_called, a.last_value, a.is_called
                )
            },
        );
        diff_maps(
            "large object",
            &expected.large_objects,
            &self.large_objects,
            &mut out,
            Clone::clone,
            |e, a| format!("expected {e}, actual {a}"),
        );
        if expected.schema != self.schema {
            out.push("schema (pg_dump --schema-only) differs (- expected, + actual):".into());
            out.extend(line_diff(&expected.schema, &self.schema, 3, 200));
        }
        out
    }
}

fn diff_maps<K: Ord + std::fmt::Display, V: PartialEq>(
    what: &str,
    expected: &BTreeMap<K, V>,
    actual: &BTreeMap<K, V>,
    out: &mut Vec<String>,
    one: impl Fn(&V) -> String,
    describe: impl Fn(&V, &V) -> String,
) {
    for (k, e) in expected {
        match actual.get(k) {
            None => out.push(format!("{what} {k}: missing (expected {})", one(e))),
            Some(a) if a != e => out.push(format!("{what} {k}: {}", describe(e, a))),
            Some(_) => {}
        }
    }
    for (k, a) in actual {
        if !expected.contains_key(k) {
            out.push(format!("{what} {k}: unexpected ({})", one(a)));
        }
    }
}

/// A unified-style line diff (LCS on the differing middle), `context` lines around changes, at
/// most `max` output lines.
fn line_diff(old: &[String], new: &[String], context: usize, max: usize) -> Vec<String> {
    let prefix = old.iter().zip(new).take_while(|(x, y)| x == y).count();
    let suffix = old[prefix..]
        .iter()
        .rev()
        .zip(new[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (
        &old[prefix..old.len() - suffix],
        &new[prefix..new.len() - suffix],
    );

    // Edit script over the middle: (tag, line) with tag ' ', '-', '+'.
    let mut script: Vec<(char, &str)> = Vec::new();
    if am.len().saturating_mul(bm.len()) <= 25_000_000 {
        let (rows, cols) = (am.len(), bm.len());
        let mut lcs = vec![0u32; (rows + 1) * (cols + 1)];
        for i in (0..rows).rev() {
            for j in (0..cols).rev() {
                lcs[i * (cols + 1) + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * (cols + 1) + j + 1] + 1
                } else {
                    lcs[(i + 1) * (cols + 1) + j].max(lcs[i * (cols + 1) + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < rows || j < cols {
            if i < rows && j < cols && am[i] == bm[j] {
                script.push((' ', &am[i]));
                i += 1;
                j += 1;
            } else if i < rows
                && (j == cols || lcs[(i + 1) * (cols + 1) + j] >= lcs[i * (cols + 1) + j + 1])
            {
                script.push(('-', &am[i]));
                i += 1;
            } else {
                script.push(('+', &bm[j]));
                j += 1;
            }
        }
    } else {
        // Too big for LCS: lines only on one side, as multisets.
        let sa: BTreeSet<&String> = am.iter().collect();
        let sb: BTreeSet<&String> = bm.iter().collect();
        script.extend(
            am.iter()
                .filter(|l| !sb.contains(l))
                .map(|l| ('-', l.as_str())),
        );
        script.extend(
            bm.iter()
                .filter(|l| !sa.contains(l))
                .map(|l| ('+', l.as_str())),
        );
    }

    let mut out = Vec::new();
    let before = prefix.saturating_sub(context);
    if before > 0 {
        out.push(format!("@@ after line {before} @@"));
    }
    out.extend(old[before..prefix].iter().map(|l| format!("  {l}")));
    // Keep only context lines near a change inside the middle.
    let changed: Vec<usize> = script
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t != ' ')
        .map(|(i, _)| i)
        .collect();
    let near = |i: usize| changed.iter().any(|&c| c.abs_diff(i) <= context);
    let mut skipped = false;
    for (i, (tag, line)) in script.iter().enumerate() {
        if *tag != ' ' || near(i) {
            if skipped {
                out.push("  ...".into());
                skipped = false;
            }
            out.push(format!("{tag} {line}"));
        } else {
            skipped = true;
        }
    }
    let tail = &old[old.len() - suffix..];
    out.extend(tail.iter().take(context).map(|l| format!("  {l}")));
    if out.len() > max {
        let more = out.len() - max;
        out.truncate(max);
        out.push(format!("... {more} more diff lines"));
    }
    out
}

/// Panics with a readable list of differences unless `actual` equals `expected`.
pub fn assert_same(expected: &DbSnapshot, actual: &DbSnapshot) {
    let diff = actual.diff(expected);
    assert!(
        diff.is_empty(),
        "databases differ ({} tables, {} sequences expected):\n{}\n\
         (Cluster::table_rows(db, table) lists a table's rows as the snapshot hashes them)",
        expected.tables.len(),
        expected.sequences.len(),
        diff.join("\n")
    );
}
