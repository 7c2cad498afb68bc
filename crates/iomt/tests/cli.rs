//! The `iomt` binary as users run it.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn iomt(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iomt runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn lines(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not json: {e}")))
        .collect()
}

#[test]
fn normalizes_the_readme_example() {
    let out = iomt(&["normalize", "examples/wearable/messages.ndjson"], "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "two example lines are bad on purpose"
    );
    let measurements = lines(&out.stdout);
    let types: Vec<_> = measurements
        .iter()
        .map(|m| m["Type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "heartrate",
            "heartrate",
            "heartrate",
            "spo2",
            "bloodpressure",
            "steps",
            "bodytemperature",
            "heartrate",
            "heartrate"
        ]
    );
    assert_eq!(measurements[1]["Properties"][0]["Value"], "74");
    assert_eq!(measurements[2]["OccurrenceTimeUtc"], "2026-11-26T08:15:00Z");
    assert_eq!(measurements[6]["Properties"][0]["Value"], "37.5");
    let failures = lines(&out.stderr);
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0]["line"], 7);
    assert_eq!(failures[0]["class"], "IncompatibleDataException");
    assert_eq!(failures[0]["typeName"], "bloodpressure");
    assert_eq!(failures[1]["line"], 8);
    assert_eq!(failures[1]["class"], "InvalidDataFormatException");
}

#[test]
fn reads_stdin_and_envelopes() {
    let event = r#"{"Body":{"heartRate":78},"Properties":{"iothub-creation-time-utc":"2026-11-26T08:00:00Z"},"SystemProperties":{"iothub-connection-device-id":"m1","iothub-enqueuedtime":"2026-11-26T08:00:01Z"}}"#;
    let out = iomt(
        &[
            "normalize",
            "--envelope",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
            "-",
        ],
        event,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = &lines(&out.stdout)[0];
    assert_eq!(m["DeviceId"], "m1");
    assert_eq!(m["IngestionTimeUtc"], "2026-11-26T08:00:01Z");
}

#[test]
fn validate_reports_errors_with_positions_and_fails() {
    let dir = std::env::temp_dir().join(format!("iomt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        "{\"templateType\": \"CollectionContent\", \"template\": [\n {\"templateType\": \"JsonPathContent\", \"template\": {\n  \"typeName\": \"hr\"}}]}",
    )
    .unwrap();
    let out = iomt(
        &[
            "validate",
            "--json",
            "--device-mapping",
            bad.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["deviceMapping"]["file"], bad.to_str().unwrap());
    assert!(report["fhirMapping"].is_null(), "no fhir mapping was given");
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors.iter().all(|e| e["mapping"] == "device"
        && e["line"] == 2
        && e["templateIndex"] == 0
        && e["typeName"] == "hr"
        && e["class"] == "InvalidTemplateException"
        && e["severity"] == "blocking"));
    let ok = iomt(
        &[
            "validate",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
        ],
        "",
    );
    assert!(ok.status.success());
    let embedded = iomt(&["validate"], "");
    assert!(
        embedded.status.success(),
        "{}",
        String::from_utf8_lossy(&embedded.stdout)
    );
}

#[test]
fn missing_files_are_clear_errors() {
    let out = iomt(&["normalize", "--device-mapping", "nope.json"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read nope.json"));
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("iomt-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{} is not json: {e}", String::from_utf8_lossy(bytes)))
}

#[test]
fn validate_cross_checks_the_fhir_mapping() {
    // heartrate's template reads "pulse", not "hr"; there is no template for bloodpressure.
    let fhir = temp_file(
        "cross.json",
        r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "HeartRate", "codes": [],
    "value": {"valueType": "Quantity", "valueName": "pulse"}}}]}"#,
    );
    let args = [
        "validate",
        "--json",
        "--device-mapping",
        "examples/iothub/devicecontent.json",
        "--fhir-mapping",
        fhir.to_str().unwrap(),
    ];
    let out = iomt(&args, "");
    assert_eq!(out.status.code(), Some(0), "warnings do not fail");
    let report = json(&out.stdout);
    assert_eq!(report["fhirMapping"]["typeNames"][0], "HeartRate");
    let warnings = report["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:#?}");
    assert_eq!(warnings[0]["kind"], "valueNotInFhirTemplate");
    assert!(
        warnings[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("The value [hr] in Device Mapping [heartrate] is not represented")
    );
    assert_eq!(warnings[0]["templateIndex"], 0);
    assert_eq!(warnings[0]["line"], 11);
    assert_eq!(warnings[1]["kind"], "noFhirTemplate");
    assert!(warnings[1]["message"].as_str().unwrap().starts_with(
        "No matching Fhir Template exists for Device Mapping [bloodpressure]. Ensure case matches. Available Fhir Templates: [HeartRate]"
    ));

    // The text form names the file of each problem; an error in the fhir mapping fails.
    let broken = temp_file(
        "broken.json",
        "{\"templateType\": \"CollectionFhir\", \"template\": [\n {\"templateType\": \"CodeValueFhir\", \"template\": {\"codes\": []}}]}",
    );
    let out = iomt(
        &[
            "validate",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
            "--fhir-mapping",
            broken.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "{}: error: template 0, field typeName, line 2, column 48: required property 'TypeName' not found",
            broken.display()
        )),
        "{text}"
    );
    assert!(text.contains("examples/iothub/devicecontent.json: ok, 2 template(s)"));
    // A template that did not load may be the missing one: no guesses about missing types.
    assert!(!text.contains("warning"), "{text}");

    // Both example pairs agree with each other.
    for example in ["wearable", "iothub", "iotcentral"] {
        let out = iomt(
            &[
                "validate",
                "--json",
                "--device-mapping",
                &format!("examples/{example}/devicecontent.json"),
                "--fhir-mapping",
                &format!("examples/{example}/fhirmapping.json"),
            ],
            "",
        );
        assert!(out.status.success(), "{example}");
        let report = json(&out.stdout);
        assert_eq!(report["warnings"], serde_json::json!([]), "{example}");
    }
}

