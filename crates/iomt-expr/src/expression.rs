//! A compiled template expression in either language, behind one interface.

use std::fmt;

use sonic_rs::Value;
use thiserror::Error;

use crate::jmespath::{JmesPath, JmesPathError};
use crate::jsonpath::{Captured, JsonPath, JsonPathError, Matches, Node};
use crate::{MatchToken, Scalar, Scope};

/// The language an expression is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Language {
    /// Newtonsoft-dialect JSONPath (the original's default).
    #[default]
    JsonPath,
    /// JMESPath with the original's custom functions.
    JmesPath,
}

impl Language {
    /// The name used in mapping files: `JsonPath` or `JmesPath`.
    pub fn as_str(self) -> &'static str {
        match self {
            Language::JsonPath => "JsonPath",
            Language::JmesPath => "JmesPath",
        }
    }

    /// Reads a language name as mapping files spell it (case-insensitive).
    pub fn parse(name: &str) -> Option<Language> {
        if name.eq_ignore_ascii_case("JsonPath") {
            Some(Language::JsonPath)
        } else if name.eq_ignore_ascii_case("JmesPath") {
            Some(Language::JmesPath)
        } else {
            None
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an expression did not compile or did not evaluate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExprError {
    /// A JSONPath problem.
    #[error(transparent)]
    JsonPath(#[from] JsonPathError),
    /// A JMESPath problem.
    #[error(transparent)]
    JmesPath(#[from] JmesPathError),
}

#[derive(Debug)]
enum Compiled {
    JsonPath(JsonPath),
    JmesPath(JmesPath),
}

/// An expression compiled once, when its mapping loads.
#[derive(Debug)]
pub struct Expression {
    language: Language,
    compiled: Compiled,
}

impl Expression {
    /// Compiles `text` in `language`.
    pub fn compile(text: &str, language: Language) -> Result<Expression, ExprError> {
        let compiled = match language {
            Language::JsonPath => Compiled::JsonPath(JsonPath::compile(text)?),
            Language::JmesPath => Compiled::JmesPath(JmesPath::compile(text)?),
        };
        Ok(Expression { language, compiled })
    }

    /// The language.
    pub fn language(&self) -> Language {
        self.language
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        match &self.compiled {
            Compiled::JsonPath(p) => p.text(),
            Compiled::JmesPath(p) => p.text(),
        }
    }

    /// The compiled JSONPath, for a JSONPath expression (e.g. to add it to a
    /// [`crate::jsonpath::MemberBatch`]).
    pub fn as_json_path(&self) -> Option<&JsonPath> {
        match &self.compiled {
            Compiled::JsonPath(p) => Some(p),
            Compiled::JmesPath(_) => None,
        }
    }

    /// Every match of a type-match expression in `root`, in document order.
    pub fn select_matches<'a>(&self, root: &'a Value) -> Result<Vec<MatchToken<'a>>, ExprError> {
        match &self.compiled {
            Compiled::JsonPath(p) => Ok(p.select_all_as(root, MatchToken::Borrowed)?),
            Compiled::JmesPath(p) => Ok(p.select_matches(root)?),
        }
    }

    /// [`Expression::select_matches`] that also takes, from each match, its first member named
    /// like each of `names` while scanning (`captured[i]` for `names[i]`, what a member lookup
    /// on the match finds), saving a pass over each match's members. Only the direct scan of
    /// `$..[?(@a && @b.c)]` JSONPath type matches can; `None` for any other expression, for
    /// documents too deep for the direct scan and for more than
    /// [`crate::jsonpath::MAX_CAPTURE`] names: use `select_matches` then. Matches are nodes of
    /// `root`, in the order `select_matches` gives them.
    pub fn select_matches_capturing<'a>(
        &self,
        root: &'a Value,
        names: &[Box<str>],
    ) -> Option<Matches<(&'a Value, Captured<'a>)>> {
        match &self.compiled {
            Compiled::JsonPath(p) => p.select_all_capturing(root, names, |v, c| (v, *c)),
            Compiled::JmesPath(_) => None,
        }
    }

    /// The single value the expression selects in `scope`, `None` when it selects nothing
    /// (JSONPath: no token; JMESPath: `null`).
    pub fn select_one<'a>(&self, scope: Scope<'a>) -> Result<Option<Scalar<'a>>, ExprError> {
        match &self.compiled {
            Compiled::JsonPath(p) => Ok(p.select_one(scope)?.map(|node| match node {
                Node::Value(v) => Scalar::from_value(v),
                Node::ScopeRoot => Scalar::Structured,
            })),
            Compiled::JmesPath(p) => Ok(p.select_one(scope)?),
        }
    }
}
