//! What .NET / Newtonsoft.Json did with numbers, strings and dates inside JmesPath.Net, so that
//! results match the original byte for byte.

use std::cmp::Ordering;
use std::fmt::Write as _;

use chrono::{DateTime, Timelike, Utc};

/// `double.ToString(CultureInfo.InvariantCulture)` on .NET Core 3.0+ (shortest round-trip
/// digits; scientific notation when the decimal exponent is below -4 or above 14).
pub(crate) fn double_to_string(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned();
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits, e.g. "-1.9811999999999999e0".
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if !(-4..15).contains(&exp) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exp < 0 { '-' } else { '+' });
        let _ = write!(out, "{:02}", exp.unsigned_abs());
    } else if exp >= 0 {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            out.extend(std::iter::repeat_n('0', int_len - digits.len()));
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    } else {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
        out.push_str(&digits);
    }
    out
}

/// How Newtonsoft's `JsonTextWriter` writes a double (`JsonConvert.ToString`): .NET text with a
/// `.0` added to integral values; NaN and infinities as JSON strings.
pub(crate) fn write_json_double(out: &mut String, f: f64) {
    if !f.is_finite() {
        out.push('"');
        out.push_str(&double_to_string(f));
        out.push('"');
        return;
    }
    let text = double_to_string(f);
    out.push_str(&text);
    if !text.contains(['.', 'E', 'e']) {
        out.push_str(".0");
    }
}

/// `Convert.ToInt64(double)`: rounds half to even, fails outside the `long` range and on NaN.
pub(crate) fn to_int64(f: f64) -> Option<i64> {
    // 2^63 as a double; the range check is strict on the upper side like .NET's.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() || !(-LIMIT..LIMIT).contains(&f) {
        return None;
    }
    let r = f.round_ties_even();
    if r >= LIMIT {
        return None;
    }
    Some(r as i64)
}

fn is_dotnet_white(c: char) -> bool {
    c == ' ' || ('\u{9}'..='\u{d}').contains(&c)
}

/// `Int64.TryParse(s)` (NumberStyles.Integer: surrounding white space and a leading sign).
pub(crate) fn parse_int64(s: &str) -> Option<i64> {
    let t = s.trim_matches(is_dotnet_white);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude: i128 = digits.bytes().try_fold(0i128, |acc, b| {
        let next = acc * 10 + i128::from(b - b'0');
        (next <= i128::from(u64::MAX)).then_some(next)
    })?;
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok()
}

/// `double.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture)`: surrounding white
/// space, a leading sign, a decimal point and an exponent; also the invariant culture's
/// `Infinity`/`NaN` symbols (case-insensitive).
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    let t = s.trim_matches(is_dotnet_white);
    let (sign, body) = match t.as_bytes().first() {
        Some(b'-') => (-1.0, &t[1..]),
        Some(b'+') => (1.0, &t[1..]),
        _ => (1.0, t),
    };
    if body.eq_ignore_ascii_case("infinity") || body == "∞" {
        return Some(sign * f64::INFINITY);
    }
    if t.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let b = body.as_bytes();
    let mut i = 0;
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    let mut frac_digits = 0;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = i - frac_start;
    }
    if int_digits + frac_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    // Rust's parser accepts exactly this grammar (and rounds correctly, like .NET Core 3+).
    let magnitude: f64 = body.parse().ok()?;
    Some(sign * magnitude)
}

/// `DateTime.ToString(CultureInfo.InvariantCulture)`: what `Value<string>()` gives for a Date
/// token (`MM/dd/yyyy HH:mm:ss`).
pub(crate) fn date_string(d: &DateTime<Utc>) -> String {
    d.format("%m/%d/%Y %H:%M:%S").to_string()
}

/// How Newtonsoft writes a UTC `DateTime` in JSON (`yyyy-MM-ddTHH:mm:ss.FFFFFFFZ`).
pub(crate) fn date_iso(d: &DateTime<Utc>) -> String {
    let mut s = d.format("%Y-%m-%dT%H:%M:%S").to_string();
    let ticks = d.nanosecond() % 1_000_000_000 / 100;
    if ticks != 0 {
        let frac = format!("{ticks:07}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// `String.CompareOrdinal`: compares UTF-16 code units.
pub(crate) fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.cmp(b);
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// .NET `String.Length` (UTF-16 code units).
pub(crate) fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.encode_utf16().count()
    }
}

/// Writes `s` as a JSON string the way Newtonsoft's `JsonTextWriter` does by default.
pub(crate) fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || c == '\u{85}' || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
