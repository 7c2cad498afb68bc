//! JSONPath in the dialect of Newtonsoft.Json 13 (`JToken.SelectToken` / `SelectTokens`).
//!
//! CONTRACT (implemented by the jsonpath work; keep these signatures):
//!
//! ```ignore
//! pub struct JsonPath { .. }                       // compiled, immutable, Send + Sync
//! impl JsonPath {
//!     pub fn compile(text: &str) -> Result<JsonPath, JsonPathError>;
//!     pub fn text(&self) -> &str;
//!     /// SelectTokens: every match in document order (type matching).
//!     pub fn select_all<'a>(&self, root: &'a Value) -> Vec<&'a Value>;
//!     /// SelectToken: at most one result in `scope`; more than one is
//!     /// `JsonPathError::MultipleTokens`.
//!     pub fn select_one<'a>(&self, scope: Scope<'a>) -> Result<Option<Node<'a>>, JsonPathError>;
//! }
//! pub enum Node<'a> { Value(&'a Value), ScopeRoot }   // ScopeRoot = the virtual WithMatch root
//! ```
