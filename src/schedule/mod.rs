//! Digests that run themselves: a list's cron schedule in a time zone, its slots, and the task
//! that queues a digest at each slot (`runner`).
//!
//! A slot is a wall-clock time in the schedule's zone. The cron pattern is matched against the
//! zone's wall clock (not against UTC), and each matching wall-clock time becomes one instant:
//! inside a spring-forward gap, the first valid instant after the gap; inside a repeated autumn
//! hour, its first occurrence. So every wall-clock slot fires once, whatever the zone does.

mod runner;

pub use runner::{RunReport, Scheduler, tick};

use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::Serialize;

use crate::store::{List, NewSchedule, ScheduleRow, ScheduleRun, Store, StoreError};

pub const DEFAULT_MAX_ITEMS: i32 = 20;
pub const DEFAULT_MIN_ITEMS: i32 = 1;
pub const ITEMS_LIMIT: i32 = 100;

/// A five-field cron pattern that parsed.
#[derive(Debug, Clone)]
pub struct CronPattern {
    text: String,
    cron: Cron,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("cron is a five-field pattern (minute hour day-of-month month day-of-week), like \"0 7 * * *\": {0}")]
    Cron(String),
    #[error("timezone is an IANA time zone name, like Europe/Kyiv or UTC")]
    Timezone,
    #[error("max_items is a whole number from 1 to 100")]
    MaxItems,
    #[error("min_items is a whole number from 1 to 100, at most max_items")]
    MinItems,
}

impl ScheduleError {
    /// The request field the error is about.
    pub fn field(&self) -> &'static str {
        match self {
            ScheduleError::Cron(_) => "cron",
            ScheduleError::Timezone => "timezone",
            ScheduleError::MaxItems => "max_items",
            ScheduleError::MinItems => "min_items",
        }
    }
}

impl FromStr for CronPattern {
    type Err = ScheduleError;

    fn from_str(raw: &str) -> Result<Self, ScheduleError> {
        let text = raw.split_whitespace().collect::<Vec<_>>().join(" ");
        // Five fields only: no seconds, no years, no @nicknames (each has a five-field spelling).
        if text.split(' ').count() != 5 || text.contains('@') {
            return Err(ScheduleError::Cron("it must have exactly five fields".into()));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser.parse(&text).map_err(|e| ScheduleError::Cron(e.to_string()))?;
        let pattern = CronPattern { text, cron };
        // A pattern that never matches (30 February) is no schedule.
        if pattern.next_wall_time(NaiveDateTime::default()).is_none() {
            return Err(ScheduleError::Cron("it never matches a date".into()));
        }
        Ok(pattern)
    }
}

impl CronPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first wall-clock time after `after` that the pattern matches.
    fn next_wall_time(&self, after: NaiveDateTime) -> Option<NaiveDateTime> {
        // UTC has no gaps nor repeats: matching in it is matching the wall clock itself. Slots
        // are whole minutes: the fraction of a second of `after` must not carry into them.
        let after = chrono::DurationRound::duration_trunc(after, TimeDelta::seconds(1)).ok()?;
        let wall = Utc.from_utc_datetime(&after);
        self.cron.find_next_occurrence(&wall, false).ok().map(|t| t.naive_utc())
    }
}

/// When a wall-clock time happens in `tz`: its first occurrence when the hour repeats, the first
/// valid instant after the gap when it does not exist.
fn instant(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = wall;
    // Gaps are at most a few hours (a day for a zone that skipped one, as Samoa did in 2011).
    for _ in 0..(26 * 60) {
        match tz.from_local_datetime(&probe) {
            LocalResult::Single(t) => return Some(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, _) => return Some(first.with_timezone(&Utc)),
            LocalResult::None => probe = probe.checked_add_signed(TimeDelta::minutes(1))?,
        }
    }
    None
}

/// A list's schedule: validated, so that it can only hold what the API accepts.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub cron: CronPattern,
    pub timezone: Tz,
    pub max_items: i32,
    pub min_items: i32,
}

impl Schedule {
    pub fn new(
        cron: &str,
        timezone: Option<&str>,
        default_tz: Tz,
        max: Option<i64>,
        min: Option<i64>,
    ) -> Result<Self, ScheduleError> {
        let cron: CronPattern = cron.parse()?;
        let timezone = match timezone.map(str::trim) {
            None => default_tz,
            Some(name) => name.parse::<Tz>().map_err(|_| ScheduleError::Timezone)?,
        };
        let in_range = |n: i64| (1..=i64::from(ITEMS_LIMIT)).contains(&n);
        let max_items = match max {
            None => DEFAULT_MAX_ITEMS,
            Some(n) if in_range(n) => n as i32,
            Some(_) => return Err(ScheduleError::MaxItems),
        };
        let min_items = match min {
            None => DEFAULT_MIN_ITEMS.min(max_items),
            Some(n) if in_range(n) && n <= i64::from(max_items) => n as i32,
            Some(_) => return Err(ScheduleError::MinItems),
        };
        Ok(Schedule {
            cron,
            timezone,
            max_items,
            min_items,
        })
    }

