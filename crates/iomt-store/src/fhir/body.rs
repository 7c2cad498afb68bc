//! How a resource's JSON is kept in the `body` column: as is, or LZ4-compressed against a
//! dictionary of what FHIR resources repeat.
//!
//! # Why
//! Every page a write dirties is written to the write-ahead log and again when the log is
//! checkpointed, so the bytes of the bodies are most of what writing costs.
//! * An hour Observation of 1-second SampledData is ~8.5 KB of JSON, nearly all of it the
//!   `data` string (`"E E E 71 E …"`), and every merge rewrites it. Compressed it takes a few
//!   hundred bytes and fits in its leaf page instead of a leaf and two overflow pages.
//! * A one-instant Observation is ~1.4 KB, and most of it is what every Observation repeats:
//!   member names, the service's identifier system, the category, `http://loinc.org`, the
//!   units' system. Plain LZ4 finds little of that inside one body (~900 bytes); against a
//!   dictionary of it, the body takes ~460 bytes, a third, and the ids are most of what is
//!   left.
//!
//! LZ4 (`lz4_flex`, pure Rust) because it costs microseconds either way. Its fast codec, not
//! its safe-Rust one: the `data` string's runs (`E E E …`) decode as overlapping copies, which
//! the safe codec makes byte by byte, and the two codecs cost ~10% of the whole service's CPU
//! (measured with `iomt-runtime`'s `benches/service.rs`). Its `checked-decode` feature keeps
//! every read and write of the decoder inside its buffers on damaged input, and a test damages
//! a body at every byte.
//!
//! # Format
//! * A body whose first byte is `{` is the JSON itself (small resources, and every body of a
//!   schema-1 file).
//! * A body whose first byte is [`LZ4`] is followed by the JSON's length (u32, little endian)
//!   and the LZ4 block of the JSON (schema 2; still read, no longer written).
//! * A body whose first byte is [`LZ4_DICT`] is followed by the JSON's length (u32, little
//!   endian) and the LZ4 block of the JSON compressed with [`DICTIONARY`] as its preceding
//!   data (schema 3).
//!
//! # What must hold
//! * [`decode`] of [`encode`] gives back the JSON byte for byte.
//! * [`DICTIONARY`] never changes: bodies on disk need exactly its bytes to be read (a test
//!   pins them). A better dictionary would be a new tag and a new schema version.
//! * A damaged body is reported as [`StoreError::Corrupt`], never a panic, and never makes
//!   the store allocate more than [`MAX_JSON`] for it.

use std::borrow::Cow;
use std::cell::RefCell;

use crate::error::StoreError;

/// The tag of an LZ4-compressed body (no JSON text starts with it), as schema 2 wrote them.
const LZ4: u8 = 0x01;

/// The tag of a body LZ4-compressed against [`DICTIONARY`] (no JSON text starts with it).
const LZ4_DICT: u8 = 0x02;

/// What the JSON of the resources the pipeline writes repeats: a Patient, a Device and an
/// Encounter as the store creates them, the members of every value type, and a one-instant
/// Observation of the service, each with its ids, values and times left empty. Frozen (see
/// the module docs).
const DICTIONARY: &[u8] = include_bytes!("body_dictionary_v1.txt");

/// Bodies shorter than this are kept as they are: nothing to gain.
const COMPRESS_FROM: usize = 256;

/// The largest JSON a compressed body may claim to hold.
const MAX_JSON: usize = 64 << 20;

thread_local! {
    /// Scratch space for compressing and decompressing, reused so that no body costs a fresh
    /// zeroed allocation the size of its JSON.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The stored form of `json`.
pub(crate) fn encode(json: &[u8]) -> Cow<'_, [u8]> {
    if json.len() < COMPRESS_FROM || json.len() > MAX_JSON {
        return Cow::Borrowed(json);
    }
    let Ok(length) = u32::try_from(json.len()) else {
        return Cow::Borrowed(json);
    };
    SCRATCH.with_borrow_mut(|scratch| {
        let bound = lz4_flex::block::get_maximum_output_size(json.len());
        if scratch.len() < bound {
            scratch.resize(bound, 0);
        }
        match lz4_flex::block::compress_into_with_dict(json, scratch, DICTIONARY) {
            // Kept compressed only when that saves something worth a read's decompression.
            Ok(written) if 5 + written < json.len() - json.len() / 8 => {
                let mut out = Vec::with_capacity(5 + written);
                out.push(LZ4_DICT);
                out.extend_from_slice(&length.to_le_bytes());
                out.extend_from_slice(&scratch[..written]);
                Cow::Owned(out)
            }
            _ => Cow::Borrowed(json),
        }
    })
}

