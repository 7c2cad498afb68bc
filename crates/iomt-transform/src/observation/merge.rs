//! The merge path: a new group merged into an Observation already on the server (SPEC §8,
//! steps 4–5).
//!
//! Works on the server's JSON so that members this crate does not model (`meta`, `note`,
//! extensions, …) survive untouched. Steps, in the original's order:
//! 1. `category` is replaced by the template's (removed when the template has none).
//! 2. The observation period is the existing `effectivePeriod`, or `effectiveDateTime` as
//!    start = end; any other `effective[x]` is not supported.
//! 3. `value[x]`, when the group has the value's property: SampledData is re-read from the
//!    existing period start (with the template's `defaultPeriod`), merged with the new values
//!    (new wins on equal times) and rebuilt over the union of both periods; its other members
//!    (`origin`, `period`) are kept. Quantity, String and CodeableConcept are replaced. The
//!    existing member must be of the same type; an absent one is added.
//! 4. Components with data are matched by their service coding (`{SERVICE_SYSTEM,
//!    valueName}`): merged like values when found, appended otherwise; components the template
//!    does not name are kept.
//! 5. `effectivePeriod` is widened to include the group's window and always rewritten in
//!    .NET `"o"` format (an `effectiveDateTime` becomes an `effectivePeriod` in its place).
//! 6. If the result equals the existing Observation (numbers compared by value), it is
//!    [`MergeOutcome::Unchanged`]; otherwise `status` becomes `amended`.
//!
//! New members are inserted at their FHIR element position, so the result still serializes in
//! FHIR order.
//!
//! # Deviations
//! * A component appended during a merge is built over the *merged* period. The original builds
//!   it over the existing Observation's period, which drops the component's SampledData values
//!   that fall outside it when the group extends the period (correlation-id windows, and
//!   instant windows merging within one second); the merged period keeps them.
//! * An existing Observation (or component) *without* a `value[x]` — created from a group that
//!   lacked the property — gets the value added. The original threw `NotSupportedException`
//!   for every later group of that window, so their data was never written; a value of a
//!   *different* type is still rejected.

use serde_json::{Map, Value};

use super::identity::SERVICE_SYSTEM;
use super::model::{Component, ServiceCode};
use super::value::{create_value, merge_value, value_member};
use crate::error::TransformError;
use crate::fhir_template::CodeValueFhirTemplate;
use crate::group::ObservationGroup;
use crate::time::{RoundTrip, from_ticks, ticks};

/// The result of a merge.
#[derive(Debug, Clone, PartialEq)]
pub enum MergeOutcome {
    /// The group adds nothing: no write is needed.
    Unchanged,
    /// The merged Observation (status `amended`), to be written with `If-Match`.
    Changed(Value),
}

const OBSERVATION_ORDER: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "basedOn",
    "partOf",
    "status",
    "category",
    "code",
    "subject",
    "focus",
    "encounter",
    "effective",
    "issued",
    "performer",
    "value",
    "dataAbsentReason",
    "interpretation",
    "note",
    "bodySite",
    "method",
    "specimen",
    "device",
    "referenceRange",
    "hasMember",
    "derivedFrom",
    "component",
];

pub(crate) fn rank(key: &str) -> usize {
    let key = key.strip_prefix('_').unwrap_or(key);
    OBSERVATION_ORDER
        .iter()
        .position(|k| {
            if *k == "effective" || *k == "value" {
                key.strip_prefix(k)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(char::is_uppercase))
            } else {
                key == *k
            }
        })
        .unwrap_or(usize::MAX)
}

/// Inserts `key` at its FHIR element position (or replaces it in place).
fn insert_ordered(map: &mut Map<String, Value>, key: &str, value: Value) {
    if let Some(slot) = map.get_mut(key) {
        *slot = value;
        return;
    }
    let r = rank(key);
    match map.keys().position(|k| rank(k) > r) {
        Some(index) => {
            map.shift_insert(index, key.to_owned(), value);
        }
        None => {
            map.insert(key.to_owned(), value);
        }
    }
}

