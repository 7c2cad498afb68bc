use chrono::{DateTime, Utc};
use iomt_model::ErrorClass;

use super::*;

const DEVICE: &str = r#"{
  "templateType": "CollectionContent",
  "template": [
    {
      "templateType": "CalculatedContent",
      "template": {
        "typeName": "heartrate",
        "typeMatchExpression": "$..[?(@heartRate)]",
        "deviceIdExpression": "$.matchedToken.deviceId",
        "patientIdExpression": "$.matchedToken.patientId",
        "timestampExpression": "$.matchedToken.time",
        "values": [
          { "valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true },
          { "valueName": "battery", "valueExpression": "$.matchedToken.battery", "required": false }
        ]
      }
    },
    {
      "templateType": "CalculatedContent",
      "template": {
        "typeName": "steps",
        "typeMatchExpression": "$..[?(@steps)]",
        "deviceIdExpression": "$.matchedToken.deviceId",
        "timestampExpression": "$.matchedToken.time",
        "values": [
          { "valueName": "steps", "valueExpression": "$.matchedToken.steps", "required": true }
        ]
      }
    }
  ]
}"#;

const FHIR: &str = r#"{
  "templateType": "CollectionFhir",
  "template": [
    {
      "templateType": "CodeValueFhir",
      "template": {
        "typeName": "HeartRate",
        "periodInterval": 60,
        "codes": [{ "code": "8867-4", "system": "http://loinc.org", "display": "Heart rate" }],
        "value": { "valueType": "SampledData", "valueName": "hr", "defaultPeriod": 600000, "unit": "/min" }
      }
    }
  ]
}"#;

fn issued() -> DateTime<Utc> {
    iomt_model::timestamp::parse("2024-01-02T03:04:05Z").unwrap()
}

fn hr(device: &str, patient: Option<&str>, time: &str, value: u32) -> Message {
    let patient = patient.map_or(String::new(), |p| format!(r#","patientId":"{p}""#));
    Message::body(format!(
        r#"{{"deviceId":"{device}"{patient},"time":"{time}","heartRate":{value}}}"#
    ))
}

#[test]
fn validate_reports_cross_checks_with_the_original_wording() {
    let report = validate(DEVICE, Some(FHIR));
    assert!(report.is_valid(), "{:#?}", report.errors);
    assert_eq!(report.device_mapping.type_names, ["heartrate", "steps"]);
    assert_eq!(report.fhir_mapping.as_ref().unwrap().templates, 1);
    let kinds: Vec<WarningKind> = report.warnings.iter().map(|w| w.kind).collect();
    assert_eq!(
        kinds,
        [
            WarningKind::ValueNotInFhirTemplate,
            WarningKind::NoFhirTemplate
        ]
    );
    let unused = &report.warnings[0];
    assert!(unused.message.starts_with(
        "The value [battery] in Device Mapping [heartrate] is not represented within the Fhir Template of type [heartrate]. Available values are: [hr]. No value will appear inside of Observations"
    ), "{}", unused.message);
    assert_eq!(unused.template_index, Some(0));
    assert_eq!(unused.field.as_deref(), Some("values[1].valueName"));
    assert_eq!(unused.line, Some(14));
    let missing = &report.warnings[1];
    assert!(missing.message.starts_with(
        "No matching Fhir Template exists for Device Mapping [steps]. Ensure case matches. Available Fhir Templates: [HeartRate]"
    ), "{}", missing.message);
    assert_eq!(missing.mapping, Some(MappingKind::Device));
    assert_eq!(missing.type_name.as_deref(), Some("steps"));

    // Without a FHIR mapping there is nothing to cross check.
    let alone = validate(DEVICE, None);
    assert!(alone.warnings.is_empty() && alone.fhir_mapping.is_none());
}

#[test]
fn validate_lists_errors_of_both_mappings() {
    let device = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "JsonPathContent", "template": {"typeName": "hr"}}]}"#;
    let fhir = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "hr", "codes": [], "periodInterval": 7}}]}"#;
    let report = validate(device, Some(fhir));
    assert!(!report.is_valid());
    let device_errors: Vec<_> = report
        .errors
        .iter()
        .filter(|e| e.mapping == MappingKind::Device)
        .collect();
    assert_eq!(device_errors.len(), 3, "{device_errors:#?}");
    assert!(device_errors.iter().all(|e| e.line == Some(2)
        && e.template_index == Some(0)
        && e.class == ErrorClass::InvalidTemplateException
        && e.severity == iomt_model::Severity::Blocking));
    let fhir_error = report
        .errors
        .iter()
        .find(|e| e.mapping == MappingKind::Fhir)
        .unwrap();
    assert_eq!(fhir_error.field.as_deref(), Some("periodInterval"));
    assert_eq!(fhir_error.type_name.as_deref(), Some("hr"));
    assert_eq!(fhir_error.line, Some(2));
    assert!(
        fhir_error
            .to_string()
            .starts_with("template 0 (hr), field periodInterval, line 2, column ")
    );
    // The FHIR template of "hr" did not load: no second, misleading "no fhir template" warning.
    assert!(report.warnings.is_empty(), "{:#?}", report.warnings);

    // A FHIR mapping that is not a collection at all: its error, and no cross checks.
    let report = validate(DEVICE, Some("[]"));
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].mapping, MappingKind::Fhir);
    assert!(report.warnings.is_empty());
}