/// Calls `with` on the JSON of a stored body; `what` names the resource type for errors.
pub(crate) fn with_json<T>(
    what: &'static str,
    body: &[u8],
    with: impl FnOnce(&[u8]) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt { what, reason };
    let dictionary: &[u8] = match body.first() {
        Some(&LZ4) => &[],
        Some(&LZ4_DICT) => DICTIONARY,
        _ => return with(body),
    };
    let header: [u8; 4] = body
        .get(1..5)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| corrupt("its compressed body is truncated".into()))?;
    let length = u32::from_le_bytes(header) as usize;
    if length > MAX_JSON {
        return Err(corrupt(format!(
            "its compressed body claims {length} bytes, more than the {MAX_JSON} allowed"
        )));
    }
    // Taken out of the thread's slot while `with` runs, so a nested decode (none today) would
    // get a fresh buffer instead of a borrow error.
    let mut json = SCRATCH.with_borrow_mut(std::mem::take);
    if json.len() < length {
        json.resize(length, 0);
    }
    let result = match lz4_flex::block::decompress_into_with_dict(
        &body[5..],
        &mut json[..length],
        dictionary,
    ) {
        Ok(n) if n == length => with(&json[..length]),
        Ok(n) => Err(corrupt(format!(
            "its compressed body holds {n} bytes where {length} were recorded"
        ))),
        Err(e) => Err(corrupt(format!("its compressed body is damaged ({e})"))),
    };
    SCRATCH.with_borrow_mut(|slot| {
        if slot.capacity() < json.capacity() {
            *slot = json;
        }
    });
    result
}

