//! `iomt simulate` as users run it: NDJSON that the other commands read, and the send mode's
//! exit status.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn iomt(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .env_remove("IOMT_API_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iomt runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn simulate(extra: &[&str]) -> Output {
    let mut args = vec![
        "simulate",
        "--output",
        "-",
        "--seed",
        "3",
        "--start",
        "2026-11-26T08:00:00Z",
        "--devices",
        "5",
        "--rate",
        "10",
    ];
    args.extend_from_slice(extra);
    let out = iomt(&args, b"");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn output_is_reproducible_and_maps_to_observations() {
    let first = simulate(&["--count", "200"]);
    let second = simulate(&["--count", "200"]);
    assert_eq!(
        first.stdout, second.stdout,
        "same seed and start, same file"
    );
    assert_eq!(first.stdout.iter().filter(|&&b| b == b'\n').count(), 200);
    assert_eq!(
        String::from_utf8_lossy(&first.stderr).trim(),
        "wrote 200 wearable messages (0 bad on purpose) to stdout"
    );

    let report = iomt(
        &[
            "test-mapping",
            "--device-mapping",
            "examples/wearable/devicecontent.json",
            "--fhir-mapping",
            "examples/wearable/fhirmapping.json",
            "-",
        ],
        &first.stdout,
    );
    let json: serde_json::Value = serde_json::from_slice(&report.stdout).unwrap();
    assert_eq!(report.status.code(), Some(0), "{}", json["summary"]);
    assert_eq!(json["summary"]["messages"], 200);
    assert_eq!(json["summary"]["failedMessages"], 0);
    assert!(json["summary"]["observations"].as_u64().unwrap() > 20);
}

#[test]
fn iot_hub_output_is_envelopes_for_normalize() {
    let out = simulate(&["--shape", "iot-hub", "--duration", "10s"]);
    let normalized = iomt(
        &[
            "normalize",
            "--envelope",
            "--device-mapping",
            "examples/iothub/devicecontent.json",
            "-",
        ],
        &out.stdout,
    );
    assert_eq!(
        normalized.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&normalized.stderr)
    );
    let measurements: Vec<serde_json::Value> = String::from_utf8_lossy(&normalized.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(measurements.len(), 100, "10 s at 10 messages/s");
    assert_eq!(measurements[0]["DeviceId"], "sim-0001");
    assert_eq!(measurements[0]["OccurrenceTimeUtc"], "2026-11-26T08:00:00Z");
    assert!(measurements[0]["IngestionTimeUtc"].is_string());
}

#[test]
fn bad_messages_are_dead_letter_material() {
    let out = simulate(&["--shape", "iot-central", "--count", "30", "--bad-rate", "1"]);
    let normalized = iomt(
        &[
            "normalize",
            "--device-mapping",
            "examples/iotcentral/devicecontent.json",
            "-",
        ],
        &out.stdout,
    );
    assert_eq!(normalized.status.code(), Some(1));
    assert!(normalized.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&normalized.stderr).lines().count(),
        30
    );
}

#[test]
fn output_needs_an_end_and_a_destination_is_required() {
    let out = iomt(&["simulate", "--output", "-"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("give --count or --duration with --output"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = iomt(&["simulate", "--count", "1"], b"");
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap wants --target or --output"
    );
    let out = iomt(
        &[
            "simulate",
            "--output",
            "-",
            "--count",
            "1",
            "--bad-rate",
            "2",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad message rate 2 is not a fraction"));
}

#[test]
fn sending_to_nothing_says_so_and_fails() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let target = format!("http://{address}");
    let out = iomt(
        &[
            "simulate", "--target", &target, "--count", "50", "--rate", "100",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("the target did not answer"), "{stdout}");
    assert!(stdout.contains("accepted  0"), "{stdout}");
}