/// Parses a FHIR `dateTime` (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`, or a full date-time, zone-less =
/// UTC) to ticks: the first instant it denotes.
pub(crate) fn parse_fhir_date_time(text: &str) -> Option<i64> {
    let t = text.trim();
    let b = t.as_bytes();
    let full = match b.len() {
        4 if b.iter().all(u8::is_ascii_digit) => format!("{t}-01-01"),
        7 if b[4] == b'-' => format!("{t}-01"),
        _ => t.to_owned(),
    };
    iomt_model::timestamp::parse(&full).map(ticks)
}

fn observation_period(obj: &Map<String, Value>) -> Result<(i64, i64), TransformError> {
    let instant = |value: Option<&Value>, what: &str| -> Result<i64, TransformError> {
        let text = value.and_then(Value::as_str).ok_or_else(|| {
            TransformError::InvalidExistingObservation {
                reason: format!("{what} is missing"),
            }
        })?;
        parse_fhir_date_time(text).ok_or_else(|| TransformError::InvalidExistingObservation {
            reason: format!("{what} '{text}' is not a date-time"),
        })
    };
    if let Some(period) = obj.get("effectivePeriod") {
        let start = instant(period.get("start"), "effectivePeriod.start")?;
        let end = instant(period.get("end"), "effectivePeriod.end")?;
        return Ok((start, end));
    }
    if let Some(dt) = obj.get("effectiveDateTime") {
        let t = instant(Some(dt), "effectiveDateTime")?;
        return Ok((t, t));
    }
    let found = obj
        .keys()
        .find(|k| k.starts_with("effective"))
        .cloned()
        .unwrap_or_else(|| "absent".to_owned());
    Err(TransformError::UnsupportedEffective { found })
}

fn is_service_component(component: &Value, value_name: &str) -> bool {
    component
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .is_some_and(|codings| {
            codings.iter().any(|c| {
                c.get("code").and_then(Value::as_str) == Some(value_name)
                    && c.get("system").and_then(Value::as_str) == Some(SERVICE_SYSTEM)
            })
        })
}

/// Compares JSON values, numbers by value (`78` equals `78.0`), as Firely's `IsExactly`
/// compares decimals.
pub(crate) fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_equivalent(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        _ => a == b,
    }
}

