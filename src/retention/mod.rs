//! Retention as a pure function: which backups a keep-last/hourly/daily/weekly/monthly/yearly
//! policy keeps, and why, given the backups' start times, the clock and the time zone.
//!
//! The semantics are restic's and borg's: for each period kind the policy keeps the newest
//! backup of each of the N most recent periods *that contain a backup* (an empty week does
//! not use up one of `keep_weekly`). Periods are calendar periods in the configured time zone,
//! so a daily backup at 00:30 local time belongs to that local day whatever UTC says.

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use chrono_tz::Tz;

/// A validated retention policy: at least one rule keeps something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    last: u32,
    hourly: u32,
    daily: u32,
    weekly: u32,
    monthly: u32,
    yearly: u32,
}

/// A policy that would keep nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a retention policy must keep something: set at least one keep_* above 0")]
pub struct EmptyPolicy;

impl Retention {
    /// A policy keeping the `last` newest backups and the newest of each of the most recent
    /// `hourly`, `daily`, ... periods that have one.
    ///
    /// # Errors
    /// `EmptyPolicy` when every count is 0.
    pub fn new(
        last: u32,
        hourly: u32,
        daily: u32,
        weekly: u32,
        monthly: u32,
        yearly: u32,
    ) -> Result<Retention, EmptyPolicy> {
        let r = Retention {
            last,
            hourly,
            daily,
            weekly,
            monthly,
            yearly,
        };
        if r.last == 0 && r.periodic().iter().all(|(_, n)| *n == 0) {
            return Err(EmptyPolicy);
        }
        Ok(r)
    }

    fn periodic(&self) -> [(Period, u32); 5] {
        [
            (Period::Hourly, self.hourly),
            (Period::Daily, self.daily),
            (Period::Weekly, self.weekly),
            (Period::Monthly, self.monthly),
            (Period::Yearly, self.yearly),
        ]
    }
}

impl fmt::Display for Retention {
    /// `keep_last=3 keep_daily=7`: the rules that are set.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.last > 0 {
            parts.push(format!("keep_last={}", self.last));
        }
        for (period, n) in self.periodic() {
            if n > 0 {
                parts.push(format!("keep_{}={n}", period.name()));
            }
        }
        f.write_str(&parts.join(" "))
    }
}

/// The calendar periods a policy can keep one backup of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period containing `t`, as a label that is also its identity. Hours carry their
    /// UTC offset, so the repeated hour when clocks go back is two periods, not one.
    pub fn label(self, t: DateTime<Tz>) -> String {
        match self {
            Period::Hourly => t.format("%Y-%m-%d %H:00%:z").to_string(),
            Period::Daily => t.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => t.format("%Y-%m").to_string(),
            Period::Yearly => t.format("%Y").to_string(),
        }
    }
}

/// What retention needs to know about a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupRef {
    pub id: String,
    pub started_at: DateTime<Utc>,
    /// A drill of it passed (it has a drill record).
    pub drilled: bool,
}

/// Why a backup is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Among the `keep_last` newest: its rank, 1 being the newest.
    Last(u32),
    /// The newest backup of this period.
    Period(Period, String),
    /// Started after `now`: a clock was wrong somewhere, and deleting what one does not
    /// understand is how the last good backup gets lost. It uses up no rule's slot.
    Future,
    /// The newest backup is never deleted, whatever the policy says.
    Newest,
    /// The newest backup a drill proved restorable is never deleted either: until a newer
    /// one passes a drill, it is the last backup known to restore.
    Drilled,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Period(p, label) => write!(f, "{} {label}", p.name()),
            Reason::Future => f.write_str("dated in the future"),
            Reason::Newest => f.write_str("newest backup"),
            Reason::Drilled => f.write_str("newest drilled backup"),
        }
    }
}

/// The verdict on one backup: kept for these reasons, or deleted when there are none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backup: BackupRef,
    pub reasons: Vec<Reason>,
}

impl Decision {
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }

    /// `last 1, daily 2026-11-20`.
    pub fn reasons_text(&self) -> String {
        self.reasons
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Every backup with its verdict, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    pub decisions: Vec<Decision>,
}

impl RetentionPlan {
    pub fn kept(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.keep())
    }

    pub fn deleted(&self) -> impl DoubleEndedIterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep())
    }
}

/// Decides, for every backup, whether `policy` keeps it and why. Pure: the clock (`now`)
/// and the time zone the calendar periods are counted in are arguments.
///
/// Backups are ordered by start time, then id (ids are start times, so this only breaks
/// exact ties); within a period the newest is kept. The newest backup is always kept, and
/// backups dated after `now` are kept without counting against any rule; so is the newest
/// backup that passed a drill.
pub fn plan(
    backups: &[BackupRef],
    policy: &Retention,
    now: DateTime<Utc>,
    tz: Tz,
) -> RetentionPlan {
    let mut sorted: Vec<&BackupRef> = backups.iter().collect();
    sorted.sort_by(|a, b| {
        b.started_at
            .cmp(&a.started_at)
            .then_with(|| b.id.cmp(&a.id))
    });
    let mut decisions: Vec<Decision> = sorted
        .into_iter()
        .map(|b| Decision {
            backup: b.clone(),
            reasons: Vec::new(),
        })
        .collect();

    let mut last_rank = 0u32;
    let mut seen: Vec<(Period, u32, Option<String>)> = policy
        .periodic()
        .into_iter()
        .map(|(p, n)| (p, n, None))
        .collect();
    for d in &mut decisions {
        if d.backup.started_at > now {
            d.reasons.push(Reason::Future);
            continue;
        }
        if last_rank < policy.last {
            last_rank += 1;
            d.reasons.push(Reason::Last(last_rank));
        }
        let local = d.backup.started_at.with_timezone(&tz);
        for (period, remaining, current) in &mut seen {
            let label = period.label(local);
            // Newest first, so a period's backups are contiguous and the first one seen is
            // its newest; a new label starts a new period with backups.
            if *remaining > 0 && current.as_deref() != Some(label.as_str()) {
                *remaining -= 1;
                d.reasons.push(Reason::Period(*period, label.clone()));
                *current = Some(label);
            }
        }
    }
    // Future-dated backups are kept already; the newest of the others must be too.
    if let Some(newest) = decisions.iter_mut().find(|d| d.backup.started_at <= now)
        && newest.reasons.is_empty()
    {
        newest.reasons.push(Reason::Newest);
    }
    // So is the newest one that passed a drill (future-dated ones are kept already).
    if let Some(drilled) = decisions
        .iter_mut()
        .find(|d| d.backup.drilled && d.backup.started_at <= now)
    {
        drilled.reasons.push(Reason::Drilled);
    }
    RetentionPlan { decisions }
}

#[cfg(test)]
mod tests;
