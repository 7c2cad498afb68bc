//! JSONPath in the dialect of Newtonsoft.Json 13 (`JToken.SelectToken` / `SelectTokens`).
//!
//! # Why a dialect of its own
//! The original connector's device templates are evaluated by Newtonsoft, whose JSONPath is not
//! RFC 9535 and which no published crate implements. Templates depend on its quirks:
//! * `$` is optional (`heartrate`, `property[*].name`) and denotes the token evaluated on; member
//!   names run up to `.`/`[`/space, so `$.SystemProperties.iothub-connection-device-id` works;
//!   `$.['My Property']` (dot before a bracket) works; only single quotes quote names.
//! * In filters `@name` needs no dot (`$..[?(@heartRate)]`), and `[?(@x)]` is an *existence* test:
//!   true when `x` yields any token, including `null`, `false`, `0` and `""`.
//! * `..[?(filter)]` tests the node the scan starts from and all its descendants, in document
//!   order, so `$..[?(@heartrate)]` on `{"heartrate": 70}` matches the root itself.
//! * `..name` finds members anywhere below (not the start node itself), `..*` yields the start
//!   node and every value below it, but `..[*]` and `..[0]` are plain `[*]`/`[0]`.
//! * `[?(…)]` on an *object* tests its members (Newtonsoft's `JProperty` tokens), not their
//!   values, so `$.obj[?(@.x)]` never matches; on an array it tests the items.
//! * `.*` applies to objects only, `[*]`/`[n]`/slices to arrays only; anything else yields
//!   nothing (no error). A negative index on an array is an error, as in Newtonsoft.
//! * `&&`/`||` have no precedence (`a && b || c` is `a && (b || c)`), there are no grouping
//!   parentheses, and comparisons follow `JValue.CompareTo` (see `compare.rs`): `'1' == 1` is
//!   false, `"26" > 3` converts the string, integers and floats compare numerically.
//!
//! # What must hold
//! * Results are Newtonsoft's, in Newtonsoft's order, duplicates included (`$['a','a']` yields
//!   `a` twice); evaluation stops where Newtonsoft's lazy enumeration stops, so errors surface in
//!   the same cases (e.g. [`JsonPath::select_one`] reports multiple tokens as soon as a second
//!   one appears).
//! * A [`Scope::WithMatch`] evaluates exactly as on the materialized object (the root's members
//!   minus `matchedToken`, then `matchedToken: matched`) without building it: member lookup,
//!   iteration and scans consult the overlay.
//! * Documents are read only. Evaluation never panics and never re-parses; the parser bounds
//!   nesting ([`MAX_DEPTH`]) and size ([`MAX_STEPS`]), and descendant scans recurse only up to a
//!   fixed budget (then continue on a heap stack), so stack use does not grow with document depth.
//! * Paths made of plain members and indexes (`$.a.b`, `$.a[0]`) take an allocation-free path
//!   (a few ns over the sonic-rs lookups themselves). Scans resolve each node's type once and
//!   skip filter evaluation for node kinds a filter cannot accept (`@heartRate` only holds for
//!   objects), because every sonic-rs type check or key read costs several ns.
//! * A [`MemberBatch`] resolves several member-only paths in one walk per object and must give
//!   exactly what `select_one` gives for each (see `members.rs`).
//!
//! # Known differences from Newtonsoft
//! * Two errors Newtonsoft raises only when evaluating are compile errors here: a zero slice
//!   step and an unusable `/regex/` literal. Regexes run on the `regex` crate: .NET-only syntax
//!   (backreferences, lookaround) is rejected and `$` does not match before a final newline.
//! * Strings stay strings: Newtonsoft's reader may have turned ISO-8601 strings into date tokens,
//!   which compare slightly differently (and never match `=~`).
//! * A filter applied to an object can select an object member itself (e.g. `$.obj[?(@)]`);
//!   there is no such value here, so that result is [`JsonPathError::PropertyToken`].
//! * Objects with duplicate member names: a lookup sees the first one, iteration sees all
//!   (Newtonsoft keeps only the last value).
//! * Integers beyond 64 bits are floats in sonic-rs (`BigInteger` in Newtonsoft); slice index
//!   arithmetic does not overflow (.NET's `int` would, for steps near `int.MaxValue`).

