//! `pgkeep run`, the daemon: fires every scheduled job on its cron schedule in
//! `[daemon] timezone`, runs it under the overlap, concurrency and replica guards, serves
//! `/metrics`, `/healthz` and `/readyz`, notifies, cleans up after crashed runs, talks to
//! systemd, and on SIGTERM/SIGINT stops firing, lets running backups finish within
//! `shutdown_grace`, then cancels them cleanly. See docs/DAEMON.md.

mod drills;
mod http;
mod metrics;
mod runner;
mod scheduler;
mod status;
mod systemd;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use crate::lock::lock_key;
pub use crate::notify::{Notifier, Outcome};
pub use schedule::{Schedule, next_offset_change};

use crate::config::Config;
use crate::schedule;
use metrics::Metrics;
use runner::{Runner, Shared};
use scheduler::Triggers;
use status::{JobStatus, Status};
use systemd::Systemd;

/// How long cancelled runs get to clean up after the grace period.
const CANCEL_DEADLINE: Duration = Duration::from_secs(20);

/// Runs the daemon until SIGTERM or SIGINT; a second signal skips the grace period.
///
/// # Errors
/// Start-up failures only (the store cannot be opened, the listen address is taken); failed
/// backups are reported, not returned.
pub async fn run(config: Config) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let (tx, rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = name, "signal received");
            tx.send_modify(|n| *n += 1);
        }
    });
    run_until(config, rx).await
}

/// Runs the daemon until `stop` changes; a second change cancels running backups at once.
///
/// # Errors
/// As `run`.
pub async fn run_until(config: Config, mut stop: watch::Receiver<u32>) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let started_at = Utc::now();
    let tz = config.daemon.timezone;
    let repo = config.storage.open().await?;

    let mut schedules = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for (name, job) in &config.jobs {
        let mut status = JobStatus::default();
        match &job.schedule {
            Some(schedule) => {
                status.max_age = job
                    .max_age
                    .or_else(|| schedule.default_max_age(started_at, tz));
                let next = schedule.next_after(started_at, tz);
                tracing::info!(job = %name, schedule = %schedule.as_str(), timezone = %tz,
                    next = next.map(crate::human::time).unwrap_or_default(), "job scheduled");
                schedules.insert(name.clone(), schedule.clone());
            }
            None => {
                tracing::info!(job = %name, "job has no schedule: the daemon does not run it (`pgkeep backup {name}` does)");
            }
        }
        if let Some(drill) = &job.drill {
            status.drill_max_age = drill.max_age;
            tracing::info!(job = %name, schedule = %drill.schedule.as_str(),
                next = drill.schedule.next_after(started_at, tz).map(crate::human::time).unwrap_or_default(),
                "drills scheduled");
        }
        statuses.insert(name.clone(), status);
    }
    if schedules.is_empty() {
        tracing::warn!("no job has a schedule: the daemon will never run a backup");
    }
    let metrics = Metrics::new(config.jobs.keys().map(String::as_str));
    for (name, s) in &statuses {
        if let Some(max_age) = s.max_age {
            metrics.set_max_age(name, max_age);
        }
        if let Some(max_age) = s.drill_max_age {
            metrics.set_drill_max_age(name, max_age);
        }
    }
    let status = Arc::new(Status::new(started_at, statuses));
    let systemd = Systemd::from_env();
    let shared = Arc::new(Shared {
        config: config.clone(),
        repo,
        metrics: metrics.clone(),
        status: status.clone(),
        notifier: Notifier::new(),
        systemd: systemd.clone(),
        stopping: CancellationToken::new(),
        cancel: CancellationToken::new(),
    });
    let runner = Runner::new(shared.clone(), &schedules);
    runner.seed().await;
    let drills = drills::Drills::new(shared.clone());
    drills.seed().await;

    let http_stop = CancellationToken::new();
    let http = match config.daemon.listen {
        Some(addr) => {
            let listener = http::bind(addr)
                .await
                .with_context(|| format!("daemon.listen: cannot listen on {addr}"))?;
            tracing::info!(listen = %addr, "serving /metrics, /healthz and /readyz");
            let endpoints = Arc::new(http::Endpoints { metrics, status });
            Some(http::serve(listener, endpoints, http_stop.clone()))
        }
        None => None,
    };
    let sweeper = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.sweep_all().await })
    };

    let scheduled_jobs = schedules.len();
    let (tx, mut triggers_rx) = mpsc::channel(64);
    let mut fired: Vec<(String, Schedule)> = schedules.into_iter().collect();
    fired.extend(drills::schedules(&config));
    let triggers = Triggers::start(fired, tz, tx)
        .await
        .context("starting the cron scheduler")?;
    systemd.ready(&format!("{scheduled_jobs} scheduled jobs"));
    let watchdog = systemd.spawn_watchdog();
    tracing::info!(
        jobs = config.jobs.len(),
        scheduled = scheduled_jobs,
        version = env!("CARGO_PKG_VERSION"),
        "pgkeep daemon started"
    );

    let mut runs = JoinSet::new();
    loop {
        tokio::select! {
            Some(trigger) = triggers_rx.recv() => match drills::drilled_job(&trigger) {
                Some(job) => drills.dispatch(job, &mut runs),
                None => runner.dispatch(&trigger, &mut runs),
            },
            Some(done) = runs.join_next() => log_join(done),
            _ = stop.changed() => break,
        }
    }

    let grace = config.daemon.shutdown_grace;
    tracing::info!(
        running = runs.len(),
        grace_s = grace.as_secs_f64(),
        "shutting down: no new runs; running ones may finish within daemon.shutdown_grace"
    );
    systemd.stopping("shutting down");
    triggers.stop().await;
    drop(triggers_rx);
    shared.stopping.cancel();
    sweeper.abort();

    let deadline = tokio::time::sleep(grace);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = runs.join_next() => match done {
                Some(done) => log_join(done),
                None => break,
            },
            () = &mut deadline, if !shared.cancel.is_cancelled() => {
                tracing::warn!(running = runs.len(), "shutdown grace is over: cancelling the running backups");
                shared.cancel.cancel();
            }
            _ = stop.changed(), if !shared.cancel.is_cancelled() => {
                tracing::warn!(running = runs.len(), "second signal: cancelling the running backups now");
                shared.cancel.cancel();
            }
        }
        if shared.cancel.is_cancelled() {
            let finish = async {
                while let Some(done) = runs.join_next().await {
                    log_join(done);
                }
            };
            if tokio::time::timeout(CANCEL_DEADLINE, finish).await.is_err() {
                tracing::error!(
                    "cancelled runs did not finish cleaning up; leftovers are removed by the next start"
                );
            }
            break;
        }
    }
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    if let Some(w) = watchdog {
        w.abort();
    }
    tracing::info!("pgkeep daemon stopped");
    Ok(())
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(error = %e, "a run panicked; the daemon goes on");
    }
}
