//! The table of contents of a schema archive, read from `pg_restore --list --verbose`: which
//! post-data entries (indexes, primary keys, unique and exclusion constraints) concern exactly
//! one loaded table and nothing else that post-data creates, so they can be built as soon as
//! that table's data is in, while other tables still load — the way `pg_restore --jobs`
//! schedules a full restore.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The description part of a TOC line: `ID; OID OID DESC rest` -> (`DESC`, `rest`).
pub(super) fn toc_entry(line: &str) -> Option<(&str, &str)> {
    // Longest first where one is the start of another.
    const DESCS: &[&str] = &[
        "FK CONSTRAINT",
        "CHECK CONSTRAINT",
        "CONSTRAINT",
        "INDEX ATTACH",
        "INDEX",
        "TABLE ATTACH",
        "TABLE DATA",
        "TABLE",
        "DEFAULT ACL",
        "DEFAULT",
        "SEQUENCE OWNED BY",
        "SEQUENCE SET",
        "SEQUENCE",
        "MATERIALIZED VIEW DATA",
        "MATERIALIZED VIEW",
        "VIEW",
        "TRIGGER",
        "POLICY",
        "ROW SECURITY",
        "RULE",
        "ACL",
        "COMMENT",
        "SECURITY LABEL",
        "STATISTICS DATA",
        "STATISTICS",
        "PUBLICATION TABLE",
    ];
    let (_, after) = line.split_once("; ")?;
    let mut parts = after.splitn(3, ' ');
    parts.next()?;
    parts.next()?;
    let rest = parts.next()?;
    DESCS.iter().find_map(|d| {
        rest.strip_prefix(d)
            .and_then(|r| r.strip_prefix(' '))
            .map(|r| (*d, r))
    })
}

/// The owner in the archive's `DATABASE - <name> <owner>` entry (pg_dump 11+ writes it), for
/// the database `name` the archive was dumped from.
pub(super) fn database_owner(listing: &str, name: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let (_, after) = line.split_once("; ")?;
        let mut parts = after.splitn(3, ' ');
        parts.next()?;
        parts.next()?;
        let rest = parts.next()?.strip_prefix("DATABASE - ")?;
        let owner = match rest.strip_prefix(name).and_then(|r| r.strip_prefix(' ')) {
            Some(owner) => owner,
            // A name pg_restore printed otherwise (a newline in it): the owner is the last word.
            None => rest.rsplit(' ').next()?,
        };
        (!owner.is_empty() && !line.starts_with(';')).then(|| owner.to_string())
    })
}

/// Entries that belong to a table (or a view) and go with it: what a selective restore
/// leaves out silently with a table it does not restore.
pub(super) const TABLE_BOUND: &[&str] = &[
    "TABLE",
    "TABLE DATA",
    "TABLE ATTACH",
    "INDEX",
    "INDEX ATTACH",
    "CONSTRAINT",
    "CHECK CONSTRAINT",
    "FK CONSTRAINT",
    "DEFAULT",
    "SEQUENCE",
    "SEQUENCE SET",
    "SEQUENCE OWNED BY",
    "MATERIALIZED VIEW DATA",
    "TRIGGER",
    "POLICY",
    "ROW SECURITY",
    "RULE",
    "ACL",
    "COMMENT",
    "SECURITY LABEL",
    "STATISTICS",
    "STATISTICS DATA",
    "PUBLICATION TABLE",
];

/// The TABLE entries each foreign key links, by the foreign key's id: the tables it depends
/// on directly, and those of the key or index it depends on (the referenced table's).
pub(super) fn foreign_key_tables(entries: &[Entry]) -> BTreeMap<u32, Vec<u32>> {
    let by_id: HashMap<u32, &Entry> = entries.iter().map(|e| (e.id, e)).collect();
    let desc = |id: &u32| {
        by_id
            .get(id)
            .and_then(|e| toc_entry(&e.line))
            .map(|(d, _)| d)
    };
    let mut out = BTreeMap::new();
    for e in entries {
        if !matches!(toc_entry(&e.line), Some(("FK CONSTRAINT", _))) {
            continue;
        }
        let mut tables: Vec<u32> = Vec::new();
        for d in &e.deps {
            let found: Vec<u32> = match desc(d) {
                Some("TABLE") => vec![*d],
                Some("CONSTRAINT" | "INDEX") => by_id[d]
                    .deps
                    .iter()
                    .copied()
                    .filter(|x| desc(x) == Some("TABLE"))
                    .collect(),
                _ => Vec::new(),
            };
            for t in found {
                if !tables.contains(&t) {
                    tables.push(t);
                }
            }
        }
        out.insert(e.id, tables);
    }
    out
}

