//! Loading `fhirmapping.json`: a `CollectionFhir` document whose `template` array holds one
//! template per measurement type.
//!
//! Read with the spanned JSON reader ([`iomt_model::spanned`]) so that every error names the
//! template index, its `typeName`, the field, and the line and column — and *every* error is
//! reported at once.
//!
//! # Rules (SPEC §3, §7.1)
//! * The root is `{"templateType": "CollectionFhir" | "CollectionFhirTemplate", "template": [...]}`
//!   (names compared case-insensitively); anything else is one root error.
//! * Each entry's `templateType` selects a kind from [`REGISTRY`]; its `template` must be an
//!   object.
//! * Template objects are strict: unknown members are errors, and so are unknown members in
//!   `codes`, `category` and `components` entries. Value objects (`value`,
//!   `components[].value`) are lenient, as in the original: unknown members are ignored.
//! * Type names must be unique case-insensitively and not blank; the first of a duplicate pair
//!   stays registered.
//! * Loading is partial: [`FhirTemplates::load_lenient`] returns the valid templates with the
//!   errors; [`FhirTemplates::from_json_str`] fails when there is any error, as the original's
//!   `EnsureValid` does.
//!
//! # Deviations (stricter than the original, so that problems surface at load, not per group)
//! * `periodInterval` other than `-1`, `0`, `60`, `1440` (or their enum names) is rejected at
//!   load; the original accepted any integer and failed on every group.
//! * A SampledData value needs a `defaultPeriod` of at least 0.0001 ms; the original failed on
//!   every group without one and looped forever on `0`.
//! * A component needs a `value` with a `valueName`; the original crashed on every group
//!   without one.

use std::sync::Arc;

use iomt_model::ErrorClass;
use iomt_model::spanned::{self, Node, NodeValue, ObjectReader, Pos};

use super::{FhirTemplate, FhirTemplates, code_value};
use crate::error::{FhirMappingError, TemplateError};
use crate::observation::model::Coding;

/// One FHIR template kind known to the loader.
pub(crate) struct TemplateKind {
    /// The original's factory target name, e.g. `CodeValueFhirTemplate`; `templateType` may
    /// also omit the `Template` suffix.
    pub name: &'static str,
    /// The spelling shown in messages, e.g. `CodeValueFhir`.
    pub canonical: &'static str,
    /// Reads the inner `template` object.
    pub load: fn(&mut Loader<'_>, &Node) -> Option<Arc<dyn FhirTemplate>>,
}

/// Every FHIR template kind. Adding a kind: one module with a `KIND`, and one line here.
pub(crate) const REGISTRY: &[TemplateKind] = &[code_value::KIND];

const COLLECTION: &str = "CollectionFhirTemplate";

fn name_matches(target: &str, given: &str) -> bool {
    target.eq_ignore_ascii_case(given)
        || (target.len() == given.len() + "Template".len()
            && target.is_char_boundary(given.len())
            && target[..given.len()].eq_ignore_ascii_case(given)
            && target[given.len()..].eq_ignore_ascii_case("Template"))
}

fn pascal(field: &str) -> String {
    let mut c = field.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// Reads one template, recording errors and warnings with the template's index and name.
pub(crate) struct Loader<'a> {
    errors: &'a mut Vec<TemplateError>,
    warnings: &'a mut Vec<TemplateError>,
    index: usize,
    type_name: Option<String>,
}

impl<'a> Loader<'a> {
    fn new(
        errors: &'a mut Vec<TemplateError>,
        warnings: &'a mut Vec<TemplateError>,
        index: usize,
    ) -> Loader<'a> {
        Loader {
            errors,
            warnings,
            index,
            type_name: None,
        }
    }

    /// How many errors were recorded so far (for all templates).
    pub fn error_count(&self) -> usize {
        self.errors.len()
    }

    /// Records the `typeName` once known, so later errors name it.
    pub fn set_type_name(&mut self, name: &str) {
        self.type_name = Some(name.to_owned());
    }

    fn make(&self, message: String, pos: Pos, field: Option<&str>) -> TemplateError {
        TemplateError {
            class: ErrorClass::InvalidTemplateException,
            message,
            pos: Some(pos),
            template_index: Some(self.index),
            type_name: self.type_name.clone(),
            field: field.map(str::to_owned),
        }
    }

    /// Records an error.
    pub fn error(&mut self, message: String, pos: Pos, field: &str) {
        let e = self.make(message, pos, Some(field));
        self.errors.push(e);
    }

    /// Records a warning: the template loads, but something in it has no effect.
    pub fn warn(&mut self, message: String, pos: Pos, field: &str) {
        let e = self.make(message, pos, Some(field));
        self.warnings.push(e);
    }

