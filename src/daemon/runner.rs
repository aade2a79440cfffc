//! A job's triggered runs: the overlap guard, the concurrency limit, the advisory lock shared
//! with other replicas, the timeout and the retries; then metrics, notifications, retention and
//! clean-up. A failed run is counted and reported; it never stops the daemon or other jobs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::metrics::{Metrics, SkipReason};
use super::schedule::{Schedule, SlotMemory};
use super::scheduler::Trigger;
use super::status::Status;
use super::systemd::Systemd;
use crate::backup::{self, BackupError, Stage};
use crate::config::{Config, Job};
use crate::error::Cancel;
use crate::lock::{self, Acquired};
use crate::manifest::{self, Manifest};
use crate::notify::{Notifier, Outcome};
use crate::repository::Repository;

/// Everything runs share.
pub struct Shared {
    pub config: Arc<Config>,
    pub repo: Repository,
    pub metrics: Metrics,
    pub status: Arc<Status>,
    pub notifier: Notifier,
    pub systemd: Systemd,
    /// Shutdown requested: start nothing new (no attempt, no retry).
    pub stopping: CancellationToken,
    /// The grace period is over: drop running backups.
    pub cancel: CancellationToken,
}

/// One job as the runner sees it.
struct Entry {
    job: Job,
    schedule: Option<Schedule>,
    running: AtomicBool,
    last_slot: SlotMemory,
}

/// Dispatches triggers into runs; cheap to clone.
#[derive(Clone)]
pub struct Runner {
    shared: Arc<Shared>,
    entries: Arc<BTreeMap<String, Arc<Entry>>>,
    permits: Arc<Semaphore>,
}

/// How a triggered run ended.
enum Ran {
    Committed(Manifest),
    Failed {
        error: String,
        backup: Option<String>,
    },
    Skipped(SkipReason),
    Cancelled,
}

/// How one attempt ended.
enum Attempt {
    Done(Ran),
    /// A failure that a later attempt may not meet, and the attempt's backup id if it had one.
    Transient(BackupError, Option<String>),
}

/// Clears a job's running flag however its run ends.
struct RunningFlag(Arc<Entry>);

impl Drop for RunningFlag {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

impl Runner {
    pub fn new(shared: Arc<Shared>, schedules: &BTreeMap<String, Schedule>) -> Runner {
        let entries = shared
            .config
            .jobs
            .iter()
            .map(|(name, job)| {
                let entry = Entry {
                    job: job.clone(),
                    schedule: schedules.get(name).cloned(),
                    running: AtomicBool::new(false),
                    last_slot: SlotMemory::default(),
                };
                (name.clone(), Arc::new(entry))
            })
            .collect();
        let permits = Arc::new(Semaphore::new(shared.config.daemon.max_concurrent_jobs));
        Runner {
            shared,
            entries: Arc::new(entries),
            permits,
        }
    }

    /// Starts a run for `trigger` in `tasks`, unless the job's previous run is still going.
    pub fn dispatch(&self, trigger: &Trigger, tasks: &mut JoinSet<()>) {
        let Some(entry) = self.entries.get(&trigger.job).cloned() else {
            return;
        };
        let tz = self.shared.config.daemon.timezone;
        let slot_time = trigger
            .slot
            .or_else(|| entry.schedule.as_ref()?.slot_at(trigger.fired_at, tz))
            .unwrap_or(trigger.fired_at);
        if !entry.last_slot.first_time(slot_time, tz) {
            tracing::info!(job = %trigger.job, slot = %crate::human::time(slot_time),
                "this wall-clock time repeats the last run's (clocks went back): not run again");
            return;
        }
        if entry.running.swap(true, Ordering::AcqRel) {
            tracing::warn!(job = %trigger.job, "the previous run is still going: this trigger is skipped");
            self.shared
                .metrics
                .skipped(&trigger.job, SkipReason::Overlap);
            return;
        }
        let runner = self.clone();
        tasks.spawn(async move {
            let flag = RunningFlag(entry);
            Box::pin(runner.run(&flag.0, slot_time)).await;
        });
    }

    /// Reads each job's newest committed backup, so a restart does not look like a stale job.
    pub async fn seed(&self) {
        for name in self.entries.keys() {
            self.refresh_last_success(name).await;
        }
    }

    /// Removes what crashed runs left under every job (at start-up), once it is older than
    /// `orphan_age`: without the job's lock a younger one may belong to a run in progress
    /// elsewhere. Each run removes the rest, at any age, while it holds the lock.
    pub async fn sweep_all(&self) {
        let cutoff = Utc::now()
            - chrono::Duration::from_std(self.shared.config.daemon.orphan_age)
                .unwrap_or(chrono::Duration::MAX);
        for name in self.entries.keys() {
            self.sweep(name, Some(cutoff)).await;
        }
    }

