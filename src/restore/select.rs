//! Selective restores of dump backups (`--tables`): which entries of the archive's table of
//! contents (`pg_restore --list --verbose`) are restored, written as a `--use-list`.
//!
//! The rule: the selected tables (and the partitions of a selected partitioned table) are
//! kept with everything that depends only on kept entries — their data, defaults, indexes,
//! constraints, triggers, policies, rules, privileges, comments, and the foreign keys among
//! them. Entries bound to no table (schemas, types, functions, extensions, ...) are kept too,
//! unless they use a table that is not restored (a view over it, a function returning its row
//! type), and so are sequences, except those only tables left out use. Foreign keys to or from
//! a table left out are left out, and named.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::toc::{self, Entry};
use crate::source::TablePattern;

/// A table of the archive: its entry id and its name, `"schema"."name"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedTable {
    pub id: u32,
    pub name: String,
}

/// A foreign key a selective restore leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOutKey {
    /// `"schema"."table"` the key is defined on.
    pub table: String,
    pub constraint: String,
    /// The tables it references (one, for a foreign key).
    pub references: Vec<String>,
}

/// What a `--tables` selection restores of a dump.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The restored tables, `"schema"."name"`, in archive order.
    pub tables: Vec<String>,
    /// Foreign keys of restored tables that link a table left out.
    pub foreign_keys_left_out: Vec<LeftOutKey>,
    /// Other entries left out because they use a table that is not restored (views,
    /// materialized views, functions, and a trigger, index or default of a restored table
    /// that uses one of those), as `DESC schema name`.
    pub dependents_left_out: Vec<String>,
    /// The `--use-list`: the archive's listing with every entry not restored commented out.
    pub(super) list: String,
}

impl Selection {
    /// Logs what the restore leaves out, as the dry run names it.
    pub(super) fn warn_left_out(&self) {
        for k in &self.foreign_keys_left_out {
            tracing::warn!(table = %k.table, constraint = %k.constraint,
                references = %k.references.join(", "),
                "foreign key not restored: a table it links is not part of this selective restore");
        }
        for d in &self.dependents_left_out {
            tracing::warn!(entry = %d, "not restored: it uses a table this selective restore leaves out");
        }
    }
}

/// The TABLE entries of a listing, with their names.
pub(super) fn archived_tables(entries: &[Entry]) -> Vec<ArchivedTable> {
    entries
        .iter()
        .filter_map(|e| match toc::toc_entry(&e.line) {
            Some(("TABLE", rest)) => Some(ArchivedTable {
                id: e.id,
                name: splits(rest)
                    .first()
                    .map(|(s, n)| crate::pg::introspect::qualify(s, n))?,
            }),
            _ => None,
        })
        .collect()
}

/// The ways `schema name owner` (as `pg_restore --list` prints a TABLE entry, unquoted) can be
/// read as (schema, name): the owner is the last word, and a name with spaces leaves the
/// split between schema and name ambiguous. The first reading takes the schema as one word.
fn splits(rest: &str) -> Vec<(String, String)> {
    let words: Vec<&str> = rest.split(' ').collect();
    let named = match words.len() {
        0 | 1 => return Vec::new(),
        2 => &words[..],
        n => &words[..n - 1],
    };
    (1..named.len())
        .map(|i| (named[..i].join(" "), named[i..].join(" ")))
        .collect()
}

