//! Scheduled drills (`[jobs.NAME.drill]`): each firing drills the job's newest committed
//! backup on the configured server, never two at once for one job; the outcome goes to the
//! metrics, `/readyz` (the drill's `max_age`), the catalog, and on failure to the job's
//! webhook. Drills fire through the same cron triggers as backups, under the name
//! `drill:<job>` (job names cannot hold a colon).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::Utc;
use tokio::task::JoinSet;

use super::runner::Shared;
use super::scheduler::Trigger;
use crate::config::{Config, DrillSettings, Job};
use crate::drill::{DrillError, DrillOptions, DrillReport};
use crate::error::{Cancel, Stop};
use crate::schedule::Schedule;

/// The prefix of a drill's trigger name.
const PREFIX: &str = "drill:";

struct Entry {
    job: Job,
    settings: DrillSettings,
    running: AtomicBool,
}

/// Clears an entry's running flag however its drill ends.
struct Running(Arc<Entry>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// The jobs with scheduled drills; cheap to clone.
#[derive(Clone)]
pub struct Drills {
    shared: Arc<Shared>,
    entries: Arc<BTreeMap<String, Arc<Entry>>>,
}

/// The trigger names and schedules of every job's drills.
pub fn schedules(config: &Config) -> Vec<(String, Schedule)> {
    config
        .jobs
        .values()
        .filter_map(|j| {
            let d = j.drill.as_ref()?;
            Some((format!("{PREFIX}{}", j.name), d.schedule.clone()))
        })
        .collect()
}

/// The job a trigger drills, if it is a drill's.
pub fn drilled_job(trigger: &Trigger) -> Option<&str> {
    trigger.job.strip_prefix(PREFIX)
}

impl Drills {
    pub fn new(shared: Arc<Shared>) -> Drills {
        let entries = shared
            .config
            .jobs
            .values()
            .filter_map(|j| {
                let settings = j.drill.clone()?;
                let entry = Entry {
                    job: j.clone(),
                    settings,
                    running: AtomicBool::new(false),
                };
                Some((j.name.clone(), Arc::new(entry)))
            })
            .collect();
        Drills {
            shared,
            entries: Arc::new(entries),
        }
    }

    /// Seeds the last passed drill of every job from the drill records in the store.
    pub async fn seed(&self) {
        for name in self.entries.keys() {
            let repo = &self.shared.repo;
            let Ok(listing) = repo.list(Some(name)).await else {
                continue;
            };
            let Some(m) = listing.backups.iter().find(|m| listing.was_drilled(m)) else {
                continue;
            };
            if let Ok(Some(record)) = repo.drill_record(name, &m.id).await {
                self.shared.status.record_drill(name, record.drilled_at);
                self.shared.metrics.drill_passed_at(name, record.drilled_at);
            }
        }
    }

    /// Starts a drill of `job` in `tasks`, unless its previous drill is still going.
    pub fn dispatch(&self, job: &str, tasks: &mut JoinSet<()>) {
        let Some(entry) = self.entries.get(job).cloned() else {
            return;
        };
        if entry.running.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                job,
                "the previous drill is still going: this trigger is skipped"
            );
            return;
        }
        let drills = self.clone();
        tasks.spawn(async move {
            let flag = Running(entry);
            drills.run(&flag.0).await;
        });
    }

    async fn run(&self, entry: &Entry) {
        let s = &self.shared;
        let name = entry.job.name.as_str();
        if s.stopping.is_cancelled() {
            return;
        }
        let clock = Instant::now();
        let started_at = Utc::now();
        let listing = match s.repo.list(Some(name)).await {
            Ok(listing) => listing,
            Err(e) => {
                let error = format!("listing the backups: {}", crate::error::report(&e));
                self.failed(entry, None, &error, clock).await;
                return;
            }
        };
        let Some(manifest) = listing.backups.into_iter().next() else {
            tracing::info!(job = name, "no committed backup to drill yet");
            return;
        };
        let files = s.config.identity_files(&[]);
        let identities = if files.is_empty() {
            None
        } else {
            match crate::crypt::Identities::from_files(&files) {
                Ok(ids) => Some(ids),
                Err(e) => {
                    let error = crate::error::report(&e);
                    self.failed(entry, Some(&manifest.id), &error, clock).await;
                    return;
                }
            }
        };
        let repo = s.repo.clone().reading_with(identities);
        let options = DrillOptions {
            server: entry.settings.target.to_keywords(),
            password_file: entry.settings.password_file.clone(),
            jobs: entry.settings.jobs,
            no_owner: entry.settings.no_owner,
            staging_dir: None,
            schema_from: None,
            migrations: entry.job.export.migrations.clone(),
            pg_bin_dir: entry.job.pg_bin_dir.clone(),
        };
        tracing::info!(job = name, backup = %manifest.id, "drill starting");
        let root = Cancel::new();
        let (cancel, _timer) = root.with_timeout(entry.job.timeout);
        let drill = crate::drill::drill(&repo, &manifest, &options, &cancel);
        tokio::pin!(drill);
        // At the end of the shutdown grace the drill is cancelled and undoes itself (drops its
        // scratch database) rather than being dropped.
        let drilled: Result<DrillReport, DrillError> = tokio::select! {
            done = &mut drill => done,
            () = s.cancel.cancelled() => {
                root.cancel(Stop::Shutdown);
                drill.await
            }
        };
        crate::drill::record(&s.config, &manifest, &options, started_at, &drilled).await;
        match drilled {
            Ok(report) => {
                let took = clock.elapsed();
                tracing::info!(job = name, backup = %manifest.id, tables = report.record.tables,
                    rows = report.record.rows, seconds = took.as_secs_f64(), "drill passed");
                s.metrics.drill_passed(name, report.record.drilled_at, took);
                s.status.record_drill(name, report.record.drilled_at);
            }
            Err(e) => {
                let error = crate::error::report(&e);
                self.failed(entry, Some(&manifest.id), &error, clock).await;
            }
        }
    }

    async fn failed(&self, entry: &Entry, backup: Option<&str>, error: &str, clock: Instant) {
        let s = &self.shared;
        let name = entry.job.name.as_str();
        tracing::error!(
            job = name,
            backup = backup.unwrap_or(""),
            error,
            "drill failed"
        );
        s.metrics.drill_failed(name, clock.elapsed());
        s.notifier
            .drill_failed(
                &entry.job.notifications,
                name,
                backup,
                error,
                clock.elapsed(),
            )
            .await;
    }
}
