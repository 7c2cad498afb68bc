//! Observation windows: which period of time one Observation covers (the template's
//! `periodInterval`, SPEC §6.2).
//!
//! | `periodInterval` | [`PeriodInterval`] | window |
//! |---|---|---|
//! | `0` (default) | `Single` | one instant: start = end = the measurement's time |
//! | `60` | `Hourly` | a clock hour `[hh:00:00, hh:59:59.9999999]` |
//! | `1440` | `Daily` | a calendar day `[00:00:00, 23:59:59.9999999]` |
//! | `-1` | `CorrelationId` | every measurement with the same correlation id: `[min, max]` of their times |
//!
//! The original aligns hours and days to UTC. A template may name an IANA time zone
//! (`timeZone`, an iomt extension); hours and days then follow that zone's wall clock, so a day
//! is 23 or 25 hours long across a daylight-saving change, a repeated wall-clock hour (autumn)
//! is two windows, and a skipped one (spring) is none.
//!
//! # Invariants
//! * A window contains the instant it was computed for: `start ≤ t ≤ end`.
//! * Windows computed for one interval and zone never overlap: the window of any instant in
//!   `[start, end]` is the same window, and the next window starts one tick after `end`.

use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::time::{TICKS_PER_DAY, TICKS_PER_HOUR, from_ticks, ticks};

/// How measurements are grouped in time into one Observation (the template's
/// `periodInterval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PeriodInterval {
    /// `-1`: all measurements with the same correlation id.
    CorrelationId,
    /// `0` (the default): one Observation per distinct instant.
    #[default]
    Single,
    /// `60`: one Observation per clock hour.
    Hourly,
    /// `1440`: one Observation per calendar day.
    Daily,
}

impl PeriodInterval {
    /// The interval for a `periodInterval` number; `None` for any other number.
    pub fn from_minutes(minutes: i64) -> Option<PeriodInterval> {
        match minutes {
            -1 => Some(PeriodInterval::CorrelationId),
            0 => Some(PeriodInterval::Single),
            60 => Some(PeriodInterval::Hourly),
            1440 => Some(PeriodInterval::Daily),
            _ => None,
        }
    }

    /// The interval for one of the original's enum names (`Single`, `Hourly`, `Daily`,
    /// `CorrelationId`), compared case-insensitively as Newtonsoft does.
    pub fn from_name(name: &str) -> Option<PeriodInterval> {
        [
            PeriodInterval::CorrelationId,
            PeriodInterval::Single,
            PeriodInterval::Hourly,
            PeriodInterval::Daily,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The `periodInterval` number.
    pub fn minutes(self) -> i64 {
        match self {
            PeriodInterval::CorrelationId => -1,
            PeriodInterval::Single => 0,
            PeriodInterval::Hourly => 60,
            PeriodInterval::Daily => 1440,
        }
    }

    /// The original's enum name.
    pub fn name(self) -> &'static str {
        match self {
            PeriodInterval::CorrelationId => "CorrelationId",
            PeriodInterval::Single => "Single",
            PeriodInterval::Hourly => "Hourly",
            PeriodInterval::Daily => "Daily",
        }
    }
}

/// How one measurement type is windowed: the interval and, for hours and days, the zone whose
/// wall clock aligns them (UTC when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowSpec {
    /// The interval.
    pub interval: PeriodInterval,
    /// The zone for hour and day boundaries; `None` = UTC, as the original.
    pub time_zone: Option<Tz>,
}

impl WindowSpec {
    /// A spec with UTC alignment.
    pub fn new(interval: PeriodInterval) -> WindowSpec {
        WindowSpec {
            interval,
            time_zone: None,
        }
    }

    /// The window containing `t`. For [`PeriodInterval::CorrelationId`] this is the one-instant
    /// window `[t, t]` that grows as measurements join it.
    pub fn window_for(&self, t: DateTime<Utc>) -> Window {
        let (start, end) = self.bounds_ticks(ticks(t));
        Window {
            start: from_ticks(start),
            end: from_ticks(end),
            interval: self.interval,
        }
    }

