//! A direct JSON writer for built Observations: the request body of every create (`PUT`) on
//! the persist path.
//!
//! # Why not `serde_json::to_writer`
//! The [`Serialize`](serde::Serialize) impls in [`model`](super::model) stay the reference (they
//! give [`Observation::to_json`]), but going through them costs several times more than the
//! bytes themselves: every member name passes the generic map machinery and the escaper, and
//! every date goes through `Display`, `collect_str` and an escaping adapter. Here the fixed
//! parts of an Observation (member names, punctuation, the service system, reference prefixes)
//! are written as byte literals, dates as the digits [`crate::time`] computes, and strings are
//! copied as they are unless they hold a character JSON must escape.
//!
//! # What must hold
//! The bytes are exactly those `serde_json::to_writer(&observation)` writes: same member order
//! and omissions, strings escaped as serde_json escapes them (a string that needs escaping is
//! handed to serde_json itself), numbers written by serde_json. The tests compare both for
//! Observations of every shape.

use serde_json::Number;

use super::identity::SERVICE_SYSTEM;
use super::model::{
    CodeableConcept, Coding, Component, Observation, ObservationStatus, ObservationValue,
    ServiceCode,
};
use crate::time::{Instant, RoundTrip};

/// Where the writer appends: a byte buffer (request bodies) or a `String` (text for people and
/// tests). Both take `str` pieces; a `String` validates the few ASCII byte pieces (dates,
/// numbers) it is given, so that no whole-document UTF-8 check is needed.
pub(crate) trait JsonSink {
    /// Appends text.
    fn text(&mut self, s: &str);
    /// Appends bytes that are ASCII.
    fn ascii(&mut self, b: &[u8]);
}

impl JsonSink for Vec<u8> {
    fn text(&mut self, s: &str) {
        self.extend_from_slice(s.as_bytes());
    }

