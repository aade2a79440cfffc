//! The work queue of an export restore's load sessions: table loads, post-data entries built
//! once their tables are in, and each table's ANALYZE, with the table locks the server would
//! take, so no session waits on another's lock.

use std::collections::{HashMap, HashSet};

use super::toc::Early;
use crate::manifest::ObjectEntry;

/// One unit of work for a load session.
pub(super) enum Work<'a> {
    Copy(&'a ObjectEntry),
    Build(Early),
    Analyze(String),
}

impl Work<'_> {
    fn tables(&self) -> Vec<&str> {
        match self {
            Work::Copy(o) => vec![o.table.as_deref().unwrap_or("")],
            Work::Build(e) => e.tables.iter().map(String::as_str).collect(),
            Work::Analyze(table) => vec![table.as_str()],
        }
    }

    /// Whether the work can share its table with other shared work (index builds).
    fn shared(&self) -> bool {
        matches!(self, Work::Build(e) if e.shared)
    }

    /// Lower runs first: a loaded table's own indexes (they can share it), then its keys,
    /// then its ANALYZE, then foreign keys between loaded tables (their checks plan better
    /// with statistics), then the next load (as `pg_restore --jobs` does: a big table's
    /// indexes before the next small table).
    fn rank(&self) -> u8 {
        match self {
            Work::Build(e) if e.tables.len() == 1 && e.shared => 0,
            Work::Build(e) if e.tables.len() == 1 => 1,
            Work::Analyze(_) => 2,
            Work::Build(_) => 3,
            Work::Copy(_) => 4,
        }
    }
}

/// Locks held on one table by running work, mirroring the server's: index builds share a
/// table, everything else needs it alone (and would only wait for the lock otherwise).
#[derive(Default)]
struct Held {
    shared: usize,
    exclusive: bool,
}

#[derive(Default)]
pub(super) struct Queue<'a> {
    /// Ready work with its rank and arrival order.
    ready: Vec<(u8, usize, Work<'a>)>,
    arrivals: usize,
    /// Early entries still waiting for loads or other entries.
    waiting: Vec<Early>,
    held: HashMap<String, Held>,
    loaded: HashSet<String>,
    pub(super) built: HashSet<u32>,
    /// By table: its own early entries not built yet (its ANALYZE waits for them).
    own_left: HashMap<String, usize>,
    analyzing: HashSet<String>,
    pub(super) running: usize,
    pub(super) stopped: bool,
}

impl<'a> Queue<'a> {
    pub(super) fn new(copies: Vec<&'a ObjectEntry>, early: Vec<Early>) -> Self {
        let mut q = Queue::default();
        for e in &early {
            if let [table] = e.tables.as_slice() {
                *q.own_left.entry(table.clone()).or_default() += 1;
            }
        }
        q.waiting = early;
        for c in copies {
            q.push(Work::Copy(c));
        }
        q
    }

    fn push(&mut self, work: Work<'a>) {
        self.arrivals += 1;
        self.ready.push((work.rank(), self.arrivals, work));
    }

