//! Normalization throughput on one core, next to parse-only baselines of the same bytes.
//!
//! Each normalize case includes everything the service does per message: wrapping the body in
//! the event envelope, parsing, matching and extracting. `cargo bench -p iomt-normalize`.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
use std::hint::black_box;

const CALCULATED_JSONPATH: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
    "deviceIdExpression": "$.matchedToken.deviceId", "patientIdExpression": "$.matchedToken.patientId",
    "timestampExpression": "$.matchedToken.endDate",
    "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true}]}}]}"#;

const CALCULATED_JMESPATH: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "defaultExpressionLanguage": "JmesPath",
    "typeMatchExpression": "[Body][?heartRate]",
    "deviceIdExpression": "matchedToken.deviceId", "patientIdExpression": "matchedToken.patientId",
    "timestampExpression": "matchedToken.endDate",
    "values": [{"valueName": "hr", "valueExpression": "matchedToken.heartRate", "required": true}]}}]}"#;

const IOT_HUB: &str = r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "IotJsonPathContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@Body.heartRate)]",
    "patientIdExpression": "$.Body.patientId",
    "values": [{"valueName": "hr", "valueExpression": "$.Body.heartRate", "required": true}]}}]}"#;

/// A ~300-byte wearable message.
fn small_message() -> String {
    r#"{"deviceId":"wristband-000123","patientId":"patient-000456","endDate":"2026-11-26T08:00:01.500Z","heartRate":72,"battery":0.87,"firmware":"4.2.1-build.7781","model":"WB-200","signalQuality":"good","wornOnWrist":"left","sequence":1234567,"session":"6f1c2b7e-0d7a-4c1e-9a55-2f4c8e1b9d10"}"#
        .to_owned()
}

/// A ~2 KB message: the same reading plus a realistic amount of device metadata.
fn large_message() -> String {
    let mut extra = String::new();
    for i in 0..19 {
        extra.push_str(&format!(
            r#","diag{i:02}":{{"sensor":"ppg-{i}","gain":{},"offset":-{}.25,"ok":true,"note":"calibrated at factory"}}"#,
            i * 3 + 1,
            i
        ));
    }
    format!(
        r#"{{"deviceId":"wristband-000123","patientId":"patient-000456","endDate":"2026-11-26T08:00:01.500Z","heartRate":72{extra}}}"#
    )
}

fn bench(c: &mut Criterion) {
    let cases = [("small", small_message()), ("large", large_message())];
    let mut group = c.benchmark_group("normalize");
    for (size, message) in &cases {
        let bytes = message.as_bytes();
        group.throughput(Throughput::Elements(1));
        group.bench_function(
            format!("parse-only/serde_json/{size}-{}B", bytes.len()),
            |b| {
                b.iter(|| {
                    black_box(
                        serde_json::from_slice::<serde_json::Value>(black_box(bytes)).unwrap(),
                    )
                })
            },
        );
        group.bench_function(
            format!("parse-only/sonic_rs/{size}-{}B", bytes.len()),
            |b| {
                b.iter(|| {
                    black_box(sonic_rs::from_slice::<sonic_rs::Value>(black_box(bytes)).unwrap())
                })
            },
        );
        for (name, mapping_text) in [
            ("calculated-jsonpath", CALCULATED_JSONPATH),
            ("calculated-jmespath", CALCULATED_JMESPATH),
        ] {
            let mapping = DeviceMapping::from_json_str(mapping_text).unwrap();
            let mut envelope = EnvelopeBuilder::new();
            let mut out = Vec::new();
            // Prove the case does real work before timing it.
            let token = envelope.build(bytes, &[], &[]).unwrap();
            assert_eq!(
                mapping.normalize(&token).unwrap().len(),
                1,
                "{name} must produce one measurement"
            );
            group.bench_function(format!("{name}/{size}-{}B", bytes.len()), |b| {
                b.iter(|| {
                    out.clear();
                    let token = envelope.build(black_box(bytes), &[], &[]).unwrap();
                    mapping.normalize_into(&token, &mut out).unwrap();
                    black_box(&out);
                })
            });
        }
        let mapping = DeviceMapping::from_json_str(IOT_HUB).unwrap();
        let properties = vec![(
            "iothub-creation-time-utc".to_owned(),
            serde_json::json!("2026-11-26T08:00:01.500Z"),
        )];
        let system = vec![
            (
                "iothub-connection-device-id".to_owned(),
                serde_json::json!("wristband-000123"),
            ),
            (
                "iothub-enqueuedtime".to_owned(),
                serde_json::json!("2026-11-26T08:00:01.620Z"),
            ),
        ];
        let mut envelope = EnvelopeBuilder::new();
        let mut out = Vec::new();
        let token = envelope.build(bytes, &properties, &system).unwrap();
        assert_eq!(
            mapping.normalize(&token).unwrap().len(),
            1,
            "iot hub must produce one measurement"
        );
        group.bench_function(format!("iothub-envelope/{size}-{}B", bytes.len()), |b| {
            b.iter(|| {
                out.clear();
                let token = envelope
                    .build(black_box(bytes), &properties, &system)
                    .unwrap();
                mapping.normalize_into(&token, &mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