    /// Reports a missing required member.
    pub fn missing(&mut self, pos: Pos, path: &str, field: &str) {
        self.error(
            format!(
                "required property '{}' not found in json; add \"{field}\" to {}",
                pascal(field),
                if path.is_empty() {
                    "the template"
                } else {
                    path
                }
            ),
            pos,
            &join(path, field),
        );
    }

    /// Reports every member that no field took.
    pub fn finish(&mut self, reader: &ObjectReader<'_>, path: &str) {
        let unknown: Vec<_> = reader.unknown().cloned().collect();
        for key in unknown {
            let context = if path.is_empty() {
                "the template"
            } else {
                path
            };
            self.error(
                format!(
                    "could not find member '{}' on {context}; remove it or fix its spelling",
                    key.name
                ),
                key.pos,
                &join(path, &key.name),
            );
        }
    }

    /// A string value; Newtonsoft converts numbers and booleans where a string is expected.
    pub fn string_value(&mut self, v: &Node, field: &str) -> Option<String> {
        match &v.value {
            NodeValue::String(s) => Some(s.clone()),
            NodeValue::Number(n) => Some(n.clone()),
            NodeValue::Bool(b) => Some(if *b { "True" } else { "False" }.to_owned()),
            _ => {
                self.error(
                    format!("{field} must be a string, got {}", v.kind()),
                    v.pos,
                    field,
                );
                None
            }
        }
    }

    /// An optional string member (`null` is absent).
    pub fn optional_string(
        &mut self,
        reader: &mut ObjectReader<'_>,
        path: &str,
        field: &str,
    ) -> Option<(String, Pos)> {
        let (_, v) = reader.take_non_null(field)?;
        self.string_value(v, &join(path, field)).map(|s| (s, v.pos))
    }

    /// A list of codes `[{code, system, display}]`; `strict` reports unknown members.
    pub fn codes(&mut self, node: &Node, path: &str, strict: bool) -> Vec<Coding> {
        let Some(items) = node.as_array() else {
            self.error(
                format!(
                    "{path} must be an array of {{code, system, display}}, got {}",
                    node.kind()
                ),
                node.pos,
                path,
            );
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let here = format!("{path}[{i}]");
            let Some(mut r) = ObjectReader::new(item) else {
                self.error(
                    format!(
                        "{here} must be an object {{code, system, display}}, got {}",
                        item.kind()
                    ),
                    item.pos,
                    &here,
                );
                continue;
            };
            let code = self.optional_string(&mut r, &here, "code").map(|(s, _)| s);
            let system = self
                .optional_string(&mut r, &here, "system")
                .map(|(s, _)| s);
            let display = self
                .optional_string(&mut r, &here, "display")
                .map(|(s, _)| s);
            if strict {
                self.finish(&r, &here);
            }
            out.push(Coding::new(
                system.as_deref(),
                code.as_deref(),
                display.as_deref(),
            ));
        }
        out
    }
}

/// `path.field`, or `field` at the top.
pub(crate) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn root_error(message: String, pos: Pos, field: &str) -> TemplateError {
    TemplateError {
        class: ErrorClass::InvalidTemplateException,
        message,
        pos: Some(pos),
        template_index: None,
        type_name: None,
        field: Some(field.to_owned()),
    }
}

impl FhirTemplates {
    /// Loads a FHIR mapping, failing with every error when it has any (see the module docs).
    ///
    /// # Errors
    /// [`FhirMappingError`] listing every problem with its position.
    pub fn from_json_str(text: &str) -> Result<FhirTemplates, FhirMappingError> {
        let (templates, errors) = Self::load_lenient(text);
        if errors.is_empty() {
            Ok(templates)
        } else {
            Err(FhirMappingError { errors })
        }
    }