    /// One triggered run of `entry`'s job for the fire time `slot_time`.
    async fn run(&self, entry: &Entry, slot_time: DateTime<Utc>) {
        let s = &self.shared;
        let name = entry.job.name.as_str();
        let clock = Instant::now();
        let ran = self.attempts(&entry.job, slot_time).await;
        s.metrics.set_running(name, false);
        let targets = &entry.job.notifications;
        match ran {
            Ran::Committed(m) => {
                let took = (m.finished_at - m.started_at).to_std().unwrap_or_default();
                s.metrics.committed(name, m.finished_at, m.stored_bytes());
                s.metrics.succeeded(name, took);
                s.status.record_success(name, m.finished_at);
                s.systemd
                    .status(&format!("job {name}: backup {} committed", m.id));
                let outcome = Outcome::Success {
                    backup: m.id.clone(),
                    bytes: m.stored_bytes(),
                };
                s.notifier.finished(targets, name, &outcome, took).await;
                crate::catalog::after_run(&s.config, &s.repo, &entry.job, m.started_at, None).await;
            }
            Ran::Failed { error, backup } => {
                let took = clock.elapsed();
                s.metrics.failed(name, Utc::now(), took);
                s.systemd.status(&format!("job {name}: last run failed"));
                crate::catalog::after_run(
                    &s.config,
                    &s.repo,
                    &entry.job,
                    slot_time.min(Utc::now()),
                    Some(&error),
                )
                .await;
                let outcome = Outcome::Failure { backup, error };
                s.notifier.finished(targets, name, &outcome, took).await;
            }
            Ran::Skipped(reason) => {
                tracing::info!(job = name, reason = reason.as_str(), "run skipped");
                s.metrics.skipped(name, reason);
            }
            Ran::Cancelled => {
                tracing::warn!(job = name, "run cancelled by shutdown");
            }
        }
    }

    /// Attempts until success, a permanent failure, or the retries are used up.
    async fn attempts(&self, job: &Job, slot: DateTime<Utc>) -> Ran {
        let s = &self.shared;
        let (retries, backoff) = (s.config.daemon.retries, s.config.daemon.retry_backoff);
        let mut announced = false;
        let mut attempt = 0u32;
        loop {
            match self.attempt(job, slot, &mut announced).await {
                Attempt::Done(ran) => return ran,
                Attempt::Transient(e, _) if attempt < retries => {
                    attempt += 1;
                    let wait = backoff_wait(backoff, attempt, rand::random::<f64>());
                    tracing::warn!(job = %job.name, attempt, retries, wait_s = wait.as_secs_f64(), error = %crate::error::report(&e), "transient failure: retrying");
                    s.metrics.retried(&job.name);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = s.stopping.cancelled() => return Ran::Cancelled,
                    }
                }
                Attempt::Transient(e, backup) => {
                    return Ran::Failed {
                        error: crate::error::report(&e),
                        backup,
                    };
                }
            }
        }
    }

