//! Turning what an expression found into measurement text and timestamps, the way the
//! original's `JToken.Value<T>()` does.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use iomt_expr::Scalar;
use iomt_model::{dotnet, timestamp};

/// Why a found value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConvertError {
    /// An object or array where a single value is needed.
    Structured,
    /// A value that is not a date where a timestamp is needed.
    NotADate(String),
}

impl ConvertError {
    /// Lowercase explanation with what to do.
    pub fn explain(&self) -> String {
        match self {
            ConvertError::Structured => {
                "it selects an object or array, not a single value; select a member inside it"
                    .into()
            }
            ConvertError::NotADate(why) => why.clone(),
        }
    }
}

/// Whether `s` is empty or whitespace only (`s.trim().is_empty()`), without the Unicode scan
/// when it starts with visible ASCII (bytes above `' '` and below 0x80 are never whitespace).
pub fn is_blank(s: &str) -> bool {
    match s.as_bytes().first() {
        None => true,
        Some(&c) if c > b' ' && c < 0x80 => false,
        Some(_) => s.trim().is_empty(),
    }
}

/// Text for an id or a property value. `Ok(None)` for JSON `null`.
pub fn to_text<'a>(scalar: Scalar<'a>) -> Result<Option<Cow<'a, str>>, ConvertError> {
    Ok(Some(match scalar {
        Scalar::Null => return Ok(None),
        Scalar::Str(s) => s,
        Scalar::Int(i) => Cow::Owned(i.to_string()),
        Scalar::UInt(u) => Cow::Owned(u.to_string()),
        Scalar::Float(f) => Cow::Owned(dotnet::format_double(f)),
        Scalar::Bool(b) => Cow::Borrowed(dotnet::format_bool(b)),
        Scalar::Date(d) => Cow::Owned(timestamp::format_invariant(d)),
        Scalar::Structured => return Err(ConvertError::Structured),
        // Scalar is non-exhaustive-free today; keep the match total.
    }))
}

/// A timestamp. `Ok(None)` for `null` and blank strings.
pub fn to_timestamp(scalar: Scalar<'_>) -> Result<Option<DateTime<Utc>>, ConvertError> {
    match scalar {
        Scalar::Null => Ok(None),
        Scalar::Str(s) if is_blank(&s) => Ok(None),
        Scalar::Str(s) => timestamp::parse(&s).map(Some).ok_or_else(|| {
            ConvertError::NotADate(format!(
                "{s:?} is not a date; send ISO 8601 such as 2024-01-01T12:00:00Z"
            ))
        }),
        Scalar::Date(d) => Ok(Some(d)),
        Scalar::Int(_) | Scalar::UInt(_) | Scalar::Float(_) => Err(ConvertError::NotADate(
            "a number is not a date; convert epoch times with fromUnixTimestamp or fromUnixTimestampMs in a JmesPath expression".into(),
        )),
        Scalar::Bool(_) => Err(ConvertError::NotADate("a boolean is not a date".into())),
        Scalar::Structured => Err(ConvertError::Structured),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_like_dotnet() {
        assert_eq!(to_text(Scalar::Int(65)).unwrap().unwrap(), "65");
        assert_eq!(to_text(Scalar::Float(1.5)).unwrap().unwrap(), "1.5");
        assert_eq!(to_text(Scalar::Float(1e-5)).unwrap().unwrap(), "1E-05");
        assert_eq!(to_text(Scalar::Bool(true)).unwrap().unwrap(), "True");
        assert_eq!(to_text(Scalar::Null).unwrap(), None);
        assert_eq!(to_text(Scalar::Structured), Err(ConvertError::Structured));
    }

    #[test]
    fn blank_like_trim() {
        for s in [
            "", " ", "\t\n", "x", " x", "\u{a0}", "\u{a0}x", "\u{3000}", "\u{1f}", "é",
        ] {
            assert_eq!(is_blank(s), s.trim().is_empty(), "{s:?}");
        }
    }

    #[test]
    fn timestamps() {
        let t = to_timestamp(Scalar::Str("2019-02-01T22:46:01.875Z".into()))
            .unwrap()
            .unwrap();
        assert_eq!(timestamp::format_newtonsoft(t), "2019-02-01T22:46:01.875Z");
        assert_eq!(to_timestamp(Scalar::Str("  ".into())).unwrap(), None);
        assert!(to_timestamp(Scalar::Int(1549060000)).is_err());
        assert!(to_timestamp(Scalar::Str("yesterday".into())).is_err());
    }
}
