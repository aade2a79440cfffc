//! What the running command is doing, for a progress line on a terminal: the phase (schema,
//! load, indexes and keys, analyze, ...), items done of total (tables, objects), bytes done of
//! total, the rate and the time left. Commands record into one process-wide `Progress` (cheap
//! atomic counters, recorded whether or not anything shows them); `display` draws it on stderr
//! when asked to, between the log lines.

pub mod display;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

/// The counters of the running command.
#[derive(Debug, Default)]
pub struct Progress {
    phase: Mutex<String>,
    unit: Mutex<&'static str>,
    items_done: AtomicU64,
    items_total: AtomicU64,
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
}

/// The process's progress.
pub fn get() -> &'static Progress {
    static PROGRESS: OnceLock<Progress> = OnceLock::new();
    PROGRESS.get_or_init(Progress::default)
}

/// One reading of the counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub phase: String,
    pub unit: &'static str,
    pub items_done: u64,
    pub items_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

impl Progress {
    /// The command entered `phase` (e.g. "load").
    pub fn phase(&self, phase: &str) {
        let mut p = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        phase.clone_into(&mut p);
    }

    /// `total` items of `unit` ("tables", "objects") are to be done; none are yet.
    pub fn items(&self, unit: &'static str, total: u64) {
        *self.unit.lock().unwrap_or_else(PoisonError::into_inner) = unit;
        self.items_total.store(total, Ordering::Relaxed);
        self.items_done.store(0, Ordering::Relaxed);
    }

    pub fn item_done(&self) {
        self.items_done.fetch_add(1, Ordering::Relaxed);
    }

    /// About `total` bytes are to be moved (0: unknown); none are yet (what a plan read
    /// before, such as an archive's table of contents, is not part of it).
    pub fn expect_bytes(&self, total: u64) {
        self.bytes_total.store(total, Ordering::Relaxed);
        self.bytes_done.store(0, Ordering::Relaxed);
    }

    /// `n` more bytes were moved (read from, or written to, the store).
    pub fn bytes(&self, n: u64) {
        self.bytes_done.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            phase: self
                .phase
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
            unit: *self.unit.lock().unwrap_or_else(PoisonError::into_inner),
            items_done: self.items_done.load(Ordering::Relaxed),
            items_total: self.items_total.load(Ordering::Relaxed),
            bytes_done: self.bytes_done.load(Ordering::Relaxed),
            bytes_total: self.bytes_total.load(Ordering::Relaxed),
        }
    }
}

/// The progress line: `load · tables 12/40 · 1.2 GB of 3.4 GB · 45 MB/s · 1m 2s left`.
/// `rate` is bytes per second (recent); the time left only when the total is known.
pub fn line(s: &Snapshot, elapsed: Duration, rate: f64) -> String {
    let mut parts = Vec::new();
    if !s.phase.is_empty() {
        parts.push(s.phase.clone());
    }
    if s.items_total > 0 {
        parts.push(format!("{} {}/{}", s.unit, s.items_done, s.items_total));
    }
    if s.bytes_done > 0 || s.bytes_total > 0 {
        let done = crate::human::bytes(s.bytes_done);
        if s.bytes_total > 0 {
            parts.push(format!("{done} of {}", crate::human::bytes(s.bytes_total)));
        } else {
            parts.push(done);
        }
    }
    if rate >= 1.0 {
        parts.push(format!("{}/s", crate::human::bytes(rate as u64)));
        if s.bytes_total > s.bytes_done {
            let left = (s.bytes_total - s.bytes_done) as f64 / rate;
            parts.push(format!(
                "{} left",
                humantime::format_duration(Duration::from_secs(left.ceil() as u64))
            ));
        }
    }
    parts.push(humantime::format_duration(Duration::from_secs(elapsed.as_secs())).to_string());
    parts.join(" · ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_what_is_known() {
        let s = Snapshot {
            phase: "load".into(),
            unit: "tables",
            items_done: 12,
            items_total: 40,
            bytes_done: 1 << 30,
            bytes_total: 3 << 30,
        };
        let text = line(&s, Duration::from_secs(75), f64::from(1u32 << 20) * 64.0);
        assert!(text.starts_with("load · tables 12/40 · "), "{text}");
        assert!(text.contains(" of "), "{text}");
        assert!(text.contains("/s · "), "{text}");
        // 2 GiB left at 64 MiB/s: 32 s.
        assert!(text.contains("32s left"), "{text}");
        assert!(text.ends_with("1m 15s"), "{text}");

        let unknown = Snapshot {
            phase: "dump".into(),
            bytes_done: 5000,
            ..Snapshot::default()
        };
        let text = line(&unknown, Duration::from_secs(3), 0.0);
        assert!(!text.contains("left"), "{text}");
        assert!(!text.contains("tables"), "{text}");
        assert!(text.starts_with("dump · "), "{text}");
    }

    #[test]
    fn counters_add_up() {
        let p = Progress::default();
        p.phase("verify");
        p.items("objects", 3);
        p.item_done();
        p.item_done();
        p.expect_bytes(100);
        p.bytes(40);
        p.bytes(2);
        let s = p.snapshot();
        assert_eq!(
            (
                s.phase.as_str(),
                s.unit,
                s.items_done,
                s.items_total,
                s.bytes_done,
                s.bytes_total
            ),
            ("verify", "objects", 2, 3, 42, 100)
        );
        p.items("tables", 5);
        assert_eq!(p.snapshot().items_done, 0);
    }
}
