//! Normalization throughput on one core, next to parse-only baselines of the same bytes.
//!
//! Each normalize case includes everything the service does per message: wrapping the body in
//! the event envelope, parsing, matching and extracting. `cargo bench -p iomt-normalize`.
#![allow(missing_docs)] // criterion's macros generate undocumented items

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
use std::hint::black_box;

mod workload;
use workload::{CALCULATED_JMESPATH, CALCULATED_JSONPATH, IOT_HUB, large_message, small_message};

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
