//! Filter comparisons with Newtonsoft's semantics (`BooleanQueryExpression.MatchTokens`,
//! `JValue.Compare`, `EqualsWithStringCoercion`, `EqualsWithStrictMatch`) and the .NET
//! conversions they rely on (`Convert.ToInt64/ToDouble/ToBoolean`, `BigInteger.Parse`).
//!
//! Summary of the rules (left op right, both JSON primitives):
//! * `==`: same type and equal; integer vs float compares numerically with Newtonsoft's relative
//!   tolerance (`MathUtils.ApproxEquals`, about 1e-15); everything else (e.g. `'1' == 1`) is false.
//!   `===` is the same for JSON values (the two differ only for .NET dates, GUIDs, … which a parsed
//!   document does not contain here), `!=`/`!==` are the negations.
//! * `<`, `<=`, `>`, `>=`: `null` is below everything; otherwise both sides are converted to the
//!   *left* side's type (to the right side's if the left is a string and the right is not), so
//!   `"26" > 3` converts `"26"` to an integer; a string that does not convert is an evaluation
//!   error (.NET throws `FormatException`). Strings order by UTF-16 code units.
//! * `=~`: both sides strings, the right one `/pattern/flags` (`i`, `m`, `s`; `x` and others are
//!   ignored), unanchored search.
//! * An object, an array or an object member on either side: only `!=` holds.

use std::cmp::Ordering;

use regex::{Regex, RegexBuilder};
use sonic_rs::{JsonNumberTrait, ValueRef};

use super::ast::{Lit, Op};
use super::eval::{EvalError, Tok};

