//! Device templates: loading `devicecontent.json` and the loaded form every type shares.
//!
//! # One internal form
//! As in the original, every template type loads into the same [`ContentTemplate`]: a type
//! match, id and timestamp expressions, value expressions, and the evaluation context. The
//! types differ only in how their JSON is read (which members exist, which are required,
//! whether expressions may carry a language) and in the context their expressions see.
//!
//! # Adding a template type
//! Write one module with a `pub(crate) const TYPE: TemplateType` whose `load` reads the
//! template object with a [`Loader`], and add it to [`REGISTRY`]. `docs/extending.md` walks
//! through it.
//!
//! # What must hold
//! * Loading reports every error it finds, each with its template index, `typeName`, field and
//!   line/column; a mapping with any error is not used for processing.
//! * Every expression is compiled here; evaluation never parses.

pub(crate) mod calculated;
pub(crate) mod iot_central;
pub(crate) mod iot_hub;
pub(crate) mod json_path;
pub mod loader;

use iomt_expr::jsonpath::MemberBatch;
use iomt_expr::{Expression, Language};
use iomt_model::ErrorClass;
use iomt_model::spanned::{self, Node, ObjectReader, Pos};

use crate::error::{DeviceMappingError, TemplateError};
pub use loader::{ExpressionForm, Loader};

/// A compiled expression and where it is written.
#[derive(Debug)]
pub struct TemplateExpr {
    /// The compiled expression.
    pub expression: Expression,
    /// Where it is in the mapping file.
    pub pos: Pos,
    /// Its slot in the template's member batch, when it is a member-only JSONPath (`$.a.b`)
    /// resolved there instead of on its own.
    pub(crate) member_slot: Option<usize>,
}

/// One `values[]` entry.
#[derive(Debug)]
pub struct ValueTemplate {
    /// `valueName`: the measurement property's name.
    pub name: String,
    /// `valueExpression`; `None` when blank (then never found).
    pub expression: Option<TemplateExpr>,
    /// Whether a message without this value is an error.
    pub required: bool,
}

/// What the non-type-match expressions of a template are evaluated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchContext {
    /// The matched token itself (`JsonPathContent`, `IotJsonPathContent`,
    /// `IotCentralJsonPathContent`): nothing outside the match is reachable.
    MatchedToken,
    /// The whole message with the match added as `matchedToken` (`CalculatedContent`).
    RootWithMatchedToken,
}

/// A loaded device template of any type.
#[derive(Debug)]
pub struct ContentTemplate {
    /// Position in the collection's `template` array.
    pub index: usize,
    /// The template type, spelled canonically (`CalculatedContent`, …).
    pub template_type: &'static str,
    /// Where the template object starts.
    pub pos: Pos,
    /// `typeName`: the measurement type produced.
    pub type_name: String,
    /// `typeMatchExpression`; `None` when blank (every message then fails, as in the original).
    pub type_match: Option<TemplateExpr>,
    /// Device id expressions, tried in order (empty when blank).
    pub device_id: Vec<TemplateExpr>,
    /// Timestamp expressions, tried in order (IoT Hub: creation time, then enqueued time).
    pub timestamp: Vec<TemplateExpr>,
    /// `patientIdExpression`.
    pub patient_id: Option<TemplateExpr>,
    /// `encounterIdExpression`.
    pub encounter_id: Option<TemplateExpr>,
    /// `correlationIdExpression`; once present, required in every match.
    pub correlation_id: Option<TemplateExpr>,
    /// `values`, in template order.
    pub values: Vec<ValueTemplate>,
    /// The context of the non-type-match expressions.
    pub context: MatchContext,
    /// The member-only JSONPath expressions of the template (all but the type match), resolved
    /// together once per match (see `extract`).
    pub(crate) members: MemberBatch,
}

