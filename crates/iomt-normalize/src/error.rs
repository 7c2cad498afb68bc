//! Errors of normalization: a mapping that cannot load (blocking) and a message that cannot be
//! normalized (non-blocking).

use std::fmt;

use iomt_expr::ExprError;
use iomt_model::ErrorClass;
pub use iomt_model::TemplateError;
use iomt_model::mapping_error::render_errors;
use iomt_model::spanned::Pos;
use thiserror::Error;

/// A device mapping that failed to load, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("device mapping is invalid ({} error(s)); fix each and load it again:\n{}", .errors.len(), render_errors(.errors))]
pub struct DeviceMappingError {
    /// Every problem, in file order.
    pub errors: Vec<TemplateError>,
}

/// Which template (and which of its expressions) an error comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The template's index in the collection.
    pub template_index: usize,
    /// The template's `typeName`.
    pub type_name: String,
    /// Where the expression (or the template) is in the mapping file.
    pub pos: Option<Pos>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "template {} ({})", self.template_index, self.type_name)?;
        if let Some(pos) = self.pos {
            write!(f, " at {pos}")?;
        }
        Ok(())
    }
}

/// Why one device message produced no measurements. The message is set aside (dead-lettered)
/// and the next one is processed normally.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum NormalizeError {
    /// The message body is not JSON.
    #[error("invalid event message: cannot be parsed into a json object ({reason}); send json")]
    InvalidJson {
        /// The parser's explanation.
        reason: String,
    },
    /// The token handed to the templates is not a JSON object.
    #[error("device message must be a json object, got {kind}")]
    NotAnObject {
        /// The JSON type found.
        kind: &'static str,
    },
    /// The template has a blank type-match expression.
    #[error(
        "an expression must be set for [TypeMatchExpression] in {origin}; add one to the template"
    )]
    MissingTypeMatch {
        /// The template.
        origin: Origin,
    },
    /// A required value is absent, null or blank in the message.
    #[error("unable to extract required value for [{field}] using {}{}; {origin}: check the expression against the device data", .expressions.join(","), render_causes(.causes))]
    RequiredValueMissing {
        /// The template.
        origin: Origin,
        /// `DeviceIdExpression`, `TimestampExpression`, `CorrelationIdExpression` or the
        /// `valueName`.
        field: String,
        /// The expressions tried, in order.
        expressions: Vec<String>,
        /// What went wrong with each value found (null, blank, not convertible).
        causes: Vec<String>,
    },
    /// An expression failed on this message (several tokens where one was expected, a function
    /// given the wrong type).
    #[error("expression {expression} for [{field}] failed: {source}; {origin}")]
    Expression {
        /// The template.
        origin: Origin,
        /// The field whose expression failed (or `TypeMatchExpression`).
        field: String,
        /// The expression text.
        expression: String,
        /// The engine's error.
        source: Box<ExprError>,
    },
}

fn render_causes(causes: &[String]) -> String {
    if causes.is_empty() {
        String::new()
    } else {
        format!(" ({})", causes.join("; "))
    }
}

impl NormalizeError {
    /// The original's class for this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            NormalizeError::InvalidJson { .. } => ErrorClass::InvalidDataFormatException,
            NormalizeError::NotAnObject { .. } => ErrorClass::NormalizationDataMappingException,
            NormalizeError::MissingTypeMatch { .. }
            | NormalizeError::RequiredValueMissing { .. } => ErrorClass::IncompatibleDataException,
            NormalizeError::Expression { .. } => ErrorClass::TemplateExpressionException,
        }
    }

    /// The template the error comes from, if any.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            NormalizeError::InvalidJson { .. } | NormalizeError::NotAnObject { .. } => None,
            NormalizeError::MissingTypeMatch { origin }
            | NormalizeError::RequiredValueMissing { origin, .. }
            | NormalizeError::Expression { origin, .. } => Some(origin),
        }
    }
}