#[test]
fn all_messages_form_one_batch() {
    let messages = [
        hr("d1", Some("p1"), "2024-01-01T10:05:00Z", 70),
        hr("d1", Some("p1"), "2024-01-01T10:25:00Z", 72),
        hr("d1", Some("p1"), "2024-01-01T11:00:00Z", 75),
    ];
    let report = test_mapping(DEVICE, FHIR, &messages, &TestOptions::new(issued()));
    assert!(report.is_success(), "{report:#?}");
    assert_eq!(report.summary.measurements, 3);
    assert_eq!(report.observations.len(), 2, "one per hour");
    let first = &report.observations[0];
    assert_eq!(first.window.start, "2024-01-01T10:00:00.0000000Z");
    assert_eq!(first.window.end, "2024-01-01T10:59:59.9999999Z");
    assert_eq!(first.window.interval, "Hourly");
    assert_eq!(
        first.observation["valueSampledData"]["data"],
        "70 E 72 E E E"
    );
    assert_eq!(first.observation["issued"], "2024-01-02T03:04:05+00:00");
    // Identity as the Data Mapper in Create mode: message identifiers, hashed id.
    assert_eq!(first.observation["subject"]["reference"], "Patient/p1");
    assert_eq!(first.observation["device"]["reference"], "Device/d1");
    let value = "p1.d1.heartrate.20240101100000Z.20240101105959Z";
    assert_eq!(first.observation["identifier"][0]["value"], value);
    assert_eq!(
        first.observation["id"],
        iomt_transform::observation::resource_id(Some(iomt_transform::SERVICE_SYSTEM), value)
    );
    assert_eq!(report.messages[0].templates[0].type_name, "heartrate");
    assert_eq!(report.messages[0].templates[0].matches, 1);
    assert_eq!(report.messages[0].measurements[0]["Type"], "heartrate");
}

#[test]
fn identity_modes() {
    let messages = [hr("d1", None, "2024-01-01T10:05:00Z", 70)];
    let create = test_mapping(DEVICE, FHIR, &messages, &TestOptions::new(issued()));
    assert_eq!(create.observations.len(), 0);
    assert_eq!(create.group_errors.len(), 1);
    let e = &create.group_errors[0];
    assert_eq!(e.class, ErrorClass::ResourceIdentityNotDefinedException);
    assert!(e.message.contains("no patient id"), "{}", e.message);
    assert_eq!(
        e.window.as_ref().map(|w| w.start.as_str()),
        Some("2024-01-01T10:00:00.0000000Z")
    );
    assert!(!create.is_success());

    let options = TestOptions::new(issued()).with_identity(IdentityMode::Lookup);
    let lookup = test_mapping(DEVICE, FHIR, &messages, &options);
    let obs = &lookup.observations[0].observation;
    assert_eq!(
        obs["subject"]["reference"],
        "Patient/<Patient-Reference-On-FHIR-Server>"
    );
    assert_eq!(obs["device"]["reference"], "Device/d1");
    assert!(
        obs["identifier"][0]["value"]
            .as_str()
            .unwrap()
            .starts_with("<Patient-Reference-On-FHIR-Server>.d1.heartrate.")
    );

    let options = TestOptions::new(issued()).with_identity(IdentityMode::None);
    let none = test_mapping(DEVICE, FHIR, &messages, &options);
    let obs = &none.observations[0].observation;
    for member in ["id", "identifier", "subject", "device"] {
        assert!(obs.get(member).is_none(), "{member} in {obs}");
    }
}

