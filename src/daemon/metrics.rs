//! The daemon's Prometheus metrics, one series per job, rendered in the text exposition format
//! (which `promtool check metrics` accepts, unlike OpenMetrics' counter naming).

use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a triggered run did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The job's previous run was still going.
    Overlap,
    /// Another pgkeep holds the job's advisory lock (it is running the job).
    Locked,
    /// A backup of this slot was already committed (by another pgkeep).
    AlreadyDone,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Overlap => "overlap",
            SkipReason::Locked => "locked",
            SkipReason::AlreadyDone => "already_done",
        }
    }
}

/// Every metric the daemon exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    last_success: GaugeVec,
    last_failure: GaugeVec,
    duration: GaugeVec,
    bytes: IntGaugeVec,
    running: IntGaugeVec,
    max_age: GaugeVec,
    successes: IntCounterVec,
    failures: IntCounterVec,
    skipped: IntCounterVec,
    retries: IntCounterVec,
    cleaned: IntCounterVec,
    drill_last_success: GaugeVec,
    drill_duration: GaugeVec,
    drill_max_age: GaugeVec,
    drill_successes: IntCounterVec,
    drill_failures: IntCounterVec,
    prune_last_success: GaugeVec,
    prune_last_failure: GaugeVec,
    prune_successes: IntCounterVec,
    prune_failures: IntCounterVec,
    pruned: IntCounterVec,
    started: Gauge,
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

