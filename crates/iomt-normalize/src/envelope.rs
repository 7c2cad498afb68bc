//! The event envelope templates see: `{"Body": …, "Properties": {…}, "SystemProperties": {…}}`.
//!
//! The original wraps every device message this way before matching (SPEC §2), so mappings
//! written for it address `$.Body.heartRate` or `$.SystemProperties.iothub-connection-device-id`.
//!
//! # Why the envelope is built as text
//! Parsed documents are read-only (`sonic_rs` does not keep member order when objects are built
//! or changed), and parsing the body and then copying it into an envelope would cost a second
//! pass. So the envelope text is assembled around the body's bytes and parsed once.
//!
//! # Why a body cannot inject members
//! A body must not smuggle members into the envelope (`1,"Properties":{…}`). The parsed envelope
//! must be an object of exactly three members, which holds only when the body is exactly one
//! JSON value (so the members are `Body`, `Properties`, `SystemProperties`, in that order):
//! * the text after the body, `,"Properties":P,"SystemProperties":S}` with `P` and `S` written
//!   by serde_json, only parses outside a string, so the body cannot leave a string open (the
//!   `"` before `Properties` would close it and leave `Properties"` bare) nor end in a partial
//!   literal or escape;
//! * the parser rejects trailing characters, so the body cannot close the envelope early
//!   (`1}`); since everything else is balanced, every bracket the body opens closes inside it,
//!   and the `Body` value therefore ends inside the body;
//! * whatever follows that value inside the body is at the envelope's level and can only be
//!   `,"name":value` members, each one more than three.
//!
//! Counting members reads no member names (each read of a parsed node costs tens of
//! instructions); the tests check hostile bodies, and debug builds check the names too.

use iomt_expr::Value;
use sonic_rs::JsonContainerTrait;

use crate::error::NormalizeError;

/// How deeply a message may nest (Newtonsoft's default `MaxDepth`, which the original used).
/// Deeper messages are rejected before parsing: the parser recurses, and a hostile message must
/// not be able to exhaust the stack.
pub const MAX_MESSAGE_DEPTH: usize = 64;

/// Whether `bytes` nests arrays and objects deeper than `max`. Counting every bracket first
/// keeps the common case (few brackets) to one vectorized pass.
fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    if count_opening_brackets(bytes) <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// How many bytes are `{` or `[` (inside strings too: an upper bound of the nesting).
fn count_opening_brackets(bytes: &[u8]) -> usize {
    // `{` (0x7B) and `[` (0x5B) differ only in bit 0x20: one comparison per byte, counted in
    // byte-wide lanes so the loop vectorizes fully. Chunks of 224 bytes (7 × 32) keep every
    // lane below 256 and leave the vector loop no tail except in the last chunk (255-byte
    // chunks cost a third more).
    bytes
        .chunks(224)
        .map(|chunk| {
            usize::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n.wrapping_add(u8::from((b | 0x20) == b'{'))),
            )
        })
        .sum()
}

fn too_deep() -> NormalizeError {
    NormalizeError::InvalidJson {
        reason: format!("the message nests deeper than {MAX_MESSAGE_DEPTH} levels; flatten it"),
    }
}

/// Event properties as name/value pairs, in the order they are to appear.
pub type Properties = [(String, serde_json::Value)];

/// Builds envelopes, reusing one buffer.
#[derive(Debug, Default)]
pub struct EnvelopeBuilder {
    buf: Vec<u8>,
}

impl EnvelopeBuilder {
    /// A builder with an empty buffer.
    pub fn new() -> EnvelopeBuilder {
        EnvelopeBuilder::default()
    }

    /// Wraps `body` (raw bytes as received; empty means `null`) with its properties and parses
    /// the result.
    pub fn build(
        &mut self,
        body: &[u8],
        properties: &Properties,
        system_properties: &Properties,
    ) -> Result<Value, NormalizeError> {
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        if nests_deeper_than(body, MAX_MESSAGE_DEPTH) {
            return Err(too_deep());
        }
        let body_is_empty = body.iter().all(u8::is_ascii_whitespace);
        self.buf.clear();
        self.buf.reserve(body.len() + 64);
        self.buf.extend_from_slice(b"{\"Body\":");
        if body_is_empty {
            self.buf.extend_from_slice(b"null");
        } else {
            self.buf.extend_from_slice(body);
        }
        self.buf.extend_from_slice(b",\"Properties\":");
        write_properties(&mut self.buf, properties);
        self.buf.extend_from_slice(b",\"SystemProperties\":");
        write_properties(&mut self.buf, system_properties);
        self.buf.push(b'}');
        let value: Value =
            sonic_rs::from_slice(&self.buf).map_err(|e| invalid_body(body, &e.to_string()))?;
        // Three members exactly when the body is one value (see the module docs).
        if value.as_object().is_none_or(|o| o.len() != 3) {
            return Err(invalid_body(body, "the body is not a single json value"));
        }
        debug_assert!(value.as_object().is_some_and(|o| {
            o.iter()
                .map(|(k, _)| k)
                .eq(["Body", "Properties", "SystemProperties"])
        }));
        Ok(value)
    }
}