#[test]
fn every_failure_is_reported_and_none_hides_another() {
    let messages = [
        Message::body("not json").at_line(1),
        Message::body(r#"{"deviceId":"d1","time":"2024-01-01T10:00:00Z","steps":10}"#).at_line(2),
        Message::body(r#"{"deviceId":"d1","heartRate":70}"#).at_line(3),
        Message::body(r#"{"nothing":"here"}"#).at_line(4),
        hr("d1", Some("p1"), "2024-01-01T10:05:00Z", 70).at_line(5),
    ];
    let report = test_mapping(DEVICE, FHIR, &messages, &TestOptions::new(issued()));
    assert_eq!(report.summary.messages, 5);
    assert_eq!(report.summary.failed_messages, 2);
    assert_eq!(report.summary.observations, 1);
    assert_eq!(report.summary.failed_groups, 1);
    let invalid = report.messages[0].error.as_ref().unwrap();
    assert_eq!(invalid.class, ErrorClass::InvalidDataFormatException);
    let missing = report.messages[2].error.as_ref().unwrap();
    assert_eq!(missing.class, ErrorClass::IncompatibleDataException);
    assert_eq!(missing.template_index, Some(0));
    assert_eq!(missing.type_name.as_deref(), Some("heartrate"));
    assert!(missing.line.is_some() && missing.column.is_some());
    assert!(missing.message.contains("[TimestampExpression]"));
    let no_template = &report.group_errors[0];
    assert_eq!(no_template.class, ErrorClass::TemplateNotFoundException);
    assert!(no_template.message.starts_with(
        "No Fhir Template exists with the type name [steps]. available fhir templates: [HeartRate]"
    ));
    let no_measurements: Vec<_> = report
        .warnings
        .iter()
        .filter(|w| w.kind == WarningKind::NoMeasurements)
        .collect();
    assert_eq!(no_measurements.len(), 1);
    assert_eq!(no_measurements[0].message_index, Some(3));
    assert_eq!(no_measurements[0].message, NO_MEASUREMENTS);
    assert!(report.aggregated.is_none());
}

#[test]
fn aggregation_counts_identical_errors() {
    let mut messages = Vec::new();
    for i in 0..3 {
        messages.push(Message::body(format!(
            r#"{{"deviceId":"d{i}","heartRate":70}}"#
        )));
        messages.push(Message::body(
            r#"{"time":"2024-01-01T10:00:00Z","heartRate":70}"#,
        ));
        messages.push(Message::body(r#"{"other":1}"#));
    }
    messages.push(hr("d1", Some("p1"), "2024-01-01T10:05:00Z", 70));
    let options = TestOptions::new(issued()).with_aggregation(true);
    let report = test_mapping(DEVICE, FHIR, &messages, &options);
    let issues = report.aggregated.as_ref().unwrap();
    let counts: Vec<(Level, usize)> = issues.iter().map(|i| (i.level, i.count)).collect();
    assert_eq!(
        counts,
        [(Level::Error, 3), (Level::Error, 3), (Level::Warning, 3)],
        "{issues:#?}"
    );
    assert!(issues[0].message.contains("[TimestampExpression]"));
    assert_eq!(issues[0].first_message_index, Some(0));
    assert!(issues[1].message.contains("[DeviceIdExpression]"));
    assert_eq!(issues[1].first_message_index, Some(1));
    assert_eq!(issues[2].message, NO_MEASUREMENTS);
    assert_eq!(issues[2].class, None);
    // Failed messages are counted, not listed; the good one is listed.
    assert_eq!(report.messages.len(), 4);
    assert_eq!(report.summary.failed_messages, 6);
    assert!(
        report
            .warnings
            .iter()
            .all(|w| w.kind != WarningKind::NoMeasurements)
    );
    assert_eq!(report.observations.len(), 1);
}

#[test]
fn envelopes_give_ingestion_times_that_decide_duplicates() {
    let envelope = |hr: u32, enqueued: &str| {
        Message::envelope(format!(
            r#"{{"Body":{{"deviceId":"d1","patientId":"p1","time":"2024-01-01T10:00:00Z","heartRate":{hr}}},"Properties":{{}},"SystemProperties":{{"x-opt-enqueued-time":"{enqueued}"}}}}"#
        ))
    };
    let messages = [
        envelope(80, "2024-01-01T10:00:02Z"),
        envelope(70, "2024-01-01T10:00:01Z"),
    ];
    let report = test_mapping(DEVICE, FHIR, &messages, &TestOptions::new(issued()));
    assert_eq!(
        report.messages[0].measurements[0]["IngestionTimeUtc"],
        "2024-01-01T10:00:02Z"
    );
    // Same occurrence time: the batch keeps the latest ingestion time.
    assert_eq!(
        report.observations[0].observation["valueSampledData"]["data"],
        "80 E E E E E"
    );
}

#[test]
fn a_fhir_template_that_did_not_load_is_named_as_such() {
    let fhir = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartrate", "codes": [], "periodInterval": 7}}]}"#;
    let messages = [hr("d1", Some("p1"), "2024-01-01T10:05:00Z", 70)];
    let report = test_mapping(DEVICE, fhir, &messages, &TestOptions::new(issued()));
    assert_eq!(report.mapping_errors.len(), 1);
    assert!(report.group_errors[0].message.starts_with(
        "no fhir template for type 'heartrate' loaded: the fhir mapping has templates with errors"
    ));
}

#[test]
fn report_json_is_camel_case_and_complete() {
    let messages = [hr("d1", Some("p1"), "2024-01-01T10:05:00Z", 70).at_line(7)];
    let report = test_mapping(DEVICE, FHIR, &messages, &TestOptions::new(issued()));
    let json = serde_json::to_value(&report).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "summary",
            "deviceMapping",
            "fhirMapping",
            "mappingErrors",
            "warnings",
            "messages",
            "observations",
            "groupErrors",
            "aggregated"
        ]
    );
    assert_eq!(json["messages"][0]["line"], 7);
    assert!(json["messages"][0]["error"].is_null());
    assert_eq!(json["observations"][0]["window"]["periodInterval"], 60);
    assert!(json["observations"][0]["window"]["timeZone"].is_null());
    assert_eq!(json["observations"][0]["group"]["patientId"], "p1");
    assert_eq!(json["warnings"][0]["kind"], "valueNotInFhirTemplate");
    assert_eq!(json["warnings"][0]["mapping"], "device");
    assert_eq!(json["summary"]["failedGroups"], 0);
}