impl Metrics {
    /// The metrics for `jobs`, every series present from the start (at zero) so that alert
    /// rules on `increase(...)` see the first failure.
    pub fn new<'a>(jobs: impl IntoIterator<Item = &'a str>) -> Metrics {
        let r = Registry::new();
        let job = &["job"];
        let m = Metrics {
            last_success: gauge(
                &r,
                "pgkeep_backup_last_success_timestamp_seconds",
                "When the job's newest committed backup finished (Unix time).",
                job,
            ),
            last_failure: gauge(
                &r,
                "pgkeep_backup_last_failure_timestamp_seconds",
                "When the job's last failed run ended (Unix time); 0 if none failed.",
                job,
            ),
            duration: gauge(
                &r,
                "pgkeep_backup_duration_seconds",
                "How long the job's last run took, successful or not.",
                job,
            ),
            bytes: int_gauge(
                &r,
                "pgkeep_backup_bytes",
                "Stored size of the job's newest committed backup.",
                job,
            ),
            running: int_gauge(
                &r,
                "pgkeep_backup_running",
                "1 while a run of the job is in progress.",
                job,
            ),
            max_age: gauge(
                &r,
                "pgkeep_backup_max_age_seconds",
                "The age of the last success beyond which /readyz reports the job stale.",
                job,
            ),
            successes: counter(
                &r,
                "pgkeep_backup_success_total",
                "Runs that committed a backup.",
                job,
            ),
            failures: counter(
                &r,
                "pgkeep_backup_failures_total",
                "Runs that failed (after their retries).",
                job,
            ),
            skipped: counter(
                &r,
                "pgkeep_backup_skipped_total",
                "Triggers that did not run: overlap (previous run still going), locked (another pgkeep runs the job), already_done (the slot's backup exists).",
                &["job", "reason"],
            ),
            retries: counter(
                &r,
                "pgkeep_backup_retries_total",
                "Attempts repeated after a transient failure.",
                job,
            ),
            cleaned: counter(
                &r,
                "pgkeep_cleanup_removed_total",
                "Leftovers of crashed runs removed: objects without a manifest, stale uploads.",
                &["job", "kind"],
            ),
            drill_last_success: gauge(
                &r,
                "pgkeep_drill_last_success_timestamp_seconds",
                "When the job's last drill that passed ended (Unix time); 0 if none did.",
                job,
            ),
            drill_duration: gauge(
                &r,
                "pgkeep_drill_duration_seconds",
                "How long the job's last drill took, passed or not.",
                job,
            ),
            drill_max_age: gauge(
                &r,
                "pgkeep_drill_max_age_seconds",
                "How old the job's last passed drill may be ([jobs.NAME.drill] max_age); 0 if unset.",
                job,
            ),
            drill_successes: counter(
                &r,
                "pgkeep_drill_success_total",
                "Drills that passed every check.",
                job,
            ),
            drill_failures: counter(
                &r,
                "pgkeep_drill_failures_total",
                "Drills that failed: a check found a difference, or the restore failed.",
                job,
            ),
            prune_last_success: gauge(
                &r,
                "pgkeep_prune_last_success_timestamp_seconds",
                "When retention last completed for the job (Unix time); 0 if it has not since the daemon started.",
                job,
            ),
            prune_last_failure: gauge(
                &r,
                "pgkeep_prune_last_failure_timestamp_seconds",
                "When retention last failed for the job (Unix time); 0 if it has not since the daemon started.",
                job,
            ),
            prune_successes: counter(
                &r,
                "pgkeep_prune_success_total",
                "Retention passes that completed (after a committed backup, for jobs with a policy).",
                job,
            ),
            prune_failures: counter(
                &r,
                "pgkeep_prune_failures_total",
                "Retention passes that failed: the backups could not be listed or one could not be deleted.",
                job,
            ),
            pruned: counter(
                &r,
                "pgkeep_prune_deleted_total",
                "Backups deleted by retention.",
                job,
            ),
            started: {
                let g = Gauge::new(
                    "process_start_time_seconds",
                    "When the daemon's process started (Unix time): a change is a restart.",
                )
                .expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            registry: r,
        };
        let started = crate::marker::process_started(std::process::id()).unwrap_or_else(Utc::now);
        m.started.set(seconds(started));
        for name in jobs {
            for g in [
                &m.last_success,
                &m.last_failure,
                &m.duration,
                &m.max_age,
                &m.drill_last_success,
                &m.drill_duration,
                &m.drill_max_age,
                &m.prune_last_success,
                &m.prune_last_failure,
            ] {
                g.with_label_values(&[name]);
            }
            for g in [&m.bytes, &m.running] {
                g.with_label_values(&[name]);
            }
            for c in [
                &m.successes,
                &m.failures,
                &m.retries,
                &m.drill_successes,
                &m.drill_failures,
                &m.prune_successes,
                &m.prune_failures,
                &m.pruned,
            ] {
                c.with_label_values(&[name]);
            }
            for reason in [
                SkipReason::Overlap,
                SkipReason::Locked,
                SkipReason::AlreadyDone,
            ] {
                m.skipped.with_label_values(&[name, reason.as_str()]);
            }
            for kind in ["object", "upload"] {
                m.cleaned.with_label_values(&[name, kind]);
            }
        }
        m
    }

    /// A committed backup (by this process, another replica, or found at start-up).
    pub fn committed(&self, job: &str, finished_at: DateTime<Utc>, bytes: u64) {
        self.last_success
            .with_label_values(&[job])
            .set(seconds(finished_at));
        self.bytes
            .with_label_values(&[job])
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    pub fn succeeded(&self, job: &str, duration: Duration) {
        self.successes.with_label_values(&[job]).inc();
        self.duration
            .with_label_values(&[job])
            .set(duration.as_secs_f64());
    }

    pub fn failed(&self, job: &str, at: DateTime<Utc>, duration: Duration) {
        self.failures.with_label_values(&[job]).inc();
        self.last_failure.with_label_values(&[job]).set(seconds(at));
        self.duration
            .with_label_values(&[job])
            .set(duration.as_secs_f64());
    }

    pub fn set_running(&self, job: &str, running: bool) {
        self.running
            .with_label_values(&[job])
            .set(i64::from(running));
    }

    pub fn set_max_age(&self, job: &str, max_age: Duration) {
        self.max_age
            .with_label_values(&[job])
            .set(max_age.as_secs_f64());
    }

    pub fn skipped(&self, job: &str, reason: SkipReason) {
        self.skipped
            .with_label_values(&[job, reason.as_str()])
            .inc();
    }

    pub fn retried(&self, job: &str) {
        self.retries.with_label_values(&[job]).inc();
    }

    pub fn cleaned(&self, job: &str, objects: usize, uploads: usize) {
        self.cleaned
            .with_label_values(&[job, "object"])
            .inc_by(objects as u64);
        self.cleaned
            .with_label_values(&[job, "upload"])
            .inc_by(uploads as u64);
    }

    pub fn set_drill_max_age(&self, job: &str, max_age: Duration) {
        self.drill_max_age
            .with_label_values(&[job])
            .set(max_age.as_secs_f64());
    }

    /// A drill that passed at `at` (by this process, or found in the store at start-up).
    pub fn drill_passed_at(&self, job: &str, at: DateTime<Utc>) {
        self.drill_last_success
            .with_label_values(&[job])
            .set(seconds(at));
    }

    pub fn drill_passed(&self, job: &str, at: DateTime<Utc>, duration: Duration) {
        self.drill_passed_at(job, at);
        self.drill_successes.with_label_values(&[job]).inc();
        self.drill_duration
            .with_label_values(&[job])
            .set(duration.as_secs_f64());
    }

    pub fn drill_failed(&self, job: &str, duration: Duration) {
        self.drill_failures.with_label_values(&[job]).inc();
        self.drill_duration
            .with_label_values(&[job])
            .set(duration.as_secs_f64());
    }

    /// Retention completed for `job` at `at`, deleting `deleted` backups.
    pub fn pruned(&self, job: &str, at: DateTime<Utc>, deleted: usize) {
        self.prune_successes.with_label_values(&[job]).inc();
        self.prune_last_success
            .with_label_values(&[job])
            .set(seconds(at));
        self.pruned.with_label_values(&[job]).inc_by(deleted as u64);
    }

    /// Retention failed for `job` at `at`, after deleting `deleted` backups.
    pub fn prune_failed(&self, job: &str, at: DateTime<Utc>, deleted: usize) {
        self.prune_failures.with_label_values(&[job]).inc();
        self.prune_last_failure
            .with_label_values(&[job])
            .set(seconds(at));
        self.pruned.with_label_values(&[job]).inc_by(deleted as u64);
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("encoding metrics into memory");
        String::from_utf8(out).expect("metrics are UTF-8")
    }
}

/// The content type of `Metrics::render`.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_exists_from_the_start() {
        let m = Metrics::new(["nightly"]);
        let text = m.render();
        for line in [
            "pgkeep_backup_failures_total{job=\"nightly\"} 0",
            "pgkeep_backup_running{job=\"nightly\"} 0",
            "pgkeep_backup_skipped_total{job=\"nightly\",reason=\"overlap\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        m.failed("nightly", Utc::now(), Duration::from_millis(1500));
        m.committed(
            "nightly",
            DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            42,
        );
        let text = m.render();
        assert!(text.contains("pgkeep_backup_failures_total{job=\"nightly\"} 1"));
        assert!(text.contains("pgkeep_backup_duration_seconds{job=\"nightly\"} 1.5"));
        assert!(
            text.contains(
                "pgkeep_backup_last_success_timestamp_seconds{job=\"nightly\"} 1700000000"
            )
        );
        assert!(text.contains("pgkeep_backup_bytes{job=\"nightly\"} 42"));
    }

    #[test]
    fn retention_outcomes_and_the_start_time_are_exported() {
        let m = Metrics::new(["nightly"]);
        let text = m.render();
        for line in [
            "pgkeep_prune_failures_total{job=\"nightly\"} 0",
            "pgkeep_prune_success_total{job=\"nightly\"} 0",
            "pgkeep_prune_last_success_timestamp_seconds{job=\"nightly\"} 0",
            "pgkeep_prune_last_failure_timestamp_seconds{job=\"nightly\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        let started = text
            .lines()
            .find_map(|l| l.strip_prefix("process_start_time_seconds "))
            .and_then(|v| v.parse::<f64>().ok())
            .expect("process_start_time_seconds");
        let now = seconds(Utc::now());
        assert!(started > 0.0 && started <= now + 1.0, "{started} vs {now}");

        let at = |s| DateTime::from_timestamp(s, 0).unwrap();
        m.prune_failed("nightly", at(1_700_000_000), 1);
        m.pruned("nightly", at(1_700_000_060), 2);
        let text = m.render();
        for line in [
            "pgkeep_prune_failures_total{job=\"nightly\"} 1",
            "pgkeep_prune_success_total{job=\"nightly\"} 1",
            "pgkeep_prune_deleted_total{job=\"nightly\"} 3",
            "pgkeep_prune_last_failure_timestamp_seconds{job=\"nightly\"} 1700000000",
            "pgkeep_prune_last_success_timestamp_seconds{job=\"nightly\"} 1700000060",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
