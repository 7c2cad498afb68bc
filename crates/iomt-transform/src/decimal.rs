//! Quantity values: .NET `decimal.Parse(text, CultureInfo.InvariantCulture)`.
//!
//! The original parses a Quantity's value with `NumberStyles.Number`: leading and trailing
//! white space, one leading *or* trailing sign, thousands separators (`,`) in the integer part
//! after its first digit, one decimal point, and **no exponent**. So `"1,000.5"`, `" 42 "` and
//! `"5-"` are numbers while `"1E-05"` (which is how .NET writes small doubles during
//! normalization) and `"NaN"` are not. Values whose integer part exceeds `decimal.MaxValue`
//! (79228162514264337593543950335) overflow and are rejected too.
//!
//! # Deviation
//! .NET keeps the decimal's scale (`22.40` is written `22.40`); JSON numbers here are
//! `serde_json::Number`s (integers when the value is whole and fits 64 bits, otherwise the
//! nearest double), so `22.40` is written `22.4` and digits beyond a double's 17 significant
//! digits are rounded. The value is numerically the same for every reading a device sends; the
//! workspace does not enable serde_json's `arbitrary_precision`, which would change number
//! handling for every crate.

use serde_json::Number;

const DECIMAL_MAX: &str = "79228162514264337593543950335";

/// A decimal number parsed the way .NET's `decimal.Parse` with `NumberStyles.Number` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Integer digits without leading zeros (empty for zero).
    int: String,
    /// Fraction digits as written (trailing zeros kept: they are the scale).
    frac: String,
}

fn is_white(c: char) -> bool {
    c == ' ' || ('\u{9}'..='\u{d}').contains(&c)
}

impl Decimal {
    /// Parses `text`; `None` when .NET would throw (`FormatException` or `OverflowException`).
    pub fn parse(text: &str) -> Option<Decimal> {
        let mut chars = text.chars().peekable();
        while chars.next_if(|c| is_white(*c)).is_some() {}
        let mut negative = false;
        let mut signed = false;
        if let Some(c) = chars.next_if(|c| *c == '+' || *c == '-') {
            negative = c == '-';
            signed = true;
        }
        let mut int = String::new();
        let mut frac = String::new();
        let mut digits = 0usize;
        let mut point = false;
        while let Some(&c) = chars.peek() {
            match c {
                '0'..='9' => {
                    if point {
                        frac.push(c);
                    } else if !(int.is_empty() && c == '0') {
                        int.push(c);
                    }
                    digits += 1;
                }
                ',' if !point && digits > 0 => {}
                '.' if !point => point = true,
                _ => break,
            }
            chars.next();
        }
        if digits == 0 {
            return None;
        }
        loop {
            match chars.next() {
                None => break,
                Some(c) if is_white(c) => {}
                Some(c @ ('+' | '-')) if !signed => {
                    negative = c == '-';
                    signed = true;
                }
                Some(_) => return None,
            }
        }
        if int.len() > DECIMAL_MAX.len()
            || (int.len() == DECIMAL_MAX.len() && int.as_str() > DECIMAL_MAX)
        {
            return None;
        }
        Some(Decimal {
            negative,
            int,
            frac,
        })
    }

