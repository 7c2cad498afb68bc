//! JMESPath with the original connector's custom functions.
//!
//! CONTRACT (implemented by the jmespath work; keep these signatures):
//!
//! ```ignore
//! pub struct JmesPath { .. }                       // compiled, immutable, Send + Sync
//! impl JmesPath {
//!     pub fn compile(text: &str) -> Result<JmesPath, JmesPathError>;
//!     pub fn text(&self) -> &str;
//!     /// Type matching: a projection yields each non-null element, any other non-null
//!     /// result is one match, null is no match.
//!     pub fn select_matches<'a>(&self, root: &'a Value) -> Result<Vec<MatchToken<'a>>, JmesPathError>;
//!     /// One value in `scope`: null is `None`; a projection with more than one element is
//!     /// `JmesPathError::MultipleTokens`.
//!     pub fn select_one<'a>(&self, scope: Scope<'a>) -> Result<Option<Scalar<'a>>, JmesPathError>;
//! }
//! ```