mod ast;
mod compare;
mod eval;
mod fast_scan;
mod members;
mod parser;
#[cfg(test)]
mod tests;

use std::cell::Cell;

use sonic_rs::Value;
use thiserror::Error;

use crate::Scope;
use eval::{Ctx, EResult, EvalError, Flow, Tok};
pub use fast_scan::{Captured, MAX_CAPTURE, Matches};
pub use members::{MAX_BATCH_PATHS, MemberBatch};
pub use parser::{MAX_DEPTH, MAX_STEPS};

/// A compiled JSONPath expression: immutable, `Send + Sync`, cheap to evaluate many times.
#[derive(Debug, Clone)]
pub struct JsonPath {
    text: Box<str>,
    steps: Box<[ast::Step]>,
    /// Every step is a member name or an index: evaluated without sink or allocation.
    simple: bool,
    /// The common type-match shape `$..[?(@a && @b.c)]`, evaluated directly.
    exists_scan: Option<fast_scan::ExistsScan>,
}

/// A token [`JsonPath::select_one`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Node<'a> {
    /// A node of the document (inside the root or the match).
    Value(&'a Value),
    /// The virtual root of a [`Scope::WithMatch`] (an object: the root's members plus
    /// `matchedToken`), e.g. for `$`.
    ScopeRoot,
}

/// Why an expression did not compile or did not evaluate.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum JsonPathError {
    /// The expression is not valid in Newtonsoft's JSONPath dialect.
    #[error("expression {expression} is not valid JSONPath: {message} (at character {position})")]
    Syntax {
        /// The expression as written.
        expression: String,
        /// 1-based character position of the problem.
        position: usize,
        /// What is wrong and what is expected.
        message: String,
    },
    /// `SelectToken` found more than one token.
    #[error("expression {expression} returned more than one token; make it select a single value")]
    MultipleTokens {
        /// The expression as written.
        expression: String,
    },
    /// A negative array index met an array (Newtonsoft throws `ArgumentOutOfRangeException`).
    #[error(
        "expression {expression} uses the negative array index {index}, which fails on arrays; \
         use a slice such as [{index}:] to count from the end"
    )]
    NegativeIndex {
        /// The expression as written.
        expression: String,
        /// The index.
        index: i32,
    },
    /// A filter comparison had to convert a value to the other side's type and could not
    /// (Newtonsoft throws `FormatException`).
    #[error(
        "expression {expression} cannot convert {detail} in a filter comparison; \
         compare strings with quoted strings and numbers with numbers"
    )]
    Conversion {
        /// The expression as written.
        expression: String,
        /// What could not be converted.
        detail: String,
    },
    /// `=~` met a pattern from the document that is not a usable `/pattern/flags` regex.
    #[error(
        "expression {expression} matches against the regular expression {pattern:?} from the document, which is unusable: {reason}"
    )]
    Regex {
        /// The expression as written.
        expression: String,
        /// The pattern text found in the document.
        pattern: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// The result is an object member rather than a value, which only happens when a filter
    /// applied to an object matches without reading the member (e.g. `$.obj[?(@)]`).
    #[error(
        "expression {expression} selected object members rather than values (a filter on an object \
         tests its members); filter arrays, or test a member with @.name"
    )]
    PropertyToken {
        /// The expression as written.
        expression: String,
    },
    /// Evaluating took more steps than any mapping needs: repeated `..` scans multiply the
    /// work combinatorially (Newtonsoft would run for minutes).
    #[error(
        "expression {expression} needed more than {limit} evaluation steps on this message; use fewer recursive descents (..)"
    )]
    TooMuchWork {
        /// The expression as written.
        expression: String,
        /// The step budget.
        limit: u64,
    },
}

