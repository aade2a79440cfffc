//! Unit tests of the retention module.

use super::*;
use crate::config::RawRetention;
use chrono::TimeZone;

fn from_raw(raw: &RawRetention) -> Result<Retention, EmptyPolicy> {
    let n = |v: Option<u32>| v.unwrap_or(0);
    Retention::new(
        n(raw.keep_last),
        n(raw.keep_hourly),
        n(raw.keep_daily),
        n(raw.keep_weekly),
        n(raw.keep_monthly),
        n(raw.keep_yearly),
    )
}

fn policy(f: impl FnOnce(&mut RawRetention)) -> Retention {
    let mut raw = RawRetention::default();
    f(&mut raw);
    from_raw(&raw).unwrap()
}

fn at(s: &str) -> BackupRef {
    let t = DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    BackupRef {
        id: crate::manifest::new_id(t),
        started_at: t,
        drilled: false,
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
    assert_eq!(from_raw(&RawRetention::default()), Err(EmptyPolicy));
    let zeros = RawRetention {
        keep_last: Some(0),
        keep_daily: Some(0),
        ..RawRetention::default()
    };
    assert_eq!(from_raw(&zeros), Err(EmptyPolicy));
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
        drilled: false,
    };
    let second = BackupRef {
        id: "20261120T030000.000Z-b".into(),
        started_at: same,
        drilled: false,
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
                drilled: false,
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

#[test]
fn the_newest_drilled_backup_is_kept_whatever_the_rules_say() {
    let drilled = |s: &str| BackupRef {
        drilled: true,
        ..at(s)
    };
    let backups = vec![
        at("2026-11-20T03:00:00Z"),
        at("2026-11-19T03:00:00Z"),
        drilled("2026-11-18T03:00:00Z"),
        drilled("2026-11-17T03:00:00Z"),
        at("2026-11-16T03:00:00Z"),
    ];
    let p = plan(&backups, &policy(|r| r.keep_last = Some(1)), now(), Tz::UTC);
    assert_eq!(
        summary(&p),
        [
            ("2026-11-20T03:00:00+00:00", "last 1"),
            ("2026-11-19T03:00:00+00:00", "DELETE"),
            ("2026-11-18T03:00:00+00:00", "newest drilled backup"),
            ("2026-11-17T03:00:00+00:00", "DELETE"),
            ("2026-11-16T03:00:00+00:00", "DELETE"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    // A drilled backup a rule keeps anyway says both.
    let p = plan(&backups, &policy(|r| r.keep_last = Some(3)), now(), Tz::UTC);
    assert_eq!(
        summary(&p)[2].1,
        "last 3, newest drilled backup",
        "{:?}",
        summary(&p)
    );
    // The newest backup itself drilled: one decision carries both reasons.
    let p = plan(
        &[drilled("2026-11-20T03:00:00Z"), at("2026-11-19T03:00:00Z")],
        &policy(|r| r.keep_daily = Some(1)),
        now(),
        Tz::UTC,
    );
    assert_eq!(kept(&p), ["2026-11-20T03:00:00+00:00"]);
}
