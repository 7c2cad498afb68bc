//! Build and merge, end to end through the public template API.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_model::{ErrorClass, Measurement, MeasurementProperty};
use serde_json::{Value, json};

use super::{IdPrecision, MergeOutcome, ObservationIdentity, ResolvedIds};
use crate::fhir_template::{
    CodeValueFhirTemplate, CodeValueMapping, FhirTemplate, FhirValueType, QuantityValueType,
    SampledDataValueType, StringValueType,
};
use crate::group::{ObservationGroup, PeriodInterval, WindowSpec, group_batch};
use crate::observation::model::{CodeableConcept, Coding};

fn t(s: &str) -> DateTime<Utc> {
    iomt_model::timestamp::parse(s).unwrap()
}

fn group(interval: PeriodInterval, values: &[(&str, &str, &str)]) -> ObservationGroup {
    let measurements: Vec<Measurement> = values
        .iter()
        .map(|(time, name, value)| Measurement {
            type_name: "bp".into(),
            occurrence_time_utc: t(time),
            ingestion_time_utc: None,
            device_id: "dev".into(),
            patient_id: Some("pat".into()),
            encounter_id: None,
            correlation_id: Some("c".into()),
            properties: vec![MeasurementProperty {
                name: (*name).into(),
                value: (*value).into(),
            }],
        })
        .collect();
    let mut groups = group_batch(measurements)
        .pop()
        .unwrap()
        .observation_groups(&WindowSpec::new(interval))
        .unwrap();
    assert_eq!(groups.len(), 1);
    groups.pop().unwrap()
}

fn sampled(name: &str) -> FhirValueType {
    FhirValueType::SampledData(SampledDataValueType::new(name, 1000.0, Some("mmHg")).unwrap())
}

fn bp_template() -> CodeValueFhirTemplate {
    let mut t = CodeValueFhirTemplate::new(
        "bp",
        vec![Coding::new(Some("http://loinc.org"), Some("85354-9"), None)],
    );
    t.period_interval = PeriodInterval::Hourly;
    t.category = Arc::from(vec![CodeableConcept {
        coding: vec![Coding::new(None, Some("vital-signs"), None)],
        text: Some(Arc::from("Vital Signs")),
    }]);
    t.components = vec![
        CodeValueMapping {
            codes: Arc::from(vec![Coding::new(None, Some("8462-4"), None)]),
            value: sampled("diastolic"),
        },
        CodeValueMapping {
            codes: Arc::from(vec![]),
            value: sampled("systolic"),
        },
    ];
    t
}

fn created(template: &CodeValueFhirTemplate, g: &ObservationGroup) -> Value {
    let identity = ObservationIdentity::new(
        g,
        &ResolvedIds::new("p1", "d1", Some("e1")),
        IdPrecision::Seconds,
    )
    .unwrap();
    template
        .create_observation(g, t("2024-01-01T00:00:00Z"))
        .unwrap()
        .with_identity(identity)
        .to_json()
}

fn data(obs: &Value, component: usize) -> String {
    obs["component"][component]["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .split(' ')
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn create_writes_fhir_order_and_only_components_with_data() {
    let template = bp_template();
    let g = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T10:00:01Z", "diastolic", "80")],
    );
    let obs = created(&template, &g);
    let keys: Vec<&str> = obs
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "resourceType",
            "id",
            "identifier",
            "status",
            "category",
            "code",
            "subject",
            "encounter",
            "effectivePeriod",
            "issued",
            "device",
            "component"
        ]
    );
    assert_eq!(obs["issued"], "2024-01-01T00:00:00+00:00");
    assert_eq!(obs["encounter"]["reference"], "Encounter/e1");
    assert_eq!(
        obs["identifier"][0]["value"],
        "p1.d1.bp.20240101100000Z.20240101105959Z"
    );
    assert_eq!(obs["component"].as_array().unwrap().len(), 1);
    assert_eq!(data(&obs, 0), "E 80 E E");
    assert_eq!(
        obs["component"][0]["code"]["coding"][1],
        json!({"system": super::SERVICE_SYSTEM, "code": "diastolic", "display": "diastolic"})
    );
}

#[test]
fn merge_appends_components_widens_and_amends_once() {
    let template = bp_template();
    let first = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T10:00:01Z", "diastolic", "80")],
    );
    let mut existing = created(&template, &first);
    existing["meta"] = json!({"versionId": "1"});
    existing["note"] = json!([{"text": "kept"}]);
    let second = group(
        PeriodInterval::Hourly,
        &[
            ("2024-01-01T10:00:01Z", "diastolic", "81"),
            ("2024-01-01T10:00:02Z", "systolic", "120"),
        ],
    );
    let MergeOutcome::Changed(merged) = template.merge_observation(&existing, &second).unwrap()
    else {
        panic!("expected a change");
    };
    assert_eq!(merged["status"], "amended");
    assert_eq!(merged["meta"], existing["meta"]);
    assert_eq!(merged["note"], existing["note"]);
    assert_eq!(merged["issued"], existing["issued"]);
    assert_eq!(data(&merged, 0), "E 81 E E");
    assert_eq!(data(&merged, 1), "E E 120 E");
    assert_eq!(
        merged["component"][1]["code"]["coding"][0]["code"],
        "systolic"
    );
    // Merging the same group again changes nothing.
    assert_eq!(
        template.merge_observation(&merged, &second).unwrap(),
        MergeOutcome::Unchanged
    );
}

