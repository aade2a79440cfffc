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

use crate::config::RawRetention;
use crate::manifest::Manifest;

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

impl TryFrom<&RawRetention> for Retention {
    type Error = EmptyPolicy;

    fn try_from(raw: &RawRetention) -> Result<Self, Self::Error> {
        let r = Retention {
            last: raw.keep_last.unwrap_or(0),
            hourly: raw.keep_hourly.unwrap_or(0),
            daily: raw.keep_daily.unwrap_or(0),
            weekly: raw.keep_weekly.unwrap_or(0),
            monthly: raw.keep_monthly.unwrap_or(0),
            yearly: raw.keep_yearly.unwrap_or(0),
        };
        if r.last == 0 && r.periodic().iter().all(|(_, n)| *n == 0) {
            return Err(EmptyPolicy);
        }
        Ok(r)
    }
}

impl Retention {
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
}

impl From<&Manifest> for BackupRef {
    fn from(m: &Manifest) -> Self {
        BackupRef {
            id: m.id.clone(),
            started_at: m.started_at,
        }
    }
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
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(n) => write!(f, "last {n}"),
            Reason::Period(p, label) => write!(f, "{} {label}", p.name()),
            Reason::Future => f.write_str("dated in the future"),
            Reason::Newest => f.write_str("newest backup"),
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
/// backups dated after `now` are kept without counting against any rule.
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
    RetentionPlan { decisions }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn policy(f: impl FnOnce(&mut RawRetention)) -> Retention {
        let mut raw = RawRetention::default();
        f(&mut raw);
        Retention::try_from(&raw).unwrap()
    }

