//! Normalization: device messages in, measurements out, through the device templates of a
//! `devicecontent.json` written for the original connector.
//!
//! # Layout
//! * [`template`]: loading the mapping into one internal form per template (with every error,
//!   positioned) and the registry of template types.
//! * `extract`: the extraction algorithm, shared by all template types.
//! * [`envelope`]: the `{Body, Properties, SystemProperties}` event token the templates see.
//! * `convert`: found values to measurement text and timestamps, as .NET would write them.
//!
//! # Design decisions
//! * Pure and synchronous: no I/O, no clock. The CLI, the conformance suite, the mapping
//!   debugger and the service call the same [`DeviceMapping::normalize`].
//! * A message is all or nothing: if any template fails on it, it yields an error and no
//!   measurements (the original could emit part of a message before failing).
//! * A bad message never affects the next one: every failure is a value, never a panic.

mod convert;
pub mod envelope;
mod error;
mod extract;
pub mod template;

use iomt_expr::Value;
use iomt_model::Measurement;

pub use envelope::{EnvelopeBuilder, parse_token};
pub use error::{DeviceMappingError, NormalizeError, Origin, TemplateError};
pub use template::{ContentTemplate, DeviceMapping, MatchContext, REGISTRY, TemplateType};

/// How one template fared on one message, for the mapping debugger.
#[derive(Debug)]
pub struct TemplateOutcome {
    /// The template's index.
    pub template_index: usize,
    /// The template's `typeName`.
    pub type_name: String,
    /// How many measurements it produced (its type-match hits).
    pub matches: usize,
}

impl DeviceMapping {
    /// Normalizes one event token: every template, in order, on the same token.
    pub fn normalize(&self, token: &Value) -> Result<Vec<Measurement>, NormalizeError> {
        let mut out = Vec::new();
        self.normalize_into(token, &mut out)?;
        Ok(out)
    }

    /// Like [`DeviceMapping::normalize`], appending to `out`; on error `out` is left as it was.
    pub fn normalize_into(
        &self,
        token: &Value,
        out: &mut Vec<Measurement>,
    ) -> Result<(), NormalizeError> {
        let start = out.len();
        check_object(token)?;
        for template in self.templates() {
            if let Err(e) = template.extract(token, out) {
                out.truncate(start);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Normalizes and reports which templates matched, for the mapping debugger.
    pub fn normalize_traced(
        &self,
        token: &Value,
    ) -> (
        Result<Vec<Measurement>, NormalizeError>,
        Vec<TemplateOutcome>,
    ) {
        let mut out = Vec::new();
        let mut outcomes = Vec::new();
        if let Err(e) = check_object(token) {
            return (Err(e), outcomes);
        }
        for template in self.templates() {
            match template.extract(token, &mut out) {
                Ok(matches) => outcomes.push(TemplateOutcome {
                    template_index: template.index,
                    type_name: template.type_name.clone(),
                    matches,
                }),
                Err(e) => return (Err(e), outcomes),
            }
        }
        (Ok(out), outcomes)
    }
}

fn check_object(token: &Value) -> Result<(), NormalizeError> {
    use sonic_rs::{JsonType, JsonValueTrait};
    let kind = match token.get_type() {
        JsonType::Object => return Ok(()),
        JsonType::Null => "null",
        JsonType::Boolean => "boolean",
        JsonType::Number => "number",
        JsonType::String => "string",
        JsonType::Array => "array",
    };
    Err(NormalizeError::NotAnObject { kind })
}