fn invalid_body(body: &[u8], fallback: &str) -> NormalizeError {
    // Say what is wrong with the body itself, not with the envelope around it (the body's
    // depth was checked before the envelope was parsed).
    let reason = match sonic_rs::from_slice::<Value>(body) {
        Err(e) => first_line(&e.to_string()),
        Ok(_) => fallback.to_owned(),
    };
    NormalizeError::InvalidJson { reason }
}

/// The parser's explanation without the excerpt of the message it appends (which could carry
/// patient data into logs).
fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or(message).trim().to_owned()
}

fn write_properties(buf: &mut Vec<u8>, properties: &Properties) {
    buf.push(b'{');
    for (i, (name, value)) in properties.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        write_string(buf, name);
        buf.push(b':');
        match value {
            serde_json::Value::String(s) => write_string(buf, s),
            // Writing serde_json values to a Vec cannot fail.
            other => {
                let _ = serde_json::to_writer(&mut *buf, other);
            }
        }
    }
    buf.push(b'}');
}

/// A JSON string exactly as serde_json writes it. Property names and values rarely need
/// escaping, and checking that is one vectorizable pass where serde_json's writer costs several
/// instructions per byte.
fn write_string(buf: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly `"`, `\` and the control characters below 0x20. (A fold
    // without early exit, so that it vectorizes.)
    let special = s.bytes().fold(false, |any, b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !special {
        buf.reserve(s.len() + 2);
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    } else {
        // Writing a string to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    }
}

/// Parses a token that is already the whole event (an envelope, or a raw token in tests and
/// tools).
pub fn parse_token(bytes: &[u8]) -> Result<Value, NormalizeError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    // The envelope adds one level around the body.
    if nests_deeper_than(bytes, MAX_MESSAGE_DEPTH + 1) {
        return Err(too_deep());
    }
    sonic_rs::from_slice(bytes).map_err(|e| NormalizeError::InvalidJson {
        reason: first_line(&e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonic_rs::JsonValueTrait;

    /// Bodies glued from JSON fragments: the envelope accepts exactly those that are one JSON
    /// value on their own, and then has the three members in order with the body as `Body`.
    #[test]
    fn only_single_value_bodies_are_accepted() {
        const FRAGMENTS: &[&str] = &[
            "{",
            "}",
            "[",
            "]",
            "\"",
            "\\",
            ",",
            ":",
            "1",
            " ",
            "null",
            "true",
            "\"a\"",
            "\"Body\"",
            "\"Properties\"",
            "\"SystemProperties\"",
            "{}",
            "[]",
            "\"x\":",
            ",\"Properties\":",
            ",\"SystemProperties\":{}",
            "}}",
            "\\\"",
        ];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut b = EnvelopeBuilder::new();
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..30_000 {
            let mut body = String::new();
            for _ in 0..1 + next() % 9 {
                body.push_str(FRAGMENTS[(next() % FRAGMENTS.len() as u64) as usize]);
            }
            let alone = sonic_rs::from_slice::<Value>(body.as_bytes());
            let blank = body.bytes().all(|c| c.is_ascii_whitespace());
            match b.build(body.as_bytes(), &props(), &props()) {
                Ok(v) => {
                    accepted += 1;
                    assert!(alone.is_ok() || blank, "accepted {body:?}");
                    let o = v.as_object().unwrap();
                    let keys: Vec<_> = o.iter().map(|(k, _)| k).collect();
                    assert_eq!(keys, ["Body", "Properties", "SystemProperties"], "{body:?}");
                    if let Ok(alone) = alone {
                        assert_eq!(v.get("Body").unwrap(), &alone, "{body:?}");
                    }
                }
                Err(_) => {
                    rejected += 1;
                    assert!(alone.is_err() && !blank, "rejected {body:?}");
                }
            }
        }
        assert!(accepted > 500 && rejected > 500, "{accepted} {rejected}");
    }

    fn props() -> Vec<(String, serde_json::Value)> {
        vec![(
            "iothub-creation-time-utc".into(),
            serde_json::json!("2019-02-01T22:46:01Z"),
        )]
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "iothub-creation-time-utc",
            "a\"b",
            "a\\b",
            "tab\there",
            "nl\n",
            "\u{0}\u{1f}\u{7f}",
            "é ü 漢字 🎉",
            "/slash/",
            "\u{2028}",
        ] {
            let mut buf = Vec::new();
            write_string(&mut buf, s);
            assert_eq!(buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        let mut buf = Vec::new();
        let properties = [
            ("a".to_owned(), serde_json::json!("x\"y")),
            ("n\n".to_owned(), serde_json::json!(1.5)),
            ("o".to_owned(), serde_json::json!({"k": [1, "\u{1}"]})),
        ];
        write_properties(&mut buf, &properties);
        let map: serde_json::Map<_, _> = properties.iter().cloned().collect();
        assert_eq!(buf, serde_json::to_vec(&map).unwrap());
    }

    #[test]
    fn wraps_body_in_order() {
        let mut b = EnvelopeBuilder::new();
        let v = b.build(br#"{"hr": 78}"#, &props(), &[]).unwrap();
        assert_eq!(
            sonic_rs::to_string(&v).unwrap(),
            r#"{"Body":{"hr":78},"Properties":{"iothub-creation-time-utc":"2019-02-01T22:46:01Z"},"SystemProperties":{}}"#
        );
        let v = b.build(b"  ", &[], &[]).unwrap();
        assert!(v.get("Body").unwrap().is_null());
    }

    #[test]
    fn brackets_are_counted() {
        for len in [0, 1, 31, 32, 33, 223, 224, 225, 255, 256, 449, 20_000] {
            let all = "{[".repeat(len / 2 + 1)[..len].to_owned();
            assert_eq!(count_opening_brackets(all.as_bytes()), len, "{len}");
            let mixed: String = (0..len)
                .map(|i| ['{', 'a', '[', '}', ']', '"', '\x7b'][i % 7])
                .collect();
            let expected = mixed.bytes().filter(|&b| b == b'{' || b == b'[').count();
            assert_eq!(count_opening_brackets(mixed.as_bytes()), expected, "{len}");
        }
    }

    #[test]
    fn deep_messages_are_rejected_before_parsing() {
        let mut b = EnvelopeBuilder::new();
        let ok = format!(
            "{}{}",
            "[".repeat(MAX_MESSAGE_DEPTH),
            "]".repeat(MAX_MESSAGE_DEPTH)
        );
        assert!(b.build(ok.as_bytes(), &[], &[]).is_ok());
        let deep = format!(
            "{}{}",
            "[".repeat(MAX_MESSAGE_DEPTH + 1),
            "]".repeat(MAX_MESSAGE_DEPTH + 1)
        );
        assert!(matches!(
            b.build(deep.as_bytes(), &[], &[]),
            Err(NormalizeError::InvalidJson { .. })
        ));
        let hostile = "[".repeat(1_000_000);
        assert!(b.build(hostile.as_bytes(), &[], &[]).is_err());
        assert!(parse_token(hostile.as_bytes()).is_err());
        // Brackets inside strings do not count.
        let quoted = format!("{{\"s\":\"{}\"}}", "[".repeat(1000));
        assert!(b.build(quoted.as_bytes(), &[], &[]).is_ok());
    }

    #[test]
    fn bodies_cannot_inject_members() {
        let mut b = EnvelopeBuilder::new();
        for body in [
            &br#"1,"Properties":{"x":1}"#[..],
            br#"1,"Properties":{},"SystemProperties":{},"Body":2"#,
            br#"{"a":1"#,
            br#"{"a":1}}"#,
            br#""abc"#,
            br#"[1,"#,
            br#"{"a":"}"#,
            b"nul",
            br#"1,"Body":2"#,
            br#"1,"Properties":{}"#,
            br#"1,"Properties":{},"SystemProperties":{"#,
            br#"{"a":1},"Properties":{"b":"#,
            br#"1}"#,
            br#"1},{"x":1"#,
            br#"[1],"x":[2]"#,
            br#""a\"#,
            br#""a"#,
            br#"1,"x":"#,
            br#"1 2"#,
            br#"true,"#,
            br#"{"a":1},"Properties":{"b":1},"SystemProperties":{"c":1}}, "d":{"#,
        ] {
            let r = b.build(body, &props(), &props());
            assert!(
                matches!(r, Err(NormalizeError::InvalidJson { .. })),
                "{:?}",
                std::str::from_utf8(body)
            );
        }
    }
}
