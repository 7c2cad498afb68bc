//! The merge path on the Observation's JSON text, for the merge that dominates streams: a group
//! of SampledData values into the hour or day Observation that already spans its window.
//!
//! # Why
//! [`merge_observation`](super::merge::merge_observation) works on a parsed
//! [`serde_json::Value`], so that members it does not model survive. For an hour of 1-second
//! SampledData that means parsing ~8.5 KB into ~50 nodes, cloning them, comparing them and
//! serializing them again, to replace a few tokens of one string: ~13 µs per merge, the largest
//! single cost of a store that merges every device's hour once per batch. Here the text is
//! scanned once, the `data` string is spliced, and the other members are copied as they are.
//!
//! # What must hold
//! * The result is exactly what `merge_observation` gives, serialized: [`merge_observation_json`]
//!   answers only when every step of SPEC §8 provably leaves all but the `data` string and
//!   `status` as they are, and returns `None` otherwise (the caller then parses and merges).
//!   Its conditions:
//!   - the template has a SampledData value the group has values for, and no component the
//!     group has values for;
//!   - the text is compact JSON (no white space between tokens) whose top-level keys need no
//!     escaping, as the store and serde write it;
//!   - `category` is the template's, byte for byte, at the position re-inserting it gives;
//!   - `effectivePeriod` is exactly `{start, end}`, both already in the .NET `"o"` form the
//!     merge rewrites them in, and the group's window lies inside it (so the period stays);
//!   - the first `value[x]` member is `valueSampledData`, of at most one dimension, whose `data`
//!     string has no escapes and takes the exact splice
//!     ([`splice_ticks`](crate::sampled_data::splice_ticks));
//!   - when the data changes, a `status` member exists (it becomes `amended` in place).
//! * A test merges random groups both ways and requires byte-equal results.

use crate::fhir_template::{CodeValueFhirTemplate, FhirValueType};
use crate::group::ObservationGroup;
use crate::sampled_data::{self, Tick};
use crate::time::{RoundTrip, from_ticks, ticks};

use super::merge::{parse_fhir_date_time, rank};

/// The result of a merge on JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonMergeOutcome {
    /// The group adds nothing: no write is needed.
    Unchanged,
    /// The merged Observation's JSON (status `amended`; `meta` as it was).
    Changed(String),
}

/// `merge_observation` of `group` into the Observation `existing` (its JSON text), when that
/// can be done on the text exactly (see the module docs); `None` otherwise.
pub(crate) fn merge_observation_json(
    template: &CodeValueFhirTemplate,
    existing: &[u8],
    group: &ObservationGroup,
) -> Option<JsonMergeOutcome> {
    let Some(FhirValueType::SampledData(sd)) = &template.value else {
        return None;
    };
    if sd.value_name.trim().is_empty()
        || template
            .components
            .iter()
            .any(|c| group.values(c.value.value_name()).is_some())
    {
        return None;
    }
    let values = group.values(&sd.value_name)?;
    let json = std::str::from_utf8(existing).ok()?;
    let top = members(json)?;
    let position = |key: &str| top.iter().position(|(k, _)| *k == key);

    // 1. category: the template's, where re-inserting it puts it.
    match (position("category"), template.category.is_empty()) {
        (None, true) => {}
        (Some(at), false) => {
            if !serializes_to(&*template.category, top[at].1) {
                return None;
            }
            let category_rank = rank("category");
            let reinserted = top
                .iter()
                .filter(|(k, _)| *k != "category")
                .position(|(k, _)| rank(k) > category_rank)
                .unwrap_or(top.len() - 1);
            if reinserted != at {
                return None;
            }
        }
        _ => return None,
    }

    // 2. the period: kept, and already in the form it is rewritten in.
    if position("effectiveDateTime").is_some() {
        return None;
    }
    let period = members(top[position("effectivePeriod")?].1)?;
    let [("start", start), ("end", end)] = period.as_slice() else {
        return None;
    };
    let observation_period = (round_trip_instant(start)?, round_trip_instant(end)?);
    let data_period = (ticks(group.window.start), ticks(group.window.end));
    if data_period.0 < observation_period.0 || data_period.1 > observation_period.1 {
        return None;
    }

    // 3. the value: SampledData, spliced.
    let value_at = top.iter().position(|(k, _)| is_value_member(k))?;
    if top[value_at].0 != "valueSampledData" {
        return None;
    }
    let sampled = members(top[value_at].1)?;
    if let Some((_, dimensions)) = sampled.iter().find(|(k, _)| *k == "dimensions")
        && dimensions.parse::<f64>().map_or(true, |d| d > 1.0)
    {
        return None;
    }
    let data_at = sampled.iter().position(|(k, _)| *k == "data")?;
    let data = plain_string(sampled[data_at].1)?;
    let new: Vec<Tick<'_>> = values
        .iter()
        .map(|v| (ticks(v.time), v.value.as_str()))
        .collect();
    let spliced = sampled_data::splice_ticks(
        data,
        &new,
        observation_period.0,
        observation_period.1,
        sd.default_period.ticks(),
    )?;
    if spliced == data {
        return Some(JsonMergeOutcome::Unchanged);
    }

    // 6. changed: status amended, in place.
    let status_at = position("status")?;
    let mut sampled_json = String::with_capacity(top[value_at].1.len());
    let quoted = format!("\"{spliced}\"");
    let sampled_members: Vec<(&str, &str)> = sampled
        .iter()
        .enumerate()
        .map(|(i, &(k, v))| (k, if i == data_at { quoted.as_str() } else { v }))
        .collect();
    write_object(&mut sampled_json, &sampled_members);
    let merged: Vec<(&str, &str)> = top
        .iter()
        .enumerate()
        .map(|(i, &(k, v))| {
            let v = if i == value_at {
                sampled_json.as_str()
            } else if i == status_at {
                "\"amended\""
            } else {
                v
            };
            (k, v)
        })
        .collect();
    let mut out = String::with_capacity(json.len() + 16);
    write_object(&mut out, &merged);
    Some(JsonMergeOutcome::Changed(out))
}

