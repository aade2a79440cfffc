//! Fires each scheduled job with tokio-cron-scheduler, in the daemon's time zone, as a
//! `Trigger` sent to the daemon's dispatcher.
//!
//! tokio-cron-scheduler turns a time zone into the fixed UTC offset the zone has when a job is
//! added (its upstream issues #87 and #107), so after a daylight-saving change every job would
//! fire an hour off. `Triggers` therefore adds the jobs again just after each change of the
//! offset, fires what fell due in between, and the runner drops a trigger whose wall-clock
//! slot repeats the previous one (clocks going back).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_cron_scheduler::job::JobId;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};

use super::schedule::{Schedule, next_offset_change};

/// One firing of a job's schedule.
#[derive(Debug, Clone)]
pub struct Trigger {
    pub job: String,
    pub fired_at: DateTime<Utc>,
    /// The fire time this trigger is for, when known better than "the latest at `fired_at`".
    pub slot: Option<DateTime<Utc>>,
}

/// The running cron triggers; dropping them without `stop` leaves the scheduler ticking.
pub struct Triggers {
    scheduler: JobScheduler,
    watcher: JoinHandle<()>,
}

/// What is registered with the scheduler, to register again after an offset change.
struct Registration {
    jobs: Vec<(String, Schedule)>,
    tz: Tz,
    tx: mpsc::Sender<Trigger>,
    ids: Vec<JobId>,
}

impl Registration {
    async fn add_all(&mut self, scheduler: &JobScheduler) -> Result<(), JobSchedulerError> {
        for (name, schedule) in &self.jobs {
            let tx = self.tx.clone();
            let name = name.clone();
            let job = Job::new_async_tz(schedule.as_str(), self.tz, move |_id, _scheduler| {
                let tx = tx.clone();
                let trigger = Trigger {
                    job: name.clone(),
                    fired_at: Utc::now(),
                    slot: None,
                };
                Box::pin(async move {
                    // A full queue means the dispatcher is stuck or gone: dropping is right.
                    if let Err(e) = tx.try_send(trigger) {
                        tracing::warn!(error = %e, "a schedule fired but the dispatcher is not taking triggers");
                    }
                })
            })?;
            self.ids.push(scheduler.add(job).await?);
        }
        Ok(())
    }

    async fn remove_all(&mut self, scheduler: &JobScheduler) {
        for id in self.ids.drain(..) {
            if let Err(e) = scheduler.remove(&id).await {
                tracing::warn!(error = %e, "could not remove a schedule");
            }
        }
    }
}

impl Triggers {
    /// Starts firing `jobs` on their schedules in `tz`, sending triggers to `tx`.
    ///
    /// # Errors
    /// The scheduler could not start or refused a schedule (already validated, so unlikely).
    pub async fn start(
        jobs: Vec<(String, Schedule)>,
        tz: Tz,
        tx: mpsc::Sender<Trigger>,
    ) -> Result<Triggers, JobSchedulerError> {
        let scheduler = JobScheduler::new().await?;
        let mut registration = Registration {
            jobs,
            tz,
            tx,
            ids: Vec::new(),
        };
        registration.add_all(&scheduler).await?;
        scheduler.start().await?;
        let registration = Arc::new(Mutex::new(registration));
        let watcher = tokio::spawn(follow_offset_changes(scheduler.clone(), registration, tz));
        Ok(Triggers { scheduler, watcher })
    }

    /// Stops firing. Runs already triggered are not affected.
    pub async fn stop(mut self) {
        self.watcher.abort();
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::warn!(error = %e, "the cron scheduler did not shut down cleanly");
        }
    }
}

/// Re-adds every job just after each change of `tz`'s UTC offset.
async fn follow_offset_changes(
    scheduler: JobScheduler,
    registration: Arc<Mutex<Registration>>,
    tz: Tz,
) {
    loop {
        let Some(change) = next_offset_change(tz, Utc::now()) else {
            // No change within a year (UTC, most zones without daylight saving): look again
            // in a while, in case the process runs that long.
            tokio::time::sleep(std::time::Duration::from_hours(30 * 24)).await;
            continue;
        };
        let wait = (change - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait + std::time::Duration::from_secs(1)).await;
        let mut registration = registration.lock().await;
        registration.remove_all(&scheduler).await;
        match registration.add_all(&scheduler).await {
            Ok(()) => tracing::info!(timezone = %tz, "time zone offset changed: schedules re-read"),
            Err(e) => {
                tracing::error!(timezone = %tz, error = %e, "could not re-add schedules after an offset change");
            }
        }
        // What fell due in the second of the change was in neither registration.
        for (name, schedule) in &registration.jobs {
            if let Some(due) = schedule.due_at_change(change, tz) {
                let trigger = Trigger {
                    job: name.clone(),
                    fired_at: Utc::now(),
                    slot: Some(due),
                };
                if let Err(e) = registration.tx.try_send(trigger) {
                    tracing::warn!(job = %name, error = %e, "could not trigger a run due at the offset change");
                }
            }
        }
    }
}
