//! Cron schedules as pure time arithmetic: parsed exactly as tokio-cron-scheduler parses them,
//! with fire times, slots and default maximum ages computed in the daemon's time zone.
//! Every function takes `now`, so none of it reads the clock.

use std::time::Duration;

use chrono::{DateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// How many upcoming fire times the default `max_age` looks at: enough to see a weekend gap
/// in a weekday schedule.
const GAP_SAMPLES: usize = 10;

/// A job's cron schedule: `sec min hour day-of-month month day-of-week`.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

/// The parser tokio-cron-scheduler uses (seconds required; day-of-month AND day-of-week must
/// both match when both are restricted), so what validates is exactly what fires.
pub(crate) fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
}

impl Schedule {
    /// Parses a 6-field cron expression (or a nickname such as `@daily`).
    ///
    /// # Errors
    /// A sentence naming what is wrong, for a configuration problem.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let trimmed = expr.trim();
        let shown = crate::redact::show(expr);
        if !trimmed.starts_with('@') {
            let fields = trimmed.split_whitespace().count();
            if fields != 6 {
                return Err(format!(
                    "'{shown}' has {fields} fields; a schedule has 6: sec min hour day-of-month month day-of-week (e.g. \"0 0 3 * * *\")"
                ));
            }
        }
        let cron = parser().parse(trimmed).map_err(|e| {
            // croner's message may quote a whole field: shorten and mask it too.
            let why = crate::redact::show_at_most(&e.to_string(), 120);
            format!("'{shown}' is not a valid schedule: {why}")
        })?;
        let schedule = Schedule {
            expr: trimmed.to_string(),
            cron,
        };
        if schedule.next_after(Utc::now(), chrono_tz::UTC).is_none() {
            return Err(format!("'{shown}' never fires"));
        }
        Ok(schedule)
    }

    /// The expression as written (trimmed).
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first fire time strictly after `after`, read in `tz`.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&whole_second(after).with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The slot a trigger at `now` belongs to: the latest fire time at or before `now`.
    pub fn slot_at(&self, now: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(now).with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The fire time, if any, in the second from `change` on: when `tz` changes its offset at
    /// `change`, schedules are registered anew just after, and a fire time due then (03:00
    /// on a spring-forward night, or 02:30, which the change skips and croner moves to 03:00)
    /// would be lost between the old registration and the new one.
    pub fn due_at_change(&self, change: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let due = self.next_after(change - chrono::Duration::seconds(1), tz)?;
        (due <= change + chrono::Duration::seconds(1)).then_some(due)
    }

    /// The longest gap between consecutive fire times among the next few after `now`.
    pub fn longest_gap(&self, now: DateTime<Utc>, tz: Tz) -> Option<Duration> {
        let mut previous = self.next_after(now, tz)?;
        let mut longest = None;
        for _ in 1..GAP_SAMPLES {
            let Some(next) = self.next_after(previous, tz) else {
                break;
            };
            let gap = (next - previous).to_std().ok()?;
            longest = Some(longest.map_or(gap, |l: Duration| l.max(gap)));
            previous = next;
        }
        longest
    }

    /// `/readyz`'s default tolerance: twice the longest gap between upcoming fire times, so
    /// one missed run is tolerated and a second is not (a weekday schedule tolerates its
    /// weekend).
    pub fn default_max_age(&self, now: DateTime<Utc>, tz: Tz) -> Option<Duration> {
        self.longest_gap(now, tz).map(|g| g * 2)
    }
}

/// A job's last slot in wall-clock time, to refuse a slot that repeats it: when clocks go
/// back, 02:30 happens twice, and a schedule registered anew after the change would fire again
/// at the second 02:30. Like croner (and cron), pgkeep runs a repeated wall-clock time once.
#[derive(Debug, Default)]
pub struct SlotMemory(std::sync::Mutex<Option<chrono::NaiveDateTime>>);

impl SlotMemory {
    /// Records `slot` and says whether its wall-clock time is new.
    pub fn first_time(&self, slot: DateTime<Utc>, tz: Tz) -> bool {
        let local = slot.with_timezone(&tz).naive_local();
        let mut last = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if *last == Some(local) {
            return false;
        }
        *last = Some(local);
        true
    }
}