/// One line of `pg_restore --list --verbose` and the dump ids it depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    pub id: u32,
    pub line: String,
    pub deps: Vec<u32>,
}

/// A post-data entry to build during the load, as soon as what it needs is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Early {
    pub id: u32,
    pub line: String,
    /// `CREATE INDEX` takes a SHARE lock: index builds of one table can run side by side.
    /// Everything else here (`ALTER TABLE ... ADD CONSTRAINT`, foreign keys on two tables)
    /// needs its tables to itself.
    pub shared: bool,
    /// The loaded tables it is built on; it waits for their loads.
    pub tables: Vec<String>,
    /// The other early entries it depends on (a foreign key on the referenced key).
    pub after: Vec<u32>,
}

/// A table about to be loaded: its qualified name, its `schema name ` prefix as
/// `pg_restore --list` prints it, and whether it is big enough for its entries to be built
/// during the load.
pub(super) struct Loaded {
    pub name: String,
    pub prefix: String,
    pub big: bool,
}

/// Parses `pg_restore --list --verbose`: entry lines, each followed by its
/// `;\tdepends on: ...` line when it has dependencies.
pub(super) fn parse(listing: &str) -> Vec<Entry> {
    let mut entries: Vec<Entry> = Vec::new();
    for line in listing.lines() {
        if let Some(deps) = line.strip_prefix(";\tdepends on:") {
            if let Some(last) = entries.last_mut() {
                last.deps.extend(
                    deps.split_whitespace()
                        .filter_map(|d| d.parse::<u32>().ok()),
                );
            }
        } else if let Some(id) = line_id(line) {
            entries.push(Entry {
                id,
                line: line.to_string(),
                deps: Vec::new(),
            });
        }
    }
    entries
}

/// The dump id of an entry line (`ID; OID OID DESC ...`); `None` for comments.
pub(super) fn line_id(line: &str) -> Option<u32> {
    if line.starts_with(';') {
        return None;
    }
    line.split_once(';')?.0.trim().parse().ok()
}

/// The post-data entries to build during the load, in archive order.
///
/// An entry qualifies when it is an index, a table constraint or (with `foreign_keys`) a
/// foreign key, every table it depends on is loaded, one of them is big, and every other
/// post-data entry it depends on qualifies too. Everything else waits for the post-data pass
/// after the load. A table line that matches no loaded table (or a name the list cannot show
/// unambiguously) only means its entries wait for that pass.
pub(super) fn early(
    entries: &[Entry],
    post_data: &BTreeSet<u32>,
    tables: &[Loaded],
    foreign_keys: bool,
) -> Vec<Early> {
    let mut table_ids: HashMap<u32, Option<&Loaded>> = HashMap::new();
    for e in entries {
        if let Some(("TABLE", rest)) = toc_entry(&e.line) {
            let loaded = tables
                .iter()
                .filter(|t| rest.starts_with(t.prefix.as_str()))
                .max_by_key(|t| t.prefix.len());
            table_ids.insert(e.id, loaded);
        }
    }
    let mut candidates: BTreeMap<u32, Early> = BTreeMap::new();
    for e in entries.iter().filter(|e| post_data.contains(&e.id)) {
        let shared = match toc_entry(&e.line) {
            Some(("INDEX", _)) => true,
            Some(("CONSTRAINT", _)) => false,
            Some(("FK CONSTRAINT", _)) if foreign_keys => false,
            _ => continue,
        };
        let mut on: BTreeSet<&str> = BTreeSet::new();
        let mut big = false;
        let mut unloaded = false;
        for d in &e.deps {
            match table_ids.get(d) {
                Some(Some(t)) => {
                    on.insert(t.name.as_str());
                    big |= t.big;
                }
                Some(None) => unloaded = true,
                None => {}
            }
        }
        if on.is_empty() || unloaded || !big {
            continue;
        }
        let mut after: Vec<u32> = e
            .deps
            .iter()
            .copied()
            .filter(|d| post_data.contains(d))
            .collect();
        after.dedup();
        candidates.insert(
            e.id,
            Early {
                id: e.id,
                line: e.line.clone(),
                shared,
                tables: on.into_iter().map(str::to_string).collect(),
                after,
            },
        );
    }
    // Drop entries that wait on something that will not be built early, until none does.
    loop {
        let orphans: Vec<u32> = candidates
            .values()
            .filter(|c| c.after.iter().any(|a| !candidates.contains_key(a)))
            .map(|c| c.id)
            .collect();
        if orphans.is_empty() {
            break;
        }
        for id in orphans {
            candidates.remove(&id);
        }
    }
    let order: HashMap<u32, usize> = entries.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    let mut out: Vec<Early> = candidates.into_values().collect();
    out.sort_by_key(|e| order.get(&e.id).copied().unwrap_or(usize::MAX));
    out
}