    /// The first slot strictly after `after`.
    pub fn next_slot(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut wall = after.with_timezone(&self.timezone).naive_local();
        // Wall-clock matches that map to `after` or earlier (the repeated hour's second pass, a
        // gap folding several matches onto one instant) are not new slots: step past them.
        for _ in 0..10_000 {
            wall = self.cron.next_wall_time(wall)?;
            let at = instant(self.timezone, wall)?;
            if at > after {
                return Some(at);
            }
        }
        None
    }

    /// The next `n` slots after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        std::iter::successors(self.next_slot(after), |t| self.next_slot(*t))
            .take(n)
            .collect()
    }

    /// A slot as the zone's wall clock shows it, with the zone's offset (RFC 3339).
    pub fn local(&self, at: DateTime<Utc>) -> String {
        at.with_timezone(&self.timezone).to_rfc3339()
    }
}

/// Sets (or changes) a list's schedule at `now`: its first slot is the first after `now`.
pub async fn set(
    store: &Store,
    list: &List,
    schedule: &Schedule,
    now: DateTime<Utc>,
) -> Result<ScheduleRow, StoreError> {
    let next = schedule
        .next_slot(now)
        .ok_or_else(|| StoreError::Batch("the schedule has no slot after now".into()))?;
    let new = NewSchedule {
        list_id: list.id,
        cron: schedule.cron.as_str(),
        timezone: schedule.timezone.name(),
        max_items: schedule.max_items,
        min_items: schedule.min_items,
        next_slot: next,
    };
    store.put_schedule(&new, now).await
}

/// A stored schedule as its pattern and zone, parsed again.
pub fn parse_row(row: &ScheduleRow, default_tz: Tz) -> Result<Schedule, ScheduleError> {
    Schedule::new(
        &row.cron,
        Some(&row.timezone),
        default_tz,
        Some(i64::from(row.max_items)),
        Some(i64::from(row.min_items)),
    )
}

/// A schedule as the API and the CLI show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScheduleView {
    pub list: String,
    pub cron: String,
    pub timezone: String,
    pub max_items: i32,
    pub min_items: i32,
    pub created_at: DateTime<Utc>,
    /// Where the next digest's items start.
    pub covers_since: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
    pub next_run_local: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<ScheduleRun>>,
}