/// `t` without its fraction of a second (cron works in whole seconds; croner would carry the
/// fraction into its answers).
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// The next instant after `now` at which `tz` changes its UTC offset (a daylight-saving
/// change), to the second; `None` when there is none within about a year.
pub fn next_offset_change(tz: Tz, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let offset_at = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let current = offset_at(now);
    let step = chrono::Duration::hours(1);
    let mut before = now;
    for _ in 0..(370 * 24) {
        let after = before + step;
        if offset_at(after) != current {
            // Bisect (before, after] down to the first second of the new offset.
            let (mut lo, mut hi) = (before, after);
            while hi - lo > chrono::Duration::seconds(1) {
                let mid = lo + (hi - lo) / 2;
                if offset_at(mid) == current {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            return Some(hi);
        }
        before = after;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn five_fields_and_nonsense_are_refused() {
        let e = Schedule::parse("0 3 * * *").unwrap_err();
        assert!(e.contains("has 5 fields"), "{e}");
        let e = Schedule::parse("0 0 25 * * *").unwrap_err();
        assert!(e.contains("not a valid schedule"), "{e}");
        let e = Schedule::parse("x 0 3 * * *").unwrap_err();
        assert!(e.contains("not a valid schedule"), "{e}");
        assert!(Schedule::parse("0 0 3 * * *").is_ok());
        assert!(Schedule::parse("*/2 * * * * *").is_ok());
        assert!(Schedule::parse("0 30 2 * * MON-FRI").is_ok());
        assert!(Schedule::parse("@daily").is_ok());
    }

    #[test]
    fn fire_times_follow_the_time_zone_across_daylight_saving() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let s = Schedule::parse("0 0 3 * * *").unwrap();
        // Winter: 03:00 CET is 02:00 UTC.
        let next = s.next_after(utc("2026-03-27T12:00:00Z"), paris).unwrap();
        assert_eq!(next, utc("2026-03-28T02:00:00Z"));
        // After the spring change (29 March 2026), 03:00 CEST is 01:00 UTC.
        let next = s.next_after(utc("2026-03-29T12:00:00Z"), paris).unwrap();
        assert_eq!(next, utc("2026-03-30T01:00:00Z"));
    }

    #[test]
    fn offset_changes_are_found_to_the_second() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let change = next_offset_change(paris, utc("2026-02-01T00:00:00Z")).unwrap();
        assert_eq!(change, utc("2026-03-29T01:00:00Z"));
        let change = next_offset_change(paris, change).unwrap();
        assert_eq!(change, utc("2026-10-25T01:00:00Z"));
        assert_eq!(
            next_offset_change(chrono_tz::UTC, utc("2026-02-01T00:00:00Z")),
            None
        );
    }

    #[test]
    fn fire_times_at_a_spring_change_are_caught() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let change = utc("2026-03-29T01:00:00Z");
        for expr in ["0 0 3 * * *", "0 30 2 * * *", "0 0 * * * *"] {
            let s = Schedule::parse(expr).unwrap();
            assert_eq!(s.due_at_change(change, paris), Some(change), "{expr}");
        }
        let s = Schedule::parse("0 0 4 * * *").unwrap();
        assert_eq!(s.due_at_change(change, paris), None);
        // Autumn: 03:00 CEST becomes 02:00 CET; nothing is due in that second.
        let s = Schedule::parse("0 0 3 * * *").unwrap();
        assert_eq!(s.due_at_change(utc("2026-10-25T01:00:00Z"), paris), None);
    }

    #[test]
    fn a_repeated_wall_clock_slot_runs_once() {
        let paris: Tz = "Europe/Paris".parse().unwrap();
        let memory = SlotMemory::default();
        // 02:30 CEST, then 02:30 CET an hour later, then the next day.
        assert!(memory.first_time(utc("2026-10-25T00:30:00Z"), paris));
        assert!(!memory.first_time(utc("2026-10-25T01:30:00Z"), paris));
        assert!(memory.first_time(utc("2026-10-26T01:30:00Z"), paris));
    }

    #[test]
    fn slots_are_the_latest_fire_time() {
        let s = Schedule::parse("*/2 * * * * *").unwrap();
        let tz = chrono_tz::UTC;
        assert_eq!(
            s.slot_at(utc("2026-05-01T10:00:03.400Z"), tz).unwrap(),
            utc("2026-05-01T10:00:02Z")
        );
        assert_eq!(
            s.slot_at(utc("2026-05-01T10:00:02Z"), tz).unwrap(),
            utc("2026-05-01T10:00:02Z")
        );
    }

    #[test]
    fn default_max_age_is_twice_the_longest_gap() {
        let tz = chrono_tz::UTC;
        let now = utc("2026-05-06T12:00:00Z"); // a Wednesday
        let hourly = Schedule::parse("0 0 * * * *").unwrap();
        assert_eq!(
            hourly.default_max_age(now, tz),
            Some(Duration::from_hours(2))
        );
        let weekdays = Schedule::parse("0 0 3 * * MON-FRI").unwrap();
        assert_eq!(
            weekdays.default_max_age(now, tz),
            Some(Duration::from_hours(2 * 3 * 24))
        );
    }
}