    /// The most urgent ready work whose tables are free for it.
    pub(super) fn take(&mut self) -> Option<Work<'a>> {
        let at = self
            .ready
            .iter()
            .enumerate()
            .filter(|(_, (_, _, w))| {
                w.tables().iter().all(|t| {
                    self.held
                        .get(*t)
                        .is_none_or(|h| !h.exclusive && (h.shared == 0 || w.shared()))
                })
            })
            .min_by_key(|(_, (rank, seq, _))| (*rank, *seq))
            .map(|(i, _)| i)?;
        let (_, _, work) = self.ready.swap_remove(at);
        for t in work.tables() {
            let held = self.held.entry(t.to_string()).or_default();
            if work.shared() {
                held.shared += 1;
            } else {
                held.exclusive = true;
            }
        }
        self.running += 1;
        Some(work)
    }

    /// Releases `work`'s tables and makes ready what it was the last thing missing for.
    pub(super) fn done(&mut self, work: &Work<'a>) {
        self.running -= 1;
        for t in work.tables() {
            if let Some(h) = self.held.get_mut(t) {
                if work.shared() {
                    h.shared = h.shared.saturating_sub(1);
                } else {
                    h.exclusive = false;
                }
            }
        }
        let touched: Vec<String> = match work {
            Work::Copy(_) => {
                let table = work.tables()[0].to_string();
                self.loaded.insert(table.clone());
                vec![table]
            }
            Work::Build(e) => {
                self.built.insert(e.id);
                if let [table] = e.tables.as_slice() {
                    let left = self.own_left.entry(table.clone()).or_default();
                    *left = left.saturating_sub(1);
                }
                e.tables.clone()
            }
            Work::Analyze(_) => return,
        };
        let (ready, waiting): (Vec<Early>, Vec<Early>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|e| {
                e.tables.iter().all(|t| self.loaded.contains(t))
                    && e.after.iter().all(|a| self.built.contains(a))
            });
        self.waiting = waiting;
        for e in ready {
            self.push(Work::Build(e));
        }
        for table in touched {
            if self.loaded.contains(&table)
                && self.own_left.get(&table).is_none_or(|n| *n == 0)
                && self.analyzing.insert(table.clone())
            {
                self.push(Work::Analyze(table));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn table(name: &str, raw_bytes: u64) -> ObjectEntry {
        ObjectEntry {
            key: format!("tables/{name}.copy"),
            role: crate::manifest::ObjectRole::Table,
            table: Some(name.into()),
            rows: Some(0),
            digest: None,
            columns: Vec::new(),
            compression: crate::manifest::ObjectCodec::None,
            encryption: None,
            raw_bytes,
            stored_bytes: raw_bytes,
            sha256: String::new(),
        }
    }

    fn entry(id: u32, shared: bool, tables: &[&str], after: &[u32]) -> Early {
        Early {
            id,
            line: format!("{id}; 0 0 X"),
            shared,
            tables: tables.iter().map(|t| (*t).to_string()).collect(),
            after: after.to_vec(),
        }
    }

    fn name(w: &Work<'_>) -> String {
        match w {
            Work::Copy(o) => format!("copy {}", o.table.as_deref().unwrap_or("")),
            Work::Build(e) => format!("build {}", e.id),
            Work::Analyze(t) => format!("analyze {t}"),
        }
    }

    /// Two sessions: what each takes, in order, finishing work in the order it was taken.
    #[test]
    fn indexes_run_side_by_side_keys_alone_and_foreign_keys_after_both_tables() {
        let (a, b) = (table("a", 100), table("b", 50));
        let mut q = Queue::new(
            vec![&a, &b],
            vec![
                entry(1, false, &["a"], &[]),
                entry(2, true, &["a"], &[]),
                entry(3, true, &["a"], &[]),
                entry(4, false, &["b"], &[]),
                entry(5, false, &["a", "b"], &[1, 4]),
            ],
        );
        let mut log = Vec::new();
        let mut running: VecDeque<Work<'_>> = VecDeque::new();
        loop {
            while running.len() < 2 {
                let Some(w) = q.take() else { break };
                log.push(name(&w));
                running.push_back(w);
            }
            let Some(done) = running.pop_front() else {
                break;
            };
            q.done(&done);
        }
        assert_eq!(
            log,
            [
                "copy a",
                "copy b", // both loads at once
                "build 2",
                "build 3", // a's index builds share a
                "build 4", // b's key: b is free
                "build 1", // a's key, once a's index builds are done
                "analyze b",
                "analyze a", // each after its own entries
                "build 5",   // the foreign key last, after both keys
            ]
        );
        assert!(q.waiting.is_empty());
        assert_eq!(q.built.len(), 5);
    }
}