    /// One attempt: a permit, the lock, the slot check, the backup, then (still under the
    /// lock) retention and clean-up.
    async fn attempt(&self, job: &Job, slot: DateTime<Utc>, announced: &mut bool) -> Attempt {
        let s = &self.shared;
        let name = job.name.as_str();
        let _permit = tokio::select! {
            p = self.permits.acquire() => p.expect("the semaphore is never closed"),
            () = s.stopping.cancelled() => return Attempt::Done(Ran::Cancelled),
        };
        let locked = tokio::select! {
            l = lock::try_lock(job) => l,
            () = s.stopping.cancelled() => return Attempt::Done(Ran::Cancelled),
        };
        let lock = match locked {
            Ok(Acquired::Held(lock)) => lock,
            Ok(Acquired::Busy) => {
                tracing::info!(job = name, "another pgkeep holds the job's advisory lock");
                self.refresh_last_success(name).await;
                return Attempt::Done(Ran::Skipped(SkipReason::Locked));
            }
            Err(e) => {
                let e = BackupError {
                    job: name.to_string(),
                    stage: Stage::Connect,
                    cause: e.into(),
                };
                tracing::error!(job = name, stage = %e.stage, error = %crate::error::report(&e.cause), "backup failed");
                return failed(e, None);
            }
        };
        match self.newest_committed_id(name).await {
            Ok(Some(newest)) if newest >= manifest::new_id(slot) => {
                tracing::info!(job = name, backup = %newest, "this slot's backup is already committed (by another pgkeep)");
                lock.release().await;
                self.refresh_last_success(name).await;
                return Attempt::Done(Ran::Skipped(SkipReason::AlreadyDone));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(job = name, error = %e, "could not list the job's backups"),
        }
        if !*announced {
            *announced = true;
            s.metrics.set_running(name, true);
            s.systemd.status(&format!("job {name}: backup running"));
            s.notifier.started(&job.notifications, name).await;
        }

        // Holding the lock, no other run of the job is going: whatever earlier runs left is
        // debris, whatever its age.
        self.sweep(name, None).await;
        let started_at = Utc::now();
        let id = manifest::new_id(started_at);
        let cancel = Cancel::new();
        let run = Box::pin(backup::run_at(job, &s.repo, started_at, &cancel));
        let bounded = async { tokio::time::timeout(job.timeout, run).await.ok() };
        // Dropping the run kills its child processes and aborts its uploads; no manifest is
        // written, as that is the run's last step.
        let result = tokio::select! {
            r = bounded => Some(r),
            () = s.cancel.cancelled() => None,
        };
        let attempt = match result {
            None => {
                tracing::warn!(job = name, backup = %id, "shutdown grace is over: the running backup is cancelled");
                self.discard(name, &id).await;
                Attempt::Done(Ran::Cancelled)
            }
            Some(None) => {
                let limit = job.timeout;
                let error = format!(
                    "backup of job '{name}' timed out after {} (jobs.{name}.timeout)",
                    humantime::format_duration(limit)
                );
                tracing::error!(job = name, backup = %id, timeout_s = limit.as_secs_f64(), "backup timed out: cancelled");
                self.discard(name, &id).await;
                Attempt::Done(Ran::Failed {
                    error,
                    backup: Some(id),
                })
            }
            Some(Some(Ok(m))) => {
                match crate::prune::after_backup(&s.config, job, &s.repo, Utc::now()).await {
                    Some(Ok(report)) => s.metrics.pruned(name, Utc::now(), report.deleted.len()),
                    Some(Err(e)) => s.metrics.prune_failed(name, Utc::now(), e.deleted()),
                    None => {}
                }
                Attempt::Done(Ran::Committed(m))
            }
            Some(Some(Err(e))) => failed(e, Some(id)),
        };
        lock.release().await;
        attempt
    }

    async fn discard(&self, job: &str, id: &str) {
        if let Some(swept) = self.shared.repo.discard(job, id).await {
            self.shared
                .metrics
                .cleaned(job, swept.objects, swept.uploads);
        }
    }

    /// Removes `job`'s debris: all of it when `cutoff` is `None` (the caller holds the job's
    /// lock), else what is older than `cutoff`.
    async fn sweep(&self, job: &str, cutoff: Option<DateTime<Utc>>) {
        let s = &self.shared;
        match s.repo.sweep(job, cutoff).await {
            Ok(swept) => s.metrics.cleaned(job, swept.objects, swept.uploads),
            Err(e) => {
                tracing::warn!(job, error = %crate::error::report(&e), "could not look for leftovers of crashed runs");
            }
        }
    }

    /// The id of `job`'s newest committed backup.
    async fn newest_committed_id(
        &self,
        job: &str,
    ) -> Result<Option<String>, crate::store::StoreError> {
        self.shared.repo.newest_id(job).await
    }

    /// Learns about backups committed elsewhere (another replica, before a restart).
    async fn refresh_last_success(&self, job: &str) {
        let s = &self.shared;
        let newest = match self.newest_committed_id(job).await {
            Ok(Some(id)) => id,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(job, error = %e, "could not list the job's backups");
                return;
            }
        };
        let known = s.status.last_success(job).map(manifest::new_id);
        if known.is_some_and(|k| k >= newest) {
            return;
        }
        match s.repo.manifest(job, &newest).await {
            Ok(m) => {
                s.status.record_success(job, m.finished_at);
                s.metrics.committed(job, m.finished_at, m.stored_bytes());
            }
            Err(e) => {
                tracing::warn!(job, backup = %newest, error = %crate::error::report(&e), "could not read the newest manifest");
            }
        }
    }
}

fn failed(e: BackupError, backup: Option<String>) -> Attempt {
    if e.is_retryable() {
        Attempt::Transient(e, backup)
    } else {
        Attempt::Done(Ran::Failed {
            error: crate::error::report(&e),
            backup,
        })
    }
}

/// How long to wait before retry number `retry` (from 1): `base`, doubling per retry, then
/// spread by `jitter` (from 0 to 1) over its second half, so replicas and jobs that failed
/// together do not all retry at the same instant.
fn backoff_wait(base: Duration, retry: u32, jitter: f64) -> Duration {
    let full = base.saturating_mul(1 << retry.saturating_sub(1).min(10));
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_stops_doubling_and_is_jittered() {
        let base = Duration::from_secs(10);
        assert_eq!(backoff_wait(base, 1, 1.0), Duration::from_secs(10));
        assert_eq!(backoff_wait(base, 3, 1.0), Duration::from_secs(40));
        assert_eq!(backoff_wait(base, 20, 1.0), Duration::from_secs(10 * 1024));
        assert_eq!(backoff_wait(base, 1, 0.0), Duration::from_secs(5));
        assert_eq!(backoff_wait(base, 3, 0.5), Duration::from_secs(30));
    }
}
