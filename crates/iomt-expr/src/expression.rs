//! A compiled template expression in either language, behind one interface.

use std::fmt;

use sonic_rs::Value;
use thiserror::Error;

use crate::jmespath::{JmesPath, JmesPathError};
use crate::jsonpath::{JsonPath, JsonPathError, Node};
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

    /// Every match of a type-match expression in `root`, in document order.
    pub fn select_matches<'a>(&self, root: &'a Value) -> Result<Vec<MatchToken<'a>>, ExprError> {
        match &self.compiled {
            Compiled::JsonPath(p) => Ok(p
                .try_select_all(root)?
                .into_iter()
                .map(MatchToken::Borrowed)
                .collect()),
            Compiled::JmesPath(p) => Ok(p.select_matches(root)?),
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