    /// Window bounds in ticks, inclusive.
    pub(crate) fn bounds_ticks(&self, t: i64) -> (i64, i64) {
        match (self.interval, self.time_zone) {
            (PeriodInterval::Single | PeriodInterval::CorrelationId, _) => (t, t),
            (PeriodInterval::Hourly, None) => {
                let start = t - t.rem_euclid(TICKS_PER_HOUR);
                (start, start + TICKS_PER_HOUR - 1)
            }
            (PeriodInterval::Daily, None) => {
                let start = t - t.rem_euclid(TICKS_PER_DAY);
                (start, start + TICKS_PER_DAY - 1)
            }
            (PeriodInterval::Hourly, Some(tz)) => zoned_hour(tz, t),
            (PeriodInterval::Daily, Some(tz)) => zoned_day(tz, t),
        }
    }
}

/// The period one Observation covers, inclusive at both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// First instant.
    pub start: DateTime<Utc>,
    /// Last instant (`hh:59:59.9999999` for an hour).
    pub end: DateTime<Utc>,
    /// The interval that produced it.
    pub interval: PeriodInterval,
}

impl Window {
    /// Whether `t` lies in the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t <= self.end
    }
}

/// The instants the wall-clock time `naive` stands for in `tz`, earliest first: none in a
/// spring-forward gap, two in an autumn overlap.
fn instants(tz: Tz, naive: NaiveDateTime) -> Vec<i64> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(a) => vec![ticks(a.with_timezone(&Utc))],
        LocalResult::Ambiguous(a, b) => {
            let (a, b) = (ticks(a.with_timezone(&Utc)), ticks(b.with_timezone(&Utc)));
            vec![a.min(b), a.max(b)]
        }
        LocalResult::None => Vec::new(),
    }
}

/// The first instant at or after wall-clock `naive` (scanning forward through a gap minute by
/// minute, at most `limit_minutes`).
fn first_instant_from(tz: Tz, naive: NaiveDateTime, limit_minutes: i64) -> Option<i64> {
    (0..=limit_minutes).find_map(|m| instants(tz, naive + Duration::minutes(m)).first().copied())
}

fn local(tz: Tz, t: i64) -> NaiveDateTime {
    from_ticks(t).with_timezone(&tz).naive_local()
}

fn hour_of(naive: NaiveDateTime) -> NaiveDateTime {
    let date = naive.date();
    let hour = chrono::Timelike::hour(&naive.time());
    date.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN))
}

/// The start of the wall-clock hour containing `t`: the latest instant `≤ t` at which the
/// clock read that hour's `:00`, or the end of the gap when `:00` was skipped.
fn zoned_hour_start(tz: Tz, t: i64) -> i64 {
    let naive_hour = hour_of(local(tz, t));
    let candidates = instants(tz, naive_hour);
    if let Some(start) = candidates.iter().rev().copied().find(|c| *c <= t) {
        return start;
    }
    first_instant_from(tz, naive_hour, 60)
        .filter(|s| *s <= t)
        .unwrap_or(t - t.rem_euclid(TICKS_PER_HOUR))
}

fn zoned_hour(tz: Tz, t: i64) -> (i64, i64) {
    let start = zoned_hour_start(tz, t);
    // The next boundary: the hour start one hour later, or, when the clock fell back by less
    // than an hour (the wall clock is still in the same hour), the next wall-clock hour.
    let u = start + TICKS_PER_HOUR;
    let mut next = zoned_hour_start(tz, u);
    if next <= start {
        let naive_next = hour_of(local(tz, u)) + Duration::hours(1);
        next = first_instant_from(tz, naive_next, 120)
            .filter(|n| *n > start)
            .unwrap_or(u);
    }
    if next <= t {
        // Cannot happen for real zones; keep the invariant start ≤ t ≤ end regardless.
        next = t + 1;
    }
    (start, next - 1)
}

/// The first instant of local date `date` (midnight, or the end of a gap that skips it).
fn zoned_day_start(tz: Tz, date: NaiveDate) -> Option<i64> {
    first_instant_from(tz, date.and_time(NaiveTime::MIN), 24 * 60)
}

