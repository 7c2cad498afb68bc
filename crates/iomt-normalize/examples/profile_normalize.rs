//! Loops one normalization for profilers: `cargo run --release -p iomt-normalize --example profile_normalize -- N`.
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mapping = DeviceMapping::from_json_str(r#"{"templateType": "CollectionContent", "template": [
  {"templateType": "CalculatedContent", "template": {
    "typeName": "heartrate", "typeMatchExpression": "$..[?(@heartRate)]",
    "deviceIdExpression": "$.matchedToken.deviceId", "patientIdExpression": "$.matchedToken.patientId",
    "timestampExpression": "$.matchedToken.endDate",
    "values": [{"valueName": "hr", "valueExpression": "$.matchedToken.heartRate", "required": true}]}}]}"#).unwrap();
    let msg = br#"{"deviceId":"wristband-000123","patientId":"patient-000456","endDate":"2026-11-26T08:00:01.500Z","heartRate":72,"battery":0.87,"firmware":"4.2.1-build.7781","model":"WB-200","signalQuality":"good","wornOnWrist":"left","sequence":1234567,"session":"6f1c2b7e-0d7a-4c1e-9a55-2f4c8e1b9d10"}"#;
    let mut env = EnvelopeBuilder::new();
    let mut out = Vec::new();
    let t = std::time::Instant::now();
    let mut parse_only = std::time::Duration::ZERO;
    for _ in 0..n {
        out.clear();
        let t0 = std::time::Instant::now();
        let token = env.build(msg, &[], &[]).unwrap();
        parse_only += t0.elapsed();
        if std::env::args().nth(2).as_deref() == Some("parse") {
            std::hint::black_box(&token);
            continue;
        }
        mapping.normalize_into(&token, &mut out).unwrap();
        std::hint::black_box(&out);
    }
    let total = t.elapsed();
    println!(
        "{:?}/msg total, {:?}/msg envelope+parse",
        total / n as u32,
        parse_only / n as u32
    );
}
