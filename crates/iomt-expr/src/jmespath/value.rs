//! The values an expression computes with: nodes of the parsed message (borrowed, never
//! copied) and the few values that functions and multi-selects construct.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::rc::Rc;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sonic_rs::{Array, JsonContainerTrait, JsonValueTrait, Object, Value, ValueRef};

use super::ast::Lit;
use super::dotnet;
use super::error::{RtError, RtResult};
use crate::scope::{MATCHED_TOKEN, Scalar};

/// How deep comparisons, serialization and `merge` recurse into values.
pub(crate) const MAX_VALUE_DEPTH: usize = 512;

/// A string: borrowed from the message or shared (literals, constructed strings).
#[derive(Debug, Clone)]
pub(crate) enum JStr<'a> {
    Doc(&'a str),
    Shared(Arc<str>),
}

impl JStr<'_> {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            JStr::Doc(s) => s,
            JStr::Shared(s) => s,
        }
    }
}

impl From<String> for JStr<'_> {
    fn from(s: String) -> Self {
        JStr::Shared(s.into())
    }
}

/// A value during evaluation.
#[derive(Debug, Clone)]
pub(crate) enum JValue<'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(JStr<'a>),
    /// A `DateTime` token (from `fromUnixTimestamp[Ms]`): type "string" to JMESPath.
    Date(DateTime<Utc>),
    /// Any node of the message.
    Doc(&'a Value),
    /// The `CalculatedContent` scope: `root`'s members except `matchedToken`, then
    /// `matchedToken: matched`.
    Overlay {
        root: &'a Value,
        matched: &'a Value,
    },
    Array(Rc<Vec<JValue<'a>>>),
    Object(Rc<Vec<(JStr<'a>, JValue<'a>)>>),
}

/// The token types of Newtonsoft.Json that the original's typing rules talk about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenType {
    /// JSON `null`.
    Null,
    /// `true` / `false`.
    Boolean,
    /// An integral JSON number (no fraction, no exponent).
    Integer,
    /// Any other JSON number.
    Float,
    /// A string.
    String,
    /// A date (from `fromUnixTimestamp[Ms]`).
    Date,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl TokenType {
    /// Newtonsoft's name of the type (`JTokenType`).
    pub fn as_str(self) -> &'static str {
        match self {
            TokenType::Null => "Null",
            TokenType::Boolean => "Boolean",
            TokenType::Integer => "Integer",
            TokenType::Float => "Float",
            TokenType::String => "String",
            TokenType::Date => "Date",
            TokenType::Array => "Array",
            TokenType::Object => "Object",
        }
    }

    /// The JMESPath type name (`type()`): dates are strings, both number kinds are numbers.
    pub fn jmespath_name(self) -> &'static str {
        match self {
            TokenType::Null => "null",
            TokenType::Boolean => "boolean",
            TokenType::Integer | TokenType::Float => "number",
            TokenType::String | TokenType::Date => "string",
            TokenType::Array => "array",
            TokenType::Object => "object",
        }
    }
}

impl std::fmt::Display for TokenType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A type-resolved look at a value.
pub(crate) enum View<'v, 'a> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(&'v str),
    Date(DateTime<Utc>),
    Array(Arr<'v, 'a>),
    Object(Obj<'v, 'a>),
}

/// An array, from the message or constructed.
#[derive(Clone, Copy)]
pub(crate) enum Arr<'v, 'a> {
    Doc(&'a Array),
    Owned(&'v [JValue<'a>]),
}