#[test]
fn test_mapping_reports_the_readme_example() {
    let out = iomt(&["test-mapping", "examples/wearable/messages.ndjson"], "");
    assert_eq!(
        out.status.code(),
        Some(1),
        "two example lines are bad on purpose"
    );
    let report = json(&out.stdout);
    assert_eq!(
        report["summary"],
        serde_json::json!({"messages": 9, "failedMessages": 2, "measurements": 9, "observations": 7, "failedGroups": 0})
    );
    let messages = report["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 9);
    assert_eq!(messages[2]["line"], 3);
    let matched: Vec<&str> = messages[2]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["typeName"].as_str().unwrap())
        .collect();
    assert_eq!(matched, ["heartrate", "spo2"]);
    assert_eq!(messages[6]["error"]["class"], "IncompatibleDataException");
    assert_eq!(messages[6]["error"]["typeName"], "bloodpressure");
    assert_eq!(messages[6]["error"]["templateIndex"], 2);
    assert!(messages[6]["error"]["line"].is_u64());
    assert_eq!(messages[7]["error"]["class"], "InvalidDataFormatException");
    assert_eq!(messages[8]["measurements"].as_array().unwrap().len(), 2);

    let observations = report["observations"].as_array().unwrap();
    // wristband-0001's two readings share one hourly Observation.
    let first = &observations[0]["observation"];
    assert_eq!(first["subject"]["reference"], "Patient/patient-0001");
    assert_eq!(first["device"]["reference"], "Device/wristband-0001");
    let data = first["valueSampledData"]["data"].as_str().unwrap();
    assert!(data.starts_with("72 74 E "), "{}", &data[..20]);
    assert_eq!(data.split(' ').count(), 3600);
    let steps = observations
        .iter()
        .find(|o| o["group"]["typeName"] == "steps")
        .unwrap();
    assert_eq!(steps["window"]["timeZone"], "Europe/Amsterdam");
    assert_eq!(steps["window"]["start"], "2026-11-25T23:00:00.0000000Z");
    assert_eq!(steps["observation"]["valueQuantity"]["value"], 1432);
    let bp = observations
        .iter()
        .find(|o| o["group"]["typeName"] == "bloodpressure")
        .unwrap();
    assert_eq!(
        bp["observation"]["component"][1]["valueQuantity"]["value"],
        79
    );
    let temperature = observations
        .iter()
        .find(|o| o["group"]["typeName"] == "bodytemperature")
        .unwrap();
    assert_eq!(
        temperature["observation"]["valueQuantity"]["value"],
        serde_json::json!(37.5)
    );
    assert!(report["aggregated"].is_null());
}

#[test]
fn test_mapping_reads_envelopes_from_stdin_with_lookup_identity() {
    let events = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/iothub/events.ndjson"),
    )
    .unwrap();
    let out = iomt(
        &[
            "test-mapping",
            "--envelope",
            "--identity",
            "lookup",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
            "--fhir-mapping",
            "examples/iothub/fhirmapping.json",
        ],
        &events,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report = json(&out.stdout);
    let hr = &report["observations"][0]["observation"];
    assert_eq!(
        hr["subject"]["reference"],
        "Patient/<Patient-Reference-On-FHIR-Server>"
    );
    assert_eq!(hr["device"]["reference"], "Device/bedside-monitor-01");
    assert_eq!(
        report["messages"][0]["measurements"][0]["IngestionTimeUtc"],
        "2026-11-26T08:00:00.12Z"
    );
    let bp = &report["observations"][1]["observation"];
    assert_eq!(bp["component"][0]["valueQuantity"]["value"], 132);
}

#[test]
fn test_mapping_aggregates_and_reports_group_errors() {
    let input = [
        r#"{"deviceId":"w1","patientId":"p1","heartRate":70}"#,
        r#"{"deviceId":"w2","patientId":"p1","heartRate":71}"#,
        r#"{"deviceId":"w3","patientId":"p1","endDate":"2026-11-26T08:00:00Z","steps":10}"#,
        r#"{"deviceId":"w3","patientId":"p1","endDate":"2026-11-26T20:00:00Z","steps":20}"#,
    ]
    .join("\n");
    let out = iomt(&["test-mapping", "--aggregate", "-"], &input);
    assert_eq!(out.status.code(), Some(1));
    let report = json(&out.stdout);
    let aggregated = report["aggregated"].as_array().unwrap();
    assert_eq!(aggregated.len(), 2, "{aggregated:#?}");
    assert_eq!(aggregated[0]["count"], 2);
    assert_eq!(aggregated[0]["stage"], "normalization");
    assert_eq!(aggregated[0]["firstLine"], 1);
    // Two step totals on one (Amsterdam) day: a Quantity takes exactly one value.
    assert_eq!(aggregated[1]["stage"], "fhirTransformation");
    assert_eq!(aggregated[1]["class"], "InvalidQuantityFhirValueException");
    assert_eq!(report["groupErrors"], serde_json::json!([]));
    assert_eq!(report["summary"]["failedGroups"], 1);
}
