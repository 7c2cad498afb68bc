//! JMESPath with the original connector's custom functions.
//!
//! The dialect is JmesPath.Net 1.0.205 (what the C# connector used) over Newtonsoft.Json
//! tokens, re-implemented over the shared read-only document ([`Value`]):
//!
//! * the whole JMESPath grammar: identifiers and `"quoted"` identifiers, sub-expressions,
//!   indices, slices, list (`[*]`) and object (`*`) projections, flattening (`[]`), filters
//!   (`[?cond]`) with `==`, `!=`, `<`, `<=`, `>`, `>=`, `||`, `&&`, `!`, pipes, multi-select
//!   lists and hashes, `` `json` `` literals, `'raw'` strings, `@`, function calls and `&expr`
//!   expression references;
//! * all built-in functions (`abs` … `values`) with JmesPath.Net's result typing: numbers keep
//!   Newtonsoft's Integer/Float distinction (`1` and `1.0` are *not* equal, `floor`/`ceil`
//!   return integers, `avg` a float, `sum` an integer when integral); `to_number` parses
//!   strings as `Int64.TryParse` then `double.TryParse(NumberStyles.Float)`;
//! * the eight custom functions of the original (`add`, `subtract`, `multiply`, `divide`,
//!   `pow`, `insertString`, `fromUnixTimestamp`, `fromUnixTimestampMs`) with its exact typing
//!   and error messages; a wrong number of arguments is a compile error.
//!
//! Evaluating borrows from the message: `a.b` or `matchedToken.x` never copies or allocates.
//! [`Scope::WithMatch`] is evaluated as an overlay (member order: root members except
//! `matchedToken`, then `matchedToken`), never materialized.
//!
//! Errors: compile errors are [`JmesPathError::Parse`]; runtime errors are typed
//! ([`JmesPathError::InvalidType`], [`JmesPathError::DivideByZero`], …).
//!
//! # Where this deliberately differs from JmesPath.Net
//! * Every `null` is dropped from projections, as the JMESPath spec says. JmesPath.Net only
//!   drops its own null singleton, so an explicit JSON `null` reached through `*`, a slice or a
//!   sub-expression stays in its projections (and counts towards "multiple tokens").
//! * Strings are strings: Newtonsoft would have turned ISO-looking strings (in messages and in
//!   backtick literals) into Date tokens, which string functions see as `MM/dd/yyyy HH:mm:ss`
//!   and which never equal a string.
//! * .NET culture-sensitive string operations (`sort`, `min`/`max` of strings, `starts_with`,
//!   `ends_with`) are ordinal; `sort` orders mixed integers and floats numerically.
//! * `max_by`/`min_by` compare string keys as strings and return null for an empty array
//!   (JmesPath.Net parsed string keys as numbers and threw on empty arrays); ties still go to
//!   the later element.
//! * Operator precedence is the spec's; `&expr` is allowed outside function arguments; quoted
//!   identifiers are unescaped as JSON; multi-selects on null give null.
//! * Where .NET threw an unrelated exception (a null reference, an invalid cast, a null
//!   argument) the error is [`JmesPathError::InvalidType`]; `reverse` keeps surrogate pairs
//!   together and `insertString` refuses to split one.
//! * `MultipleTokens` names the expression (the original printed a .NET type name).
//!
//! # Limits
//! Expressions may nest 64 levels (64 arrays/objects inside a literal); values are compared,
//! serialized and merged down to 512 levels. Beyond that compiling or evaluating fails with an
//! error instead of exhausting the stack.

mod ast;
mod dotnet;
mod error;
mod functions;
mod interp;
mod lexer;
mod parser;
mod value;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use sonic_rs::Value;

pub use error::JmesPathError;
pub use value::TokenType;

use crate::{MatchToken, Scalar, Scope};
use value::JValue;

/// A compiled JMESPath expression: immutable, cheap to evaluate many times, `Send + Sync`.
#[derive(Debug, Clone)]
pub struct JmesPath {
    text: Arc<str>,
    root: ast::Node,
}

/// The complete result of evaluating an expression (see [`JmesPath::evaluate`]).
#[derive(Debug, Clone)]
pub struct Evaluation<'a> {
    value: JValue<'a>,
    projection: bool,
    expression: Arc<str>,
}

impl<'a> Evaluation<'a> {
    /// Whether the result is a *projection* in JmesPath.Net's sense (a list of matches rather
    /// than one value), which decides how type matching and `select_one` treat it.
    pub fn is_projection(&self) -> bool {
        self.projection
    }

