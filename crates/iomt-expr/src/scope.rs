//! The evaluation context and the values expressions hand back.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use sonic_rs::Value;

/// The property name under which `CalculatedContent` exposes the current match.
pub const MATCHED_TOKEN: &str = "matchedToken";

/// A match of a type-match expression: usually a node of the parsed message, sometimes a value
/// that a JMESPath projection built (then owned).
#[derive(Debug, Clone)]
pub enum MatchToken<'a> {
    /// A node inside the parsed message.
    Borrowed(&'a Value),
    /// A value the expression constructed.
    Owned(Value),
}

impl MatchToken<'_> {
    /// The matched value.
    pub fn value(&self) -> &Value {
        match self {
            MatchToken::Borrowed(v) => v,
            MatchToken::Owned(v) => v,
        }
    }
}

/// What an expression is evaluated against.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A plain token: the event for type matching, or the matched token for the legacy
    /// JSONPath template types.
    Token(&'a Value),
    /// `CalculatedContent`'s context: `root` overlaid with a `matchedToken` member holding
    /// `matched`. Engines must give the same results as on the materialized object: `root`'s
    /// members in document order except any existing `matchedToken`, followed by
    /// `matchedToken: matched`.
    WithMatch {
        /// The whole event token.
        root: &'a Value,
        /// The current match.
        matched: &'a Value,
    },
}

/// A single result of an expression, as far as normalization needs it: scalars keep their JSON
/// type (an integer and a float print differently), structured values are only flagged.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// JSON `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    /// A non-negative integer above `i64::MAX`.
    UInt(u64),
    /// A non-integral number (or an integer too large for 64 bits).
    Float(f64),
    /// A string.
    Str(Cow<'a, str>),
    /// A date produced by `fromUnixTimestamp`/`fromUnixTimestampMs`.
    Date(DateTime<Utc>),
    /// An object or an array: not convertible to a measurement value.
    Structured,
}

impl<'a> Scalar<'a> {
    /// Classifies a JSON node.
    pub fn from_value(value: &'a Value) -> Scalar<'a> {
        use sonic_rs::{JsonNumberTrait, JsonValueTrait, ValueRef};
        // One type dispatch (`as_ref`): each sonic-rs type check or read of a parsed node
        // re-derives the node, and this runs for every value a template extracts.
        match value.as_ref() {
            ValueRef::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Scalar::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Scalar::UInt(u)
                } else {
                    Scalar::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            // A string borrowed from the document: valid UTF-8 since parsing, never re-checked.
            ValueRef::String(s) => Scalar::Str(Cow::Borrowed(s)),
            ValueRef::Bool(b) => Scalar::Bool(b),
            // `as_ref` shows a raw number it cannot read as null; it is a number all the same.
            ValueRef::Null if value.is_number() => Scalar::Float(f64::NAN),
            ValueRef::Null => Scalar::Null,
            ValueRef::Array(_) | ValueRef::Object(_) => Scalar::Structured,
        }
    }

    /// Detaches the scalar from the document it was read from.
    pub fn into_owned(self) -> Scalar<'static> {
        match self {
            Scalar::Null => Scalar::Null,
            Scalar::Bool(b) => Scalar::Bool(b),
            Scalar::Int(i) => Scalar::Int(i),
            Scalar::UInt(u) => Scalar::UInt(u),
            Scalar::Float(f) => Scalar::Float(f),
            Scalar::Str(s) => Scalar::Str(Cow::Owned(s.into_owned())),
            Scalar::Date(d) => Scalar::Date(d),
            Scalar::Structured => Scalar::Structured,
        }
    }
}
