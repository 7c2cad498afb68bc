//! .NET tick arithmetic and the date formats the original writes.
//!
//! .NET `DateTime` counts 100 ns ticks; the original's window bounds (`hh:59:59.9999999`),
//! SampledData slots (`AddMilliseconds`) and period texts (`"o"`) are all tick-exact, so the
//! arithmetic here is done on `i64` ticks since the Unix epoch and converted back at the edges.
//! The date formats are written digit by digit into fixed byte arrays (two digits per table
//! lookup): identifiers and Observation JSON are
//! built for every measurement, and `chrono`'s formatting machinery costs several times more.
//! The `Display` wrappers serve the colder paths (merge, tests).

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

/// `"00"` to `"99"`: two digits per table lookup.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// The two digits of `v % 100`.
fn pair(v: u32) -> [u8; 2] {
    let i = (v % 100) as usize * 2;
    [DIGIT_PAIRS[i], DIGIT_PAIRS[i + 1]]
}

/// A UTC instant's calendar fields, as .NET writes them.
struct Civil {
    /// Clamped to 0..=9999 (.NET cannot represent other years).
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    /// The fields of `ts`, read from chrono's packed date (year and ordinal, month and day
    /// by table) and seconds of the day.
    fn of(ts: &DateTime<Utc>) -> Civil {
        let date = ts.date_naive();
        let of_day = ts.time().num_seconds_from_midnight();
        Civil {
            year: date.year().clamp(0, 9999) as u32,
            month: date.month(),
            day: date.day(),
            hour: of_day / 3600,
            minute: of_day / 60 % 60,
            second: of_day % 60,
        }
    }

    /// `yyyy-MM-ddTHH:mm:ss`.
    fn separated(&self) -> [u8; 19] {
        let [y1, y2] = pair(self.year / 100);
        let [y3, y4] = pair(self.year);
        let [mo1, mo2] = pair(self.month);
        let [d1, d2] = pair(self.day);
        let [h1, h2] = pair(self.hour);
        let [mi1, mi2] = pair(self.minute);
        let [s1, s2] = pair(self.second);
        [
            y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1,
            s2,
        ]
    }

    /// `yyyyMMddHHmmss`.
    fn compact(&self) -> [u8; 14] {
        let [y1, y2] = pair(self.year / 100);
        let [y3, y4] = pair(self.year);
        let [mo1, mo2] = pair(self.month);
        let [d1, d2] = pair(self.day);
        let [h1, h2] = pair(self.hour);
        let [mi1, mi2] = pair(self.minute);
        let [s1, s2] = pair(self.second);
        [y1, y2, y3, y4, mo1, mo2, d1, d2, h1, h2, mi1, mi2, s1, s2]
    }
}

/// Seven fraction digits of the tick within the second.
fn fraction(buf: &mut [u8], mut ticks: u32) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (ticks % 10) as u8;
        ticks /= 10;
    }
}

/// The 100 ns tick within the second (a leap second's extra nanoseconds are capped).
fn subsec_ticks(ts: &DateTime<Utc>) -> u32 {
    ts.timestamp_subsec_nanos().min(999_999_999) / 100
}

/// .NET round-trip format `"o"` of a UTC `DateTime`: `2019-01-01T00:00:00.0000000Z`.
#[derive(Clone, Copy)]
pub(crate) struct RoundTrip(pub DateTime<Utc>);

impl RoundTrip {
    /// The 28 ASCII bytes of the text.
    pub(crate) fn bytes(self) -> [u8; 28] {
        let mut buf = [0u8; 28];
        buf[..19].copy_from_slice(&Civil::of(&self.0).separated());
        buf[19] = b'.';
        fraction(&mut buf[20..27], subsec_ticks(&self.0));
        buf[27] = b'Z';
        buf
    }
}

impl fmt::Display for RoundTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
    }
}

/// How Firely writes an `instant` from `DateTimeOffset.UtcNow`:
/// `2023-04-05T21:02:59.1650841+00:00` (fraction trimmed of trailing zeros, dropped when whole).
#[derive(Clone, Copy)]
pub(crate) struct Instant(pub DateTime<Utc>);

impl Instant {
    /// The ASCII bytes of the text in a buffer, and how many of them are used.
    pub(crate) fn bytes(self) -> ([u8; 33], usize) {
        let mut buf = [0u8; 33];
        buf[..19].copy_from_slice(&Civil::of(&self.0).separated());
        let mut n = 19;
        let t = subsec_ticks(&self.0);
        if t != 0 {
            buf[n] = b'.';
            fraction(&mut buf[n + 1..n + 8], t);
            n += 8;
            while buf[n - 1] == b'0' {
                n -= 1;
            }
        }
        buf[n..n + 6].copy_from_slice(b"+00:00");
        (buf, n + 6)
    }
}

impl fmt::Display for Instant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (buf, n) = self.bytes();
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

impl IdToken {
    /// The ASCII bytes of the token in a buffer, and how many of them are used.
    pub(crate) fn bytes(self) -> ([u8; 18], usize) {
        let mut buf = [0u8; 18];
        buf[..14].copy_from_slice(&Civil::of(&self.ts).compact());
        let mut n = 14;
        if self.millis {
            let millis = self.ts.timestamp_subsec_millis().min(999);
            buf[14] = b'0' + (millis / 100) as u8;
            buf[15..17].copy_from_slice(&pair(millis));
            n = 17;
        }
        buf[n] = b'Z';
        (buf, n + 1)
    }
}

impl fmt::Display for IdToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (buf, n) = self.bytes();
        f.write_str(std::str::from_utf8(&buf[..n]).unwrap_or_default())
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

    /// The digits agree with chrono's own formatting over the whole range .NET can write
    /// (a fixed pseudo-random walk, plus the edges), and years outside it are clamped.
    #[test]
    fn civil_fields_agree_with_chrono() {
        let lo = t("0000-01-01T00:00:00Z").timestamp();
        let hi = t("9999-12-31T23:59:59Z").timestamp();
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut secs: Vec<i64> = vec![lo, hi, -1, 0, 951_782_400, 951_868_799, 4_107_542_400];
        for _ in 0..20_000 {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            secs.push(lo + (state >> 11) as i64 % (hi - lo + 1));
        }
        for s in secs {
            let ts = DateTime::from_timestamp(s, 0).unwrap();
            let expected = ts.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string();
            let c = Civil::of(&ts);
            assert_eq!(
                std::str::from_utf8(&c.separated()).unwrap(),
                expected,
                "{s}"
            );
            let n = ts.naive_utc();
            assert_eq!(
                (c.month, c.day, c.hour, c.minute, c.second),
                (n.month(), n.day(), n.hour(), n.minute(), n.second())
            );
        }
        let far = chrono::NaiveDate::from_ymd_opt(12_000, 6, 15)
            .and_then(|d| d.and_hms_opt(1, 2, 3))
            .unwrap()
            .and_utc();
        assert_eq!(RoundTrip(far).to_string(), "9999-06-15T01:02:03.0000000Z");
        let before = DateTime::from_timestamp(lo - 86_400 * 40, 0).unwrap();
        assert_eq!(
            RoundTrip(before).to_string(),
            "0000-11-22T00:00:00.0000000Z"
        );
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
