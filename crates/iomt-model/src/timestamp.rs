//! Reading device timestamps and writing them the way the original does.
//!
//! .NET's `DateTime` counts 100-nanosecond ticks, so every timestamp here is truncated to
//! 100 ns; two timestamps equal in .NET are equal here.
//!
//! Reading is lenient the way `DateTime.Parse(s, CultureInfo.InvariantCulture)` is for the
//! shapes devices send: ISO 8601 with `T` or a space, any number of fraction digits, `Z` or an
//! offset (`+01:00`, `+0100`, `+01`) or no zone, a bare date, and the invariant culture's
//! `MM/dd/yyyy HH:mm:ss` (optionally with `AM`/`PM`). Offsets are converted to UTC; a time without
//! a zone is taken as UTC (the original took it as the host's local time, which made results
//! depend on the machine: see `docs/deviations.md`).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta, Timelike, Utc};

/// Truncates a timestamp to .NET's 100 ns tick.
pub fn to_ticks(ts: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = ts.nanosecond();
    let truncated = nanos - nanos % 100;
    ts.with_nanosecond(truncated).unwrap_or(ts)
}

/// Parses a device timestamp (see the module docs for the accepted shapes). `None` when the text
/// is not a date.
pub fn parse(text: &str) -> Option<DateTime<Utc>> {
    let s = trim(text);
    parse_iso(s.as_bytes()).or_else(|| parse_invariant(s))
}

