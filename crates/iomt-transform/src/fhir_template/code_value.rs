//! `CodeValueFhir`: the original's only FHIR template kind (SPEC §7.1).
//!
//! ```json
//! { "templateType": "CodeValueFhir",
//!   "template": { "typeName": "heartrate", "periodInterval": 60, "timeZone": "Europe/Berlin",
//!                 "category": [{"text": "…", "codes": [{"code": "…", "system": "…", "display": "…"}]}],
//!                 "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
//!                 "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "count/min"},
//!                 "components": [{"codes": […], "value": {…}}] } }
//! ```
//! `timeZone` is an iomt extension (hour and day windows on a zone's wall clock); everything
//! else is the original's. Building and merging live in [`crate::observation`].

use std::any::Any;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use iomt_model::spanned::{Node, NodeValue, ObjectReader};

use super::FhirTemplate;
use super::load::{Loader, TemplateKind, join};
use super::value::{
    CodeableConceptValueType, FhirValueType, QuantityValueType, SampledDataValueType,
    StringValueType,
};
use crate::error::TransformError;
use crate::group::{ObservationGroup, PeriodInterval, WindowSpec};
use crate::observation::model::{CodeableConcept, Coding, Observation};
use crate::observation::{JsonMergeOutcome, MergeOutcome, build, merge, merge_json};

/// One component mapping: `{codes, value}`.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeValueMapping {
    /// Codes of the component (before the service coding).
    pub codes: Arc<[Coding]>,
    /// The component's value.
    pub value: FhirValueType,
}

/// A `CodeValueFhir` template.
#[derive(Debug, Clone, PartialEq)]
pub struct CodeValueFhirTemplate {
    /// The measurement type it maps (matched case-insensitively).
    pub type_name: Arc<str>,
    /// How measurements are grouped in time.
    pub period_interval: PeriodInterval,
    /// The zone aligning hour and day windows (UTC when `None`).
    pub time_zone: Option<Tz>,
    /// `category`: copied onto every Observation.
    pub category: Arc<[CodeableConcept]>,
    /// `codes`: the Observation's codes (before the service coding).
    pub codes: Arc<[Coding]>,
    /// `value`: the Observation's `value[x]`.
    pub value: Option<FhirValueType>,
    /// `components`.
    pub components: Vec<CodeValueMapping>,
}

impl CodeValueFhirTemplate {
    /// A template with the given type name and codes; everything else empty or default.
    pub fn new(type_name: &str, codes: Vec<Coding>) -> CodeValueFhirTemplate {
        CodeValueFhirTemplate {
            type_name: Arc::from(type_name),
            period_interval: PeriodInterval::Single,
            time_zone: None,
            category: Arc::from(Vec::new()),
            codes: Arc::from(codes),
            value: None,
            components: Vec::new(),
        }
    }
}

impl FhirTemplate for CodeValueFhirTemplate {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn window_spec(&self) -> WindowSpec {
        WindowSpec {
            interval: self.period_interval,
            time_zone: self.time_zone,
        }
    }

    fn value_names(&self) -> Vec<&str> {
        self.value
            .iter()
            .map(FhirValueType::value_name)
            .chain(self.components.iter().map(|c| c.value.value_name()))
            .filter(|n| !n.trim().is_empty())
            .collect()
    }