    fn ascii(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl JsonSink for String {
    fn text(&mut self, s: &str) {
        self.push_str(s);
    }

    fn ascii(&mut self, b: &[u8]) {
        // ASCII by contract, so this never falls back.
        self.push_str(std::str::from_utf8(b).unwrap_or_default());
    }
}

/// Appends the JSON of `observation` to `out`.
pub(crate) fn write_observation<O: JsonSink>(out: &mut O, observation: &Observation<'_>) {
    out.text(r#"{"resourceType":"Observation""#);
    if let Some(identity) = &observation.identity {
        out.text(r#","id":"#);
        string(out, &identity.id);
        out.text(r#","identifier":[{"system":""#);
        out.text(SERVICE_SYSTEM);
        out.text(r#"","value":"#);
        string(out, &identity.identifier_value);
        out.text("}]");
    }
    out.text(match observation.status {
        ObservationStatus::Final => r#","status":"final""#,
        ObservationStatus::Amended => r#","status":"amended""#,
    });
    if !observation.category.is_empty() {
        out.text(r#","category":["#);
        for (i, concept) in observation.category.iter().enumerate() {
            if i > 0 {
                out.text(",");
            }
            codeable_concept(out, concept);
        }
        out.text("]");
    }
    out.text(r#","code":"#);
    service_code(out, &observation.code);
    if let Some(identity) = &observation.identity {
        out.text(r#","subject":"#);
        reference(out, "Patient/", &identity.patient_id);
        if let Some(encounter) = &identity.encounter_id {
            out.text(r#","encounter":"#);
            reference(out, "Encounter/", encounter);
        }
    }
    out.text(r#","effectivePeriod":{"start":""#);
    let start = RoundTrip(observation.effective_start).bytes();
    out.ascii(&start);
    out.text(r#"","end":""#);
    if observation.effective_end == observation.effective_start {
        // Instant windows: the same text twice.
        out.ascii(&start);
    } else {
        out.ascii(&RoundTrip(observation.effective_end).bytes());
    }
    out.text(r#""},"issued":""#);
    let (issued, n) = Instant(observation.issued).bytes();
    out.ascii(&issued[..n]);
    out.text("\"");
    if let Some(value) = &observation.value {
        out.text(",");
        value_member(out, value);
    }
    if let Some(identity) = &observation.identity {
        out.text(r#","device":"#);
        reference(out, "Device/", &identity.device_id);
    }
    if !observation.components.is_empty() {
        out.text(r#","component":["#);
        for (i, c) in observation.components.iter().enumerate() {
            if i > 0 {
                out.text(",");
            }
            component(out, c);
        }
        out.text("]");
    }
    out.text("}");
}

/// Whether serde_json would escape a byte of `s`: control characters, `"` and `\`.
///
/// Eight bytes at a time: with `x` the word, `(x - n·0x01…01) & !x & 0x80…80` is non-zero
/// exactly when a byte of `x` is below `n` (`n` ≤ 128), so a byte equal to `c` shows as a byte
/// of `x ^ c·0x01…01` below 1. The three tests share one branch.
fn needs_escape(s: &str) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    const QUOTE: u64 = ONES * b'"' as u64;
    const BACKSLASH: u64 = ONES * b'\\' as u64;
    let mut chunks = s.as_bytes().chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let control = w.wrapping_sub(ONES * 0x20) & !w;
        let quote = (w ^ QUOTE).wrapping_sub(ONES) & !(w ^ QUOTE);
        let backslash = (w ^ BACKSLASH).wrapping_sub(ONES) & !(w ^ BACKSLASH);
        if (control | quote | backslash) & HIGH != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A JSON string, quoted and escaped as serde_json does.
fn string<O: JsonSink>(out: &mut O, s: &str) {
    if needs_escape(s) {
        // Rare: let serde_json escape it.
        out.text(&serde_json::to_string(s).unwrap_or_default());
        return;
    }
    out.text("\"");
    out.text(s);
    out.text("\"");
}

/// A `"name":"value"` member, after a comma unless it is the object's first.
fn member<O: JsonSink>(out: &mut O, first: &mut bool, name: &str, value: &str) {
    if !std::mem::take(first) {
        out.text(",");
    }
    out.text(name);
    string(out, value);
}

fn number<O: JsonSink>(out: &mut O, n: &Number) {
    // serde_json's own digits, through a stack buffer (integers and shortest-form doubles
    // need at most 24 bytes).
    let mut buf = [0u8; 40];
    let mut rest = buf.as_mut_slice();
    if serde_json::to_writer(&mut rest, n).is_ok() {
        let written = 40 - rest.len();
        out.ascii(&buf[..written]);
    } else {
        out.text(&n.to_string());
    }
}

/// `{"reference":"{prefix}{id}"}`.
fn reference<O: JsonSink>(out: &mut O, prefix: &str, id: &str) {
    out.text(r#"{"reference":"#);
    if needs_escape(id) {
        out.text(&serde_json::to_string(&format!("{prefix}{id}")).unwrap_or_default());
    } else {
        out.text("\"");
        out.text(prefix);
        out.text(id);
        out.text("\"");
    }
    out.text("}");
}

fn coding<O: JsonSink>(out: &mut O, c: &Coding) {
    out.text("{");
    let mut first = true;
    if let Some(system) = &c.system {
        member(out, &mut first, r#""system":"#, system);
    }
    if let Some(code) = &c.code {
        member(out, &mut first, r#""code":"#, code);
    }
    if let Some(display) = &c.display {
        member(out, &mut first, r#""display":"#, display);
    }
    out.text("}");
}

fn codeable_concept<O: JsonSink>(out: &mut O, concept: &CodeableConcept) {
    out.text("{");
    let mut first = true;
    if !concept.coding.is_empty() {
        first = false;
        out.text(r#""coding":["#);
        for (i, c) in concept.coding.iter().enumerate() {
            if i > 0 {
                out.text(",");
            }
            coding(out, c);
        }
        out.text("]");
    }
    if let Some(text) = &concept.text {
        member(out, &mut first, r#""text":"#, text);
    }
    out.text("}");
}

fn service_code<O: JsonSink>(out: &mut O, code: &ServiceCode<'_>) {
    out.text(r#"{"coding":["#);
    for c in code.codes.iter() {
        coding(out, c);
        out.text(",");
    }
    out.text(r#"{"system":""#);
    out.text(SERVICE_SYSTEM);
    if needs_escape(code.name) {
        out.text(r#"","code":"#);
        string(out, code.name);
        out.text(r#","display":"#);
        string(out, code.name);
        out.text(r#"}],"text":"#);
        string(out, code.name);
    } else {
        out.text(r#"","code":""#);
        out.text(code.name);
        out.text(r#"","display":""#);
        out.text(code.name);
        out.text(r#""}],"text":""#);
        out.text(code.name);
        out.text("\"");
    }
    out.text("}");
}

/// `"value[x]":{…}`.
fn value_member<O: JsonSink>(out: &mut O, value: &ObservationValue<'_>) {
    match value {
        ObservationValue::Quantity(q) => {
            out.text(r#""valueQuantity":{"value":"#);
            number(out, &q.value);
            let mut first = false;
            if let Some(unit) = &q.unit {
                member(out, &mut first, r#""unit":"#, unit);
            }
            if let Some(system) = &q.system {
                member(out, &mut first, r#""system":"#, system);
            }
            if let Some(code) = &q.code {
                member(out, &mut first, r#""code":"#, code);
            }
            out.text("}");
        }
        ObservationValue::SampledData(sd) => {
            out.text(r#""valueSampledData":{"origin":{"value":"#);
            number(out, &sd.origin.value);
            if let Some(unit) = &sd.origin.unit {
                out.text(r#","unit":"#);
                string(out, unit);
            }
            out.text(r#"},"period":"#);
            number(out, &sd.period);
            out.text(r#","dimensions":"#);
            number(out, &Number::from(sd.dimensions));
            out.text(r#","data":"#);
            string(out, &sd.data);
            out.text("}");
        }
        ObservationValue::String(s) => {
            out.text(r#""valueString":"#);
            string(out, s);
        }
        ObservationValue::CodeableConcept(concept) => {
            out.text(r#""valueCodeableConcept":"#);
            codeable_concept(out, concept);
        }
    }
}

fn component<O: JsonSink>(out: &mut O, c: &Component<'_>) {
    out.text(r#"{"code":"#);
    service_code(out, &c.code);
    out.text(",");
    value_member(out, &c.value);
    out.text("}");
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::decimal::Decimal;
    use crate::observation::identity::ObservationIdentity;
    use crate::observation::model::{Origin, Quantity, SampledData};

    fn t(s: &str) -> DateTime<Utc> {
        iomt_model::timestamp::parse(s).unwrap()
    }

    /// Texts that exercise the escaper: plain, quotes, backslashes, controls, DEL, non-ASCII.
    const TEXTS: &[&str] = &[
        "heartrate",
        "",
        "say \"hi\"",
        "back\\slash",
        "tab\there\nnew\rline\u{8}\u{c}\u{1}\u{1f}",
        "del\u{7f}",
        "Blutdruck – systolisch ♥ 心拍",
        "/slash/",
    ];

    fn text(i: usize) -> Arc<str> {
        Arc::from(TEXTS[i % TEXTS.len()])
    }

    fn coding(i: usize) -> Coding {
        Coding {
            system: i.is_multiple_of(2).then(|| text(i + 1)),
            code: (!i.is_multiple_of(3)).then(|| text(i + 2)),
            display: (i % 5 != 1).then(|| text(i + 3)),
        }
    }

    fn concept(i: usize) -> CodeableConcept {
        CodeableConcept {
            coding: (0..i % 3).map(|k| coding(i + k)).collect(),
            text: (i % 4 != 2).then(|| text(i)),
        }
    }

    /// What an Observation borrows (a template's parts), for Observation number `i`.
    struct Parts {
        category: Vec<CodeableConcept>,
        codes: Vec<Coding>,
        component_codes: Vec<Vec<Coding>>,
        concepts: Vec<CodeableConcept>,
        data: Vec<String>,
    }

    fn parts(i: usize) -> Parts {
        Parts {
            category: (0..i % 3).map(|k| concept(i + k)).collect(),
            codes: (0..i % 3).map(|k| coding(i * 7 + k)).collect(),
            component_codes: (0..4)
                .map(|k| (0..k % 2 + 1).map(|j| coding(i + j)).collect())
                .collect(),
            concepts: (0..5).map(|k| concept(i + k)).collect(),
            data: ["E 1 2.5 E", "", "-3 4"].map(str::to_owned).to_vec(),
        }
    }

    fn value(i: usize, parts: &Parts) -> ObservationValue<'_> {
        let numbers = [
            "0",
            "72",
            "-3",
            "36.6",
            "0.1",
            "1,000.25",
            "79228162514264337593543950335",
        ];
        let k = i % 5;
        match i % 4 {
            0 => ObservationValue::Quantity(Quantity {
                value: Decimal::parse_json_number(numbers[i % numbers.len()]).unwrap(),
                unit: (!i.is_multiple_of(3)).then(|| TEXTS[i % TEXTS.len()]),
                system: i.is_multiple_of(2).then(|| TEXTS[(i + 1) % TEXTS.len()]),
                code: (!i.is_multiple_of(5)).then(|| TEXTS[(i + 2) % TEXTS.len()]),
            }),
            1 => ObservationValue::SampledData(SampledData {
                origin: Origin {
                    value: Number::from(0u64),
                    unit: (i % 3 != 1).then(|| TEXTS[i % TEXTS.len()]),
                },
                period: Number::from_f64([1000.0, 0.5, 250.0][i % 3]).unwrap(),
                dimensions: 1,
                data: parts.data[i % 3].clone(),
            }),
            2 => ObservationValue::String(TEXTS[i % TEXTS.len()]),
            _ => ObservationValue::CodeableConcept(&parts.concepts[k]),
        }
    }

    fn observation(i: usize, parts: &Parts) -> Observation<'_> {
        let identity = (!i.is_multiple_of(3)).then(|| ObservationIdentity {
            patient_id: text(i),
            device_id: text(i + 1),
            encounter_id: i.is_multiple_of(2).then(|| text(i + 2)),
            identifier_value: TEXTS[(i + 3) % TEXTS.len()].to_owned(),
            id: "0f".repeat(32),
        });
        let issued = [
            "2023-03-13T22:46:01Z",
            "2023-03-13T22:46:01.875Z",
            "2023-03-13T22:46:01.1234567Z",
        ];
        let end = if i.is_multiple_of(2) {
            "2019-01-01T00:00:00Z"
        } else {
            "2019-01-01T00:59:59.9999999Z"
        };
        Observation {
            identity,
            status: if i.is_multiple_of(2) {
                ObservationStatus::Final
            } else {
                ObservationStatus::Amended
            },
            category: &parts.category,
            code: ServiceCode {
                codes: &parts.codes,
                name: TEXTS[(i + 4) % TEXTS.len()],
            },
            effective_start: t("2019-01-01T00:00:00Z"),
            effective_end: t(end),
            issued: t(issued[i % issued.len()]),
            value: (i % 5 != 4).then(|| value(i, parts)),
            components: (0..i % 4)
                .map(|k| Component {
                    code: ServiceCode {
                        codes: &parts.component_codes[k],
                        name: TEXTS[(i + k) % TEXTS.len()],
                    },
                    value: value(i + k, parts),
                })
                .collect(),
        }
    }

    #[test]
    fn writes_what_serde_json_writes() {
        for i in 0..400 {
            let parts = parts(i);
            let o = observation(i, &parts);
            let reference = serde_json::to_string(&o).unwrap();
            let mut bytes = Vec::new();
            write_observation(&mut bytes, &o);
            assert_eq!(
                String::from_utf8(bytes).unwrap(),
                reference,
                "observation {i}"
            );
            let mut text = String::new();
            write_observation(&mut text, &o);
            assert_eq!(text, reference, "observation {i}");
        }
    }

    #[test]
    fn escape_scan_finds_every_escaped_byte_at_every_position() {
        for len in 0..20 {
            for at in 0..len {
                for b in 0u8..128 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let s = std::str::from_utf8(&bytes).unwrap();
                    let expected = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(s), expected, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(!needs_escape("é♥心 \u{7f}~!#/"));
        assert!(needs_escape("Blutdruck – systolisch ♥ \\"));
    }
}