    /// Parses `text` straight to a JSON number (see [`Decimal::to_json_number`]) without
    /// allocating for the common case of up to 60 significant characters.
    pub fn parse_json_number(text: &str) -> Option<Number> {
        let mut buf = [0u8; 64];
        let mut n = 0usize;
        let mut negative = false;
        let mut signed = false;
        let mut digits = 0usize;
        let mut int_digits = 0usize;
        let mut point = false;
        let mut frac_nonzero = false;
        // The integer part's value while it fits (up to 18 digits, checked below).
        let mut whole: i64 = 0;
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() && is_white(char::from(bytes[i])) {
            i += 1;
        }
        if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
            negative = bytes[i] == b'-';
            signed = true;
            i += 1;
        }
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b'0'..=b'9' => {
                    digits += 1;
                    if point {
                        frac_nonzero |= c != b'0';
                    } else if int_digits == 0 && c == b'0' {
                        i += 1;
                        continue;
                    } else {
                        int_digits += 1;
                        if int_digits <= 18 {
                            whole = whole * 10 + i64::from(c - b'0');
                        }
                    }
                    if n >= buf.len() - 2 {
                        return Decimal::parse(text).map(|d| d.to_json_number());
                    }
                    buf[n] = c;
                    n += 1;
                }
                b',' if !point && digits > 0 => {}
                b'.' if !point => {
                    point = true;
                    if n >= buf.len() - 2 {
                        return Decimal::parse(text).map(|d| d.to_json_number());
                    }
                    if int_digits == 0 {
                        buf[n] = b'0';
                        n += 1;
                    }
                    buf[n] = b'.';
                    n += 1;
                }
                _ => break,
            }
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        while i < bytes.len() {
            let c = bytes[i];
            if is_white(char::from(c)) {
            } else if (c == b'+' || c == b'-') && !signed {
                negative = c == b'-';
                signed = true;
            } else {
                return None;
            }
            i += 1;
        }
        if int_digits > DECIMAL_MAX.len() {
            return None;
        }
        if int_digits == DECIMAL_MAX.len() || !(frac_nonzero) && int_digits > 18 {
            // Rare: exact overflow checks and big integers take the general path.
            return Decimal::parse(text).map(|d| d.to_json_number());
        }
        if !frac_nonzero {
            // A whole number of at most 18 digits: `whole` holds it exactly.
            return Some(Number::from(if negative { -whole } else { whole }));
        }
        let int_text = std::str::from_utf8(&buf[..n]).unwrap_or("0");
        let v: f64 = int_text.parse().ok()?;
        Number::from_f64(if negative { -v } else { v })
    }

    /// Whether the value is zero.
    pub fn is_zero(&self) -> bool {
        self.int.is_empty() && self.frac.bytes().all(|b| b == b'0')
    }

    /// The value as .NET's `decimal.ToString()` writes it: `-1000.50`, `0.5`, `0`.
    pub fn to_dotnet_string(&self) -> String {
        let mut out = String::with_capacity(self.int.len() + self.frac.len() + 3);
        if self.negative && !self.is_zero() {
            out.push('-');
        }
        if self.int.is_empty() {
            out.push('0');
        } else {
            out.push_str(&self.int);
        }
        if !self.frac.is_empty() {
            out.push('.');
            out.push_str(&self.frac);
        }
        out
    }

    /// The value as a JSON number: an integer when it is whole and fits 64 bits, else the
    /// nearest double (see the module docs).
    pub fn to_json_number(&self) -> Number {
        let whole = self.frac.bytes().all(|b| b == b'0');
        if whole {
            if self.int.is_empty() {
                return Number::from(0u64);
            }
            if let Ok(v) = self.int.parse::<u64>() {
                if !self.negative {
                    return Number::from(v);
                }
                if let Some(v) = 0i64.checked_sub_unsigned(v) {
                    return Number::from(v);
                }
            }
        }
        let text = self.to_dotnet_string();
        text.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .unwrap_or_else(|| Number::from(0u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<String> {
        Decimal::parse(s).map(|d| d.to_dotnet_string())
    }

    #[test]
    fn accepts_number_style() {
        assert_eq!(p("22.4").as_deref(), Some("22.4"));
        assert_eq!(p("22.40").as_deref(), Some("22.40"));
        assert_eq!(p(" 42 ").as_deref(), Some("42"));
        assert_eq!(p("\t-7\n").as_deref(), Some("-7"));
        assert_eq!(p("5-").as_deref(), Some("-5"));
        assert_eq!(p("5 -").as_deref(), Some("-5"));
        assert_eq!(p("+5").as_deref(), Some("5"));
        assert_eq!(p("1,000.5").as_deref(), Some("1000.5"));
        assert_eq!(p("1,,0").as_deref(), Some("10"));
        assert_eq!(p(".5").as_deref(), Some("0.5"));
        assert_eq!(p("5.").as_deref(), Some("5"));
        assert_eq!(p("007").as_deref(), Some("7"));
        assert_eq!(p("-0").as_deref(), Some("0"));
        assert_eq!(p(DECIMAL_MAX).as_deref(), Some(DECIMAL_MAX));
    }

    #[test]
    fn rejects_what_dotnet_rejects() {
        for s in [
            "",
            " ",
            "NaN",
            "1E-05",
            "1e5",
            ",5",
            "1.000,5",
            "1.2.3",
            "--5",
            "-5-",
            "- 5",
            "(5)",
            ".",
            "+",
            "5 5",
            "∞",
            "79228162514264337593543950336",
            "100000000000000000000000000000",
            "0x10",
        ] {
            assert_eq!(p(s), None, "{s:?} should not parse");
        }
    }

    #[test]
    fn fast_path_agrees_with_decimal() {
        for s in [
            "78",
            "78.0",
            "-3",
            "22.4",
            "22.40",
            "0",
            "-0.0",
            ".5",
            "5.",
            " 42 ",
            "5-",
            "1,000.5",
            "007",
            "0.000001",
            "123456789012345678",
            "1234567890123456789",
            "18446744073709551615",
            "-9223372036854775808",
            DECIMAL_MAX,
            "79228162514264337593543950336",
            "1E-05",
            "",
            "NaN",
            "1.2.3",
            "- 5",
            ",5",
            "1.000,5",
            "0x10",
            "99999999999999999999.5",
            "-123456789012345678",
            "999999999999999999.000",
            "1,234",
            "000123.000",
            "-0",
            "+17 ",
        ] {
            assert_eq!(
                Decimal::parse_json_number(s),
                Decimal::parse(s).map(|d| d.to_json_number()),
                "{s:?}"
            );
        }
    }

    #[test]
    fn json_numbers() {
        let n = |s: &str| Decimal::parse(s).unwrap().to_json_number().to_string();
        assert_eq!(n("78"), "78");
        assert_eq!(n("78.0"), "78");
        assert_eq!(n("-3"), "-3");
        assert_eq!(n("22.4"), "22.4");
        assert_eq!(n("22.40"), "22.4");
        assert_eq!(n("0"), "0");
        assert_eq!(n("-0.0"), "0");
        assert_eq!(n("18446744073709551615"), "18446744073709551615");
        assert_eq!(n("-9223372036854775808"), "-9223372036854775808");
        assert_eq!(n(DECIMAL_MAX), "7.922816251426434e+28");
    }
}