    fn create_observation<'a>(
        &'a self,
        group: &'a ObservationGroup,
        issued: DateTime<Utc>,
    ) -> Result<Observation<'a>, TransformError> {
        build::create_observation(self, group, issued)
    }

    fn merge_observation(
        &self,
        existing: &serde_json::Value,
        group: &ObservationGroup,
    ) -> Result<MergeOutcome, TransformError> {
        merge::merge_observation(self, existing, group)
    }

    fn merge_observation_json(
        &self,
        existing: &[u8],
        group: &ObservationGroup,
    ) -> Option<JsonMergeOutcome> {
        merge_json::merge_observation_json(self, existing, group)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The registry entry for `CodeValueFhir`.
pub(crate) const KIND: TemplateKind = TemplateKind {
    name: "CodeValueFhirTemplate",
    canonical: "CodeValueFhir",
    load,
};

fn load(loader: &mut Loader<'_>, node: &Node) -> Option<Arc<dyn FhirTemplate>> {
    let mut r = ObjectReader::new(node)?;
    let errors_before = loader.error_count();

    let type_name = match r.take_non_null("typeName") {
        None => {
            loader.missing(node.pos, "", "typeName");
            None
        }
        Some((_, v)) => loader.string_value(v, "typeName"),
    };
    if let Some(name) = &type_name {
        loader.set_type_name(name);
    }

    let period_interval = match r.take_non_null("periodInterval") {
        None => PeriodInterval::Single,
        Some((_, v)) => period_interval(loader, v).unwrap_or_default(),
    };

    let time_zone = match r.take_non_null("timeZone") {
        None => None,
        Some((_, v)) => match v.as_str().map(str::trim) {
            Some(name) => match name.parse::<Tz>() {
                Ok(tz) => {
                    if !matches!(
                        period_interval,
                        PeriodInterval::Hourly | PeriodInterval::Daily
                    ) {
                        loader.warn(
                            format!(
                                "timeZone '{name}' has no effect with periodInterval {}; it aligns hour (60) and day (1440) windows only",
                                period_interval.minutes()
                            ),
                            v.pos,
                            "timeZone",
                        );
                    }
                    Some(tz)
                }
                Err(_) => {
                    loader.error(
                        format!(
                            "timeZone '{name}' is not an iana time zone name; use a name such as \"Europe/Berlin\" or \"America/New_York\", or leave it out for utc"
                        ),
                        v.pos,
                        "timeZone",
                    );
                    None
                }
            },
            None => {
                loader.error(
                    format!("timeZone must be a string, got {}", v.kind()),
                    v.pos,
                    "timeZone",
                );
                None
            }
        },
    };

    let mut category = Vec::new();
    if let Some((_, v)) = r.take_non_null("category") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let here = format!("category[{i}]");
                    let Some(mut c) = ObjectReader::new(item) else {
                        loader.error(
                            format!(
                                "{here} must be an object {{text, codes}}, got {}",
                                item.kind()
                            ),
                            item.pos,
                            &here,
                        );
                        continue;
                    };
                    let text = loader
                        .optional_string(&mut c, &here, "text")
                        .map(|(s, _)| s);
                    let coding = match c.take_non_null("codes") {
                        Some((_, codes)) => loader.codes(codes, &join(&here, "codes"), true),
                        None => Vec::new(),
                    };
                    loader.finish(&c, &here);
                    category.push(CodeableConcept {
                        coding,
                        text: text.map(Arc::from),
                    });
                }
            }
            None => loader.error(
                format!(
                    "category must be an array of {{text, codes}}, got {}",
                    v.kind()
                ),
                v.pos,
                "category",
            ),
        }
    }

    let codes = match r.take_non_null("codes") {
        None => {
            loader.missing(node.pos, "", "codes");
            Vec::new()
        }
        Some((_, v)) => loader.codes(v, "codes", true),
    };

    let value = match r.take_non_null("value") {
        None => None,
        Some((_, v)) => load_value(loader, v, "value", false),
    };

    let mut components = Vec::new();
    if let Some((_, v)) = r.take_non_null("components") {
        match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    let here = format!("components[{i}]");
                    let Some(mut c) = ObjectReader::new(item) else {
                        loader.error(
                            format!(
                                "{here} must be an object {{codes, value}}, got {}",
                                item.kind()
                            ),
                            item.pos,
                            &here,
                        );
                        continue;
                    };
                    let codes = match c.take_non_null("codes") {
                        None => {
                            loader.missing(item.pos, &here, "codes");
                            Vec::new()
                        }
                        Some((_, codes)) => loader.codes(codes, &join(&here, "codes"), true),
                    };
                    let value = match c.take_non_null("value") {
                        None => {
                            loader.missing(item.pos, &here, "value");
                            None
                        }
                        Some((_, v)) => load_value(loader, v, &join(&here, "value"), true),
                    };
                    loader.finish(&c, &here);
                    if let Some(value) = value {
                        components.push(CodeValueMapping {
                            codes: Arc::from(codes),
                            value,
                        });
                    }
                }
            }
            None => loader.error(
                format!(
                    "components must be an array of {{codes, value}}, got {}",
                    v.kind()
                ),
                v.pos,
                "components",
            ),
        }
    }

    loader.finish(&r, "");
    if loader.error_count() > errors_before {
        return None;
    }
    Some(Arc::new(CodeValueFhirTemplate {
        type_name: Arc::from(type_name?),
        period_interval,
        time_zone,
        category: Arc::from(category),
        codes: Arc::from(codes),
        value,
        components,
    }))
}

