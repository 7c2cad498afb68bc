//! The transformation workload that `benches/transform.rs` times and
//! `examples/profile_transform.rs` profiles (the example includes this file by path), so the
//! two measure the same thing.

use chrono::{DateTime, Duration, Utc};
use iomt_model::{Measurement, MeasurementProperty};
use iomt_transform::fhir_template::QuantityValueType;
use iomt_transform::observation::Coding;
use iomt_transform::{CodeValueFhirTemplate, FhirValueType};

/// The first measurement's time.
pub fn base() -> DateTime<Utc> {
    iomt_model::timestamp::parse("2024-01-01T10:00:00Z").unwrap_or_default()
}

/// `n` heart-rate measurements from `devices` devices, one second apart per device.
pub fn measurements(n: usize, devices: usize) -> Vec<Measurement> {
    (0..n)
        .map(|i| Measurement {
            type_name: "heartrate".into(),
            occurrence_time_utc: base() + Duration::milliseconds((i / devices) as i64 * 1000),
            ingestion_time_utc: None,
            device_id: format!("device-{}", i % devices),
            patient_id: Some(format!("patient-{}", i % devices)),
            encounter_id: None,
            correlation_id: None,
            properties: vec![MeasurementProperty {
                name: "hr".into(),
                value: (60 + i % 40).to_string(),
            }],
        })
        .collect()
}

/// Heart rate as a Quantity (instant windows).
pub fn quantity_template() -> CodeValueFhirTemplate {
    let mut t = CodeValueFhirTemplate::new(
        "heartrate",
        vec![Coding::new(
            Some("http://loinc.org"),
            Some("8867-4"),
            Some("Heart rate"),
        )],
    );
    t.value = Some(FhirValueType::Quantity(QuantityValueType {
        value_name: "hr".into(),
        unit: Some("count/min".into()),
        system: Some("http://unitsofmeasure.org".into()),
        code: Some("count/min".into()),
    }));
    t
}
