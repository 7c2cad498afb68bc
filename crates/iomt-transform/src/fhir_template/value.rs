//! FHIR value types: how a group's values for one `valueName` become `value[x]` (SPEC §7.1–7.2).
//!
//! | `valueType` | from the group's values | on merge |
//! |---|---|---|
//! | `SampledData` | data string over the observation period | existing data re-read, new wins |
//! | `Quantity` | exactly one value, a .NET decimal | replaced |
//! | `String` | exactly one value | replaced |
//! | `CodeableConcept` | ignored: the template's codes and text | replaced |
//!
//! `valueName` is not required when loading (as in the original); a template value with a blank
//! `valueName` simply never has data.

use std::sync::Arc;

use serde_json::Number;

use crate::observation::model::{CodeableConcept, Coding};
use crate::sampled_data::SamplePeriod;

/// A SampledData value: `{valueName, defaultPeriod, unit}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SampledDataValueType {
    /// The measurement property it reads.
    pub value_name: String,
    /// The slot period (the template's `defaultPeriod`, milliseconds).
    pub default_period: SamplePeriod,
    /// `defaultPeriod` as written into the SampledData's `period`.
    pub period_number: Number,
    /// The `origin.unit`.
    pub unit: Option<Arc<str>>,
}

impl SampledDataValueType {
    /// A SampledData value type; `None` when `default_period_millis` is not a usable period
    /// (finite, at least 0.0001 ms).
    pub fn new(
        value_name: &str,
        default_period_millis: f64,
        unit: Option<&str>,
    ) -> Option<SampledDataValueType> {
        let default_period = SamplePeriod::from_millis(default_period_millis)?;
        let period_number = if default_period_millis.fract() == 0.0 && default_period_millis < 9e15
        {
            Number::from(default_period_millis as u64)
        } else {
            Number::from_f64(default_period_millis)?
        };
        Some(SampledDataValueType {
            value_name: value_name.to_owned(),
            default_period,
            period_number,
            unit: unit.map(Arc::from),
        })
    }
}

/// A Quantity value: `{valueName, unit, system, code}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QuantityValueType {
    /// The measurement property it reads.
    pub value_name: String,
    /// `unit`.
    pub unit: Option<Arc<str>>,
    /// `system`.
    pub system: Option<Arc<str>>,
    /// `code`.
    pub code: Option<Arc<str>>,
}

/// A String value: `{valueName}`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StringValueType {
    /// The measurement property it reads.
    pub value_name: String,
}

/// A CodeableConcept value: `{valueName, text, codes}`; the measurement's presence means the
/// concept applies, its value is not used.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodeableConceptValueType {
    /// The measurement property whose presence triggers the value.
    pub value_name: String,
    /// The concept written.
    pub concept: CodeableConcept,
}

impl CodeableConceptValueType {
    /// A CodeableConcept value type from its text and codes.
    pub fn new(value_name: &str, text: Option<&str>, codes: Vec<Coding>) -> Self {
        CodeableConceptValueType {
            value_name: value_name.to_owned(),
            concept: CodeableConcept {
                coding: codes,
                text: text.map(Arc::from),
            },
        }
    }
}

/// A template value (`value`, or a component's `value`), keyed by `valueType`.
#[derive(Debug, Clone, PartialEq)]
pub enum FhirValueType {
    /// `SampledData`.
    SampledData(SampledDataValueType),
    /// `Quantity`.
    Quantity(QuantityValueType),
    /// `String`.
    String(StringValueType),
    /// `CodeableConcept`.
    CodeableConcept(CodeableConceptValueType),
}

impl FhirValueType {
    /// The measurement property the value reads.
    pub fn value_name(&self) -> &str {
        match self {
            FhirValueType::SampledData(v) => &v.value_name,
            FhirValueType::Quantity(v) => &v.value_name,
            FhirValueType::String(v) => &v.value_name,
            FhirValueType::CodeableConcept(v) => &v.value_name,
        }
    }

    /// The `valueType` name (`SampledData`, `Quantity`, `String`, `CodeableConcept`).
    pub fn type_name(&self) -> &'static str {
        match self {
            FhirValueType::SampledData(_) => "SampledData",
            FhirValueType::Quantity(_) => "Quantity",
            FhirValueType::String(_) => "String",
            FhirValueType::CodeableConcept(_) => "CodeableConcept",
        }
    }

    /// The Observation member it produces (`valueSampledData`, …).
    pub fn member(&self) -> &'static str {
        match self {
            FhirValueType::SampledData(_) => "valueSampledData",
            FhirValueType::Quantity(_) => "valueQuantity",
            FhirValueType::String(_) => "valueString",
            FhirValueType::CodeableConcept(_) => "valueCodeableConcept",
        }
    }
}