impl ContentTemplate {
    /// Puts every member-only JSONPath expression into the template's member batch.
    fn plan_member_lookups(mut self) -> ContentTemplate {
        let mut batch = MemberBatch::new();
        let exprs = self
            .device_id
            .iter_mut()
            .chain(self.timestamp.iter_mut())
            .chain(self.correlation_id.iter_mut())
            .chain(self.patient_id.iter_mut())
            .chain(self.encounter_id.iter_mut())
            .chain(self.values.iter_mut().filter_map(|v| v.expression.as_mut()));
        for expr in exprs {
            expr.member_slot = expr.expression.as_json_path().and_then(|p| batch.add(p));
        }
        self.members = batch;
        self
    }
}

/// A template type: how to recognise its name and how to load it.
pub struct TemplateType {
    /// The name the original's factory targets. A `templateType` `t` is accepted when it equals
    /// this name, or this name equals `t + "Template"`, ignoring case.
    pub name: &'static str,
    /// The canonical spelling reported back to users.
    pub canonical: &'static str,
    /// Reads the inner `template` object.
    pub load: fn(&mut Loader<'_>, &Node) -> Option<ContentTemplate>,
}

impl TemplateType {
    /// Whether `template_type` names this type.
    pub fn accepts(&self, template_type: &str) -> bool {
        name_matches(self.name, template_type)
    }
}

fn name_matches(target: &str, given: &str) -> bool {
    target.eq_ignore_ascii_case(given)
        || (target.len() == given.len() + "Template".len()
            && target[..given.len()].eq_ignore_ascii_case(given)
            && target[given.len()..].eq_ignore_ascii_case("Template"))
}

/// The device template types, in the order the original offers a template to them.
pub const REGISTRY: &[TemplateType] = &[
    json_path::TYPE,
    iot_hub::TYPE,
    iot_central::TYPE,
    calculated::TYPE,
];

const COLLECTION: &str = "CollectionContentTemplate";

/// A loaded `devicecontent.json`: the templates in file order.
#[derive(Debug, Default)]
pub struct DeviceMapping {
    templates: Vec<ContentTemplate>,
    warnings: Vec<TemplateError>,
}

impl DeviceMapping {
    /// Loads a device mapping; any error rejects the whole mapping.
    pub fn from_json_str(text: &str) -> Result<DeviceMapping, DeviceMappingError> {
        let (mapping, errors) = Self::load_lenient(text);
        if errors.is_empty() {
            Ok(mapping)
        } else {
            Err(DeviceMappingError { errors })
        }
    }

    /// Loads what can be loaded and returns every error found: for validation and the mapping
    /// debugger, never for processing.
    pub fn load_lenient(text: &str) -> (DeviceMapping, Vec<TemplateError>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut templates = Vec::new();
        let root = match spanned::parse(text) {
            Ok(root) => root,
            Err(e) => {
                errors.push(TemplateError {
                    class: ErrorClass::InvalidTemplateException,
                    message: format!("device mapping is not valid json: {}", e.message),
                    pos: Some(e.pos),
                    template_index: None,
                    type_name: None,
                    field: None,
                });
                return (DeviceMapping::default(), errors);
            }
        };
        let root_error = |message: String, pos: Pos| TemplateError {
            class: ErrorClass::InvalidTemplateException,
            message,
            pos: Some(pos),
            template_index: None,
            type_name: None,
            field: Some("templateType".into()),
        };
        let Some(mut container) = ObjectReader::new(&root) else {
            errors.push(root_error(
                format!("expected TemplateType value {COLLECTION}, actual Not Found; the file must be a json object {{\"templateType\": \"CollectionContent\", \"template\": [...]}}"),
                root.pos,
            ));
            return (DeviceMapping::default(), errors);
        };
        let template_type = container.take("templateType");
        match template_type.and_then(|(_, v)| v.as_str()) {
            Some(t) if name_matches(COLLECTION, t) => {}
            other => {
                let pos = template_type.map_or(root.pos, |(k, _)| k.pos);
                errors.push(root_error(
                    format!(
                        "expected TemplateType value {COLLECTION}, actual {}; set \"templateType\": \"CollectionContent\"",
                        other.unwrap_or("Not Found")
                    ),
                    pos,
                ));
                return (DeviceMapping::default(), errors);
            }
        }
        let Some(items) = container.take("template").and_then(|(_, v)| v.as_array()) else {
            errors.push(TemplateError {
                field: Some("template".into()),
                ..root_error(
                    format!("expected an array for the template property value for template type {COLLECTION}"),
                    root.pos,
                )
            });
            return (DeviceMapping::default(), errors);
        };
        for (index, item) in items.iter().enumerate() {
            let mut loader = Loader::new(&mut errors, &mut warnings, index);
            if let Some(template) = load_one(&mut loader, item) {
                templates.push(template);
            }
        }
        (
            DeviceMapping {
                templates,
                warnings,
            },
            errors,
        )
    }

