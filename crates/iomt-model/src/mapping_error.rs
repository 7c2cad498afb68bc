//! One problem in a mapping file, as device and FHIR mapping loaders both report it.
//!
//! Both loaders read their files with [`crate::spanned`] and must point users at the same
//! things (template index, `typeName`, field, line and column), so they share this type.

use std::fmt;

use crate::ErrorClass;
use crate::spanned::Pos;

/// One problem in a mapping file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// The error class, as the original named it.
    pub class: ErrorClass,
    /// What is wrong and what to do, lowercase.
    pub message: String,
    /// Where in the file.
    pub pos: Option<Pos>,
    /// The index of the template in the collection's `template` array.
    pub template_index: Option<usize>,
    /// The template's `typeName`, when it has one.
    pub type_name: Option<String>,
    /// The field concerned, as spelled in mapping files (`deviceIdExpression`,
    /// `components[0].value.valueType`).
    pub field: Option<String>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut wrote = false;
        if let Some(index) = self.template_index {
            write!(f, "template {index}")?;
            if let Some(name) = &self.type_name {
                write!(f, " ({name})")?;
            }
            wrote = true;
        }
        if let Some(field) = &self.field {
            write!(f, "{}field {field}", if wrote { ", " } else { "" })?;
            wrote = true;
        }
        if let Some(pos) = self.pos {
            write!(f, "{}{pos}", if wrote { ", " } else { "" })?;
            wrote = true;
        }
        if wrote {
            f.write_str(": ")?;
        }
        f.write_str(&self.message)
    }
}

/// Renders a list of errors one per indented line, for the "mapping is invalid" messages.
pub fn render_errors(errors: &[TemplateError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}
