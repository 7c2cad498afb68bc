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
    let errors = report["deviceMapping"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        errors
            .iter()
            .all(|e| e["line"] == 2 && e["templateIndex"] == 0 && e["typeName"] == "hr")
    );
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
