//! Deterministic Observation identity (SPEC §7.4).
//!
//! An Observation's identifier is `{system: SERVICE_SYSTEM, value:
//! "{patientResourceId}.{deviceResourceId}.{typeName}.{idSegment}"}` where the resource ids are
//! the FHIR logical ids the identity stage resolved (not the identifiers in the message) and the
//! id segment names the window (see [`ObservationGroup::id_segment`]). Its FHIR id is the
//! lowercase hex SHA-256 of `"{system}_{value}"`. Writing with `PUT Observation/{id}` therefore
//! makes every write idempotent: the same window always lands on the same resource.
//!
//! # Option: millisecond id segments
//! The original's segment has whole seconds, so two `Single` (periodInterval 0) groups inside
//! one second share an identifier and the second is merged into the first (SPEC §16.7).
//! [`IdPrecision::Milliseconds`] writes `yyyyMMddHHmmssfffZ` instead, giving each millisecond its
//! own Observation; it changes every identifier, so it must not be switched on for a store that
//! already holds Observations written with seconds.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::TransformError;
use crate::group::ObservationGroup;

/// The connector's identifier system, also used for the codings it adds.
pub const SERVICE_SYSTEM: &str = "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/";

/// The precision of time-window identifier segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IdPrecision {
    /// `yyyyMMddHHmmssZ`, as the original (the default).
    #[default]
    Seconds,
    /// `yyyyMMddHHmmssfffZ`.
    Milliseconds,
}

/// FHIR logical ids resolved for a group's device, patient and (optionally) encounter.
///
/// Shared strings: the identity stage caches them per device and hands out cheap clones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedIds {
    /// The Patient resource id.
    pub patient: Arc<str>,
    /// The Device resource id.
    pub device: Arc<str>,
    /// The Encounter resource id, when one was resolved.
    pub encounter: Option<Arc<str>>,
}

impl ResolvedIds {
    /// Resolved ids from text.
    pub fn new(patient: &str, device: &str, encounter: Option<&str>) -> ResolvedIds {
        ResolvedIds {
            patient: Arc::from(patient),
            device: Arc::from(device),
            encounter: encounter.map(Arc::from),
        }
    }
}

/// Everything that identifies an Observation: its identifier, id and references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservationIdentity {
    /// The Patient resource id (`subject`).
    pub patient_id: Arc<str>,
    /// The Device resource id (`device`).
    pub device_id: Arc<str>,
    /// The Encounter resource id (`encounter`), when resolved.
    pub encounter_id: Option<Arc<str>>,
    /// The identifier value (its system is [`SERVICE_SYSTEM`]).
    pub identifier_value: String,
    /// The FHIR id: [`resource_id`] of the identifier.
    pub id: String,
}

impl ObservationIdentity {
    /// The identity of the Observation for `group`.
    ///
    /// # Errors
    /// [`TransformError::MissingResourceId`] when the patient or device id is blank.
    pub fn new(
        group: &ObservationGroup,
        ids: &ResolvedIds,
        precision: IdPrecision,
    ) -> Result<ObservationIdentity, TransformError> {
        if ids.patient.trim().is_empty() {
            return Err(TransformError::MissingResourceId {
                resource: "Patient",
            });
        }
        if ids.device.trim().is_empty() {
            return Err(TransformError::MissingResourceId { resource: "Device" });
        }
        let millis = precision == IdPrecision::Milliseconds;
        let mut value = String::with_capacity(
            ids.patient.len() + ids.device.len() + group.type_name.len() + 48,
        );
        value.push_str(&ids.patient);
        value.push('.');
        value.push_str(&ids.device);
        value.push('.');
        value.push_str(&group.type_name);
        value.push('.');
        group.push_id_segment(&mut value, millis);
        let id = resource_id(Some(SERVICE_SYSTEM), &value);
        Ok(ObservationIdentity {
            patient_id: ids.patient.clone(),
            device_id: ids.device.clone(),
            encounter_id: ids.encounter.clone(),
            identifier_value: value,
            id,
        })
    }

    /// The `identifier` search parameter value: `{system}|{value}`.
    pub fn search_token(&self) -> String {
        format!("{SERVICE_SYSTEM}|{}", self.identifier_value)
    }
}

/// The id the connector gives a resource it creates: lowercase hex SHA-256 of the UTF-8 text
/// `"{system}_{value}"` (a missing system is empty).
pub fn resource_id(system: Option<&str>, value: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(system.unwrap_or_default().as_bytes());
    hasher.update(b"_");
    hasher.update(value.as_bytes());
    let digest = hasher.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        buf[2 * i] = HEX[usize::from(b >> 4)];
        buf[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    std::str::from_utf8(&buf).unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_system_and_value() {
        assert_eq!(
            resource_id(None, "deviceId"),
            "96b1d91b8c1066c6093f8699cbd01fd2e9e8956cbad873307dcbd44449aafd13"
        );
        assert_eq!(
            resource_id(Some(SERVICE_SYSTEM), "patientId.deviceId.."),
            "844de97985b00d930dc554601d6de1e49e14b318709f5960450f38a3be0decda"
        );
    }
}