pub(crate) fn merge_observation(
    template: &CodeValueFhirTemplate,
    existing: &Value,
    group: &ObservationGroup,
) -> Result<MergeOutcome, TransformError> {
    let Value::Object(existing_obj) = existing else {
        return Err(TransformError::InvalidExistingObservation {
            reason: "it is not a json object".to_owned(),
        });
    };
    let mut merged = existing_obj.clone();

    // 1. category
    merged.shift_remove("category");
    if !template.category.is_empty() {
        let category = serde_json::to_value(&*template.category).unwrap_or(Value::Null);
        insert_ordered(&mut merged, "category", category);
    }

    // 2. periods
    let observation_period = observation_period(&merged)?;
    let data_period = (ticks(group.window.start), ticks(group.window.end));
    let merged_period = (
        data_period.0.min(observation_period.0),
        data_period.1.max(observation_period.1),
    );

    // 3. value
    if let Some(v) = &template.value
        && !v.value_name().trim().is_empty()
        && let Some(values) = group.values(v.value_name())
    {
        if value_member(&merged).is_none() {
            let value = create_value(v, values, merged_period)?;
            insert_ordered(&mut merged, value.member(), value.to_json());
        } else {
            merge_value(
                v,
                values,
                data_period,
                observation_period,
                &mut merged,
                "value",
            )?;
        }
    }

    // 4. components
    for mapping in &template.components {
        let name = mapping.value.value_name();
        let Some(values) = group.values(name) else {
            continue;
        };
        if !merged.contains_key("component") {
            insert_ordered(&mut merged, "component", Value::Array(Vec::new()));
        }
        let Some(Value::Array(components)) = merged.get_mut("component") else {
            return Err(TransformError::InvalidExistingObservation {
                reason: "component is not an array".to_owned(),
            });
        };
        match components
            .iter_mut()
            .find(|c| is_service_component(c, name))
        {
            Some(Value::Object(component)) if value_member(component).is_none() => {
                let value = create_value(&mapping.value, values, merged_period)?;
                component.insert(value.member().to_owned(), value.to_json());
            }
            Some(Value::Object(component)) => {
                merge_value(
                    &mapping.value,
                    values,
                    data_period,
                    observation_period,
                    component,
                    &format!("component '{name}' value"),
                )?;
            }
            Some(_) => {
                return Err(TransformError::InvalidExistingObservation {
                    reason: format!("component '{name}' is not an object"),
                });
            }
            None => {
                let component = Component {
                    code: ServiceCode {
                        codes: &mapping.codes,
                        name,
                    },
                    value: create_value(&mapping.value, values, merged_period)?,
                };
                components.push(serde_json::to_value(&component).unwrap_or(Value::Null));
            }
        }
    }
    if merged
        .get("component")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
        && !existing_obj.contains_key("component")
    {
        merged.shift_remove("component");
    }

    // 5. effective period
    let mut period = Map::new();
    period.insert(
        "start".to_owned(),
        Value::String(RoundTrip(from_ticks(merged_period.0)).to_string()),
    );
    period.insert(
        "end".to_owned(),
        Value::String(RoundTrip(from_ticks(merged_period.1)).to_string()),
    );
    match merged.keys().position(|k| k == "effectiveDateTime") {
        Some(index) if !merged.contains_key("effectivePeriod") => {
            merged.shift_remove("effectiveDateTime");
            merged.shift_insert(index, "effectivePeriod".to_owned(), Value::Object(period));
        }
        _ => insert_ordered(&mut merged, "effectivePeriod", Value::Object(period)),
    }

    // 6. changed?
    let merged = Value::Object(merged);
    if json_equivalent(&merged, existing) {
        return Ok(MergeOutcome::Unchanged);
    }
    let Value::Object(mut merged) = merged else {
        return Ok(MergeOutcome::Unchanged);
    };
    insert_ordered(&mut merged, "status", Value::String("amended".to_owned()));
    Ok(MergeOutcome::Changed(Value::Object(merged)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fhir_order_insertion() {
        let mut m = Map::new();
        m.insert("resourceType".into(), Value::Null);
        m.insert("status".into(), Value::Null);
        m.insert("code".into(), Value::Null);
        m.insert("valueQuantity".into(), Value::Null);
        m.insert("device".into(), Value::Null);
        insert_ordered(&mut m, "category", Value::Null);
        insert_ordered(&mut m, "component", Value::Null);
        insert_ordered(&mut m, "effectivePeriod", Value::Null);
        let keys: Vec<&str> = m.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "resourceType",
                "status",
                "category",
                "code",
                "effectivePeriod",
                "valueQuantity",
                "device",
                "component"
            ]
        );
    }

    #[test]
    fn fhir_date_times() {
        assert_eq!(
            parse_fhir_date_time("2019"),
            parse_fhir_date_time("2019-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_fhir_date_time("2019-03"),
            parse_fhir_date_time("2019-03-01T00:00:00.0000000Z")
        );
        assert_eq!(
            parse_fhir_date_time("2019-03-01T01:00:00+01:00"),
            parse_fhir_date_time("2019-03-01T00:00:00Z")
        );
        assert!(parse_fhir_date_time("soon").is_none());
    }

    #[test]
    fn numbers_compare_by_value() {
        let a: Value = serde_json::from_str(r#"{"v": 78, "w": [1.5]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"w": [1.50], "v": 78.0}"#).unwrap();
        assert!(json_equivalent(&a, &b));
        let c: Value = serde_json::from_str(r#"{"v": 78, "w": [1.5], "x": null}"#).unwrap();
        assert!(!json_equivalent(&a, &c));
    }
}
