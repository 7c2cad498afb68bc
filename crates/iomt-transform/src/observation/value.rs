//! Value processors: a template value type plus a group's values give `value[x]` (create) or
//! update an existing `value[x]` (merge). SPEC §7.2 and §8.

use serde_json::{Map, Value};

use super::model::{ObservationValue, Origin, Quantity, SampledData};
use crate::decimal::Decimal;
use crate::error::TransformError;
use crate::fhir_template::FhirValueType;
use crate::fhir_template::value::SampledDataValueType;
use crate::group::TimeValue;
use crate::sampled_data::{self, MAX_SLOTS, Tick};
use crate::time::ticks;

/// Builds `value[x]` from the group's values of the value's property over `period` (ticks,
/// inclusive): the observation period for SampledData.
pub(crate) fn create_value<'a>(
    value_type: &'a FhirValueType,
    values: &'a [TimeValue],
    period: (i64, i64),
) -> Result<ObservationValue<'a>, TransformError> {
    match value_type {
        FhirValueType::SampledData(sd) => {
            let ticked: Vec<Tick<'_>> = values
                .iter()
                .map(|v| (ticks(v.time), v.value.as_str()))
                .collect();
            let data = build_data(sd, &ticked, period)?;
            Ok(ObservationValue::SampledData(SampledData {
                origin: Origin {
                    value: serde_json::Number::from(0u64),
                    unit: sd.unit.as_deref(),
                },
                period: sd.period_number.clone(),
                dimensions: 1,
                data,
            }))
        }
        FhirValueType::Quantity(q) => {
            let [only] = values else {
                return Err(TransformError::QuantityValueCount {
                    value_name: q.value_name.clone(),
                    count: values.len(),
                });
            };
            let value = Decimal::parse_json_number(&only.value).ok_or_else(|| {
                TransformError::QuantityValueInvalid {
                    value_name: q.value_name.clone(),
                    value: only.value.clone(),
                }
            })?;
            Ok(ObservationValue::Quantity(Quantity {
                value,
                unit: q.unit.as_deref(),
                system: q.system.as_deref(),
                code: q.code.as_deref(),
            }))
        }
        FhirValueType::String(s) => {
            let [only] = values else {
                return Err(TransformError::StringValueCount {
                    value_name: s.value_name.clone(),
                    count: values.len(),
                });
            };
            Ok(ObservationValue::String(&only.value))
        }
        FhirValueType::CodeableConcept(c) => Ok(ObservationValue::CodeableConcept(&c.concept)),
    }
}

fn build_data(
    sd: &SampledDataValueType,
    values: &[Tick<'_>],
    (start, end): (i64, i64),
) -> Result<String, TransformError> {
    let period = sd.default_period.ticks();
    let slots = if end < start {
        0
    } else {
        ((end - start) / period) as u64 + 1
    };
    if slots > MAX_SLOTS {
        return Err(TransformError::SampledDataTooLarge {
            value_name: sd.value_name.clone(),
            slots,
            limit: MAX_SLOTS,
        });
    }
    let mut out = String::new();
    sampled_data::build_ticks(&mut out, values, start, end, period);
    Ok(out)
}

/// The `value[x]` member of an Observation or component object, if any.
pub(crate) fn value_member(object: &Map<String, Value>) -> Option<&str> {
    object.keys().map(String::as_str).find(|k| {
        k.strip_prefix("value")
            .and_then(|rest| rest.chars().next())
            .is_some_and(|c| c.is_ascii_uppercase())
    })
}

/// Merges the group's values into the `value[x]` of `object` (an Observation or a component),
/// replacing the member in place. `element` names the element for error messages.
pub(crate) fn merge_value(
    value_type: &FhirValueType,
    values: &[TimeValue],
    data_period: (i64, i64),
    observation_period: (i64, i64),
    object: &mut Map<String, Value>,
    element: &str,
) -> Result<(), TransformError> {
    let member = value_member(object).map(str::to_owned);
    if member.as_deref() != Some(value_type.member()) {
        return Err(TransformError::ValueTypeMismatch {
            element: element.to_owned(),
            expected: value_type.type_name(),
            actual: member
                .as_deref()
                .and_then(|m| m.strip_prefix("value"))
                .unwrap_or("absent")
                .to_owned(),
        });
    }
    let key = value_type.member();
    match value_type {
        FhirValueType::SampledData(sd) => {
            let Some(Value::Object(existing)) = object.get_mut(key) else {
                return Err(TransformError::InvalidExistingObservation {
                    reason: format!("{element} valueSampledData is not an object"),
                });
            };
            if let Some(dimensions) = existing.get("dimensions")
                && dimensions.as_f64().is_some_and(|d| d > 1.0)
            {
                return Err(TransformError::SampledDataDimensions {
                    element: element.to_owned(),
                    dimensions: dimensions.to_string(),
                });
            }
            let period = sd.default_period.ticks();
            let data = existing.get("data").and_then(Value::as_str).unwrap_or("");
            let new: Vec<Tick<'_>> = values
                .iter()
                .map(|v| (ticks(v.time), v.value.as_str()))
                .collect();
            // The group's window inside the existing period (every group after an hour's or
            // day's first): replace the tokens of the new values' slots, when that is exact.
            if data_period.0 >= observation_period.0
                && data_period.1 <= observation_period.1
                && let Some(spliced) = sampled_data::splice_ticks(
                    data,
                    &new,
                    observation_period.0,
                    observation_period.1,
                    period,
                )
            {
                existing.insert("data".to_owned(), Value::String(spliced));
                return Ok(());
            }
            let mut old: Vec<Tick<'_>> = Vec::with_capacity(data.len() / 2 + 1);
            if !data.trim().is_empty() {
                sampled_data::parse_ticks(&mut old, data, observation_period.0, period);
            }
            let mut merged = Vec::new();
            sampled_data::merge_ticks(&old, &new, &mut merged);
            let start = data_period.0.min(observation_period.0);
            let end = data_period.1.max(observation_period.1);
            let rebuilt = build_data(sd, &merged, (start, end))?;
            drop(merged);
            drop(old);
            existing.insert("data".to_owned(), Value::String(rebuilt));
            Ok(())
        }
        _ => {
            let new = create_value(value_type, values, data_period)?;
            if let Some(slot) = object.get_mut(key) {
                *slot = new.to_json();
            }
            Ok(())
        }
    }
}
