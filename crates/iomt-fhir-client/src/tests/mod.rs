//! Tests against the in-process fake ([`crate::fake`]): the retry matrix, authentication,
//! paging and exact matching, identity resolution, create-or-merge, conflicts and bundles.
//!
//! Time is real, not paused: the fake runs on wiremock's own thread, so a paused clock would
//! fire the client's timeouts while the fake is still answering. Backoffs are configured in
//! milliseconds instead; the one test that checks `Retry-After` waits one real second.

mod auth;
mod http;
mod identity;
mod persist;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_transform::{
    FhirTemplates, ObservationGroup, PeriodInterval, PropertyValues, TimeValue, WindowSpec,
};
use serde_json::{Value, json};

pub(crate) const MAPPING: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartrate", "periodInterval": 60,
    "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
    "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "spo2", "periodInterval": 0,
    "codes": [{"code": "59408-5", "system": "http://loinc.org"}],
    "value": {"valueType": "Quantity", "valueName": "spo2", "unit": "%",
              "system": "http://unitsofmeasure.org", "code": "%"}}}
]}"#;

pub(crate) fn templates() -> Arc<FhirTemplates> {
    Arc::new(FhirTemplates::from_json_str(MAPPING).unwrap())
}

pub(crate) fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn group(
    type_name: &str,
    interval: PeriodInterval,
    property: &str,
    device: &str,
    patient: Option<&str>,
    time: &str,
    value: &str,
) -> ObservationGroup {
    let t = at(time);
    ObservationGroup {
        type_name: type_name.into(),
        device_id: device.into(),
        patient_id: patient.map(Into::into),
        encounter_id: None,
        correlation_id: None,
        window: WindowSpec::new(interval).window_for(t),
        properties: vec![PropertyValues {
            name: property.into(),
            values: vec![TimeValue {
                time: t,
                value: value.into(),
            }],
        }],
    }
}

/// A heart-rate group (hourly SampledData) with one value.
pub(crate) fn hr(device: &str, time: &str, value: &str) -> ObservationGroup {
    group(
        "heartrate",
        PeriodInterval::Hourly,
        "hr",
        device,
        Some("pat-1"),
        time,
        value,
    )
}

/// An SpO2 group (one instant, Quantity).
pub(crate) fn spo2(device: &str, time: &str, value: &str) -> ObservationGroup {
    group(
        "spo2",
        PeriodInterval::Single,
        "spo2",
        device,
        Some("pat-1"),
        time,
        value,
    )
}

/// A Device with an identifier and (optionally) a patient reference.
pub(crate) fn device(id: &str, system: Option<&str>, value: &str, patient: Option<&str>) -> Value {
    let mut identifier = json!({"value": value});
    if let Some(s) = system {
        identifier["system"] = json!(s);
    }
    let mut d = json!({"resourceType": "Device", "id": id, "identifier": [identifier]});
    if let Some(p) = patient {
        d["patient"] = json!({"reference": p});
    }
    d
}