/// Selects the tables `patterns` match and everything restored with them (see the module
/// docs).
///
/// # Errors
/// A message for a usage error: a pattern that matches no table (each is named), or a
/// selected table that needs a table left out (an inheritance parent).
pub(super) fn select(listing: &str, patterns: &[TablePattern]) -> Result<Selection, String> {
    let entries = toc::parse(listing);
    let by_id: BTreeMap<u32, &Entry> = entries.iter().map(|e| (e.id, e)).collect();
    let desc = |id: u32| {
        by_id
            .get(&id)
            .and_then(|e| toc::toc_entry(&e.line))
            .map(|d| d.0)
    };

    // The tables the patterns name, each pattern matching at least one.
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    let mut selected: BTreeSet<u32> = BTreeSet::new();
    let mut unmatched: Vec<&str> = Vec::new();
    for p in patterns {
        let mut any = false;
        for e in &entries {
            let Some(("TABLE", rest)) = toc::toc_entry(&e.line) else {
                continue;
            };
            let readings = splits(rest);
            let hit = readings.iter().find(|(s, n)| p.matches(s, n));
            if let Some((s, n)) = hit.or(readings.first()) {
                names
                    .entry(e.id)
                    .or_insert_with(|| crate::pg::introspect::qualify(s, n));
            }
            if let Some((s, n)) = hit {
                names.insert(e.id, crate::pg::introspect::qualify(s, n));
                selected.insert(e.id);
                any = true;
            }
        }
        if !any {
            unmatched.push(p.as_str());
        }
    }
    if !unmatched.is_empty() {
        return Err(format!(
            "no table of the backup matches --tables {}",
            unmatched.join(",")
        ));
    }
    for t in archived_tables(&entries) {
        names.entry(t.id).or_insert(t.name);
    }
    let is_table = |id: u32| desc(id) == Some("TABLE");

    // A partitioned table brings its partitions: `TABLE ATTACH` depends on both.
    loop {
        let before = selected.len();
        for e in &entries {
            if let Some(("TABLE ATTACH", _)) = toc::toc_entry(&e.line) {
                let tables: Vec<u32> = e.deps.iter().copied().filter(|d| is_table(*d)).collect();
                // The partition is the one of the two that depends on the other.
                if let [a, b] = tables[..] {
                    let (child, parent) = if by_id[&a].deps.contains(&b) {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    if selected.contains(&parent) {
                        selected.insert(child);
                    }
                }
            }
        }
        if selected.len() == before {
            break;
        }
    }

    // Sequences used (in a default, or owned) only by tables left out are left out.
    let mut users: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
    for e in &entries {
        let on_tables: Vec<u32> = match toc::toc_entry(&e.line) {
            Some(("TABLE", _)) => vec![e.id],
            Some(("DEFAULT" | "SEQUENCE OWNED BY", _)) => {
                e.deps.iter().copied().filter(|d| is_table(*d)).collect()
            }
            _ => continue,
        };
        for d in e.deps.iter().filter(|d| desc(**d) == Some("SEQUENCE")) {
            users
                .entry(*d)
                .or_default()
                .extend(on_tables.iter().copied());
        }
    }
    let mut excluded: BTreeSet<u32> = names
        .keys()
        .copied()
        .filter(|id| !selected.contains(id))
        .collect();
    excluded.extend(
        users
            .iter()
            .filter(|(_, tables)| tables.is_disjoint(&selected))
            .map(|(seq, _)| *seq),
    );

    // Keep what is not excluded and depends only on kept entries, until nothing changes.
    let mut kept: BTreeSet<u32> = entries
        .iter()
        .map(|e| e.id)
        .filter(|id| !excluded.contains(id))
        .collect();
    loop {
        let dropped: Vec<u32> = kept
            .iter()
            .copied()
            .filter(|id| {
                by_id[id]
                    .deps
                    .iter()
                    .any(|d| by_id.contains_key(d) && !kept.contains(d))
            })
            .collect();
        if dropped.is_empty() {
            break;
        }
        for id in dropped {
            kept.remove(&id);
        }
    }

    let mut problems = Vec::new();
    for id in &selected {
        if kept.contains(id) {
            continue;
        }
        let needs: Vec<&str> = by_id[id]
            .deps
            .iter()
            .filter(|d| is_table(**d) && !selected.contains(d))
            .filter_map(|d| names.get(d).map(String::as_str))
            .collect();
        problems.push(format!(
            "table {} needs {}, which --tables does not select",
            names[id],
            if needs.is_empty() {
                "an object left out".to_string()
            } else {
                needs.join(", ")
            }
        ));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }

    let (_, foreign_keys_left_out) = split_foreign_keys(&entries, &names, &selected);
    let key_tables = toc::foreign_key_tables(&entries);
    // An entry of restored tables only (a trigger, an index, a default, a key among them)
    // that is left out because it uses something else left out (a function over a table
    // not restored) is named, not dropped silently.
    let of_restored_only = |e: &Entry| match key_tables.get(&e.id) {
        Some(tables) => !tables.is_empty() && tables.iter().all(|t| selected.contains(t)),
        None => {
            e.deps.iter().any(|d| selected.contains(d))
                && !e.deps.iter().any(|d| is_table(*d) && !selected.contains(d))
        }
    };
    let mut dependents_left_out = Vec::new();
    for e in entries.iter().filter(|e| !kept.contains(&e.id)) {
        let shown_left_out = match toc::toc_entry(&e.line) {
            _ if excluded.contains(&e.id) => false,
            Some((d, _)) if toc::TABLE_BOUND.contains(&d) => of_restored_only(e),
            _ => true,
        };
        if !shown_left_out {
            continue;
        }
        if let Some((_, after)) = e.line.split_once("; ") {
            let shown = after.splitn(3, ' ').nth(2).unwrap_or(after);
            let shown = shown.rsplit_once(' ').map_or(shown, |(s, _)| s);
            dependents_left_out.push(shown.to_string());
        }
    }

    let mut list = String::new();
    for line in listing.lines() {
        match toc::line_id(line) {
            Some(id) if !kept.contains(&id) => {
                let _ = writeln!(list, ";{line}");
            }
            _ => {
                let _ = writeln!(list, "{line}");
            }
        }
    }
    Ok(Selection {
        tables: entries
            .iter()
            .filter(|e| selected.contains(&e.id))
            .map(|e| names[&e.id].clone())
            .collect(),
        foreign_keys_left_out,
        dependents_left_out,
        list,
    })
}

/// The foreign keys of a restore of the tables `restored` (TABLE entry ids, named in
/// `names`): the ids of those that link restored tables only, and those of restored tables
/// that link a table left out.
pub(super) fn split_foreign_keys(
    entries: &[Entry],
    names: &BTreeMap<u32, String>,
    restored: &BTreeSet<u32>,
) -> (BTreeSet<u32>, Vec<LeftOutKey>) {
    let mut kept = BTreeSet::new();
    let mut left_out = Vec::new();
    let prefix_of = |t: &u32| {
        names.get(t).and_then(|n| {
            let (s, n) = crate::pg::introspect::split_qualified(n)?;
            Some(format!("{s} {n} "))
        })
    };
    for (id, tables) in toc::foreign_key_tables(entries) {
        if !tables.is_empty() && tables.iter().all(|t| restored.contains(t)) {
            kept.insert(id);
            continue;
        }
        let Some(rest) = entries
            .iter()
            .find(|e| e.id == id)
            .and_then(|e| toc::toc_entry(&e.line))
            .map(|(_, rest)| rest)
        else {
            continue;
        };
        let own = tables
            .iter()
            .filter(|t| prefix_of(t).is_some_and(|p| rest.starts_with(&p)))
            .max_by_key(|t| prefix_of(t).map_or(0, |p| p.len()))
            .copied();
        // Only the keys of restored tables are worth naming.
        let Some(own) = own.filter(|t| restored.contains(t)) else {
            continue;
        };
        let constraint = prefix_of(&own)
            .and_then(|p| rest.strip_prefix(&p))
            .and_then(|r| r.rsplit_once(' ').map(|(c, _)| c.to_string()))
            .unwrap_or_else(|| rest.to_string());
        left_out.push(LeftOutKey {
            table: names.get(&own).cloned().unwrap_or_default(),
            constraint,
            references: tables
                .iter()
                .filter(|t| **t != own)
                .filter_map(|t| names.get(t).cloned())
                .collect(),
        });
    }
    (kept, left_out)
}

/// Every reading of a TABLE entry's `schema name owner` as a qualified name (see `splits`).
pub(super) fn readings(rest: &str) -> Vec<String> {
    splits(rest)
        .iter()
        .map(|(s, n)| crate::pg::introspect::qualify(s, n))
        .collect()
}

#[cfg(test)]
mod tests;
