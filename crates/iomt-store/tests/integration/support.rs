//! Realistic observation groups: device messages normalized with the wearable example's device
//! mapping and windowed with its FHIR mapping, as the pipeline does.

use std::sync::Arc;

use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
use iomt_transform::{FhirTemplates, ObservationGroup, Windower};

const DEVICE_MAPPING: &str = include_str!("../../../../examples/wearable/devicecontent.json");
const FHIR_MAPPING: &str = include_str!("../../../../examples/wearable/fhirmapping.json");

/// The example's FHIR templates.
pub fn templates() -> Arc<FhirTemplates> {
    Arc::new(FhirTemplates::from_json_str(FHIR_MAPPING).expect("the example fhir mapping loads"))
}

/// The groups the example's mappings make of `messages` (device message bodies), in window
/// creation order.
pub fn groups(messages: &[&str]) -> Vec<ObservationGroup> {
    let mapping =
        DeviceMapping::from_json_str(DEVICE_MAPPING).expect("the example device mapping loads");
    let mut envelope = EnvelopeBuilder::new();
    let mut windower = Windower::new(templates());
    for message in messages {
        let token = envelope
            .build(message.as_bytes(), &[], &[])
            .expect("test messages are json");
        for measurement in mapping.normalize(&token).expect("test messages normalize") {
            windower
                .push(measurement)
                .expect("every test type has a template");
        }
    }
    windower.flush_all()
}

/// The one group `message` makes.
pub fn group(message: &str) -> ObservationGroup {
    let mut groups = groups(&[message]);
    assert_eq!(groups.len(), 1, "expected one group from {message}");
    groups.remove(0)
}

/// A heart-rate message of the wristband at `time` (hour windows, SampledData).
pub fn heart_rate(device: &str, patient: &str, time: &str, bpm: u32) -> String {
    format!(
        r#"{{"deviceId":"{device}","patientId":"{patient}","endDate":"{time}","heartRate":{bpm}}}"#
    )
}

/// An SpO2 message (one-instant windows, Quantity).
pub fn spo2(device: &str, patient: &str, time: &str, percent: u32) -> String {
    format!(
        r#"{{"deviceId":"{device}","patientId":"{patient}","endDate":"{time}","spo2":{percent}}}"#
    )
}
