//! Loops one normalization for profilers:
//! `cargo run --release -p iomt-normalize --example profile_normalize -- N [MODE] [large]`.
//!
//! MODE is `full` (default: the CalculatedContent JSONPath case), `jmespath` (the same template
//! in JMESPath), `iothub` (IotJsonPathContent with IoT Hub properties), `parse` (envelope build
//! and parse only) or `raw` (a bare `sonic_rs` parse of the body). `large` uses the bench's
//! ~2 KB message instead of the ~300-byte one. Count instructions with callgrind at two values
//! of N and divide the difference: nothing but the measured work runs per iteration.
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[path = "../benches/workload/mod.rs"]
mod workload;
use workload::{CALCULATED_JMESPATH, CALCULATED_JSONPATH, IOT_HUB, large_message, small_message};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .get(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mode = args.get(2).map_or("full", String::as_str);
    let msg = if args.get(3).map(String::as_str) == Some("large") {
        large_message()
    } else {
        small_message()
    };
    let msg = msg.as_bytes();
    let (mapping_text, iothub) = match mode {
        "jmespath" => (CALCULATED_JMESPATH, false),
        "iothub" => (IOT_HUB, true),
        "raw" | "parse" | "full" => (CALCULATED_JSONPATH, false),
        other => panic!("unknown mode {other}"),
    };
    let mapping = DeviceMapping::from_json_str(mapping_text).unwrap();
    let (properties, system) = if iothub {
        (
            vec![(
                "iothub-creation-time-utc".to_owned(),
                serde_json::json!("2026-11-26T08:00:01.500Z"),
            )],
            vec![
                (
                    "iothub-connection-device-id".to_owned(),
                    serde_json::json!("wristband-000123"),
                ),
                (
                    "iothub-enqueuedtime".to_owned(),
                    serde_json::json!("2026-11-26T08:00:01.620Z"),
                ),
            ],
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let mut env = EnvelopeBuilder::new();
    let mut out = Vec::new();
    // Prove the case does real work before looping.
    if mode != "raw" {
        let token = env.build(msg, &properties, &system).unwrap();
        assert_eq!(mapping.normalize(&token).unwrap().len(), 1);
    }
    let t = std::time::Instant::now();
    match mode {
        "raw" => {
            for _ in 0..n {
                std::hint::black_box(
                    sonic_rs::from_slice::<sonic_rs::Value>(std::hint::black_box(msg)).unwrap(),
                );
            }
        }
        "parse" => {
            for _ in 0..n {
                let token = env
                    .build(std::hint::black_box(msg), &properties, &system)
                    .unwrap();
                std::hint::black_box(&token);
            }
        }
        _ => {
            for _ in 0..n {
                out.clear();
                let token = env
                    .build(std::hint::black_box(msg), &properties, &system)
                    .unwrap();
                mapping.normalize_into(&token, &mut out).unwrap();
                std::hint::black_box(&out);
            }
        }
    }
    println!("{mode}: {:?}/msg", t.elapsed() / n.max(1) as u32);
}