fn period_interval(loader: &mut Loader<'_>, v: &Node) -> Option<PeriodInterval> {
    let parsed = match &v.value {
        NodeValue::Number(n) => n.parse::<i64>().ok().and_then(PeriodInterval::from_minutes),
        NodeValue::String(s) => match s.trim().parse::<i64>() {
            Ok(n) => PeriodInterval::from_minutes(n),
            Err(_) => PeriodInterval::from_name(s),
        },
        _ => None,
    };
    if parsed.is_none() {
        let shown = match &v.value {
            NodeValue::Number(n) | NodeValue::String(n) => n.clone(),
            _ => v.kind().to_owned(),
        };
        loader.error(
            format!(
                "periodInterval {shown} is not supported; use 0 (Single), 60 (Hourly), 1440 (Daily) or -1 (CorrelationId)"
            ),
            v.pos,
            "periodInterval",
        );
    }
    parsed
}

const VALUE_TYPES: &str = "SampledData, Quantity, String or CodeableConcept";

/// Reads a value object. Unknown members are ignored, as in the original.
fn load_value(
    loader: &mut Loader<'_>,
    node: &Node,
    path: &str,
    require_name: bool,
) -> Option<FhirValueType> {
    let Some(mut r) = ObjectReader::new(node) else {
        loader.error(
            format!(
                "{path} must be an object with valueType and valueName, got {}",
                node.kind()
            ),
            node.pos,
            path,
        );
        return None;
    };
    let value_type = match r.take_non_null("valueType") {
        None => {
            loader.error(
                format!(
                    "property ValueType is missing in {path}; add \"valueType\": {VALUE_TYPES}"
                ),
                node.pos,
                &join(path, "valueType"),
            );
            return None;
        }
        Some((_, v)) => {
            let text = loader.string_value(v, &join(path, "valueType"))?;
            (text, v.pos)
        }
    };
    let value_name = loader
        .optional_string(&mut r, path, "valueName")
        .map(|(s, _)| s)
        .unwrap_or_default();
    if require_name && value_name.trim().is_empty() {
        loader.error(
            format!("{path} needs a valueName: the measurement property the component shows"),
            node.pos,
            &join(path, "valueName"),
        );
        return None;
    }
    let text = |loader: &mut Loader<'_>, r: &mut ObjectReader<'_>, field: &str| {
        loader
            .optional_string(r, path, field)
            .map(|(s, _)| Arc::<str>::from(s))
    };
    let (kind, kind_pos) = value_type;
    match kind.trim().to_ascii_lowercase().as_str() {
        "sampleddata" => {
            let unit = text(loader, &mut r, "unit");
            let field = join(path, "defaultPeriod");
            let Some((_, period)) = r.take_non_null("defaultPeriod") else {
                loader.error(
                    format!(
                        "{path} is SampledData and needs a defaultPeriod (milliseconds between samples); add \"defaultPeriod\": 1000"
                    ),
                    node.pos,
                    &field,
                );
                return None;
            };
            let millis = match &period.value {
                NodeValue::Number(n) | NodeValue::String(n) => n.trim().parse::<f64>().ok(),
                _ => None,
            };
            match millis.and_then(|ms| SampledDataValueType::new(&value_name, ms, unit.as_deref()))
            {
                Some(sd) => Some(FhirValueType::SampledData(sd)),
                None => {
                    loader.error(
                        format!(
                            "defaultPeriod must be a number of milliseconds of at least 0.0001, got {}",
                            match &period.value {
                                NodeValue::Number(n) | NodeValue::String(n) => n.clone(),
                                _ => period.kind().to_owned(),
                            }
                        ),
                        period.pos,
                        &field,
                    );
                    None
                }
            }
        }
        "quantity" => Some(FhirValueType::Quantity(QuantityValueType {
            unit: text(loader, &mut r, "unit"),
            system: text(loader, &mut r, "system"),
            code: text(loader, &mut r, "code"),
            value_name,
        })),
        "string" => Some(FhirValueType::String(StringValueType { value_name })),
        "codeableconcept" => {
            let concept_text = text(loader, &mut r, "text");
            let coding = match r.take_non_null("codes") {
                Some((_, codes)) => loader.codes(codes, &join(path, "codes"), false),
                None => Vec::new(),
            };
            Some(FhirValueType::CodeableConcept(CodeableConceptValueType {
                value_name,
                concept: CodeableConcept {
                    coding,
                    text: concept_text,
                },
            }))
        }
        _ => {
            loader.error(
                format!("valueType '{kind}' is not supported; use {VALUE_TYPES}"),
                kind_pos,
                &join(path, "valueType"),
            );
            None
        }
    }
}