/// `str::trim`, without its Unicode scan when both ends are visible ASCII (the usual case:
/// bytes above `' '` and below 0x80 are never whitespace).
fn trim(text: &str) -> &str {
    let solid = |c: &u8| *c > b' ' && *c < 0x80;
    let b = text.as_bytes();
    if b.first().is_some_and(solid) && b.last().is_some_and(solid) {
        text
    } else {
        text.trim()
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<u32> {
    let slice = b.get(at..at + n)?;
    let mut v = 0u32;
    for &c in slice {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Some(v)
}

fn parse_iso(b: &[u8]) -> Option<DateTime<Utc>> {
    let year = digits(b, 0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = digits(b, 5, 2)?;
    let day = digits(b, 8, 2)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    if b.len() == 10 {
        return Some(date.and_time(NaiveTime::MIN).and_utc());
    }
    if !matches!(b.get(10), Some(b'T') | Some(b't') | Some(b' ')) {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    if b.get(13) != Some(&b':') {
        return None;
    }
    let minute = digits(b, 14, 2)?;
    let mut pos = 16;
    let mut second = 0;
    let mut nanos: u64 = 0;
    if b.get(pos) == Some(&b':') {
        second = digits(b, 17, 2)?;
        pos = 19;
        if matches!(b.get(pos), Some(b'.') | Some(b',')) {
            pos += 1;
            let start = pos;
            let mut scale = 100_000_000u64;
            while let Some(&c) = b.get(pos) {
                if !c.is_ascii_digit() {
                    break;
                }
                nanos += u64::from(c - b'0') * scale;
                scale /= 10;
                pos += 1;
            }
            if pos == start {
                return None;
            }
        }
    }
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, (nanos - nanos % 100) as u32)?;
    let naive = NaiveDateTime::new(date, time);
    let offset_seconds: i64 = match b.get(pos) {
        None => 0,
        Some(b'Z') | Some(b'z') if pos + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) => {
            let oh = digits(b, pos + 1, 2)?;
            let rest = &b[pos + 3..];
            let om = match rest {
                [] => 0,
                [b':', m1, m2] | [m1, m2] => {
                    if !m1.is_ascii_digit() || !m2.is_ascii_digit() {
                        return None;
                    }
                    u32::from(m1 - b'0') * 10 + u32::from(m2 - b'0')
                }
                _ => return None,
            };
            if oh > 14 || om > 59 {
                return None;
            }
            let total = i64::from(oh * 3600 + om * 60);
            if sign == b'+' { total } else { -total }
        }
        Some(_) => return None,
    };
    let utc = naive.and_utc();
    if offset_seconds == 0 {
        return Some(utc);
    }
    Some(utc - TimeDelta::seconds(offset_seconds))
}

/// `M/d/yyyy[ h:mm[:ss][ AM|PM]]`, the invariant culture's general format.
fn parse_invariant(s: &str) -> Option<DateTime<Utc>> {
    let (date_part, time_part) = match s.split_once(' ') {
        Some((d, t)) => (d, Some(t.trim())),
        None => (s, None),
    };
    let mut it = date_part.split('/');
    let month: u32 = it.next()?.parse().ok()?;
    let day: u32 = it.next()?.parse().ok()?;
    let year: i32 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1000..=9999).contains(&year) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(year, month, day)?;
    let Some(time_part) = time_part else {
        return Some(date.and_time(NaiveTime::MIN).and_utc());
    };
    let (clock, meridiem) = match time_part.rsplit_once(' ') {
        Some((c, m)) => (c, Some(m.to_ascii_uppercase())),
        None => (time_part, None),
    };
    let mut parts = clock.split(':');
    let mut hour: u32 = parts.next()?.parse().ok()?;
    let minute: u32 = parts.next()?.parse().ok()?;
    let second: u32 = match parts.next() {
        Some(p) => p.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    match meridiem.as_deref() {
        None => {}
        Some("AM") if (1..=12).contains(&hour) => hour %= 12,
        Some("PM") if (1..=12).contains(&hour) => hour = hour % 12 + 12,
        Some(_) => return None,
    }
    let time = NaiveTime::from_hms_opt(hour, minute, second)?;
    Some(NaiveDateTime::new(date, time).and_utc())
}

/// Writes a timestamp as Newtonsoft.Json does for a UTC `DateTime`: `2019-02-01T22:46:01.875Z`,
/// fraction digits trimmed of trailing zeros and left out for a whole second.
pub fn format_newtonsoft(ts: DateTime<Utc>) -> String {
    let ts = to_ticks(ts);
    let mut out = ts.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ticks = ts.nanosecond() / 100;
    if ticks != 0 {
        let frac = format!("{ticks:07}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// Writes a timestamp in .NET's round-trip format `"o"` for a UTC `DateTime`:
/// `2019-01-01T00:00:00.0000000Z`, always seven fraction digits. The original writes
/// Observation periods this way.
pub fn format_roundtrip(ts: DateTime<Utc>) -> String {
    let ts = to_ticks(ts);
    format!(
        "{}.{:07}Z",
        ts.format("%Y-%m-%dT%H:%M:%S"),
        ts.nanosecond() / 100
    )
}

/// Writes a timestamp as the invariant culture's `DateTime.ToString()`: `MM/dd/yyyy HH:mm:ss`.
/// The original wrote date values found in device data this way.
pub fn format_invariant(ts: DateTime<Utc>) -> String {
    ts.format("%m/%d/%Y %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> String {
        parse(s)
            .map(format_newtonsoft)
            .unwrap_or_else(|| "none".into())
    }

    #[test]
    fn parses_iso_shapes() {
        assert_eq!(p("2019-02-01T22:46:01.875Z"), "2019-02-01T22:46:01.875Z");
        assert_eq!(p("2019-02-01T22:46:01Z"), "2019-02-01T22:46:01Z");
        assert_eq!(p("2019-02-01T22:46:01"), "2019-02-01T22:46:01Z");
        assert_eq!(p("2019-02-01 22:46"), "2019-02-01T22:46:00Z");
        assert_eq!(p("2019-02-01"), "2019-02-01T00:00:00Z");
        assert_eq!(p("2019-02-01T23:46:01+01:00"), "2019-02-01T22:46:01Z");
        assert_eq!(p("2019-02-01T20:46:01-0200"), "2019-02-01T22:46:01Z");
        assert_eq!(p("2019-02-01T00:30:00+01"), "2019-01-31T23:30:00Z");
        assert_eq!(
            p("2019-02-01T22:46:01.123456789Z"),
            "2019-02-01T22:46:01.1234567Z"
        );
        assert_eq!(p("2023-10-09T19:18:23+00:00"), "2023-10-09T19:18:23Z");
    }

    #[test]
    fn trims_like_str_trim() {
        for s in [
            "",
            " ",
            "x",
            " 2019-02-01 ",
            "\u{a0}2019-02-01",
            "2019-02-01\u{2003}",
            "\t2019-02-01T22:46:01Z\n",
            "2019-02-01\u{1f}",
            "\u{85}",
        ] {
            assert_eq!(trim(s), s.trim(), "{s:?}");
        }
        assert_eq!(
            p("\u{a0}2019-02-01T22:46:01Z\u{3000}"),
            "2019-02-01T22:46:01Z"
        );
    }

    #[test]
    fn parses_invariant_shapes() {
        assert_eq!(p("02/01/2019 10:00:00"), "2019-02-01T10:00:00Z");
        assert_eq!(p("2/1/2019 10:00 PM"), "2019-02-01T22:00:00Z");
        assert_eq!(p("2/1/2019 12:00:00 AM"), "2019-02-01T00:00:00Z");
        assert_eq!(p("2/1/2019"), "2019-02-01T00:00:00Z");
    }

    #[test]
    fn rejects_non_dates() {
        for s in [
            "",
            "abc",
            "2019-13-01",
            "2019-02-30T00:00:00Z",
            "1549060000",
            "2019-02-01T25:00:00Z",
            "2019-02-01T10:00:00Zjunk",
        ] {
            assert!(parse(s).is_none(), "{s} should not parse");
        }
    }

    #[test]
    fn formats_like_dotnet() {
        let ts = parse("2019-01-01T00:00:00Z").unwrap();
        assert_eq!(format_roundtrip(ts), "2019-01-01T00:00:00.0000000Z");
        let ts = parse("2023-03-13T22:46:01.875Z").unwrap();
        assert_eq!(format_roundtrip(ts), "2023-03-13T22:46:01.8750000Z");
        assert_eq!(format_invariant(ts), "03/13/2023 22:46:01");
    }
}
