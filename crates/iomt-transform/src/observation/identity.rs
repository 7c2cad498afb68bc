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

use std::sync::{Arc, LazyLock};

use sha2::digest::generic_array::GenericArray;
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
        // `trim().is_empty()` without the trimming: stops at the first non-space.
        if ids.patient.chars().all(char::is_whitespace) {
            return Err(TransformError::MissingResourceId {
                resource: "Patient",
            });
        }
        if ids.device.chars().all(char::is_whitespace) {
            return Err(TransformError::MissingResourceId { resource: "Device" });
        }
        let millis = precision == IdPrecision::Milliseconds;
        // One buffer, no intermediate strings: `{patient}.{device}.{type}.{segment}`.
        let mut value =
            Vec::with_capacity(ids.patient.len() + ids.device.len() + group.type_name.len() + 40);
        value.extend_from_slice(ids.patient.as_bytes());
        value.push(b'.');
        value.extend_from_slice(ids.device.as_bytes());
        value.push(b'.');
        value.extend_from_slice(group.type_name.as_bytes());
        value.push(b'.');
        group.push_id_segment(&mut value, millis);
        let id = hex(&service_digest(&value));
        Ok(ObservationIdentity {
            patient_id: ids.patient.clone(),
            device_id: ids.device.clone(),
            encounter_id: ids.encounter.clone(),
            // Made of `str`s and ASCII only: always UTF-8.
            identifier_value: String::from_utf8(value).unwrap_or_default(),
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
    if system == Some(SERVICE_SYSTEM) {
        return hex(&service_digest(value.as_bytes()));
    }
    let mut hasher = Sha256::new();
    hasher.update(system.unwrap_or_default().as_bytes());
    hasher.update(b"_");
    hasher.update(value.as_bytes());
    hex(&hasher.finalize().into())
}

/// SHA-256 of `"{SERVICE_SYSTEM}_{value}"`, the digest of every id the connector computes.
///
/// The prefix is exactly one 64-byte block, so its compressed state is computed once; the
/// value's blocks and the padding (FIPS 180-4 §5.1.1: `0x80`, zeros, the message length in
/// bits, big-endian) are fed to `sha2`'s compression function straight from the stack. This
/// skips one of the usually three compressions and the hasher's buffering and copying; the
/// tests compare it with `sha2`'s hasher for every tail length.
fn service_digest(value: &[u8]) -> [u8; 32] {
    static PREFIX_STATE: LazyLock<[u32; 8]> = LazyLock::new(|| {
        let mut prefix = [0u8; 64];
        prefix[..63].copy_from_slice(SERVICE_SYSTEM.as_bytes());
        prefix[63] = b'_';
        let mut state = SHA256_INITIAL_STATE;
        compress(&mut state, &prefix);
        state
    });
    let mut state = *PREFIX_STATE;
    let mut blocks = value.chunks_exact(64);
    for block in &mut blocks {
        compress(&mut state, block);
    }
    let rest = blocks.remainder();
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let tail_len = if rest.len() + 9 <= 64 { 64 } else { 128 };
    let bits = (64 + value.len() as u64) * 8;
    tail[tail_len - 8..tail_len].copy_from_slice(&bits.to_be_bytes());
    for block in tail[..tail_len].chunks_exact(64) {
        compress(&mut state, block);
    }
    let mut digest = [0u8; 32];
    for (out, word) in digest.chunks_exact_mut(4).zip(state) {
        out.copy_from_slice(&word.to_be_bytes());
    }
    digest
}

/// SHA-256's initial hash value (FIPS 180-4 §5.3.3).
const SHA256_INITIAL_STATE: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One 64-byte block into the state (`sha2`'s compression, hardware-accelerated when the CPU
/// has SHA extensions).
fn compress(state: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// Lowercase hex digits of every byte value, two per entry.
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    table
};

/// The lowercase hex text of a digest.
fn hex(digest: &[u8; 32]) -> String {
    let mut buf = [0u8; 64];
    for (pair, byte) in buf.chunks_exact_mut(2).zip(digest) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
    // Hex digits: always UTF-8.
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

    /// The shortcut for the service system (a pre-hashed first block, padding by hand) gives
    /// the digest a plain hasher gives, for values that end in every block position.
    #[test]
    fn service_prefix_shortcut_matches_plain_hashing() {
        assert_eq!(SERVICE_SYSTEM.len() + 1, 64);
        for len in 0..200 {
            let value: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let mut plain = Sha256::new();
            plain.update(format!("{SERVICE_SYSTEM}_{value}").as_bytes());
            let expected: String = plain
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(resource_id(Some(SERVICE_SYSTEM), &value), expected, "{len}");
        }
        assert_eq!(resource_id(Some("urn:other"), "v"), {
            let mut plain = Sha256::new();
            plain.update(b"urn:other_v");
            plain
                .finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
    }
}