    /// Loads what is valid in a FHIR mapping and returns the errors next to it, as the
    /// original's collection factory does (the mapping debugger shows both).
    pub fn load_lenient(text: &str) -> (FhirTemplates, Vec<TemplateError>) {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut set = FhirTemplates::new();
        let root = match spanned::parse(text) {
            Ok(root) => root,
            Err(e) => {
                errors.push(TemplateError {
                    field: None,
                    ..root_error(
                        format!("fhir mapping is not valid json: {}", e.message),
                        e.pos,
                        "",
                    )
                });
                return (set, errors);
            }
        };
        let Some(mut container) = ObjectReader::new(&root) else {
            errors.push(root_error(
                format!(
                    "expected TemplateType value {COLLECTION}, actual Not Found; the file must be a json object {{\"templateType\": \"CollectionFhir\", \"template\": [...]}}"
                ),
                root.pos,
                "templateType",
            ));
            return (set, errors);
        };
        let template_type = container.take("templateType");
        match template_type.and_then(|(_, v)| v.as_str()) {
            Some(t) if name_matches(COLLECTION, t) => {}
            other => {
                let pos = template_type.map_or(root.pos, |(k, _)| k.pos);
                errors.push(root_error(
                    format!(
                        "expected TemplateType value {COLLECTION}, actual {}; set \"templateType\": \"CollectionFhir\"",
                        other.unwrap_or("Not Found")
                    ),
                    pos,
                    "templateType",
                ));
                return (set, errors);
            }
        }
        let Some(items) = container.take("template").and_then(|(_, v)| v.as_array()) else {
            errors.push(root_error(
                format!(
                    "expected an array for the template property value for template type {COLLECTION}"
                ),
                root.pos,
                "template",
            ));
            return (set, errors);
        };
        for (index, item) in items.iter().enumerate() {
            let mut loader = Loader::new(&mut errors, &mut warnings, index);
            let Some((template, name_pos)) = load_one(&mut loader, item) else {
                continue;
            };
            if let Err(e) = set.insert(template) {
                loader.error(e.to_string(), name_pos, "typeName");
            }
        }
        set.warnings = warnings;
        (set, errors)
    }

    /// What loaded but has no effect (e.g. a `timeZone` on an instant template).
    pub fn warnings(&self) -> &[TemplateError] {
        &self.warnings
    }
}

