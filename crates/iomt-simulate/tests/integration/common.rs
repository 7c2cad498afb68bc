//! Helpers shared by the integration tests.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use iomt_model::Measurement;
use iomt_normalize::{DeviceMapping, EnvelopeBuilder, NormalizeError};
use iomt_simulate::{Fleet, FleetConfig, Shape, SimMessage};
use serde_json::Value;

/// A fixed start, so every run reads the same instants.
pub fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap()
}

/// `count` messages of `config`, read `step` apart from [`start`].
pub fn generate(config: FleetConfig, count: usize, step: TimeDelta) -> Vec<SimMessage> {
    let mut fleet = Fleet::new(config).expect("valid configuration");
    let mut now = start();
    (0..count)
        .map(|_| {
            let message = fleet.next_message(now);
            now += step;
            message
        })
        .collect()
}

/// The example mapping files of `shape`: (devicecontent.json, fhirmapping.json).
pub fn example_mappings(shape: Shape) -> (String, String) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(shape.example_dir());
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
    };
    (read("devicecontent.json"), read("fhirmapping.json"))
}

/// Normalizes `message` as the connector's HTTP ingest would: the body wrapped with the
/// message's properties.
pub fn normalize(
    mapping: &DeviceMapping,
    builder: &mut EnvelopeBuilder,
    message: &SimMessage,
) -> Result<Vec<Measurement>, NormalizeError> {
    let strings = |pairs: &[(String, String)]| -> Vec<(String, Value)> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    };
    let token = builder.build(
        &message.body,
        &strings(&message.properties),
        &strings(&message.system_properties),
    )?;
    mapping.normalize(&token)
}