    fn at(s: &str) -> BackupRef {
        let t = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        BackupRef {
            id: crate::manifest::new_id(t),
            started_at: t,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()
    }

    /// `(id's start time, reasons)` newest first, for compact assertions.
    fn summary(p: &RetentionPlan) -> Vec<(String, String)> {
        p.decisions
            .iter()
            .map(|d| {
                (
                    d.backup.started_at.to_rfc3339(),
                    if d.keep() {
                        d.reasons_text()
                    } else {
                        "DELETE".into()
                    },
                )
            })
            .collect()
    }

    fn kept(p: &RetentionPlan) -> Vec<String> {
        p.kept().map(|d| d.backup.started_at.to_rfc3339()).collect()
    }

    #[test]
    fn a_policy_keeping_nothing_is_refused() {
        assert_eq!(
            Retention::try_from(&RawRetention::default()),
            Err(EmptyPolicy)
        );
        let zeros = RawRetention {
            keep_last: Some(0),
            keep_daily: Some(0),
            ..RawRetention::default()
        };
        assert_eq!(Retention::try_from(&zeros), Err(EmptyPolicy));
    }

    #[test]
    fn policy_displays_its_rules() {
        let p = policy(|r| {
            r.keep_last = Some(3);
            r.keep_weekly = Some(4);
        });
        assert_eq!(p.to_string(), "keep_last=3 keep_weekly=4");
    }

    #[test]
    fn empty_input_gives_an_empty_plan() {
        let p = plan(&[], &policy(|r| r.keep_last = Some(1)), now(), Tz::UTC);
        assert!(p.decisions.is_empty());
    }

    #[test]
    fn keep_last_keeps_the_n_newest_whatever_the_input_order() {
        let backups = [
            at("2026-11-02T03:00:00Z"),
            at("2026-11-05T03:00:00Z"),
            at("2026-11-01T03:00:00Z"),
            at("2026-11-04T03:00:00Z"),
            at("2026-11-03T03:00:00Z"),
        ];
        let p = plan(&backups, &policy(|r| r.keep_last = Some(3)), now(), Tz::UTC);
        assert_eq!(
            summary(&p),
            [
                ("2026-11-05T03:00:00+00:00", "last 1"),
                ("2026-11-04T03:00:00+00:00", "last 2"),
                ("2026-11-03T03:00:00+00:00", "last 3"),
                ("2026-11-02T03:00:00+00:00", "DELETE"),
                ("2026-11-01T03:00:00+00:00", "DELETE"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(p.deleted().count(), 2);
    }

    #[test]
    fn keep_daily_counts_only_days_with_backups_and_keeps_each_days_newest() {
        let backups = [
            at("2026-11-20T23:00:00Z"),
            at("2026-11-20T03:00:00Z"),
            // no backup on the 19th
            at("2026-11-18T12:00:00Z"),
            at("2026-11-18T03:00:00Z"),
            at("2026-11-17T03:00:00Z"),
        ];
        let p = plan(
            &backups,
            &policy(|r| r.keep_daily = Some(2)),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                ("2026-11-20T23:00:00+00:00", "daily 2026-11-20"),
                ("2026-11-20T03:00:00+00:00", "DELETE"),
                ("2026-11-18T12:00:00+00:00", "daily 2026-11-18"),
                ("2026-11-18T03:00:00+00:00", "DELETE"),
                ("2026-11-17T03:00:00+00:00", "DELETE"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn keep_hourly() {
        let backups = [
            at("2026-11-20T10:45:00Z"),
            at("2026-11-20T10:15:00Z"),
            at("2026-11-20T09:59:59Z"),
            at("2026-11-20T08:00:00Z"),
        ];
        let p = plan(
            &backups,
            &policy(|r| r.keep_hourly = Some(2)),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                ("2026-11-20T10:45:00+00:00", "hourly 2026-11-20 10:00+00:00"),
                ("2026-11-20T10:15:00+00:00", "DELETE"),
                ("2026-11-20T09:59:59+00:00", "hourly 2026-11-20 09:00+00:00"),
                ("2026-11-20T08:00:00+00:00", "DELETE"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn keep_weekly_uses_iso_weeks_starting_monday() {
        let backups = [
            at("2026-11-23T01:00:00Z"), // Monday, W48
            at("2026-11-22T23:00:00Z"), // Sunday, W47
            at("2026-11-16T00:00:00Z"), // Monday, W47
            at("2026-11-15T12:00:00Z"), // Sunday, W46
            at("2026-01-01T12:00:00Z"), // Thursday: 2026-W01
        ];
        let p = plan(
            &backups,
            &policy(|r| r.keep_weekly = Some(10)),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                ("2026-11-23T01:00:00+00:00", "weekly 2026-W48"),
                ("2026-11-22T23:00:00+00:00", "weekly 2026-W47"),
                ("2026-11-16T00:00:00+00:00", "DELETE"),
                ("2026-11-15T12:00:00+00:00", "weekly 2026-W46"),
                ("2026-01-01T12:00:00+00:00", "weekly 2026-W01"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn keep_monthly_and_yearly() {
        let backups = [
            at("2026-12-31T23:59:59Z"),
            at("2026-12-01T00:00:00Z"),
            at("2026-11-30T00:00:00Z"),
            at("2026-01-15T00:00:00Z"),
            at("2025-12-31T00:00:00Z"),
            at("2025-06-01T00:00:00Z"),
            at("2023-06-01T00:00:00Z"),
        ];
        let p = plan(
            &backups,
            &policy(|r| {
                r.keep_monthly = Some(3);
                r.keep_yearly = Some(3);
            }),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                ("2026-12-31T23:59:59+00:00", "monthly 2026-12, yearly 2026"),
                ("2026-12-01T00:00:00+00:00", "DELETE"),
                ("2026-11-30T00:00:00+00:00", "monthly 2026-11"),
                ("2026-01-15T00:00:00+00:00", "monthly 2026-01"),
                ("2025-12-31T00:00:00+00:00", "yearly 2025"),
                ("2025-06-01T00:00:00+00:00", "DELETE"),
                // 2024 has no backup, so it does not use up a slot.
                ("2023-06-01T00:00:00+00:00", "yearly 2023"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn overlapping_rules_list_every_reason() {
        let backups = [
            at("2026-11-20T03:00:00Z"),
            at("2026-11-19T03:00:00Z"),
            at("2026-11-18T03:00:00Z"),
            at("2026-11-10T03:00:00Z"),
            at("2026-10-31T03:00:00Z"),
        ];
        let p = plan(
            &backups,
            &policy(|r| {
                r.keep_last = Some(2);
                r.keep_daily = Some(3);
                r.keep_weekly = Some(2);
                r.keep_monthly = Some(2);
            }),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                (
                    "2026-11-20T03:00:00+00:00",
                    "last 1, daily 2026-11-20, weekly 2026-W47, monthly 2026-11"
                ),
                ("2026-11-19T03:00:00+00:00", "last 2, daily 2026-11-19"),
                ("2026-11-18T03:00:00+00:00", "daily 2026-11-18"),
                ("2026-11-10T03:00:00+00:00", "weekly 2026-W46"),
                ("2026-10-31T03:00:00+00:00", "monthly 2026-10"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn ties_in_a_period_keep_the_newest_and_exact_ties_break_on_id() {
        let same = Utc.with_ymd_and_hms(2026, 11, 20, 3, 0, 0).unwrap();
        let first = BackupRef {
            id: "20261120T030000.000Z".into(),
            started_at: same,
        };
        let second = BackupRef {
            id: "20261120T030000.000Z-b".into(),
            started_at: same,
        };
        let earlier = at("2026-11-20T02:59:59.999Z");
        for input in [
            vec![first.clone(), second.clone(), earlier.clone()],
            vec![earlier.clone(), second.clone(), first.clone()],
        ] {
            let p = plan(&input, &policy(|r| r.keep_daily = Some(1)), now(), Tz::UTC);
            let kept: Vec<&str> = p.kept().map(|d| d.backup.id.as_str()).collect();
            assert_eq!(kept, ["20261120T030000.000Z-b"]);
            assert_eq!(p.decisions.len(), 3);
        }
    }

    #[test]
    fn days_are_local_days_across_a_dst_change() {
        // Europe/Berlin springs forward at 2026-03-29 01:00 UTC (02:00 CET -> 03:00 CEST).
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let backups = [
            at("2026-03-29T22:30:00Z"), // 2026-03-30 00:30 CEST
            at("2026-03-29T21:30:00Z"), // 2026-03-29 23:30 CEST
            at("2026-03-28T23:30:00Z"), // 2026-03-29 00:30 CET
            at("2026-03-28T22:30:00Z"), // 2026-03-28 23:30 CET
        ];
        let p = plan(&backups, &policy(|r| r.keep_daily = Some(10)), now(), tz);
        assert_eq!(
            summary(&p),
            [
                ("2026-03-29T22:30:00+00:00", "daily 2026-03-30"),
                ("2026-03-29T21:30:00+00:00", "daily 2026-03-29"),
                ("2026-03-28T23:30:00+00:00", "DELETE"),
                ("2026-03-28T22:30:00+00:00", "daily 2026-03-28"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // In UTC the same backups fall on other days.
        let utc = plan(
            &backups,
            &policy(|r| r.keep_daily = Some(10)),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            kept(&utc),
            ["2026-03-29T22:30:00+00:00", "2026-03-28T23:30:00+00:00"]
        );
    }

    #[test]
    fn the_repeated_hour_when_clocks_go_back_is_two_hours() {
        // Europe/Berlin falls back at 2026-10-25 01:00 UTC (03:00 CEST -> 02:00 CET):
        // 02:30 local happens twice.
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let backups = [
            at("2026-10-25T01:30:00Z"), // 02:30 CET
            at("2026-10-25T00:30:00Z"), // 02:30 CEST
            at("2026-10-25T00:10:00Z"), // 02:10 CEST
        ];
        let p = plan(&backups, &policy(|r| r.keep_hourly = Some(5)), now(), tz);
        assert_eq!(
            summary(&p),
            [
                ("2026-10-25T01:30:00+00:00", "hourly 2026-10-25 02:00+01:00"),
                ("2026-10-25T00:30:00+00:00", "hourly 2026-10-25 02:00+02:00"),
                ("2026-10-25T00:10:00+00:00", "DELETE"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // The 25-hour day is still one day.
        let daily = plan(&backups, &policy(|r| r.keep_daily = Some(5)), now(), tz);
        assert_eq!(kept(&daily), ["2026-10-25T01:30:00+00:00"]);
    }

    #[test]
    fn the_newest_backup_is_kept_by_every_policy() {
        let backups: Vec<BackupRef> = (0..40)
            .map(|i| {
                let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                    + chrono::Duration::hours(i * 37);
                BackupRef {
                    id: crate::manifest::new_id(t),
                    started_at: t,
                }
            })
            .collect();
        let newest = backups.iter().map(|b| b.started_at).max().unwrap();
        let setters: [fn(&mut RawRetention); 6] = [
            |r| r.keep_last = Some(1),
            |r| r.keep_hourly = Some(1),
            |r| r.keep_daily = Some(1),
            |r| r.keep_weekly = Some(1),
            |r| r.keep_monthly = Some(1),
            |r| r.keep_yearly = Some(1),
        ];
        for set in setters {
            let pol = policy(set);
            let p = plan(&backups, &pol, now(), "America/New_York".parse().unwrap());
            assert_eq!(p.decisions[0].backup.started_at, newest, "{pol}");
            assert!(p.decisions[0].keep(), "{pol}");
            assert_eq!(p.kept().count(), 1, "{pol}");
            assert_eq!(p.decisions.len(), 40);
        }
    }

    #[test]
    fn a_future_dated_backup_is_kept_and_uses_no_slot() {
        let backups = [
            at("2027-03-01T00:00:00Z"), // after now(): a skewed clock
            at("2026-12-31T03:00:00Z"),
            at("2026-12-30T03:00:00Z"),
        ];
        let p = plan(
            &backups,
            &policy(|r| {
                r.keep_last = Some(1);
                r.keep_daily = Some(1);
            }),
            now(),
            Tz::UTC,
        );
        assert_eq!(
            summary(&p),
            [
                ("2027-03-01T00:00:00+00:00", "dated in the future"),
                ("2026-12-31T03:00:00+00:00", "last 1, daily 2026-12-31"),
                ("2026-12-30T03:00:00+00:00", "DELETE"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }

    #[test]
    fn only_future_backups_are_all_kept() {
        let backups = [at("2027-03-01T00:00:00Z"), at("2027-02-01T00:00:00Z")];
        let p = plan(&backups, &policy(|r| r.keep_last = Some(1)), now(), Tz::UTC);
        assert_eq!(p.kept().count(), 2);
    }
}
