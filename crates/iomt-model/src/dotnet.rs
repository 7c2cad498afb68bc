//! How .NET writes numbers and booleans as text.
//!
//! The original turns every extracted value into a string with .NET's invariant conversions,
//! so a device's `1.50` becomes `"1.5"`, `0.00001` becomes `"1E-05"` and `true` becomes
//! `"True"`. Downstream systems (and Observations already on FHIR servers) carry those exact
//! strings, so we reproduce them.

/// Formats a double as .NET Core 3.0+ `double.ToString(CultureInfo.InvariantCulture)` does:
/// the shortest text that round-trips, in positional notation when the decimal exponent is in
/// `-4..15`, otherwise in scientific notation `d.dddE+XX` / `d.dddE-XX` (at least two exponent
/// digits).
pub fn format_double(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "∞" } else { "-∞" }.to_owned();
    }
    if value == 0.0 {
        return if value.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "1.9811999999999999e0", "1e-5".
    let sci = format!("{value:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let negative = mantissa.starts_with('-');
    let digits: String = mantissa.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if (-4..15).contains(&exponent) {
        if exponent < 0 {
            out.push_str("0.");
            for _ in 0..(-exponent - 1) {
                out.push('0');
            }
            out.push_str(&digits);
        } else {
            let int_len = exponent as usize + 1;
            if digits.len() <= int_len {
                out.push_str(&digits);
                for _ in 0..(int_len - digits.len()) {
                    out.push('0');
                }
            } else {
                out.push_str(&digits[..int_len]);
                out.push('.');
                out.push_str(&digits[int_len..]);
            }
        }
    } else {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('E');
        out.push(if exponent < 0 { '-' } else { '+' });
        let abs = exponent.unsigned_abs();
        if abs < 10 {
            out.push('0');
        }
        out.push_str(&abs.to_string());
    }
    out
}

/// Formats a boolean as .NET's `bool.ToString()`: `True` or `False`.
pub fn format_bool(value: bool) -> &'static str {
    if value { "True" } else { "False" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_print_like_dotnet() {
        let cases: &[(f64, &str)] = &[
            (1.5, "1.5"),
            (98.6, "98.6"),
            (1.0, "1"),
            (22.40, "22.4"),
            (0.00001, "1E-05"),
            (0.0001, "0.0001"),
            (78.0 * 0.0254, "1.9811999999999999"),
            (1.9304, "1.9304"),
            (1e14, "100000000000000"),
            (1e15, "1E+15"),
            (123456789012345680000.0, "1.2345678901234568E+20"),
            (-2.5, "-2.5"),
            (-0.000001234, "-1.234E-06"),
            (0.0, "0"),
            (1.7976931348623157e308, "1.7976931348623157E+308"),
            (5e-324, "5E-324"),
            (100.0, "100"),
            (123.456, "123.456"),
        ];
        for (value, expected) in cases {
            assert_eq!(format_double(*value), *expected, "formatting {value:?}");
        }
    }

    #[test]
    fn booleans_print_like_dotnet() {
        assert_eq!(format_bool(true), "True");
        assert_eq!(format_bool(false), "False");
    }
}