/// Whether `raw` is exactly the JSON serde_json writes for `value`: compared as it is
/// written, so a merge allocates nothing for it.
fn serializes_to<T: serde::Serialize + ?Sized>(value: &T, raw: &str) -> bool {
    /// Accepts what `raw` holds next; refuses the first byte that differs.
    struct Expect<'a>(&'a [u8]);
    impl std::io::Write for Expect<'_> {
        fn write(&mut self, written: &[u8]) -> std::io::Result<usize> {
            match self.0.strip_prefix(written) {
                Some(rest) => {
                    self.0 = rest;
                    Ok(written.len())
                }
                None => Err(std::io::Error::other("differs")),
            }
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut expect = Expect(raw.as_bytes());
    serde_json::to_writer(&mut expect, value).is_ok() && expect.0.is_empty()
}

/// Whether `key` is a `value[x]` member, as `value::value_member` finds them.
fn is_value_member(key: &str) -> bool {
    key.strip_prefix("value")
        .and_then(|rest| rest.chars().next())
        .is_some_and(|c| c.is_ascii_uppercase())
}

/// The ticks of a JSON string holding a date-time, when the merge would write it back as it is.
fn round_trip_instant(raw: &str) -> Option<i64> {
    let text = plain_string(raw)?;
    let t = parse_fhir_date_time(text)?;
    (RoundTrip(from_ticks(t)).to_string() == text).then_some(t)
}

/// The content of a JSON string literal without escapes.
fn plain_string(raw: &str) -> Option<&str> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    memchr::memchr2(b'\\', b'"', inner.as_bytes())
        .is_none()
        .then_some(inner)
}

/// The members of a compact JSON object (key, raw value), in order; `None` unless `json` is
/// one object with no white space between its tokens and keys that need no escaping.
fn members(json: &str) -> Option<Vec<(&str, &str)>> {
    let bytes = json.as_bytes();
    if bytes.first() != Some(&b'{') {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 1;
    if bytes.get(at) == Some(&b'}') {
        return (bytes.len() == 2).then_some(out);
    }
    loop {
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_end = at + 1 + memchr::memchr(b'"', &bytes[at + 1..])?;
        let key = &json[at + 1..key_end];
        if key.bytes().any(|b| b == b'\\' || b < 0x20) || bytes.get(key_end + 1) != Some(&b':') {
            return None;
        }
        let value_start = key_end + 2;
        let value_end = skip_value(bytes, value_start)?;
        out.push((key, &json[value_start..value_end]));
        match bytes.get(value_end) {
            Some(b',') => at = value_end + 1,
            Some(b'}') if value_end + 1 == bytes.len() => return Some(out),
            _ => return None,
        }
    }
}

/// The end (exclusive) of the JSON value starting at `at`.
fn skip_value(bytes: &[u8], at: usize) -> Option<usize> {
    match *bytes.get(at)? {
        b'"' => skip_string(bytes, at),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = at;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = skip_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            None
        }
        b',' | b'}' | b']' => None,
        _ => {
            let len = bytes[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']'))?;
            let literal = &bytes[at..at + len];
            (!literal.iter().any(u8::is_ascii_whitespace)).then_some(at + len)
        }
    }
}

/// The end (exclusive) of the JSON string starting at `at` (its opening quote).
fn skip_string(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        let found = i + memchr::memchr2(b'"', b'\\', bytes.get(i..)?)?;
        if bytes[found] == b'"' {
            return Some(found + 1);
        }
        i = found + 2;
    }
}

/// Writes a compact JSON object of `members` (keys need no escaping, values are JSON).
fn write_object(out: &mut String, members: &[(&str, &str)]) {
    out.push('{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialization_is_compared_byte_for_byte() {
        let value = serde_json::json!([{"text": "Vital Signs", "n": 1}]);
        assert!(serializes_to(&value, r#"[{"text":"Vital Signs","n":1}]"#));
        for other in [
            r#"[{"text":"Vital Signs","n":1}] "#,
            r#"[{"text":"Vital Signs","n":1"#,
            r#"[{"n":1,"text":"Vital Signs"}]"#,
            r#"[{"text":"Vital Signs","n":1.0}]"#,
            "",
        ] {
            assert!(!serializes_to(&value, other), "{other}");
        }
    }

    #[test]
    fn compact_objects_split_into_members() {
        let json = r#"{"a":"x\"y","b":{"c":[1,{"d":"}"}]},"e":-1.5e3,"f":null}"#;
        let found = members(json).unwrap();
        assert_eq!(
            found,
            [
                ("a", r#""x\"y""#),
                ("b", r#"{"c":[1,{"d":"}"}]}"#),
                ("e", "-1.5e3"),
                ("f", "null")
            ]
        );
        let mut out = String::new();
        write_object(&mut out, &found);
        assert_eq!(out, json);
        assert_eq!(members("{}").unwrap(), []);
        for not_compact in [
            r#"{"a": 1}"#,
            r#"{"a":1 }"#,
            r#" {"a":1}"#,
            r#"{"a":1}x"#,
            r#"{"a\"b":1}"#,
            r#"{"a":1,}"#,
            r#"{"a":"unterminated}"#,
            r#"["a"]"#,
            "",
        ] {
            assert_eq!(members(not_compact), None, "{not_compact}");
        }
    }
}
