//! The grouping key: measurements are grouped by device, type, patient, encounter and
//! correlation id, compared exactly (case-sensitive), as the original does.
//!
//! # Deviation
//! The original joins the five fields into one string `"{DeviceId}-{Type}-{PatientId}-…"`, so
//! device `a-b` with type `c` and device `a` with type `b-c` collide, and a missing id equals an
//! empty one. Here the key is the five fields themselves: no collisions, and a missing id differs
//! from an empty one.

use std::hash::{BuildHasher, Hash, Hasher};

use iomt_model::Measurement;

/// The hash of a measurement's key fields.
pub(crate) fn key_hash<S: BuildHasher>(state: &S, m: &Measurement) -> u64 {
    let mut h = state.build_hasher();
    m.device_id.hash(&mut h);
    m.type_name.hash(&mut h);
    m.patient_id.hash(&mut h);
    m.encounter_id.hash(&mut h);
    m.correlation_id.hash(&mut h);
    h.finish()
}

/// Whether two measurements share a key.
pub(crate) fn same_key(a: &Measurement, b: &Measurement) -> bool {
    a.device_id == b.device_id
        && a.type_name == b.type_name
        && a.patient_id == b.patient_id
        && a.encounter_id == b.encounter_id
        && a.correlation_id == b.correlation_id
}

/// The key fields of a measurement, kept by the windower to recognise later measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyFields {
    pub device_id: String,
    pub type_name: String,
    pub patient_id: Option<String>,
    pub encounter_id: Option<String>,
    pub correlation_id: Option<String>,
}

impl KeyFields {
    pub fn of(m: &Measurement) -> KeyFields {
        KeyFields {
            device_id: m.device_id.clone(),
            type_name: m.type_name.clone(),
            patient_id: m.patient_id.clone(),
            encounter_id: m.encounter_id.clone(),
            correlation_id: m.correlation_id.clone(),
        }
    }

    pub fn matches(&self, m: &Measurement) -> bool {
        self.device_id == m.device_id
            && self.type_name == m.type_name
            && self.patient_id == m.patient_id
            && self.encounter_id == m.encounter_id
            && self.correlation_id == m.correlation_id
    }
}
