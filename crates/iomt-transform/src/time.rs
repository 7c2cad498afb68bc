//! .NET tick arithmetic and the date formats the original writes.
//!
//! .NET `DateTime` counts 100 ns ticks; the original's window bounds (`hh:59:59.9999999`),
//! SampledData slots (`AddMilliseconds`) and period texts (`"o"`) are all tick-exact, so the
//! arithmetic here is done on `i64` ticks since the Unix epoch and converted back at the edges.
//! Formatting goes through small `Display` wrappers so that serializing an Observation does not
//! allocate a `String` per date.

use std::fmt;

use chrono::{DateTime, Datelike, Timelike, Utc};

/// Ticks per second.
pub(crate) const TICKS_PER_SECOND: i64 = 10_000_000;
/// Ticks per millisecond.
pub(crate) const TICKS_PER_MILLISECOND: i64 = 10_000;
/// Ticks per hour.
pub(crate) const TICKS_PER_HOUR: i64 = 3600 * TICKS_PER_SECOND;
/// Ticks per day.
pub(crate) const TICKS_PER_DAY: i64 = 24 * TICKS_PER_HOUR;

/// Ticks since the Unix epoch (sub-tick nanoseconds are truncated, as .NET does).
pub(crate) fn ticks(ts: DateTime<Utc>) -> i64 {
    ts.timestamp() * TICKS_PER_SECOND + i64::from(ts.timestamp_subsec_nanos() / 100)
}

/// The instant `ticks` after the Unix epoch. Out-of-range values saturate to chrono's limits.
pub(crate) fn from_ticks(ticks: i64) -> DateTime<Utc> {
    let secs = ticks.div_euclid(TICKS_PER_SECOND);
    let nanos = (ticks.rem_euclid(TICKS_PER_SECOND) * 100) as u32;
    DateTime::from_timestamp(secs, nanos).unwrap_or(if ticks < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    })
}

/// Writes `yyyy-MM-ddTHH:mm:ss` (with `sep`) or `yyyyMMddHHmmss` into `buf`, returning the
/// length. Years outside 0..=9999 (which .NET cannot represent) are clamped.
fn date_time_bytes(buf: &mut [u8; 40], ts: &DateTime<Utc>, sep: bool) -> usize {
    let naive = ts.naive_utc();
    let year = naive.year().clamp(0, 9999) as u32;
    let parts = [
        (year / 100, 0u8),
        (year % 100, b'-'),
        (naive.month(), b'-'),
        (naive.day(), b'T'),
        (naive.hour(), b':'),
        (naive.minute(), b':'),
        (naive.second(), 0),
    ];
    let mut n = 0;
    for (i, (value, after)) in parts.iter().enumerate() {
        buf[n] = b'0' + (value / 10 % 10) as u8;
        buf[n + 1] = b'0' + (value % 10) as u8;
        n += 2;
        if sep && i > 0 && *after != 0 {
            buf[n] = *after;
            n += 1;
        }
    }
    n
}

/// Seven fraction digits of the tick within the second.
fn fraction(buf: &mut [u8], mut ticks: u32) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (ticks % 10) as u8;
        ticks /= 10;
    }
}

/// .NET round-trip format `"o"` of a UTC `DateTime`: `2019-01-01T00:00:00.0000000Z`.
#[derive(Clone, Copy)]
pub(crate) struct RoundTrip(pub DateTime<Utc>);

impl fmt::Display for RoundTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        let mut n = date_time_bytes(&mut buf, &self.0, true);
        buf[n] = b'.';
        fraction(
            &mut buf[n + 1..n + 8],
            self.0.timestamp_subsec_nanos().min(999_999_999) / 100,
        );
        buf[n + 8] = b'Z';
        n += 9;
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

/// How Firely writes an `instant` from `DateTimeOffset.UtcNow`:
/// `2023-04-05T21:02:59.1650841+00:00` (fraction trimmed of trailing zeros, dropped when whole).
#[derive(Clone, Copy)]
pub(crate) struct Instant(pub DateTime<Utc>);

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        let mut n = date_time_bytes(&mut buf, &self.0, true);
        let t = self.0.timestamp_subsec_nanos().min(999_999_999) / 100;
        if t != 0 {
            buf[n] = b'.';
            fraction(&mut buf[n + 1..n + 8], t);
            n += 8;
            while buf[n - 1] == b'0' {
                n -= 1;
            }
        }
        buf[n..n + 6].copy_from_slice(b"+00:00");
        n += 6;
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
    }
}

/// The id-segment token `yyyyMMddHHmmssZ` (whole seconds, `Z` literal) or, with milliseconds,
/// `yyyyMMddHHmmssfffZ`.
#[derive(Clone, Copy)]
pub(crate) struct IdToken {
    pub ts: DateTime<Utc>,
    pub millis: bool,
}

impl fmt::Display for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        let mut n = date_time_bytes(&mut buf, &self.ts, false);
        if self.millis {
            fraction(
                &mut buf[n..n + 3],
                self.ts.timestamp_subsec_millis().min(999),
            );
            n += 3;
        }
        buf[n] = b'Z';
        f.write_str(std::str::from_utf8(&buf[..=n]).unwrap_or_default())
    }
}

impl IdToken {
    /// Appends the token to `out` without going through the formatter.
    pub(crate) fn push_to(self, out: &mut String) {
        let mut buf = [0u8; 40];
        let mut n = date_time_bytes(&mut buf, &self.ts, false);
        if self.millis {
            fraction(
                &mut buf[n..n + 3],
                self.ts.timestamp_subsec_millis().min(999),
            );
            n += 3;
        }
        buf[n] = b'Z';
        out.push_str(std::str::from_utf8(&buf[..=n]).unwrap_or_default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    #[test]
    fn ticks_round_trip() {
        for s in [
            "2019-01-01T00:59:59.9999999Z",
            "1969-12-31T23:59:59.9999999Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.9999999Z",
        ] {
            assert_eq!(from_ticks(ticks(t(s))), t(s), "{s}");
        }
    }

    #[test]
    fn formats_match_iomt_model_and_dotnet() {
        let ts = t("2023-03-13T22:46:01.875Z");
        assert_eq!(
            RoundTrip(ts).to_string(),
            iomt_model::timestamp::format_roundtrip(ts)
        );
        assert_eq!(Instant(ts).to_string(), "2023-03-13T22:46:01.875+00:00");
        assert_eq!(
            Instant(t("2023-03-13T22:46:01Z")).to_string(),
            "2023-03-13T22:46:01+00:00"
        );
        let end = t("2019-01-01T00:59:59.9999999Z");
        assert_eq!(
            IdToken {
                ts: end,
                millis: false
            }
            .to_string(),
            "20190101005959Z"
        );
        assert_eq!(
            IdToken {
                ts: end,
                millis: true
            }
            .to_string(),
            "20190101005959999Z"
        );
    }
}
