//! The event envelope templates see: `{"Body": …, "Properties": {…}, "SystemProperties": {…}}`.
//!
//! The original wraps every device message this way before matching (SPEC §2), so mappings
//! written for it address `$.Body.heartRate` or `$.SystemProperties.iothub-connection-device-id`.
//!
//! # Why the envelope is built as text
//! Parsed documents are read-only (`sonic_rs` does not keep member order when objects are built
//! or changed), and parsing the body and then copying it into an envelope would cost a second
//! pass. So the envelope text is assembled around the body's bytes and parsed once. To make
//! sure a body cannot smuggle members into the envelope (`1,"Properties":{…}`), the parsed
//! envelope must have exactly the three members in order; JSON being context-free, a body that
//! is not exactly one value cannot satisfy that (see the tests).

use iomt_expr::Value;
use sonic_rs::JsonContainerTrait;

use crate::error::NormalizeError;

/// How deeply a message may nest (Newtonsoft's default `MaxDepth`, which the original used).
/// Deeper messages are rejected before parsing: the parser recurses, and a hostile message must
/// not be able to exhaust the stack.
pub const MAX_MESSAGE_DEPTH: usize = 64;

/// Whether `bytes` nests arrays and objects deeper than `max`. Counting every bracket first
/// keeps the common case (few brackets) to one vectorizable pass.
fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    // `{` (0x7B) and `[` (0x5B) differ only in bit 0x20: one comparison per byte, counted in
    // byte-wide lanes (at most 255 per chunk) so the loop vectorizes fully.
    let opens: usize = bytes
        .chunks(255)
        .map(|chunk| {
            usize::from(
                chunk
                    .iter()
                    .fold(0u8, |n, &b| n.wrapping_add(u8::from((b | 0x20) == b'{'))),
            )
        })
        .sum();
    if opens <= max {
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
        let well_formed = value.as_object().is_some_and(|o| {
            let mut keys = o.iter().map(|(k, _)| k);
            o.len() == 3
                && keys.next() == Some("Body")
                && keys.next() == Some("Properties")
                && keys.next() == Some("SystemProperties")
        });
        if !well_formed {
            return Err(invalid_body(body, "the body is not a single json value"));
        }
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
        // Writing strings and serde_json values to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, name);
        buf.push(b':');
        let _ = serde_json::to_writer(&mut *buf, value);
    }
    buf.push(b'}');
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

    fn props() -> Vec<(String, serde_json::Value)> {
        vec![(
            "iothub-creation-time-utc".into(),
            serde_json::json!("2019-02-01T22:46:01Z"),
        )]
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
