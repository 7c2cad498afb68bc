//! Expressions that device templates use to find values in device messages.
//!
//! Two languages, both compiled once when mappings load and evaluated many times:
//!
//! * [`jsonpath`]: the dialect of Newtonsoft.Json 13 `SelectToken`/`SelectTokens`, which the
//!   original connector's templates are written in. It is not RFC 9535: `@name` works without a
//!   dot, `[?(@x)]` is an *existence* test (true for `null`, `false`, `0` and `""`), and `..`
//!   scans include the node the scan starts from. No published crate implements it.
//! * [`jmespath`]: standard JMESPath plus the original's eight custom functions (`add`,
//!   `subtract`, `multiply`, `divide`, `pow`, `insertString`, `fromUnixTimestamp`,
//!   `fromUnixTimestampMs`) with the original's integer/float typing.
//!
//! # One document model
//! Both engines read the same parsed document, a [`Value`] (`sonic_rs::Value`, the fastest JSON
//! parser for Rust), without converting it. That matters because a `CalculatedContent` template
//! may mix languages per expression: the type match in JMESPath and the device id in JSONPath
//! read the same scope.
//!
//! # Scopes and the `matchedToken` overlay
//! `CalculatedContent` evaluates its expressions against "a copy of the root with a property
//! `matchedToken` holding the match" (SPEC §4.3 step 4). Copying the root for every match costs
//! more than the rest of normalization, so [`Scope::WithMatch`] is an *overlay*: engines must
//! behave exactly as if evaluating on the materialized object (the root's members in order, minus
//! any existing `matchedToken`, then `matchedToken` appended last), without building it.
//!
//! # Invariants
//! * Parsed documents are never mutated (sonic-rs does not keep member order on mutation).
//! * Evaluation never re-parses an expression and never panics on any input document.

mod expression;
pub mod jmespath;
pub mod jsonpath;
mod scope;

pub use expression::{ExprError, Expression, Language};
pub use scope::{MatchToken, Scalar, Scope};
/// The parsed JSON document type shared by every stage.
pub use sonic_rs::Value;