impl JsonPath {
    /// Compiles `text`. Invalid syntax is [`JsonPathError::Syntax`].
    pub fn compile(text: &str) -> Result<JsonPath, JsonPathError> {
        let steps = parser::parse(text).map_err(|e| {
            let offset = e.offset.min(text.len());
            let position = text.char_indices().take_while(|&(i, _)| i < offset).count() + 1;
            JsonPathError::Syntax {
                expression: text.to_owned(),
                position,
                message: e.message,
            }
        })?;
        let simple = steps.iter().all(ast::Step::is_single);
        let exists_scan = fast_scan::ExistsScan::plan(&steps);
        Ok(JsonPath {
            text: text.into(),
            steps: steps.into_boxed_slice(),
            simple,
            exists_scan,
        })
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// `SelectTokens`: every match in `root`, in document order.
    ///
    /// Lossy convenience over [`JsonPath::try_select_all`]: when evaluation fails (a negative
    /// index on an array, an impossible comparison, a member-token result) it returns no
    /// matches. Prefer `try_select_all` where the error can be reported.
    pub fn select_all<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        self.try_select_all(root).unwrap_or_default()
    }

    /// `SelectTokens`: every match in `root`, in document order, or the error Newtonsoft would
    /// have thrown while enumerating them.
    pub fn try_select_all<'a>(&self, root: &'a Value) -> Result<Vec<&'a Value>, JsonPathError> {
        self.select_all_as(root, |v| v)
    }

    /// [`JsonPath::try_select_all`] storing each match as `wrap(match)`, straight into the
    /// vector returned (no second vector to convert).
    pub(crate) fn select_all_as<'a, T>(
        &self,
        root: &'a Value,
        wrap: impl Fn(&'a Value) -> T,
    ) -> Result<Vec<T>, JsonPathError> {
        let mut out = Vec::new();
        if let Some(scan) = &self.exists_scan {
            if scan.run(root, &[], &mut out, &|v, _| wrap(v)) {
                return Ok(out);
            }
            out.clear();
        }
        let (ctx, start) = context(Scope::Token(root));
        let mut member = false;
        let result = if self.simple {
            eval::run_simple(&ctx, &self.steps, start).map(|found| {
                if let Some(v) = found.and_then(Tok::value) {
                    out.push(wrap(v));
                }
                Flow::Continue
            })
        } else {
            eval::run(&ctx, &self.steps, start, &mut |tok| match tok.value() {
                Some(v) => {
                    out.push(wrap(v));
                    Ok(Flow::Continue)
                }
                None => {
                    member = true;
                    Ok(Flow::Stop)
                }
            })
        };
        result.map_err(|e| self.eval_error(e))?;
        if member {
            return Err(JsonPathError::PropertyToken {
                expression: self.text.to_string(),
            });
        }
        Ok(out)
    }

    /// `SelectTokens` for the common type-match shape `$..[?(@a && @b.c)]`, taking from each
    /// match its first member named like each of `capture` (at most [`MAX_CAPTURE`] distinct
    /// names) while scanning: `wrap(match, captured)` with `captured[i]` what a lookup of
    /// `capture[i]` on the match gives. `None` when the path has another shape, the document is
    /// too deep for the direct scan, or there are too many names: then use
    /// [`JsonPath::try_select_all`] and look members up on each match.
    pub(crate) fn select_all_capturing<'a, T>(
        &self,
        root: &'a Value,
        capture: &[Box<str>],
        wrap: impl Fn(&'a Value, &Captured<'a>) -> T,
    ) -> Option<Matches<T>> {
        let scan = self.exists_scan.as_ref()?;
        if capture.len() > MAX_CAPTURE {
            return None;
        }
        let mut out = Matches::new();
        scan.run(root, capture, &mut out, &wrap).then_some(out)
    }

    /// `SelectTokens` in any scope, e.g. the overlay of a [`Scope::WithMatch`].
    pub fn select_nodes<'a>(&self, scope: Scope<'a>) -> Result<Vec<Node<'a>>, JsonPathError> {
        let (ctx, start) = context(scope);
        let mut out = Vec::new();
        self.evaluate(&ctx, start, &mut |tok| {
            out.push(tok);
            Ok(Flow::Continue)
        })?;
        out.into_iter().map(|tok| self.node(tok)).collect()
    }

    /// `SelectToken`: at most one token in `scope`; `Ok(None)` when there is none, and
    /// [`JsonPathError::MultipleTokens`] when there is more than one.
    pub fn select_one<'a>(&self, scope: Scope<'a>) -> Result<Option<Node<'a>>, JsonPathError> {
        let (ctx, start) = context(scope);
        if self.simple {
            return match eval::run_simple(&ctx, &self.steps, start) {
                Ok(found) => found.map(|tok| self.node(tok)).transpose(),
                Err(e) => Err(self.eval_error(e)),
            };
        }
        let mut first: Option<Tok<'a>> = None;
        let mut multiple = false;
        self.evaluate(&ctx, start, &mut |tok| {
            if first.is_some() {
                multiple = true;
                return Ok(Flow::Stop);
            }
            first = Some(tok);
            Ok(Flow::Continue)
        })?;
        if multiple {
            return Err(JsonPathError::MultipleTokens {
                expression: self.text.to_string(),
            });
        }
        first.map(|tok| self.node(tok)).transpose()
    }

    fn evaluate<'a>(
        &self,
        ctx: &Ctx<'a>,
        start: Tok<'a>,
        sink: eval::Sink<'_, 'a>,
    ) -> Result<(), JsonPathError> {
        let result: EResult<Flow> = if self.simple {
            match eval::run_simple(ctx, &self.steps, start) {
                Ok(Some(tok)) => sink(tok),
                Ok(None) => Ok(Flow::Continue),
                Err(e) => Err(e),
            }
        } else {
            eval::run(ctx, &self.steps, start, sink)
        };
        result.map(|_| ()).map_err(|e| self.eval_error(e))
    }

    fn node<'a>(&self, tok: Tok<'a>) -> Result<Node<'a>, JsonPathError> {
        match tok {
            Tok::Root => Ok(Node::ScopeRoot),
            Tok::Prop(..) => Err(JsonPathError::PropertyToken {
                expression: self.text.to_string(),
            }),
            Tok::Val(v) | Tok::Obj(v, _) | Tok::Arr(v, _) | Tok::Scalar(v) => Ok(Node::Value(v)),
        }
    }

    fn eval_error(&self, error: EvalError) -> JsonPathError {
        let expression = self.text.to_string();
        match error {
            EvalError::NegativeIndex(index) => JsonPathError::NegativeIndex { expression, index },
            EvalError::Convert(detail) => JsonPathError::Conversion { expression, detail },
            EvalError::Regex { pattern, reason } => JsonPathError::Regex {
                expression,
                pattern,
                reason,
            },
            EvalError::TooMuchWork => JsonPathError::TooMuchWork {
                expression,
                limit: eval::STEP_BUDGET,
            },
        }
    }
}

fn context(scope: Scope<'_>) -> (Ctx<'_>, Tok<'_>) {
    match scope {
        Scope::Token(v) => (
            Ctx {
                depth: Cell::new(0),
                steps_left: Cell::new(eval::STEP_BUDGET),
                root: Tok::Val(v),
                overlay: None,
            },
            Tok::Val(v),
        ),
        Scope::WithMatch { root, matched } => (
            Ctx {
                depth: Cell::new(0),
                steps_left: Cell::new(eval::STEP_BUDGET),
                root: Tok::Root,
                overlay: Some((sonic_rs::JsonContainerTrait::as_object(root), matched)),
            },
            Tok::Root,
        ),
    }
}
