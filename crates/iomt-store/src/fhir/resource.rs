//! Resource JSON helpers: which types are kept, ids, identifiers, `meta`.
//!
//! # What must hold
//! * A stored resource's `meta.versionId` is its version as text (`"1"`, `"2"`, …) and
//!   `meta.lastUpdated` the instant of its last write, both set here and nowhere else; other
//!   `meta` members (profiles, tags) are kept.
//! * `meta` sits right after `id`, where FHIR puts it, so a stored Observation still serializes
//!   in element order.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use crate::error::StoreError;

/// The resource types the local store keeps.
pub(crate) const RESOURCE_TYPES: [&str; 4] = ["Patient", "Device", "Encounter", "Observation"];

/// The stored spelling of `resource_type`, when it is one the store keeps.
pub(crate) fn known_type(resource_type: &str) -> Option<&'static str> {
    RESOURCE_TYPES.into_iter().find(|t| *t == resource_type)
}

/// Whether `id` is a FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub(crate) fn is_valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// The `(system, value)` of each identifier with a non-empty string value; a missing system is
/// `""`. Duplicates are left out.
pub(crate) fn identifiers(resource: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let Some(list) = resource.get("identifier").and_then(Value::as_array) else {
        return out;
    };
    for identifier in list {
        let Some(value) = identifier
            .get("value")
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        else {
            continue;
        };
        let system = identifier
            .get("system")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !out.iter().any(|(s, v)| s == system && v == value) {
            out.push((system.to_owned(), value.to_owned()));
        }
    }
    out
}

