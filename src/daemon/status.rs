//! What the daemon knows about each job between runs (its last success, how old that may get)
//! and the readiness verdict `/readyz` serves from it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// One job's standing.
#[derive(Debug, Clone, Default)]
pub struct JobStatus {
    /// For scheduled jobs: how old the last success may be before the daemon is not ready.
    pub max_age: Option<Duration>,
    /// When the newest committed backup finished, as far as this process knows.
    pub last_success: Option<DateTime<Utc>>,
    /// For jobs with scheduled drills: how old the last passed drill may be.
    pub drill_max_age: Option<Duration>,
    /// When the last drill that passed ended.
    pub last_drill: Option<DateTime<Utc>>,
}

/// Every job's standing, shared between the runner and the HTTP server.
#[derive(Debug)]
pub struct Status {
    started_at: DateTime<Utc>,
    jobs: Mutex<BTreeMap<String, JobStatus>>,
}

impl Status {
    pub fn new(started_at: DateTime<Utc>, jobs: BTreeMap<String, JobStatus>) -> Status {
        Status {
            started_at,
            jobs: Mutex::new(jobs),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, JobStatus>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a committed backup; an older one than already known changes nothing.
    pub fn record_success(&self, job: &str, finished_at: DateTime<Utc>) {
        if let Some(s) = self.jobs().get_mut(job)
            && s.last_success.is_none_or(|t| t < finished_at)
        {
            s.last_success = Some(finished_at);
        }
    }

    /// Records a drill that passed; an older one than already known changes nothing.
    pub fn record_drill(&self, job: &str, at: DateTime<Utc>) {
        if let Some(s) = self.jobs().get_mut(job)
            && s.last_drill.is_none_or(|t| t < at)
        {
            s.last_drill = Some(at);
        }
    }

    pub fn last_success(&self, job: &str) -> Option<DateTime<Utc>> {
        self.jobs().get(job).and_then(|s| s.last_success)
    }

    /// Why the daemon is not ready at `now`: one line per scheduled job whose last success
    /// (or, before its first one, the daemon's start) is older than its `max_age`.
    pub fn stale(&self, now: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, s) in self.jobs().iter() {
            if let Some(max_age) = s.max_age {
                out.extend(self.too_old(now, s.last_success, max_age, |what| {
                    format!("job '{name}': {what}")
                }));
            }
            if let Some(max_age) = s.drill_max_age {
                out.extend(self.too_old(now, s.last_drill, max_age, |what| {
                    format!(
                        "job '{name}': drills: {}",
                        what.replace("success", "passed drill")
                    )
                }));
            }
        }
        out
    }

    /// The line saying `last` (or, before the first, the start-up) is older than `max_age`.
    fn too_old(
        &self,
        now: DateTime<Utc>,
        last: Option<DateTime<Utc>>,
        max_age: Duration,
        line: impl Fn(&str) -> String,
    ) -> Option<String> {
        let since = last.unwrap_or(self.started_at);
        let age = (now - since).to_std().unwrap_or_default();
        if age <= max_age {
            return None;
        }
        let what = match last {
            Some(t) => format!("last success at {}", crate::human::time(t)),
            None => format!(
                "no success since start-up at {}",
                crate::human::time(self.started_at)
            ),
        };
        Some(line(&format!(
            "{what}, {} ago; max age {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(max_age)
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_is_stale_once_its_last_success_is_older_than_its_max_age() {
        let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let hour = Duration::from_hours(1);
        let status = Status::new(
            start,
            [
                (
                    "hourly".to_string(),
                    JobStatus {
                        max_age: Some(2 * hour),
                        ..JobStatus::default()
                    },
                ),
                ("manual".to_string(), JobStatus::default()),
            ]
            .into(),
        );
        let at = |h: i64| start + chrono::Duration::hours(h);
        // Before the first success, the start-up time stands in for it.
        assert!(status.stale(at(1)).is_empty());
        let stale = status.stale(at(3));
        assert_eq!(stale.len(), 1);
        assert!(stale[0].contains("no success since start-up"), "{stale:?}");
        status.record_success("hourly", at(3));
        status.record_success("hourly", at(2)); // older: ignored
        assert_eq!(status.last_success("hourly"), Some(at(3)));
        assert!(status.stale(at(4)).is_empty());
        let stale = status.stale(at(6));
        assert!(
            stale[0].contains("job 'hourly': last success at"),
            "{stale:?}"
        );
        assert!(stale[0].contains("max age 2h"), "{stale:?}");
    }

    #[test]
    fn drills_have_their_own_max_age() {
        let start = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let hour = Duration::from_hours(1);
        let status = Status::new(
            start,
            [(
                "nightly".to_string(),
                JobStatus {
                    drill_max_age: Some(24 * hour),
                    ..JobStatus::default()
                },
            )]
            .into(),
        );
        let at = |h: i64| start + chrono::Duration::hours(h);
        assert!(status.stale(at(23)).is_empty());
        let stale = status.stale(at(25));
        assert_eq!(stale.len(), 1, "{stale:?}");
        assert!(
            stale[0].starts_with("job 'nightly': drills: no passed drill since start-up"),
            "{stale:?}"
        );
        status.record_drill("nightly", at(25));
        assert!(status.stale(at(30)).is_empty());
        let stale = status.stale(at(50));
        assert!(
            stale[0].starts_with("job 'nightly': drills: last passed drill at"),
            "{stale:?}"
        );
    }
}