#[test]
fn merge_category_effective_and_type_checks() {
    let mut template = CodeValueFhirTemplate::new("bp", vec![]);
    template.value = Some(FhirValueType::Quantity(QuantityValueType {
        value_name: "v".into(),
        ..Default::default()
    }));
    let g = group(
        PeriodInterval::Single,
        &[("2024-01-01T10:00:00Z", "v", "78")],
    );
    let existing = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"text": "old"}],
        "code": {"text": "bp"},
        "effectiveDateTime": "2024-01-01T10:00:00Z",
        "valueQuantity": {"value": 78.0}
    });
    let MergeOutcome::Changed(merged) = template.merge_observation(&existing, &g).unwrap() else {
        panic!("expected a change");
    };
    let keys: Vec<&str> = merged
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "resourceType",
            "status",
            "code",
            "effectivePeriod",
            "valueQuantity"
        ]
    );
    assert_eq!(
        merged["effectivePeriod"],
        json!({"start": "2024-01-01T10:00:00.0000000Z", "end": "2024-01-01T10:00:00.0000000Z"})
    );
    // Same value written as 78 vs 78.0 is not a change.
    let mut again = merged.clone();
    again["valueQuantity"]["value"] = json!(78.0);
    assert_eq!(
        template.merge_observation(&again, &g).unwrap(),
        MergeOutcome::Unchanged
    );

    let mut other = existing.clone();
    other.as_object_mut().unwrap().remove("valueQuantity");
    other["valueString"] = json!("x");
    let err = template.merge_observation(&other, &g).unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupportedException);
    assert!(err.to_string().contains("value is String"), "{err}");
    other.as_object_mut().unwrap().remove("valueString");
    let MergeOutcome::Changed(added) = template.merge_observation(&other, &g).unwrap() else {
        panic!("expected the value to be added");
    };
    assert_eq!(added["valueQuantity"], json!({"value": 78}));

    let mut instant = existing.clone();
    instant.as_object_mut().unwrap().remove("effectiveDateTime");
    instant["effectiveInstant"] = json!("2024-01-01T10:00:00Z");
    let err = template.merge_observation(&instant, &g).unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotSupportedException);
    assert!(err.to_string().contains("effectiveInstant"));
}

#[test]
fn merge_rejects_multi_dimensional_sampled_data() {
    let mut template = CodeValueFhirTemplate::new("bp", vec![]);
    template.value = Some(sampled("v"));
    let g = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T10:00:00Z", "v", "1")],
    );
    let existing = json!({
        "resourceType": "Observation", "status": "final",
        "effectivePeriod": {"start": "2024-01-01T10:00:00Z", "end": "2024-01-01T10:59:59.9999999Z"},
        "valueSampledData": {"origin": {"value": 0}, "period": 1000, "dimensions": 2, "data": "1 2"}
    });
    let err = template.merge_observation(&existing, &g).unwrap_err();
    assert!(matches!(
        err,
        crate::TransformError::SampledDataDimensions { .. }
    ));
}

#[test]
fn quantity_and_string_value_counts() {
    let mut template = CodeValueFhirTemplate::new("bp", vec![]);
    template.value = Some(FhirValueType::String(StringValueType {
        value_name: "v".into(),
    }));
    let g = group(
        PeriodInterval::Hourly,
        &[
            ("2024-01-01T10:00:00Z", "v", "a"),
            ("2024-01-01T10:00:01Z", "v", "b"),
        ],
    );
    let err = template
        .create_observation(&g, t("2024-01-01T00:00:00Z"))
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::FhirDataMappingException);
    template.value = Some(FhirValueType::Quantity(QuantityValueType {
        value_name: "v".into(),
        ..Default::default()
    }));
    let err = template
        .create_observation(&g, t("2024-01-01T00:00:00Z"))
        .unwrap_err();
    assert_eq!(
        err.original_message().as_deref(),
        Some("Expected 1 value. Received 2.")
    );
}

#[test]
fn identity_rejects_blank_ids_and_offers_milliseconds() {
    let g = group(
        PeriodInterval::Single,
        &[("2024-01-01T10:00:00.123Z", "v", "1")],
    );
    let ids = |patient| ResolvedIds::new(patient, "d", None);
    assert_eq!(
        ObservationIdentity::new(&g, &ids(" "), IdPrecision::Seconds)
            .unwrap_err()
            .class(),
        ErrorClass::ResourceIdentityNotDefinedException
    );
    let id = ObservationIdentity::new(&g, &ids("p"), IdPrecision::Milliseconds).unwrap();
    assert_eq!(
        id.identifier_value,
        "p.d.bp.20240101100000123Z.20240101100000123Z"
    );
    assert_eq!(
        id.search_token(),
        format!("{}|{}", super::SERVICE_SYSTEM, id.identifier_value)
    );
}