/// A token as a comparison sees it: Newtonsoft's `JValue` kinds, or `Other` for containers.
#[derive(Debug, Clone, Copy)]
pub(super) enum Jv<'s> {
    Null,
    Bool(bool),
    /// An `Integer` token that fits `long`.
    Int(i64),
    /// An `Integer` token above `long.MaxValue` (a `BigInteger` in Newtonsoft).
    Big(u64),
    Float(f64),
    Str(&'s str),
    /// Not a `JValue`: object, array, object member, the virtual scope root.
    Other,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ty {
    Null,
    Bool,
    Integer,
    Float,
    Str,
    Other,
}

impl<'s> Jv<'s> {
    pub(super) fn of_token(tok: Tok<'s>) -> Jv<'s> {
        let (Tok::Val(v) | Tok::Scalar(v)) = tok else {
            return Jv::Other;
        };
        match v.as_ref() {
            ValueRef::Null => Jv::Null,
            ValueRef::Bool(b) => Jv::Bool(b),
            ValueRef::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Jv::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Jv::Big(u)
                } else {
                    Jv::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            ValueRef::String(s) => Jv::Str(s),
            ValueRef::Array(_) | ValueRef::Object(_) => Jv::Other,
        }
    }

    pub(super) fn of_lit(lit: &'s Lit) -> Jv<'s> {
        match lit {
            Lit::Null => Jv::Null,
            Lit::Bool(b) => Jv::Bool(*b),
            Lit::Int(i) => Jv::Int(*i),
            Lit::Float(f) => Jv::Float(*f),
            Lit::Str(s) => Jv::Str(s),
        }
    }

    fn ty(self) -> Ty {
        match self {
            Jv::Null => Ty::Null,
            Jv::Bool(_) => Ty::Bool,
            Jv::Int(_) | Jv::Big(_) => Ty::Integer,
            Jv::Float(_) => Ty::Float,
            Jv::Str(_) => Ty::Str,
            Jv::Other => Ty::Other,
        }
    }
}

/// `MatchTokens`: whether the pair satisfies `op`.
pub(super) fn matches(
    op: Op,
    left: Jv<'_>,
    right: Jv<'_>,
    regex: Option<&Regex>,
) -> Result<bool, EvalError> {
    if matches!(left, Jv::Other) || matches!(right, Jv::Other) {
        // "you can only specify primitive types in a comparison; notequals will always be true"
        return Ok(op == Op::Ne);
    }
    Ok(match op {
        Op::Regex => regex_equals(left, right, regex)?,
        Op::Eq | Op::StrictEq => equals(left, right)?,
        Op::Ne | Op::StrictNe => !equals(left, right)?,
        Op::Gt => compare(left, right)? == Ordering::Greater,
        Op::Ge => compare(left, right)? != Ordering::Less,
        Op::Lt => compare(left, right)? == Ordering::Less,
        Op::Le => compare(left, right)? != Ordering::Greater,
    })
}

/// `EqualsWithStringCoercion` (and, for JSON values, `EqualsWithStrictMatch`).
fn equals(a: Jv<'_>, b: Jv<'_>) -> Result<bool, EvalError> {
    Ok(match (a, b) {
        (Jv::Null, Jv::Null) => true,
        (Jv::Bool(x), Jv::Bool(y)) => x == y,
        (Jv::Str(x), Jv::Str(y)) => x == y,
        (Jv::Float(x), Jv::Float(y)) => approx_eq(x, y),
        (Jv::Int(x), Jv::Int(y)) => x == y,
        (Jv::Big(x), Jv::Big(y)) => x == y,
        (Jv::Int(_), Jv::Big(_)) | (Jv::Big(_), Jv::Int(_)) => false,
        (Jv::Int(i), Jv::Float(f)) => approx_eq(i as f64, f),
        (Jv::Float(f), Jv::Int(i)) => approx_eq(f, i as f64),
        (Jv::Big(u), other @ Jv::Float(_)) => compare_big(u, other)? == Ordering::Equal,
        (other @ Jv::Float(_), Jv::Big(u)) => compare_big(u, other)? == Ordering::Equal,
        _ => false,
    })
}

/// `JValue.CompareTo`: `JValue.Compare` in the left type (the right one if the left is a string
/// of a different type than the right).
fn compare(a: Jv<'_>, b: Jv<'_>) -> Result<Ordering, EvalError> {
    match (a, b) {
        (Jv::Null, Jv::Null) => return Ok(Ordering::Equal),
        (_, Jv::Null) => return Ok(Ordering::Greater),
        (Jv::Null, _) => return Ok(Ordering::Less),
        _ => {}
    }
    let ty = if a.ty() == Ty::Str && b.ty() != Ty::Str {
        b.ty()
    } else {
        a.ty()
    };
    match ty {
        Ty::Integer | Ty::Float => {
            if let Jv::Big(u) = a {
                return compare_big(u, b);
            }
            if let Jv::Big(u) = b {
                return Ok(compare_big(u, a)?.reverse());
            }
            if ty == Ty::Float || matches!(a, Jv::Float(_)) || matches!(b, Jv::Float(_)) {
                Ok(compare_float(to_double(a)?, to_double(b)?))
            } else {
                Ok(to_int64(a)?.cmp(&to_int64(b)?))
            }
        }
        Ty::Str => match (a, b) {
            (Jv::Str(x), Jv::Str(y)) => Ok(compare_ordinal(x, y)),
            _ => Ok(Ordering::Equal),
        },
        Ty::Bool => Ok(to_bool(a)?.cmp(&to_bool(b)?)),
        Ty::Null | Ty::Other => Ok(Ordering::Equal),
    }
}

/// `string.CompareOrdinal`: UTF-16 code unit order.
fn compare_ordinal(x: &str, y: &str) -> Ordering {
    if x.is_ascii() && y.is_ascii() {
        x.cmp(y)
    } else {
        x.encode_utf16().cmp(y.encode_utf16())
    }
}

/// `MathUtils.ApproxEquals`.
fn approx_eq(d1: f64, d2: f64) -> bool {
    if d1 == d2 {
        return true;
    }
    let tolerance = ((d1.abs() + d2.abs()) + 10.0) * f64::EPSILON;
    let difference = d1 - d2;
    -tolerance < difference && tolerance > difference
}

/// `JValue.CompareFloat`: approximately equal is equal, else `double.CompareTo` (NaN lowest).
fn compare_float(d1: f64, d2: f64) -> Ordering {
    if approx_eq(d1, d2) {
        return Ordering::Equal;
    }
    match d1.partial_cmp(&d2) {
        Some(order) => order,
        None => match (d1.is_nan(), d2.is_nan()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            _ => Ordering::Greater,
        },
    }
}

/// `JValue.CompareBigInteger(u, other)`, `u` being above `long.MaxValue`.
fn compare_big(u: u64, other: Jv<'_>) -> Result<Ordering, EvalError> {
    match other {
        Jv::Int(i) => Ok(i128::from(u).cmp(&i128::from(i))),
        Jv::Big(v) => Ok(u.cmp(&v)),
        Jv::Float(d) => {
            if !d.is_finite() {
                return Err(EvalError::Convert(format!("{d} to an integer")));
            }
            let t = d.trunc();
            let order = if t >= 18_446_744_073_709_551_616.0 {
                Ordering::Less
            } else if t < 0.0 {
                Ordering::Greater
            } else {
                u.cmp(&(t as u64))
            };
            if order != Ordering::Equal {
                return Ok(order);
            }
            // Newtonsoft: "check for fraction if result is two numbers are equal".
            Ok(0.0_f64
                .partial_cmp(&(d - t).abs())
                .unwrap_or(Ordering::Equal))
        }
        Jv::Str(s) => match parse_bigint(s) {
            Some(Big::Small(v)) => Ok(i128::from(u).cmp(&v)),
            Some(Big::HugePositive) => Ok(Ordering::Less),
            Some(Big::HugeNegative) => Ok(Ordering::Greater),
            None => Err(EvalError::Convert(format!(
                "the string {s:?} to an integer"
            ))),
        },
        Jv::Bool(_) => Err(EvalError::Convert("a boolean to a big integer".to_owned())),
        Jv::Null => Ok(Ordering::Greater),
        Jv::Other => Ok(Ordering::Equal),
    }
}

/// `Convert.ToInt64(object, InvariantCulture)` for the kinds that reach it.
fn to_int64(v: Jv<'_>) -> Result<i64, EvalError> {
    match v {
        Jv::Int(i) => Ok(i),
        Jv::Bool(b) => Ok(i64::from(b)),
        Jv::Str(s) => parse_int64(s)
            .ok_or_else(|| EvalError::Convert(format!("the string {s:?} to an integer"))),
        Jv::Null => Ok(0),
        Jv::Big(u) => Err(EvalError::Convert(format!("{u} to a 64-bit integer"))),
        Jv::Float(f) => {
            let r = f.round_ties_even();
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&r) {
                Ok(r as i64)
            } else {
                Err(EvalError::Convert(format!("{f} to a 64-bit integer")))
            }
        }
        Jv::Other => Err(EvalError::Convert("a container to an integer".to_owned())),
    }
}

/// `Convert.ToDouble(object, InvariantCulture)` for the kinds that reach it.
fn to_double(v: Jv<'_>) -> Result<f64, EvalError> {
    match v {
        Jv::Float(f) => Ok(f),
        Jv::Int(i) => Ok(i as f64),
        Jv::Big(u) => Ok(u as f64),
        Jv::Bool(b) => Ok(if b { 1.0 } else { 0.0 }),
        Jv::Null => Ok(0.0),
        Jv::Str(s) => parse_double(s)
            .ok_or_else(|| EvalError::Convert(format!("the string {s:?} to a number"))),
        Jv::Other => Err(EvalError::Convert("a container to a number".to_owned())),
    }
}

/// `Convert.ToBoolean(object, InvariantCulture)` for the kinds that reach it.
fn to_bool(v: Jv<'_>) -> Result<bool, EvalError> {
    match v {
        Jv::Bool(b) => Ok(b),
        Jv::Int(i) => Ok(i != 0),
        Jv::Float(f) => Ok(f != 0.0),
        Jv::Null => Ok(false),
        Jv::Str(s) => {
            let t = s.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            if t.eq_ignore_ascii_case("true") {
                Ok(true)
            } else if t.eq_ignore_ascii_case("false") {
                Ok(false)
            } else {
                Err(EvalError::Convert(format!("the string {s:?} to a boolean")))
            }
        }
        Jv::Big(u) => Err(EvalError::Convert(format!("{u} to a boolean"))),
        Jv::Other => Err(EvalError::Convert("a container to a boolean".to_owned())),
    }
}

/// Whitespace as .NET number parsing skips it.
fn is_number_ws(b: u8) -> bool {
    b == b' ' || (0x09..=0x0d).contains(&b)
}

fn trim_number_ws(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_number_ws(c as u8))
}

/// `long.Parse(s, NumberStyles.Integer, InvariantCulture)`: optional spaces, optional sign,
/// ASCII digits; `None` on a format error or overflow.
pub(super) fn parse_int64(s: &str) -> Option<i64> {
    let t = trim_number_ws(s);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut acc: i128 = 0;
    for b in digits.bytes() {
        acc = acc * 10 + i128::from(b - b'0');
        if acc > i128::from(i64::MAX) + 1 {
            return None;
        }
    }
    i64::try_from(if negative { -acc } else { acc }).ok()
}

enum Big {
    Small(i128),
    HugePositive,
    HugeNegative,
}

/// `BigInteger.Parse(s, InvariantCulture)` (`NumberStyles.Integer`), coarsely: values beyond
/// `i128` only keep their sign (enough to compare with a `u64`).
fn parse_bigint(s: &str) -> Option<Big> {
    let t = trim_number_ws(s);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut acc: i128 = 0;
    for b in digits.bytes() {
        match acc
            .checked_mul(10)
            .and_then(|a| a.checked_add(i128::from(b - b'0')))
        {
            Some(a) => acc = a,
            None => {
                return Some(if negative {
                    Big::HugeNegative
                } else {
                    Big::HugePositive
                });
            }
        }
    }
    Some(Big::Small(if negative { -acc } else { acc }))
}

/// `double.Parse(s, NumberStyles.Float | NumberStyles.AllowThousands, InvariantCulture)`
/// (.NET Core 3.0+ rules: correctly rounded, overflow gives infinity, `Infinity`/`NaN` accepted).
pub(super) fn parse_double(s: &str) -> Option<f64> {
    let t = trim_number_ws(s);
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let sign = if negative { -1.0 } else { 1.0 };
    if rest.eq_ignore_ascii_case("infinity") {
        return Some(sign * f64::INFINITY);
    }
    if rest.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    let b = rest.as_bytes();
    let mut clean = String::with_capacity(b.len() + 3);
    if negative {
        clean.push('-');
    }
    let mut i = 0;
    let mut digits = false;
    // Integral part; group separators are allowed once a digit has been seen.
    while i < b.len() {
        match b[i] {
            d @ b'0'..=b'9' => {
                clean.push(d as char);
                digits = true;
            }
            b',' if digits => {}
            _ => break,
        }
        i += 1;
    }
    if !digits {
        clean.push('0');
    }
    if i < b.len() && b[i] == b'.' {
        clean.push('.');
        i += 1;
        let mut fraction = false;
        while i < b.len() && b[i].is_ascii_digit() {
            clean.push(b[i] as char);
            digits = true;
            fraction = true;
            i += 1;
        }
        if !fraction {
            clean.push('0');
        }
    }
    if !digits {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        let mut exponent = String::from("e");
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            exponent.push(b[j] as char);
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                exponent.push(b[j] as char);
                j += 1;
            }
            clean.push_str(&exponent);
            i = j;
        }
    }
    if i != b.len() {
        return None;
    }
    clean.parse::<f64>().ok()
}