impl<'a> Arr<'_, 'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Arr::Doc(a) => a.len(),
            Arr::Owned(a) => a.len(),
        }
    }

    pub(crate) fn get(&self, i: usize) -> Option<JValue<'a>> {
        match self {
            Arr::Doc(a) => a.get(i).map(JValue::Doc),
            Arr::Owned(a) => a.get(i).cloned(),
        }
    }

    /// Visits the elements in order.
    pub(crate) fn try_for_each<E>(
        &self,
        mut f: impl FnMut(JValue<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        match self {
            Arr::Doc(a) => {
                for v in a.iter() {
                    f(JValue::Doc(v))?;
                }
            }
            Arr::Owned(a) => {
                for v in a.iter() {
                    f(v.clone())?;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn to_vec(self) -> Vec<JValue<'a>> {
        let mut out = Vec::with_capacity(self.len());
        let _ = self.try_for_each::<()>(|v| {
            out.push(v);
            Ok(())
        });
        out
    }
}

/// An object, from the message, the `matchedToken` overlay, or constructed.
#[derive(Clone, Copy)]
pub(crate) enum Obj<'v, 'a> {
    Doc(&'a Object),
    Overlay(Option<&'a Object>, &'a Value),
    Owned(&'v [(JStr<'a>, JValue<'a>)]),
}

impl<'a> Obj<'_, 'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Obj::Doc(o) => o.len(),
            Obj::Overlay(root, _) => {
                root.map_or(0, |o| o.iter().filter(|(k, _)| *k != MATCHED_TOKEN).count()) + 1
            }
            Obj::Owned(o) => o.len(),
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<JValue<'a>> {
        match self {
            Obj::Doc(o) => o.get(&key).map(JValue::Doc),
            Obj::Overlay(root, matched) => {
                if key == MATCHED_TOKEN {
                    Some(JValue::Doc(matched))
                } else {
                    root.and_then(|o| o.get(&key)).map(JValue::Doc)
                }
            }
            Obj::Owned(o) => o
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v.clone()),
        }
    }

    /// The members in order.
    pub(crate) fn entries(&self) -> Vec<(JStr<'a>, JValue<'a>)> {
        match self {
            Obj::Doc(o) => o
                .iter()
                .map(|(k, v)| (JStr::Doc(k), JValue::Doc(v)))
                .collect(),
            Obj::Overlay(root, matched) => {
                let mut out: Vec<(JStr<'a>, JValue<'a>)> = root
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| *k != MATCHED_TOKEN)
                            .map(|(k, v)| (JStr::Doc(k), JValue::Doc(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((JStr::Shared(Arc::from(MATCHED_TOKEN)), JValue::Doc(matched)));
                out
            }
            Obj::Owned(o) => o.to_vec(),
        }
    }
}

impl<'a> JValue<'a> {
    /// Resolves the type of the value.
    pub(crate) fn view(&self) -> View<'_, 'a> {
        match self {
            JValue::Null => View::Null,
            JValue::Bool(b) => View::Bool(*b),
            JValue::Int(i) => View::Int(*i),
            JValue::UInt(u) => View::UInt(*u),
            JValue::Float(f) => View::Float(*f),
            JValue::Str(s) => View::Str(s.as_str()),
            JValue::Date(d) => View::Date(*d),
            JValue::Doc(v) => doc_view(v),
            JValue::Overlay { root, matched } => {
                let (root, matched): (&'a Value, &'a Value) = (*root, *matched);
                View::Object(Obj::Overlay(root.as_object(), matched))
            }
            JValue::Array(a) => View::Array(Arr::Owned(a)),
            JValue::Object(o) => View::Object(Obj::Owned(o)),
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        match self {
            JValue::Null => true,
            JValue::Doc(v) => v.is_null(),
            _ => false,
        }
    }

    /// JMESPath truthiness (JmesPath.Net `IsFalse` negated).
    pub(crate) fn is_truthy(&self) -> bool {
        match self.view() {
            View::Null => false,
            View::Bool(b) => b,
            View::Str(s) => !s.is_empty(),
            View::Array(a) => a.len() != 0,
            View::Object(o) => o.len() != 0,
            View::Int(_) | View::UInt(_) | View::Float(_) | View::Date(_) => true,
        }
    }

    pub(crate) fn token_type(&self) -> TokenType {
        match self.view() {
            View::Null => TokenType::Null,
            View::Bool(_) => TokenType::Boolean,
            View::Int(_) | View::UInt(_) => TokenType::Integer,
            View::Float(_) => TokenType::Float,
            View::Str(_) => TokenType::String,
            View::Date(_) => TokenType::Date,
            View::Array(_) => TokenType::Array,
            View::Object(_) => TokenType::Object,
        }
    }

    /// The member `key` of an object; null for anything else.
    pub(crate) fn field(&self, key: &str) -> JValue<'a> {
        match *self {
            JValue::Doc(v) => match v.as_object() {
                Some(o) => o.get(&key).map_or(JValue::Null, JValue::Doc),
                None => JValue::Null,
            },
            JValue::Overlay { root, matched } => {
                if key == MATCHED_TOKEN {
                    JValue::Doc(matched)
                } else {
                    root.as_object()
                        .and_then(|o| o.get(&key))
                        .map_or(JValue::Null, JValue::Doc)
                }
            }
            JValue::Object(ref o) => o
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map_or(JValue::Null, |(_, v)| v.clone()),
            _ => JValue::Null,
        }
    }

    /// The string contents as `Value<string>()` would give them (dates in the invariant
    /// culture's `MM/dd/yyyy HH:mm:ss`), for string-typed values.
    pub(crate) fn string_value(&self) -> Option<Cow<'_, str>> {
        match self.view() {
            View::Str(s) => Some(Cow::Borrowed(s)),
            View::Date(d) => Some(Cow::Owned(dotnet::date_string(&d))),
            _ => None,
        }
    }

    /// The value as a double, for numbers.
    pub(crate) fn number(&self) -> Option<f64> {
        match self.view() {
            View::Int(i) => Some(i as f64),
            View::UInt(u) => Some(u as f64),
            View::Float(f) => Some(f),
            _ => None,
        }
    }

    /// Converts to what `select_one` reports; `None` for null.
    pub(crate) fn into_scalar(self) -> Option<Scalar<'a>> {
        match self {
            JValue::Null => None,
            JValue::Bool(b) => Some(Scalar::Bool(b)),
            JValue::Int(i) => Some(Scalar::Int(i)),
            JValue::UInt(u) => Some(Scalar::UInt(u)),
            JValue::Float(f) => Some(Scalar::Float(f)),
            JValue::Str(JStr::Doc(s)) => Some(Scalar::Str(Cow::Borrowed(s))),
            JValue::Str(JStr::Shared(s)) => Some(Scalar::Str(Cow::Owned(s.to_string()))),
            JValue::Date(d) => Some(Scalar::Date(d)),
            JValue::Doc(v) => match Scalar::from_value(v) {
                Scalar::Null => None,
                other => Some(other),
            },
            JValue::Overlay { .. } | JValue::Array(_) | JValue::Object(_) => {
                Some(Scalar::Structured)
            }
        }
    }

    /// Compact JSON the way Newtonsoft writes the token.
    pub(crate) fn write_json(&self, out: &mut String, depth: usize) -> RtResult<()> {
        if depth > MAX_VALUE_DEPTH {
            return Err(RtError::too_deep());
        }
        match self.view() {
            View::Null => out.push_str("null"),
            View::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            View::Int(i) => out.push_str(&i.to_string()),
            View::UInt(u) => out.push_str(&u.to_string()),
            View::Float(f) => dotnet::write_json_double(out, f),
            View::Str(s) => dotnet::write_json_string(out, s),
            View::Date(d) => {
                out.push('"');
                out.push_str(&dotnet::date_iso(&d));
                out.push('"');
            }
            View::Array(a) => {
                out.push('[');
                let mut first = true;
                a.try_for_each(|v| {
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    v.write_json(out, depth + 1)
                })?;
                out.push(']');
            }
            View::Object(o) => {
                out.push('{');
                for (i, (k, v)) in o.entries().iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    dotnet::write_json_string(out, k.as_str());
                    out.push(':');
                    v.write_json(out, depth + 1)?;
                }
                out.push('}');
            }
        }
        Ok(())
    }

    pub(crate) fn to_json(&self) -> RtResult<String> {
        let mut out = String::new();
        self.write_json(&mut out, 0)?;
        Ok(out)
    }

    /// A `sonic_rs::Value` holding this value (dates become ISO strings). Goes through JSON
    /// text because sonic-rs does not keep insertion order when building objects.
    pub(crate) fn to_sonic(&self) -> RtResult<Value> {
        if let JValue::Doc(v) = self {
            return Ok((*v).clone());
        }
        let text = self.to_json()?;
        // NaN/Infinity are written as strings, so the text is always valid JSON.
        Ok(sonic_rs::from_str(&text).unwrap_or_default())
    }
}

fn doc_view<'a>(v: &'a Value) -> View<'a, 'a> {
    match v.as_ref() {
        ValueRef::Null => View::Null,
        ValueRef::Bool(b) => View::Bool(b),
        ValueRef::Number(_) => {
            if let Some(i) = v.as_i64() {
                View::Int(i)
            } else if let Some(u) = v.as_u64() {
                View::UInt(u)
            } else {
                View::Float(v.as_f64().unwrap_or(f64::NAN))
            }
        }
        ValueRef::String(s) => View::Str(s),
        ValueRef::Array(a) => View::Array(Arr::Doc(a)),
        ValueRef::Object(o) => View::Object(Obj::Doc(o)),
    }
}