    /// The Newtonsoft token type of the result (`Integer`, `Float`, `String`, `Date`, …).
    pub fn token_type(&self) -> TokenType {
        self.value.token_type()
    }

    /// The result as compact JSON, written the way Newtonsoft.Json writes the token (floats
    /// keep a `.0`, dates are ISO 8601 strings, member order is document order).
    pub fn to_json(&self) -> Result<String, JmesPathError> {
        self.value
            .to_json()
            .map_err(|e| e.into_public(&self.expression))
    }

    /// The result as a [`Scalar`] (`None` for null; arrays, objects and projections are
    /// [`Scalar::Structured`]).
    pub fn into_scalar(self) -> Option<Scalar<'a>> {
        self.value.into_scalar()
    }
}

impl JmesPath {
    /// Compiles `text`. Syntax errors, unknown functions and wrong argument counts are
    /// reported as [`JmesPathError::Parse`].
    pub fn compile(text: &str) -> Result<JmesPath, JmesPathError> {
        match parser::parse(text) {
            Ok(root) => Ok(JmesPath {
                text: text.into(),
                root,
            }),
            Err(e) => {
                let column = text
                    .get(..e.offset.min(text.len()))
                    .map_or(1, |prefix| prefix.chars().count() + 1);
                Err(JmesPathError::Parse {
                    expression: text.to_owned(),
                    cause: format!("{} (at column {column})", e.message),
                })
            }
        }
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Evaluates against `scope` and returns the whole result.
    pub fn evaluate<'a>(&self, scope: Scope<'a>) -> Result<Evaluation<'a>, JmesPathError> {
        let cur = scope_value(scope);
        let (value, projection) = {
            interp::reset_budget();
            interp::eval_top(&self.root, &cur)
        }
        .map_err(|e| e.into_public(&self.text))?;
        Ok(Evaluation {
            value,
            projection,
            expression: self.text.clone(),
        })
    }

    /// Type matching: a projection yields each (non-null) element, any other non-null result
    /// is one match, null is no match. Matches that are nodes of `root` are borrowed; values
    /// the expression constructed are owned.
    pub fn select_matches<'a>(
        &self,
        root: &'a Value,
    ) -> Result<Vec<MatchToken<'a>>, JmesPathError> {
        let cur = JValue::Doc(root);
        let (value, projection) = {
            interp::reset_budget();
            interp::eval_top(&self.root, &cur)
        }
        .map_err(|e| e.into_public(&self.text))?;
        let to_match = |v: &JValue<'a>| -> Result<MatchToken<'a>, JmesPathError> {
            match v {
                JValue::Doc(node) => Ok(MatchToken::Borrowed(node)),
                other => other
                    .to_sonic()
                    .map(MatchToken::Owned)
                    .map_err(|e| e.into_public(&self.text)),
            }
        };
        if value.is_null() {
            return Ok(Vec::new());
        }
        if projection && let value::View::Array(items) = value.view() {
            let mut out = Vec::with_capacity(items.len());
            items.try_for_each(|item| {
                if !item.is_null() {
                    out.push(to_match(&item)?);
                }
                Ok::<(), JmesPathError>(())
            })?;
            return Ok(out);
        }
        Ok(vec![to_match(&value)?])
    }

    /// One value in `scope`: null is `None`; a projection with more than one element is
    /// [`JmesPathError::MultipleTokens`] (a projection with zero or one element is an array,
    /// i.e. [`Scalar::Structured`], as in the original).
    pub fn select_one<'a>(&self, scope: Scope<'a>) -> Result<Option<Scalar<'a>>, JmesPathError> {
        let cur = scope_value(scope);
        let (value, projection) = {
            interp::reset_budget();
            interp::eval_top(&self.root, &cur)
        }
        .map_err(|e| e.into_public(&self.text))?;
        if projection
            && let value::View::Array(items) = value.view()
            && items.len() > 1
        {
            return Err(JmesPathError::MultipleTokens {
                expression: self.text.to_string(),
            });
        }
        Ok(value.into_scalar())
    }

    /// Evaluates against `data` and returns the result as compact JSON (Newtonsoft style);
    /// for tests and tooling.
    pub fn search_json(&self, data: &Value) -> Result<String, JmesPathError> {
        self.evaluate(Scope::Token(data))?.to_json()
    }
}

fn scope_value(scope: Scope<'_>) -> JValue<'_> {
    match scope {
        Scope::Token(v) => JValue::Doc(v),
        Scope::WithMatch { root, matched } => JValue::Overlay { root, matched },
    }
}

/// The names of every function an expression may call (built-in and custom), for tooling.
pub fn function_names() -> impl Iterator<Item = &'static str> {
    functions::names()
}