/// `RegexEquals`: both strings; the right one is `/pattern/flags`.
fn regex_equals(
    input: Jv<'_>,
    pattern: Jv<'_>,
    compiled: Option<&Regex>,
) -> Result<bool, EvalError> {
    let (Jv::Str(input), Jv::Str(pattern)) = (input, pattern) else {
        return Ok(false);
    };
    if let Some(regex) = compiled {
        return Ok(regex.is_match(input));
    }
    let regex = compile_regex(pattern).map_err(|reason| EvalError::Regex {
        pattern: pattern.to_owned(),
        reason,
    })?;
    Ok(regex.is_match(input))
}

/// Compiles Newtonsoft's regex text `/pattern/flags`: the pattern lies between the first
/// character and the last `/`; flags `i`, `m`, `s` map to the same options, others are ignored
/// (`x` is .NET's `ExplicitCapture`, which does not change whether a string matches).
///
/// The pattern is compiled by the `regex` crate, so .NET-only constructs (backreferences,
/// lookaround) are rejected; `$` matches only at the very end (no "before a final newline").
pub(super) fn compile_regex(text: &str) -> Result<Regex, String> {
    let first = text.chars().next().map_or(0, char::len_utf8);
    let Some(last_slash) = text.rfind('/').filter(|&i| i >= first && first > 0) else {
        return Err("a regular expression must be written /pattern/flags".to_owned());
    };
    let pattern = &text[first..last_slash];
    let flags = &text[last_slash + 1..];
    RegexBuilder::new(pattern)
        .case_insensitive(flags.contains('i'))
        .multi_line(flags.contains('m'))
        .dot_matches_new_line(flags.contains('s'))
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .build()
        .map_err(|e| {
            let detail = e.to_string();
            let last = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            last.trim().trim_start_matches("error: ").to_owned()
        })
}