    /// The templates, in file order.
    pub fn templates(&self) -> &[ContentTemplate] {
        &self.templates
    }

    #[cfg(test)]
    pub(crate) fn templates_mut(&mut self) -> &mut [ContentTemplate] {
        &mut self.templates
    }

    /// Things that load but probably do not do what the author meant (ignored members).
    pub fn warnings(&self) -> &[TemplateError] {
        &self.warnings
    }
}

fn load_one(loader: &mut Loader<'_>, item: &Node) -> Option<ContentTemplate> {
    let Some(mut reader) = ObjectReader::new(item) else {
        loader.error(
            ErrorClass::InvalidTemplateException,
            format!("each entry of \"template\" must be an object with templateType and template, got {}", item.kind()),
            item.pos,
            None,
        );
        return None;
    };
    let given = match reader.take("templateType") {
        Some((_, v)) => match v.as_str() {
            Some(s) => s.to_owned(),
            None => {
                loader.error(
                    ErrorClass::InvalidTemplateException,
                    "templateType must be a string".into(),
                    v.pos,
                    Some("templateType"),
                );
                return None;
            }
        },
        None => {
            loader.error(
                ErrorClass::TemplateNotFoundException,
                "no match found for template type Not Found; add \"templateType\" (CalculatedContent, JsonPathContent, IotJsonPathContent or IotCentralJsonPathContent)".into(),
                item.pos,
                Some("templateType"),
            );
            return None;
        }
    };
    let Some(template_type) = REGISTRY.iter().find(|t| t.accepts(&given)) else {
        let known: Vec<_> = REGISTRY.iter().map(|t| t.canonical).collect();
        loader.error(
            ErrorClass::TemplateNotFoundException,
            format!(
                "no match found for template type {given}; use one of {}",
                known.join(", ")
            ),
            item.pos,
            Some("templateType"),
        );
        return None;
    };
    let Some((_, inner)) = reader.take("template") else {
        loader.error(
            ErrorClass::InvalidTemplateException,
            format!(
                "expected an object for the template property value for template type {}",
                template_type.name
            ),
            item.pos,
            Some("template"),
        );
        return None;
    };
    if inner.as_object().is_none() {
        loader.error(
            ErrorClass::InvalidTemplateException,
            format!(
                "expected an object for the template property value for template type {}",
                template_type.name
            ),
            inner.pos,
            Some("template"),
        );
        return None;
    }
    (template_type.load)(loader, inner).map(ContentTemplate::plan_member_lookups)
}

/// Compiles one expression, reporting a failure as a template error.
pub(crate) fn compile(
    loader: &mut Loader<'_>,
    text: &str,
    language: Language,
    pos: Pos,
    field: &str,
) -> Option<TemplateExpr> {
    match Expression::compile(text, language) {
        Ok(expression) => Some(TemplateExpr {
            expression,
            pos,
            member_slot: None,
        }),
        Err(e) => {
            loader.error(
                ErrorClass::InvalidTemplateException,
                format!("{language} expression {text:?} does not compile: {e}"),
                pos,
                Some(field),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