fn load_one(loader: &mut Loader<'_>, item: &Node) -> Option<(Arc<dyn FhirTemplate>, Pos)> {
    let known: Vec<&str> = REGISTRY.iter().map(|k| k.canonical).collect();
    let Some(mut reader) = ObjectReader::new(item) else {
        loader.error(
            format!(
                "each entry of \"template\" must be an object with templateType and template, got {}",
                item.kind()
            ),
            item.pos,
            "template",
        );
        return None;
    };
    let given = match reader.take("templateType") {
        Some((_, v)) => match v.as_str() {
            Some(s) => s.to_owned(),
            None => {
                loader.error(
                    "templateType must be a string".into(),
                    v.pos,
                    "templateType",
                );
                return None;
            }
        },
        None => {
            loader.error(
                format!(
                    "templateType is missing; add \"templateType\": one of {}",
                    known.join(", ")
                ),
                item.pos,
                "templateType",
            );
            return None;
        }
    };
    let Some(kind) = REGISTRY.iter().find(|k| name_matches(k.name, &given)) else {
        let first = REGISTRY.first().map_or("", |k| k.name);
        loader.error(
            format!(
                "expected TemplateType value {first}, actual {given}; use one of {}",
                known.join(", ")
            ),
            item.pos,
            "templateType",
        );
        return None;
    };
    let inner = match reader.take("template") {
        Some((_, inner)) if inner.as_object().is_some() => inner,
        other => {
            loader.error(
                format!(
                    "expected an object for the template property value for template type {}",
                    kind.name
                ),
                other.map_or(item.pos, |(_, v)| v.pos),
                "template",
            );
            return None;
        }
    };
    let name_pos = inner
        .as_object()
        .and_then(|m| {
            m.iter()
                .find(|(k, _)| k.name.eq_ignore_ascii_case("typeName"))
        })
        .map_or(inner.pos, |(_, v)| v.pos);
    (kind.load)(loader, inner).map(|t| (t, name_pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fhir_template::{CodeValueFhirTemplate, FhirValueType, PeriodInterval};

    fn wrap(templates: &str) -> String {
        format!("{{\n\"templateType\": \"CollectionFhir\",\n\"template\": [\n{templates}\n]\n}}")
    }

    fn code_value(set: &FhirTemplates, name: &str) -> CodeValueFhirTemplate {
        set.get(name)
            .and_then(|t| t.as_any().downcast_ref::<CodeValueFhirTemplate>())
            .cloned()
            .unwrap()
    }

    #[test]
    fn loads_a_full_template() {
        let text = wrap(
            r#"{"templateType": "CodeValueFhirTemplate", "template": {
                "typeName": "bp", "periodInterval": "Hourly", "timeZone": "Europe/Berlin",
                "category": [{"text": "vital", "codes": [{"code": "vital-signs", "system": "s"}]}],
                "codes": [{"code": 85354, "system": "http://loinc.org"}],
                "value": {"valueType": "quantity", "valueName": "x", "unit": "u", "extra": 1},
                "components": [{"codes": [], "value": {"valueType": "SampledData", "valueName": "sys", "defaultPeriod": "500", "unit": "mmHg"}}]
            }}"#,
        );
        let set = FhirTemplates::from_json_str(&text).unwrap();
        let t = code_value(&set, "BP");
        assert_eq!(t.period_interval, PeriodInterval::Hourly);
        assert_eq!(t.time_zone, Some(chrono_tz::Europe::Berlin));
        assert_eq!(t.codes[0].code.as_deref(), Some("85354"));
        assert_eq!(t.category[0].text.as_deref(), Some("vital"));
        assert!(matches!(t.value, Some(FhirValueType::Quantity(_))));
        match &t.components[0].value {
            FhirValueType::SampledData(sd) => assert_eq!(sd.default_period.millis(), 500.0),
            other => panic!("{other:?}"),
        }
        assert!(set.warnings().is_empty());
    }

    #[test]
    fn reports_every_error_with_positions() {
        let text = wrap(
            r#"{"templateType": "CodeValueFhir", "template": {"codes": [], "periodInterval": 30, "typeNam": "x"}},
{"templateType": "CodeValueFhir", "template": {"typeName": "a", "codes": [{"code": "c", "sytem": "s"}], "value": {"valueName": "v"}}},
{"templateType": "CodeValueFhir", "template": {"typeName": "b", "codes": [], "components": [{"codes": [], "value": {"valueType": "SampledData", "valueName": "v", "defaultPeriod": 0}}]}},
{"templateType": "CodeValueFhir", "template": {"typeName": "c", "codes": [], "timeZone": "Mars/Olympus"}},
{"templateType": "CodeValueFhir", "template": {"typeName": "D", "codes": []}},
{"templateType": "CodeValueFhir", "template": {"typeName": "d", "codes": []}},
{"templateType": "Other", "template": {}}"#,
        );
        let err = FhirTemplates::from_json_str(&text).unwrap_err();
        let lines: Vec<String> = err.errors.iter().map(ToString::to_string).collect();
        let expect = [
            "template 0, field typeName, line 4, column 47: required property 'TypeName' not found in json",
            "template 0, field periodInterval, line 4, column 79: periodInterval 30 is not supported",
            "template 0, field typeNam, line 4, column 83: could not find member 'typeNam'",
            "template 1 (a), field codes[0].sytem, line 5, column 89: could not find member 'sytem'",
            "template 1 (a), field value.valueType, line 5, column 114: property ValueType is missing in value",
            "template 2 (b), field components[0].value.defaultPeriod, line 6, column 180: defaultPeriod must be a number",
            "template 3 (c), field timeZone, line 7, column 90: timeZone 'Mars/Olympus' is not an iana time zone name",
            "template 5 (d), field typeName, line 9, column 60: duplicate template defined for type name: 'd'",
            "template 6, field templateType, line 10, column 1: expected TemplateType value CodeValueFhirTemplate, actual Other",
        ];
        assert_eq!(lines.len(), expect.len(), "{lines:#?}");
        for (line, want) in lines.iter().zip(expect) {
            assert!(
                line.starts_with(want),
                "{line}\n  should start with\n{want}"
            );
        }
        let (partial, _) = FhirTemplates::load_lenient(&text);
        assert_eq!(partial.len(), 1);
        assert!(partial.get("d").is_some());
    }

    #[test]
    fn root_errors() {
        let e = FhirTemplates::from_json_str(
            r#"{"templateType": "CollectionContent", "template": []}"#,
        )
        .unwrap_err();
        assert!(e.errors[0].message.starts_with(
            "expected TemplateType value CollectionFhirTemplate, actual CollectionContent"
        ));
        let e = FhirTemplates::from_json_str(
            r#"{"templateType": "collectionfhirtemplate", "template": {}}"#,
        )
        .unwrap_err();
        assert!(
            e.errors[0]
                .message
                .starts_with("expected an array for the template property value")
        );
        let e = FhirTemplates::from_json_str("{").unwrap_err();
        assert!(
            e.errors[0]
                .message
                .starts_with("fhir mapping is not valid json")
        );
        assert!(
            FhirTemplates::from_json_str(r#"{"templateType": "CollectionFhir", "template": []}"#)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn time_zone_on_instants_warns() {
        let text = wrap(
            r#"{"templateType": "CodeValueFhir", "template": {"typeName": "a", "codes": [], "timeZone": "UTC"}}"#,
        );
        let set = FhirTemplates::from_json_str(&text).unwrap();
        assert_eq!(set.warnings().len(), 1);
        assert!(set.warnings()[0].message.contains("has no effect"));
    }
}