fn zoned_day(tz: Tz, t: i64) -> (i64, i64) {
    let date = local(tz, t).date();
    let start = zoned_day_start(tz, date)
        .filter(|s| *s <= t)
        .unwrap_or(t - t.rem_euclid(TICKS_PER_DAY));
    let next = date
        .succ_opt()
        .and_then(|d| zoned_day_start(tz, d))
        .filter(|n| *n > t)
        .unwrap_or(t + 1);
    (start, next - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::RoundTrip;

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    fn bounds(spec: WindowSpec, s: &str) -> (String, String) {
        let w = spec.window_for(t(s));
        assert!(w.contains(t(s)));
        (RoundTrip(w.start).to_string(), RoundTrip(w.end).to_string())
    }

    #[test]
    fn utc_windows() {
        assert_eq!(
            bounds(
                WindowSpec::new(PeriodInterval::Hourly),
                "2019-01-01T00:01:00Z"
            ),
            (
                "2019-01-01T00:00:00.0000000Z".into(),
                "2019-01-01T00:59:59.9999999Z".into()
            )
        );
        assert_eq!(
            bounds(
                WindowSpec::new(PeriodInterval::Daily),
                "2019-01-01T23:59:59.9999999Z"
            ),
            (
                "2019-01-01T00:00:00.0000000Z".into(),
                "2019-01-01T23:59:59.9999999Z".into()
            )
        );
        assert_eq!(
            bounds(
                WindowSpec::new(PeriodInterval::Single),
                "1969-12-31T23:00:00.5Z"
            ),
            (
                "1969-12-31T23:00:00.5000000Z".into(),
                "1969-12-31T23:00:00.5000000Z".into()
            )
        );
        assert_eq!(
            bounds(
                WindowSpec::new(PeriodInterval::Hourly),
                "1969-12-31T23:30:00Z"
            )
            .0,
            "1969-12-31T23:00:00.0000000Z"
        );
    }

    fn zoned(interval: PeriodInterval, tz: Tz) -> WindowSpec {
        WindowSpec {
            interval,
            time_zone: Some(tz),
        }
    }

    #[test]
    fn days_follow_dst() {
        let ny = zoned(PeriodInterval::Daily, chrono_tz::America::New_York);
        // 2024-03-10 is 23 hours long in New York, 2024-11-03 is 25.
        assert_eq!(
            bounds(ny, "2024-03-10T12:00:00Z"),
            (
                "2024-03-10T05:00:00.0000000Z".into(),
                "2024-03-11T03:59:59.9999999Z".into()
            )
        );
        assert_eq!(
            bounds(ny, "2024-11-03T12:00:00Z"),
            (
                "2024-11-03T04:00:00.0000000Z".into(),
                "2024-11-04T04:59:59.9999999Z".into()
            )
        );
    }

    #[test]
    fn hours_follow_dst() {
        let ny = zoned(PeriodInterval::Hourly, chrono_tz::America::New_York);
        // Autumn: 01:00-01:59 happens twice, as two windows.
        assert_eq!(
            bounds(ny, "2024-11-03T05:30:00Z"),
            (
                "2024-11-03T05:00:00.0000000Z".into(),
                "2024-11-03T05:59:59.9999999Z".into()
            )
        );
        assert_eq!(
            bounds(ny, "2024-11-03T06:30:00Z"),
            (
                "2024-11-03T06:00:00.0000000Z".into(),
                "2024-11-03T06:59:59.9999999Z".into()
            )
        );
        // India is UTC+05:30: hours start at hh:30 UTC.
        let kolkata = zoned(PeriodInterval::Hourly, chrono_tz::Asia::Kolkata);
        assert_eq!(
            bounds(kolkata, "2024-01-01T00:10:00Z"),
            (
                "2023-12-31T23:30:00.0000000Z".into(),
                "2024-01-01T00:29:59.9999999Z".into()
            )
        );
        // Lord Howe falls back by 30 minutes: the repeated half hour joins its wall-clock hour.
        let lh = zoned(PeriodInterval::Hourly, chrono_tz::Australia::Lord_Howe);
        let (s, e) = bounds(lh, "2024-04-06T15:10:00Z");
        assert_eq!(s, "2024-04-06T14:00:00.0000000Z");
        assert_eq!(e, "2024-04-06T15:29:59.9999999Z");
    }

    #[test]
    fn period_interval_names_and_numbers() {
        assert_eq!(
            PeriodInterval::from_minutes(60),
            Some(PeriodInterval::Hourly)
        );
        assert_eq!(PeriodInterval::from_minutes(30), None);
        assert_eq!(
            PeriodInterval::from_name("hourly"),
            Some(PeriodInterval::Hourly)
        );
        assert_eq!(
            PeriodInterval::from_name("correlationid"),
            Some(PeriodInterval::CorrelationId)
        );
        assert_eq!(PeriodInterval::default(), PeriodInterval::Single);
    }
}