/// FHIR `instant` text for `meta.lastUpdated` (milliseconds, `Z`).
pub(crate) fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Sets `meta.versionId` and `meta.lastUpdated`, creating `meta` right after `id` (or after
/// `resourceType`) when missing.
pub(crate) fn set_meta(resource: &mut Map<String, Value>, version: u64, last_updated: &str) {
    if let Some(Value::Object(meta)) = resource.get_mut("meta") {
        meta.insert("versionId".into(), Value::String(version.to_string()));
        meta.insert("lastUpdated".into(), Value::String(last_updated.to_owned()));
        return;
    }
    let mut meta = Map::new();
    meta.insert("versionId".into(), Value::String(version.to_string()));
    meta.insert("lastUpdated".into(), Value::String(last_updated.to_owned()));
    let position = |key: &str| resource.keys().position(|k| k == key);
    let at = position("id")
        .or_else(|| position("resourceType"))
        .map_or(0, |i| i + 1);
    resource.shift_insert(at, "meta".into(), Value::Object(meta));
}

/// Adds `meta` to a new Observation serialized by `iomt_transform` without re-parsing it: the
/// serializer writes `{"resourceType":"Observation","id":"<id>",` first, and `meta` goes right
/// after. `None` when the text does not start that way (then the caller goes through
/// [`set_meta`]).
pub(crate) fn splice_meta(
    json: &[u8],
    id: &str,
    version: u64,
    last_updated: &str,
) -> Option<Vec<u8>> {
    const HEAD: &[u8] = br#"{"resourceType":"Observation","id":""#;
    let rest = json.strip_prefix(HEAD)?;
    let rest = rest.strip_prefix(id.as_bytes())?;
    let rest = rest.strip_prefix(b"\",")?;
    // Ids here are hex digests and instants digits: nothing needs escaping.
    debug_assert!(is_valid_id(id));
    let mut out = Vec::with_capacity(json.len() + 80);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(id.as_bytes());
    out.extend_from_slice(br#"","meta":{"versionId":""#);
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(br#"","lastUpdated":""#);
    out.extend_from_slice(last_updated.as_bytes());
    out.extend_from_slice(br#""},"#);
    out.extend_from_slice(rest);
    Some(out)
}

/// Sets `meta` of an Observation the store wrote (`{"resourceType":"Observation","id":"…",`
/// then `"meta":{"versionId":"…","lastUpdated":"…"},`, as [`splice_meta`] writes it) to
/// `version` and `last_updated` without parsing it: the text [`set_meta`] and serializing
/// give. `None` when it does not start that way (then parse and use [`set_meta`]).
pub(crate) fn replace_meta(json: &[u8], version: u64, last_updated: &str) -> Option<Vec<u8>> {
    const HEAD: &[u8] = br#"{"resourceType":"Observation","id":""#;
    const VERSION: &[u8] = br#"","meta":{"versionId":""#;
    const LAST_UPDATED: &[u8] = br#"","lastUpdated":""#;
    const END: &[u8] = br#""},"#;
    let plain = |b: &u8| *b == b'"' || *b == b'\\';
    let rest = json.strip_prefix(HEAD)?;
    let id_len = rest.iter().position(plain)?;
    let (id, rest) = rest.split_at(id_len);
    let rest = rest.strip_prefix(VERSION)?;
    let digits = rest.iter().position(plain)?;
    let rest = rest[digits..].strip_prefix(LAST_UPDATED)?;
    let instant = rest.iter().position(plain)?;
    let rest = rest[instant..].strip_prefix(END)?;
    let mut out = Vec::with_capacity(json.len() + 8);
    out.extend_from_slice(HEAD);
    out.extend_from_slice(id);
    out.extend_from_slice(VERSION);
    out.extend_from_slice(version.to_string().as_bytes());
    out.extend_from_slice(LAST_UPDATED);
    out.extend_from_slice(last_updated.as_bytes());
    out.extend_from_slice(END);
    out.extend_from_slice(rest);
    Some(out)
}

/// The `Patient/<id>` reference of a Device, if any.
pub(crate) fn patient_reference(device: &Value) -> Option<&str> {
    device
        .get("patient")
        .and_then(|p| p.get("reference"))
        .and_then(Value::as_str)
}

/// The id in a `Patient/<id>` reference: prefix compared case-insensitively, id of
/// `[A-Za-z0-9_.\-~#]+` (absolute URLs, `_history` and query strings are refused), as the
/// original's `ModelExtensions` and the FHIR server path.
pub(crate) fn patient_id_from_reference(reference: &str) -> Option<&str> {
    let prefix = reference.get(..8)?;
    if !prefix.eq_ignore_ascii_case("patient/") {
        return None;
    }
    let id = &reference[8..];
    (!id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~' | b'#')))
    .then_some(id)
}

/// Parses a stored body (compressed or not, see `body`). (serde_json, not sonic-rs: sonic-rs
/// reads `-0` as `0.0`, which would then be written back differently.)
pub(crate) fn parse_stored(what: &'static str, body: &[u8]) -> Result<Value, StoreError> {
    super::body::with_json(what, body, |json| parse_json(what, json))
}

fn parse_json(what: &'static str, json: &[u8]) -> Result<Value, StoreError> {
    match serde_json::from_slice::<Value>(json) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => Err(StoreError::Corrupt {
            what,
            reason: "it is not a json object".into(),
        }),
        Err(e) => Err(StoreError::Corrupt {
            what,
            reason: format!("it is not json ({})", json_error_kind(&e)),
        }),
    }
}

fn json_error_kind(e: &serde_json::Error) -> &'static str {
    match e.classify() {
        serde_json::error::Category::Io => "i/o error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "data error",
        serde_json::error::Category::Eof => "truncated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replacing_meta_on_text_gives_what_setting_it_gives() {
        let stored = json!({
            "resourceType": "Observation",
            "id": "abc",
            "meta": {"versionId": "7", "lastUpdated": "2026-11-26T08:00:00.000Z"},
            "status": "amended",
            "valueSampledData": {"data": "1 E 2"}
        });
        let text = serde_json::to_vec(&stored).unwrap();
        let replaced = replace_meta(&text, 8, "2026-11-26T09:00:00.000Z").unwrap();
        let mut expected = stored.clone();
        set_meta(
            expected.as_object_mut().unwrap(),
            8,
            "2026-11-26T09:00:00.000Z",
        );
        assert_eq!(replaced, serde_json::to_vec(&expected).unwrap());
        // Not the store's form: declined.
        for other in [
            json!({"resourceType": "Observation", "id": "abc", "status": "final"}),
            json!({"resourceType": "Observation", "id": "abc",
                   "meta": {"versionId": "1", "lastUpdated": "t", "tag": []}}),
            json!({"resourceType": "Observation", "meta": {"versionId": "1"}, "id": "abc"}),
            json!({"resourceType": "Patient", "id": "abc",
                   "meta": {"versionId": "1", "lastUpdated": "t"}}),
        ] {
            assert_eq!(
                replace_meta(&serde_json::to_vec(&other).unwrap(), 2, "t2"),
                None,
                "{other}"
            );
        }
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("abc-1.2"));
        assert!(is_valid_id(&"a".repeat(64)));
        assert!(!is_valid_id(&"a".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id("a_b"));
    }

    #[test]
    fn identifiers_skip_blank_and_duplicates() {
        let r = json!({"identifier": [
            {"system": "s", "value": "v"},
            {"value": "w"},
            {"system": "s", "value": "v"},
            {"system": "s"},
            {"value": ""}
        ]});
        assert_eq!(
            identifiers(&r),
            [
                ("s".to_owned(), "v".to_owned()),
                (String::new(), "w".to_owned())
            ]
        );
        assert!(identifiers(&json!({})).is_empty());
    }

    #[test]
    fn meta_goes_after_id_and_keeps_other_members() {
        let mut r = json!({"resourceType": "Device", "id": "d", "identifier": []});
        set_meta(r.as_object_mut().unwrap(), 1, "2024-01-01T00:00:00.000Z");
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["resourceType", "id", "meta", "identifier"]);
        r["meta"]["profile"] = json!(["p"]);
        set_meta(r.as_object_mut().unwrap(), 2, "2024-01-02T00:00:00.000Z");
        assert_eq!(
            r["meta"],
            json!({"versionId": "2", "lastUpdated": "2024-01-02T00:00:00.000Z", "profile": ["p"]})
        );
        let mut no_id = json!({"resourceType": "Patient", "active": true});
        set_meta(no_id.as_object_mut().unwrap(), 1, "t");
        let keys: Vec<&String> = no_id.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["resourceType", "meta", "active"]);
    }

    #[test]
    fn spliced_meta_equals_set_meta() {
        let text = br#"{"resourceType":"Observation","id":"abc","status":"final"}"#;
        let spliced = splice_meta(text, "abc", 1, "2024-01-01T00:00:00.000Z").unwrap();
        let mut expected: Value = serde_json::from_slice(text).unwrap();
        set_meta(
            expected.as_object_mut().unwrap(),
            1,
            "2024-01-01T00:00:00.000Z",
        );
        assert_eq!(serde_json::from_slice::<Value>(&spliced).unwrap(), expected);
        assert_eq!(
            String::from_utf8(spliced).unwrap(),
            serde_json::to_string(&expected).unwrap()
        );
        assert!(splice_meta(text, "abd", 1, "t").is_none());
        assert!(splice_meta(br#"{"id":"abc"}"#, "abc", 1, "t").is_none());
    }

    #[test]
    fn stored_bodies_keep_negative_zero_and_say_what_is_wrong() {
        let text = br#"{"resourceType":"Observation","x":[1.5,-0,78.0]}"#;
        let parsed = parse_stored("Observation", text).unwrap();
        assert_eq!(
            serde_json::to_string(&parsed).unwrap(),
            r#"{"resourceType":"Observation","x":[1.5,-0.0,78.0]}"#
        );
        let reason = |body: &[u8]| match parse_stored("Device", body) {
            Err(StoreError::Corrupt { reason, .. }) => reason,
            other => panic!("{other:?}"),
        };
        assert_eq!(reason(b"[1]"), "it is not a json object");
        assert_eq!(reason(br#"{"a":"#), "it is not json (truncated)");
        assert_eq!(reason(br#"{"a" 1}"#), "it is not json (syntax error)");
    }

    #[test]
    fn patient_references() {
        assert_eq!(
            patient_id_from_reference("Patient/abc-1.2"),
            Some("abc-1.2")
        );
        assert_eq!(patient_id_from_reference("patient/x_~#"), Some("x_~#"));
        assert_eq!(patient_id_from_reference("Patient/"), None);
        assert_eq!(patient_id_from_reference("Patient/a/_history/2"), None);
        assert_eq!(patient_id_from_reference("http://h/Patient/a"), None);
        assert_eq!(patient_id_from_reference("Group/a"), None);
        assert_eq!(patient_id_from_reference("Patienté/a"), None);
    }
}
