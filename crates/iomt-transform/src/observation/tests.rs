//! Build and merge, end to end through the public template API.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use iomt_model::{ErrorClass, Measurement, MeasurementProperty};
use serde_json::{Value, json};

use super::{IdPrecision, JsonMergeOutcome, MergeOutcome, ObservationIdentity, ResolvedIds};
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

/// An hour of 1-second heart rate: the merge `merge_observation_json` takes on text.
fn hr_template() -> CodeValueFhirTemplate {
    let mut template = bp_template();
    template.components = vec![];
    template.value = Some(sampled("hr"));
    template
}

/// The new Observation's JSON as the stores write it.
fn created_json(template: &CodeValueFhirTemplate, g: &ObservationGroup) -> String {
    let identity =
        ObservationIdentity::new(g, &ResolvedIds::new("p1", "d1", None), IdPrecision::Seconds)
            .unwrap();
    let bytes = template
        .create_observation(g, t("2024-01-01T00:00:00Z"))
        .unwrap()
        .with_identity(identity)
        .to_json_bytes();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn merging_json_text_gives_what_merging_the_parsed_value_gives() {
    let template = hr_template();
    let first = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T08:00:05Z", "hr", "72")],
    );
    let mut current = created_json(&template, &first);
    let values = ["60", "72.5", "-0.5", "100", "1e2", "0", "88.125"];
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    let (mut on_text, mut unchanged, mut outside) = (0, 0, 0);
    for round in 0..400 {
        // Mostly inside the hour; now and then in the next hour (the text path declines).
        let hour = if next(20) == 0 { 9 } else { 8 };
        let count = 1 + next(3) as usize;
        let times: Vec<String> = (0..count)
            .map(|_| {
                let second = next(3600);
                format!(
                    "2024-01-01T{hour:02}:{:02}:{:02}Z",
                    second / 60,
                    second % 60
                )
            })
            .collect();
        let mut samples: Vec<(&str, &str, &str)> = times
            .iter()
            .map(|time| {
                (
                    time.as_str(),
                    "hr",
                    values[next(values.len() as u64) as usize],
                )
            })
            .collect();
        samples.sort_by(|a, b| a.0.cmp(b.0));
        let g = group(PeriodInterval::Hourly, &samples);
        let existing: Value = serde_json::from_str(&current).unwrap();
        let expected = template.merge_observation(&existing, &g).unwrap();
        match (
            template.merge_observation_json(current.as_bytes(), &g),
            expected,
        ) {
            (None, _) => {
                assert_eq!(hour, 9, "round {round}: declined a group inside the hour");
                outside += 1;
            }
            (Some(JsonMergeOutcome::Unchanged), MergeOutcome::Unchanged) => unchanged += 1,
            (Some(JsonMergeOutcome::Changed(text)), MergeOutcome::Changed(value)) => {
                assert_eq!(
                    text,
                    serde_json::to_string(&value).unwrap(),
                    "round {round}"
                );
                current = text;
                on_text += 1;
            }
            (fast, slow) => panic!("round {round}: text {fast:?}, parsed {slow:?}"),
        }
    }
    assert!(
        on_text > 300 && outside > 0,
        "{on_text} {unchanged} {outside}"
    );
    // A replay of what is there is unchanged on text too.
    let existing: Value = serde_json::from_str(&current).unwrap();
    let replay = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T08:00:05Z", "hr", "72")],
    );
    let after = match template.merge_observation(&existing, &replay).unwrap() {
        MergeOutcome::Changed(v) => serde_json::to_string(&v).unwrap(),
        MergeOutcome::Unchanged => current.clone(),
    };
    assert_eq!(
        template.merge_observation_json(after.as_bytes(), &replay),
        Some(JsonMergeOutcome::Unchanged)
    );
}

#[test]
fn merging_json_text_declines_what_it_cannot_do_exactly() {
    let template = hr_template();
    let first = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T08:00:05Z", "hr", "72")],
    );
    let later = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T08:10:00Z", "hr", "80")],
    );
    let json = created_json(&template, &first);
    assert!(matches!(
        template.merge_observation_json(json.as_bytes(), &later),
        Some(JsonMergeOutcome::Changed(_))
    ));
    let value: Value = serde_json::from_str(&json).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| -> String {
        let mut v = value.clone();
        f(v.as_object_mut().unwrap());
        serde_json::to_string(&v).unwrap()
    };
    let declined = [
        (
            "pretty-printed",
            serde_json::to_string_pretty(&value).unwrap(),
        ),
        (
            "another category",
            edit(&|o| {
                o.insert("category".into(), json!([{"text": "other"}]));
            }),
        ),
        (
            "no category",
            edit(&|o| {
                o.shift_remove("category");
            }),
        ),
        (
            "an effectiveDateTime",
            edit(&|o| {
                o.shift_remove("effectivePeriod");
                o.insert("effectiveDateTime".into(), json!("2024-01-01T08:00:00Z"));
            }),
        ),
        (
            "a period in another form",
            edit(&|o| {
                o["effectivePeriod"]["start"] = json!("2024-01-01T08:00:00Z");
            }),
        ),
        (
            "a period with more members",
            edit(&|o| {
                o["effectivePeriod"]["id"] = json!("x");
            }),
        ),
        (
            "no status",
            edit(&|o| {
                o.shift_remove("status");
            }),
        ),
        (
            "a Quantity",
            edit(&|o| {
                o.shift_remove("valueSampledData");
                o.insert("valueQuantity".into(), json!({"value": 1}));
            }),
        ),
        (
            "two dimensions",
            edit(&|o| {
                o["valueSampledData"]["dimensions"] = json!(2);
            }),
        ),
        (
            "an escape in the data",
            edit(&|o| {
                o["valueSampledData"]["data"] = json!("72 \"E\"");
            }),
        ),
    ];
    for (what, text) in declined {
        assert_eq!(
            template.merge_observation_json(text.as_bytes(), &later),
            None,
            "{what}"
        );
    }
    // Components the group has values for: declined as well.
    let bp = bp_template();
    let bp_first = group(
        PeriodInterval::Hourly,
        &[("2024-01-01T08:00:05Z", "systolic", "120")],
    );
    let bp_json = serde_json::to_string(&created(&bp, &bp_first)).unwrap();
    assert_eq!(
        bp.merge_observation_json(bp_json.as_bytes(), &bp_first),
        None
    );
}