/// The JSON of a stored body, copied out (for writing it elsewhere).
pub(crate) fn decode<'a>(what: &'static str, body: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
    if !matches!(body.first(), Some(&(LZ4 | LZ4_DICT))) {
        return Ok(Cow::Borrowed(body));
    }
    with_json(what, body, |json| Ok(Cow::Owned(json.to_vec())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hour_observation() -> Vec<u8> {
        let mut data = String::new();
        for i in 0..3600 {
            if i > 0 {
                data.push(' ');
            }
            if i % 7 == 0 {
                data.push_str(&(60 + i % 40).to_string());
            } else {
                data.push('E');
            }
        }
        serde_json::to_vec(&serde_json::json!({
            "resourceType": "Observation",
            "id": "abc",
            "valueSampledData": {"period": 1000, "dimensions": 1, "data": data}
        }))
        .unwrap()
    }

    /// Asserts that `json` is stored compressed against the dictionary in under
    /// `1 / factor` of its size and comes back byte for byte.
    fn assert_compressed_by(json: &[u8], factor: usize) {
        let stored = encode(json);
        assert_eq!(stored[0], LZ4_DICT);
        assert!(
            stored.len() * factor < json.len(),
            "{} of {}",
            stored.len(),
            json.len()
        );
        assert_eq!(decode("Observation", &stored).unwrap().as_ref(), json);
    }

    #[test]
    fn a_large_body_is_compressed_and_comes_back_byte_for_byte() {
        assert_compressed_by(&hour_observation(), 4);
    }

    #[test]
    fn a_small_body_is_kept_as_json() {
        let json = br#"{"resourceType":"Patient","id":"p"}"#;
        let stored = encode(json);
        assert!(matches!(stored, Cow::Borrowed(_)));
        assert_eq!(decode("Patient", &stored).unwrap().as_ref(), json);
    }

    #[test]
    fn an_incompressible_body_is_kept_as_json() {
        // Pseudo-random digits: LZ4 finds little to share.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let digits: String = (0..4000)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from(b'0' + (state % 10) as u8)
            })
            .collect();
        let json = format!(r#"{{"resourceType":"Device","id":"d","note":"{digits}"}}"#);
        let stored = encode(json.as_bytes());
        assert_eq!(stored.as_ref(), json.as_bytes());
    }

    #[test]
    fn bodies_of_different_sizes_in_turn_decode_to_themselves() {
        // The scratch buffer is reused: a short body after a long one must not see its tail.
        let long = hour_observation();
        let mut short = long.clone();
        short.truncate(4000);
        for json in [&long, &short, &long] {
            let stored = encode(json);
            assert_eq!(
                decode("Observation", &stored).unwrap().as_ref(),
                json.as_slice()
            );
            let parsed_len = with_json("Observation", &stored, |j| Ok(j.len())).unwrap();
            assert_eq!(parsed_len, json.len());
        }
    }

    /// A one-instant Observation as the service writes it (~1.4 KB).
    fn instant_observation() -> Vec<u8> {
        let hex = |seed: u64| -> String {
            (0..64)
                .map(|i| {
                    let digit = (seed.wrapping_mul(6_364_136_223_846_793_005) >> (i % 60)) & 15;
                    char::from_digit(digit as u32, 16).unwrap_or('0')
                })
                .collect()
        };
        let (patient, device) = (hex(1), hex(2));
        serde_json::to_vec(&serde_json::json!({
            "resourceType": "Observation",
            "id": hex(3),
            "meta": {"versionId": "1", "lastUpdated": "2026-11-26T23:03:58.665Z"},
            "identifier": [{
                "system": "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/",
                "value": format!("{patient}.{device}.spo2.20261126230358Z.20261126230358Z")
            }],
            "status": "final",
            "category": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "vital-signs", "display": "Vital Signs"}], "text": "Vital Signs"}],
            "code": {"coding": [
                {"system": "http://loinc.org", "code": "59408-5", "display": "Oxygen saturation"},
                {"system": "https://azure.microsoft.com/en-us/services/iomt-fhir-connector/",
                 "code": "spo2", "display": "spo2"}], "text": "spo2"},
            "subject": {"reference": format!("Patient/{patient}")},
            "effectivePeriod": {"start": "2026-11-26T23:03:58.6530000Z",
                                "end": "2026-11-26T23:03:58.6530000Z"},
            "issued": "2026-11-26T23:03:58.6655448+00:00",
            "valueQuantity": {"value": 97, "unit": "%", "system": "http://unitsofmeasure.org",
                              "code": "%"},
            "device": {"reference": format!("Device/{device}")}
        }))
        .unwrap()
    }

    #[test]
    fn an_instant_observation_takes_under_half_its_json() {
        assert_compressed_by(&instant_observation(), 2);
    }

    #[test]
    fn schema_2_bodies_still_read() {
        // As schema 2 wrote them: LZ4 without a dictionary.
        let json = hour_observation();
        let block = lz4_flex::block::compress(&json);
        let mut stored = vec![LZ4];
        stored.extend_from_slice(&u32::try_from(json.len()).unwrap().to_le_bytes());
        stored.extend_from_slice(&block);
        assert_eq!(
            decode("Observation", &stored).unwrap().as_ref(),
            json.as_slice()
        );
    }

    #[test]
    fn the_dictionary_is_frozen() {
        // FNV-1a of its bytes. Bodies on disk need these exact bytes: never change them (a new
        // dictionary is a new tag and a new schema version).
        let hash = DICTIONARY.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        assert_eq!((DICTIONARY.len(), hash), (1874, FROZEN_DICTIONARY_HASH));
    }

    const FROZEN_DICTIONARY_HASH: u64 = 0x3895_a4b2_c959_23a8;

    #[test]
    fn damaged_bodies_are_corrupt_not_panics() {
        let stored = encode(&hour_observation()).into_owned();
        for damaged in [
            vec![LZ4],
            vec![LZ4_DICT],
            vec![LZ4, 1, 2],
            stored[..stored.len() / 2].to_vec(),
            {
                let mut d = stored.clone();
                d[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
                d
            },
            {
                let mut d = stored.clone();
                d[1..5].copy_from_slice(&10u32.to_le_bytes());
                d
            },
        ] {
            match decode("Observation", &damaged) {
                Err(StoreError::Corrupt { what, .. }) => assert_eq!(what, "Observation"),
                other => panic!("expected corrupt, got {other:?}"),
            }
        }
    }

    /// The decoder is lz4_flex's fast one (its `checked-decode` bounds every read and write on
    /// damaged input): every truncation and every single damaged byte of a stored body decodes
    /// to some bytes or to a corrupt error, never to a panic or a read outside the body.
    #[test]
    fn every_truncation_and_damaged_byte_is_handled() {
        let stored = encode(&hour_observation()).into_owned();
        assert_eq!(
            stored[0], LZ4_DICT,
            "the case under test is the dictionary form"
        );
        let check = |damaged: &[u8]| match decode("Observation", damaged) {
            Ok(_) | Err(StoreError::Corrupt { .. }) => {}
            Err(other) => panic!("expected bytes or corrupt, got {other:?}"),
        };
        for len in 0..stored.len() {
            check(&stored[..len]);
        }
        for at in 1..stored.len() {
            for flip in [0x01, 0x10, 0x80, 0xff] {
                let mut damaged = stored.clone();
                damaged[at] ^= flip;
                check(&damaged);
            }
        }
    }
}