/// Converts a literal into a value (scalars are free; arrays and objects are built).
pub(crate) fn from_lit<'a>(lit: &Lit) -> JValue<'a> {
    match lit {
        Lit::Null => JValue::Null,
        Lit::Bool(b) => JValue::Bool(*b),
        Lit::Int(i) => JValue::Int(*i),
        Lit::UInt(u) => JValue::UInt(*u),
        Lit::Float(f) => JValue::Float(*f),
        Lit::Str(s) => JValue::Str(JStr::Shared(s.clone())),
        Lit::Array(items) => JValue::Array(Rc::new(items.iter().map(from_lit).collect())),
        Lit::Object(members) => JValue::Object(Rc::new(
            members
                .iter()
                .map(|(k, v)| (JStr::Shared(k.clone()), from_lit(v)))
                .collect(),
        )),
    }
}

/// `JToken.DeepEquals`: an Integer never equals a Float, a Date never equals a String, object
/// member order does not matter.
pub(crate) fn deep_eq(a: &JValue<'_>, b: &JValue<'_>, depth: usize) -> RtResult<bool> {
    if depth > MAX_VALUE_DEPTH {
        return Err(RtError::too_deep());
    }
    Ok(match (a.view(), b.view()) {
        (View::Null, View::Null) => true,
        (View::Bool(x), View::Bool(y)) => x == y,
        (View::Int(x), View::Int(y)) => x == y,
        (View::Int(_), View::UInt(_)) | (View::UInt(_), View::Int(_)) => false,
        (View::UInt(x), View::UInt(y)) => x == y,
        (View::Float(x), View::Float(y)) => x == y || (x.is_nan() && y.is_nan()),
        (View::Str(x), View::Str(y)) => x == y,
        (View::Date(x), View::Date(y)) => x == y,
        (View::Array(x), View::Array(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for i in 0..x.len() {
                match (x.get(i), y.get(i)) {
                    (Some(l), Some(r)) => {
                        if !deep_eq(&l, &r, depth + 1)? {
                            return Ok(false);
                        }
                    }
                    _ => return Ok(false),
                }
            }
            true
        }
        (View::Object(x), View::Object(y)) => {
            if x.len() != y.len() {
                return Ok(false);
            }
            for (k, v) in x.entries() {
                match y.get(k.as_str()) {
                    Some(other) => {
                        if !deep_eq(&v, &other, depth + 1)? {
                            return Ok(false);
                        }
                    }
                    None => return Ok(false),
                }
            }
            true
        }
        _ => false,
    })
}

/// JmesPath.Net's ordering comparisons: numbers as doubles; strings, dates and null as strings
/// (null sorting first, ordinal UTF-16 order); anything else is not comparable (`None`).
pub(crate) fn order(a: &JValue<'_>, b: &JValue<'_>) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.number(), b.number()) {
        return x.partial_cmp(&y);
    }
    fn side<'v>(v: &'v JValue<'_>) -> Option<Option<Cow<'v, str>>> {
        match v.view() {
            View::Null => Some(None),
            _ => v.string_value().map(Some),
        }
    }
    let (x, y) = (side(a)?, side(b)?);
    Some(match (x, y) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => dotnet::utf16_cmp(&x, &y),
    })
}
