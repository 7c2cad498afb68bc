//! Turning what went wrong on the wire into words: a server's `OperationOutcome`, and a
//! transport error's kind.
//!
//! A rejected write is only actionable with the server's explanation ("Observation.code: minimum
//! required = 1"), so the text of every `OperationOutcome` issue is kept, bounded in length.
//! A body that is not an `OperationOutcome` (an HTML error page from a proxy, a plain-text
//! message) is reduced to its first line, so an error message stays one readable line.

use std::error::Error as _;

use serde_json::Value;

use crate::error::ConnectFailure;

/// The longest outcome text kept in an error.
const MAX_OUTCOME: usize = 1000;

/// The explanation in an error response body: the issues of an `OperationOutcome`
/// (`severity code: diagnostics (expression)`, joined by `; `), or the start of a non-FHIR body.
pub(crate) fn outcome_text(body: &[u8]) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        if let Some(text) = operation_outcome_text(&value) {
            return Some(text);
        }
        // Some OAuth-ish gateways answer FHIR requests with {"error": …, "message": …}.
        for key in ["error_description", "message", "error"] {
            if let Some(text) = value.get(key).and_then(Value::as_str) {
                return Some(bounded(text.to_owned()));
            }
        }
        return None;
    }
    let text = String::from_utf8_lossy(body);
    let first = text.lines().map(str::trim).find(|l| !l.is_empty())?;
    if first.starts_with('<') {
        // An HTML page: its title is the only reliable short text.
        let lower = text.to_ascii_lowercase();
        let start = lower.find("<title>")? + "<title>".len();
        let end = lower[start..].find("</title>")? + start;
        return Some(bounded(text[start..end].trim().to_owned()));
    }
    Some(bounded(first.to_owned()))
}

/// The issues of an `OperationOutcome` as one line, `None` when `value` is not one.
pub(crate) fn operation_outcome_text(value: &Value) -> Option<String> {
    if value.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
        return None;
    }
    let issues = value.get("issue").and_then(Value::as_array)?;
    let parts: Vec<String> = issues
        .iter()
        .map(|issue| {
            let s = |k: &str| issue.get(k).and_then(Value::as_str);
            let mut part = String::new();
            if let Some(sev) = s("severity") {
                part.push_str(sev);
            }
            if let Some(code) = s("code") {
                if !part.is_empty() {
                    part.push(' ');
                }
                part.push_str(code);
            }
            let details = s("diagnostics").or_else(|| {
                issue
                    .get("details")
                    .and_then(|d| d.get("text"))
                    .and_then(Value::as_str)
            });
            if let Some(d) = details {
                if !part.is_empty() {
                    part.push_str(": ");
                }
                part.push_str(d);
            }
            let expressions: Vec<&str> = ["expression", "location"]
                .iter()
                .filter_map(|k| issue.get(*k).and_then(Value::as_array))
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            if !expressions.is_empty() {
                part.push_str(&format!(" ({})", expressions.join(", ")));
            }
            part
        })
        .filter(|p| !p.is_empty())
        .collect();
    if parts.is_empty() {
        return None;
    }
    Some(bounded(parts.join("; ")))
}

fn bounded(mut text: String) -> String {
    if text.len() > MAX_OUTCOME {
        let mut cut = MAX_OUTCOME;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

/// What kind of transport failure a reqwest error is, and a description without the URL (it
/// may carry identifiers in its query).
pub(crate) fn classify_transport(error: &reqwest::Error) -> (ConnectFailure, String) {
    let mut chain = String::new();
    let mut refused = false;
    let mut reset = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = error.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => refused = true,
                std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof => reset = true,
                _ => {}
            }
        }
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&e.to_string());
        source = e.source();
    }
    let lower = chain.to_ascii_lowercase();
    let failure = if refused {
        ConnectFailure::Refused
    } else if lower.contains("dns error")
        || lower.contains("failed to lookup address")
        || lower.contains("name or service not known")
        || lower.contains("no address associated")
    {
        ConnectFailure::Dns
    } else if lower.contains("certificate")
        || lower.contains("tls")
        || lower.contains("handshake")
        || lower.contains("invalidcontenttype")
    {
        ConnectFailure::Tls
    } else if reset
        || lower.contains("connection closed")
        || lower.contains("connection reset")
        || lower.contains("incomplete message")
        || lower.contains("unexpected eof")
        || error.is_body()
        || error.is_request() && !error.is_connect()
    {
        ConnectFailure::Closed
    } else {
        ConnectFailure::Other
    };
    if chain.is_empty() {
        chain = error.without_url_text();
    }
    (failure, chain)
}

trait WithoutUrl {
    fn without_url_text(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_text(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn operation_outcome_issues() {
        let body = json!({
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "error", "code": "invalid", "details": {"text": "Missing required property"},
                 "expression": ["Observation.code"]},
                {"severity": "warning", "code": "processing", "diagnostics": "second"}
            ]
        });
        assert_eq!(
            outcome_text(body.to_string().as_bytes()).as_deref(),
            Some(
                "error invalid: Missing required property (Observation.code); warning processing: second"
            )
        );
    }

    #[test]
    fn other_bodies() {
        assert_eq!(outcome_text(b"  "), None);
        assert_eq!(
            outcome_text(b"\nBad Gateway\nmore").as_deref(),
            Some("Bad Gateway")
        );
        assert_eq!(
            outcome_text(b"<html><head><TITLE> 502 Bad Gateway </TITLE></head></html>").as_deref(),
            Some("502 Bad Gateway")
        );
        assert_eq!(
            outcome_text(br#"{"error":"invalid_token","error_description":"expired"}"#).as_deref(),
            Some("expired")
        );
        assert_eq!(outcome_text(br#"{"resourceType":"Patient"}"#), None);
        let long = "x".repeat(5000);
        assert_eq!(
            outcome_text(long.as_bytes()).unwrap().chars().count(),
            MAX_OUTCOME + 1
        );
    }
}