impl ScheduleView {
    pub fn new(list: &List, row: &ScheduleRow, runs: Option<Vec<ScheduleRun>>) -> Self {
        let tz: Tz = row.timezone.parse().unwrap_or(Tz::UTC);
        ScheduleView {
            list: list.slug.clone(),
            cron: row.cron.clone(),
            timezone: row.timezone.clone(),
            max_items: row.max_items,
            min_items: row.min_items,
            created_at: row.created_at,
            covers_since: row.covered_until,
            next_run_at: row.next_slot,
            next_run_local: row.next_slot.with_timezone(&tz).to_rfc3339(),
            runs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kyiv(cron: &str) -> Schedule {
        Schedule::new(cron, Some("Europe/Kyiv"), Tz::UTC, None, None).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn daily_slot_is_wall_clock_time_in_the_zone() {
        let s = kyiv("0 7 * * *");
        // 07:00 in Kyiv is 05:00 UTC in winter (EET) and 04:00 UTC in summer (EEST).
        assert_eq!(
            s.next_slot(utc("2026-12-02T12:00:00Z")),
            Some(utc("2026-12-03T05:00:00Z"))
        );
        assert_eq!(
            s.next_slot(utc("2026-07-01T00:00:00Z")),
            Some(utc("2026-07-01T04:00:00Z"))
        );
        assert_eq!(s.local(utc("2026-12-03T05:00:00Z")), "2026-12-03T07:00:00+02:00");
    }

    #[test]
    fn a_slot_in_the_spring_gap_fires_once_after_it() {
        // 2027-03-28: Kyiv's clocks go from 03:00 EET to 04:00 EEST (01:00 UTC).
        let s = kyiv("30 3 * * *");
        let slots = s.upcoming(utc("2027-03-27T12:00:00Z"), 2);
        assert_eq!(slots, vec![utc("2027-03-28T01:00:00Z"), utc("2027-03-29T00:30:00Z")]);
        assert_eq!(s.local(slots[0]), "2027-03-28T04:00:00+03:00");
        // Every quarter hour: the four slots inside the gap fold into one at 04:00.
        let q = kyiv("*/15 * * * *");
        let slots = q.upcoming(utc("2027-03-28T00:40:00Z"), 3);
        assert_eq!(
            slots,
            vec![
                utc("2027-03-28T00:45:00Z"),
                utc("2027-03-28T01:00:00Z"),
                utc("2027-03-28T01:15:00Z")
            ]
        );
    }

    #[test]
    fn a_slot_in_the_repeated_autumn_hour_fires_once_at_its_first_occurrence() {
        // 2027-10-31: Kyiv's clocks go back from 04:00 EEST to 03:00 EET (01:00 UTC).
        let s = kyiv("30 3 * * *");
        let slots = s.upcoming(utc("2027-10-30T12:00:00Z"), 2);
        // 03:30 EEST is 00:30 UTC; the second 03:30 (EET, 01:30 UTC) is not a slot.
        assert_eq!(slots, vec![utc("2027-10-31T00:30:00Z"), utc("2027-11-01T01:30:00Z")]);
        // Asked from inside the second pass, the next slot is the next day's.
        assert_eq!(
            s.next_slot(utc("2027-10-31T01:10:00Z")),
            Some(utc("2027-11-01T01:30:00Z"))
        );
        // Hourly: 03:00 and 03:30 wall times happen once each.
        let h = kyiv("0,30 * * * *");
        let slots = h.upcoming(utc("2027-10-31T00:10:00Z"), 4);
        assert_eq!(
            slots,
            vec![
                utc("2027-10-31T00:30:00Z"),
                utc("2027-10-31T02:00:00Z"),
                utc("2027-10-31T02:30:00Z"),
                utc("2027-10-31T03:00:00Z")
            ]
        );
    }

    #[test]
    fn weekly_slots() {
        let s = kyiv("0 9 * * 1");
        let slots = s.upcoming(utc("2026-12-02T12:00:00Z"), 2);
        assert_eq!(slots, vec![utc("2026-12-07T07:00:00Z"), utc("2026-12-14T07:00:00Z")]);
    }

    #[test]
    fn bad_patterns_and_fields_are_refused_by_name() {
        for bad in [
            "",
            "0 7 * *",
            "0 0 7 * * *",
            "61 * * * *",
            "@daily",
            "0 7 30 2 *",
            "x y z w v",
        ] {
            let e = Schedule::new(bad, None, Tz::UTC, None, None).unwrap_err();
            assert_eq!(e.field(), "cron", "{bad:?}");
        }
        assert_eq!(
            Schedule::new("0 7 * * *", Some("Mars/Olympus"), Tz::UTC, None, None).unwrap_err(),
            ScheduleError::Timezone
        );
        assert_eq!(
            Schedule::new("0 7 * * *", None, Tz::UTC, Some(0), None).unwrap_err(),
            ScheduleError::MaxItems
        );
        assert_eq!(
            Schedule::new("0 7 * * *", None, Tz::UTC, Some(5), Some(6)).unwrap_err(),
            ScheduleError::MinItems
        );
        let s = Schedule::new(" 0  7 * * MON-FRI ", None, Tz::Europe__Kyiv, None, None).unwrap();
        assert_eq!(
            (s.cron.as_str(), s.timezone, s.max_items, s.min_items),
            ("0 7 * * MON-FRI", Tz::Europe__Kyiv, 20, 1)
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const ZONES: [&str; 6] = [
        "UTC",
        "Europe/Kyiv",
        "America/New_York",
        "Australia/Lord_Howe",
        "Asia/Kathmandu",
        "America/Santiago",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn schedules_never_panic_on_any_text(cron in any::<String>(), zone in any::<String>()) {
            let _ = Schedule::new(&cron, Some(&zone), Tz::UTC, None, None);
            let _ = Schedule::new(&cron, None, Tz::UTC, Some(i64::MAX), Some(i64::MIN));
        }

        /// A daily slot in any zone, from any instant: the next slot is later, the one after it
        /// later still, and neither is more than a day and a DST hour (and Lord Howe's half
        /// hour) away.
        #[test]
        fn daily_slots_come_in_order_within_a_day(
            minute in 0u32..60,
            hour in 0u32..24,
            zone in 0usize..ZONES.len(),
            from in 1_700_000_000i64..2_000_000_000,
        ) {
            let cron = format!("{minute} {hour} * * *");
            let schedule = Schedule::new(&cron, Some(ZONES[zone]), Tz::UTC, None, None)
                .map_err(|e| TestCaseError::fail(format!("{cron}: {e}")))?;
            let from = DateTime::from_timestamp(from, 0).unwrap_or_default();
            let first = schedule.next_slot(from).ok_or_else(|| TestCaseError::fail("no slot"))?;
            let second = schedule.next_slot(first).ok_or_else(|| TestCaseError::fail("no second slot"))?;
            prop_assert!(first > from && second > first);
            let most = TimeDelta::hours(25) + TimeDelta::minutes(30);
            prop_assert!(first - from <= most, "{} after {}", first, from);
            prop_assert!(second - first <= most, "{} after {}", second, first);
        }
    }
}