#[cfg(test)]
mod owner_tests {
    use super::database_owner;

    #[test]
    fn the_database_entry_names_the_owner() {
        let listing = ";\n; Archive created at 2026-12-02\n;\n\
            3366; 1262 16384 DATABASE - Odd \"Name\" x cluster owner\n\
            3367; 0 0 DATABASE PROPERTIES - Odd \"Name\" x cluster owner\n\
            215; 1259 16386 TABLE public notes cluster_owner\n";
        assert_eq!(
            database_owner(listing, "Odd \"Name\" x").as_deref(),
            Some("cluster owner")
        );
        assert_eq!(database_owner(listing, "other").as_deref(), Some("owner"));
        assert_eq!(
            database_owner("215; 1259 16386 TABLE public t u\n", "app"),
            None
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toc_lines_are_parsed() {
        assert_eq!(
            toc_entry("215; 1259 16390 TABLE public actor postgres"),
            Some(("TABLE", "public actor postgres"))
        );
        assert_eq!(
            toc_entry("4012; 2606 16500 FK CONSTRAINT public film film_language_id_fkey postgres"),
            Some((
                "FK CONSTRAINT",
                "public film film_language_id_fkey postgres"
            ))
        );
        assert_eq!(toc_entry("; Archive created at"), None);
    }

    const LISTING: &str = "\
;
; Archive created at 2026-11-24 10:30:00 UTC
;
6; 2615 16385 SCHEMA - bench postgres
220; 1259 16424 TABLE bench attachments postgres
;\tdepends on: 6
215; 1259 16399 TABLE bench customers postgres
;\tdepends on: 6
217; 1259 16409 TABLE bench orders postgres
;\tdepends on: 6
230; 1259 16500 TABLE bench parent postgres
;\tdepends on: 6
231; 1259 16501 TABLE bench unloaded postgres
;\tdepends on: 6
3233; 2606 16430 CONSTRAINT bench attachments attachments_pkey postgres
;\tdepends on: 220
3222; 2606 16405 CONSTRAINT bench customers customers_pkey postgres
;\tdepends on: 215
3226; 2606 16415 CONSTRAINT bench orders orders_pkey postgres
;\tdepends on: 217
3231; 1259 16441 INDEX bench attachments_order_id_idx postgres
;\tdepends on: 220
3240; 1259 16442 INDEX bench parent_idx postgres
;\tdepends on: 230
3241; 1259 16443 INDEX bench unloaded_idx postgres
;\tdepends on: 231
3242; 0 0 INDEX ATTACH bench attachments_order_id_idx postgres
;\tdepends on: 3240 3231
3243; 0 0 COMMENT bench INDEX attachments_order_id_idx postgres
;\tdepends on: 3231
3238; 2606 16452 FK CONSTRAINT bench attachments attachments_order_fk postgres
;\tdepends on: 220 3226 217
3250; 1259 16460 INDEX bench two_tables_idx postgres
;\tdepends on: 220 215
232; 1259 16502 TABLE bench small postgres
;\tdepends on: 6
3260; 1259 16461 INDEX bench small_idx postgres
;\tdepends on: 232
";

    fn loaded() -> Vec<Loaded> {
        ["attachments", "customers", "orders", "small"]
            .iter()
            .map(|t| Loaded {
                name: format!("\"bench\".\"{t}\""),
                prefix: format!("bench {t} "),
                big: *t != "small",
            })
            .collect()
    }

    #[test]
    fn parses_entries_and_their_dependencies() {
        let entries = parse(LISTING);
        assert_eq!(entries.len(), 18);
        assert_eq!(entries[0].id, 6);
        assert!(entries[0].deps.is_empty());
        let fk = entries.iter().find(|e| e.id == 3238).unwrap();
        assert_eq!(fk.deps, vec![220, 3226, 217]);
        assert_eq!(
            line_id("3233; 2606 16430 CONSTRAINT bench a a_pkey postgres"),
            Some(3233)
        );
        assert_eq!(
            line_id(";3233; 2606 16430 CONSTRAINT bench a a_pkey postgres"),
            None
        );
    }

    #[test]
    fn entries_on_loaded_tables_are_built_early() {
        let entries = parse(LISTING);
        let post: BTreeSet<u32> = entries
            .iter()
            .map(|e| e.id)
            .filter(|id| *id > 3000)
            .collect();
        let plan = early(&entries, &post, &loaded(), true);
        let got: Vec<(u32, bool, usize, Vec<u32>)> = plan
            .iter()
            .map(|e| (e.id, e.shared, e.tables.len(), e.after.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                (3233, false, 1, vec![]),
                (3222, false, 1, vec![]),
                (3226, false, 1, vec![]),
                (3231, true, 1, vec![]),
                (3238, false, 2, vec![3226]),
                (3250, true, 2, vec![]),
            ]
        );
        // Not early: indexes of tables that are not loaded (a partitioned parent: its leaves
        // are), ATTACH and COMMENT (they depend on entries that are not built early), an
        // index of a small table only.
        for id in [3240, 3241, 3242, 3243, 3260] {
            assert!(
                plan.iter().all(|e| e.id != id),
                "{id} must wait for the post-data pass"
            );
        }
        // Without foreign keys (a selective restore), none is early.
        let plan = early(&entries, &post, &loaded(), false);
        assert!(plan.iter().all(|e| e.id != 3238));
    }

    #[test]
    fn entries_waiting_on_late_entries_are_late_too() {
        let listing = "\
217; 1259 1 TABLE bench orders postgres
218; 1259 2 TABLE bench parent postgres
3226; 2606 3 CONSTRAINT bench parent parent_pkey postgres
;\tdepends on: 218
3238; 2606 4 FK CONSTRAINT bench orders orders_parent_fk postgres
;\tdepends on: 217 3226 218
";
        let entries = parse(listing);
        let post = BTreeSet::from([3226, 3238]);
        assert!(early(&entries, &post, &loaded(), true).is_empty());
    }

    #[test]
    fn the_longest_matching_table_name_wins() {
        let listing = "\
10; 1259 1 TABLE s a b owner
11; 1259 2 INDEX s i owner
;\tdepends on: 10
";
        let entries = parse(listing);
        let post = BTreeSet::from([11]);
        let tables = vec![
            Loaded {
                name: "\"s\".\"a\"".to_string(),
                prefix: "s a ".to_string(),
                big: true,
            },
            Loaded {
                name: "\"s\".\"a b\"".to_string(),
                prefix: "s a b ".to_string(),
                big: true,
            },
        ];
        let plan = early(&entries, &post, &tables, true);
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].tables, vec!["\"s\".\"a b\"".to_string()]);
    }
}
