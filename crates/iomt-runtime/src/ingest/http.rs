//! HTTP ingest: `POST /v1/messages`.
//!
//! # The request
//! * Body: one JSON message, a JSON array of messages, or NDJSON (one message per line, with
//!   `Content-Type: application/x-ndjson`). Each message is stored exactly as sent.
//! * `?envelope=true`: each message is already an event envelope
//!   `{"Body": …, "Properties": {…}, "SystemProperties": {…}}` (as IoT Hub exports and
//!   `iomt normalize --envelope` read); the properties are taken from it.
//! * Headers `iomt-property-<name>: value` and `iomt-system-property-<name>: value` become
//!   every message's `Properties[name]` and `SystemProperties[name]`, so mappings written for
//!   IoT Hub (`IotJsonPathContent` reads `iothub-connection-device-id`) work over HTTP.
//! * `Authorization: Bearer <api key or JWT>` (or `X-Api-Key`).
//!
//! # The answer
//! * `202 {"accepted": n, "first_offset": …, "last_offset": …}` once every message of the
//!   request is durable in the log — never before.
//! * `400` a JSON body (not NDJSON) that does not parse, or no message; nothing is stored.
//!   In NDJSON every line is stored, and a line that is not JSON is dead-lettered by the
//!   pipeline with `InvalidDataFormatException`, so one bad line costs only itself.
//! * `401` missing or wrong credentials; `413` body over `max_body`; `429` with
//!   `Retry-After` while the log is over its limit (backpressure); `503` while shutting down.

use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::Utc;
use iomt_log::Log;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthOutcome, Authenticator};
use crate::event::DeviceEvent;
use crate::metrics::{Metrics, SourceLabel};
use crate::status::Status;

/// What the HTTP source needs.
pub struct HttpIngest {
    /// The durable log.
    pub log: Log,
    /// Who may send.
    pub auth: Authenticator,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Service state (accepting or not).
    pub status: Arc<Status>,
    /// The largest body accepted.
    pub max_body: usize,
}

#[derive(Debug, Default, Deserialize)]
struct IngestQuery {
    #[serde(default)]
    envelope: bool,
}

/// The ingest routes.
pub fn router(ingest: Arc<HttpIngest>) -> Router {
    Router::new()
        .route("/v1/messages", post(post_messages))
        .with_state(ingest)
}

/// A JSON error answer.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

pub(crate) fn unauthorized(outcome: AuthOutcome) -> Response {
    let message = match outcome {
        AuthOutcome::Missing => {
            "authentication required: send Authorization: Bearer <api key or token>"
        }
        _ => "the credentials were rejected: check the api key or token",
    };
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn post_messages(
    State(ingest): State<Arc<HttpIngest>>,
    Query(query): Query<IngestQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let outcome = ingest.auth.check(&headers);
    if outcome != AuthOutcome::Allowed {
        ingest.metrics.refused("unauthorized");
        return unauthorized(outcome);
    }
    if !ingest.status.sources_accepting() {
        ingest.metrics.refused("unavailable");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the service is shutting down; send again later",
        );
    }
    if ingest.log.is_full() {
        ingest.metrics.refused("backpressure");
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "the connector is behind (its durable log is full); send again after Retry-After seconds",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
        return response;
    }
    let bytes = match axum::body::to_bytes(body, ingest.max_body).await {
        Ok(b) => b,
        Err(_) => {
            ingest.metrics.refused("too_large");
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!(
                    "the body is over {} bytes: send fewer messages per request",
                    ingest.max_body
                ),
            );
        }
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl"));
    let (properties, system_properties) = header_properties(&headers);
    let events = match split_messages(&bytes, ndjson, query.envelope) {
        Ok(bodies) => bodies,
        Err(message) => {
            ingest.metrics.refused("invalid");
            return error(StatusCode::BAD_REQUEST, &message);
        }
    };
    if events.is_empty() {
        ingest.metrics.refused("invalid");
        return error(StatusCode::BAD_REQUEST, "the request holds no message");
    }
    let now = Utc::now().timestamp_millis();
    let count = events.len();
    let records = events
        .into_iter()
        .map(|mut e| {
            e.properties.extend(properties.iter().cloned());
            e.system_properties
                .extend(system_properties.iter().cloned());
            e.into_record(now)
        })
        .collect();
    match ingest.log.append(records).await {
        Ok(range) => {
            ingest
                .metrics
                .messages_received
                .get_or_create(&SourceLabel {
                    source: "http".into(),
                })
                .inc_by(count as u64);
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({
                    "accepted": count,
                    "first_offset": range.start,
                    "last_offset": range.end.saturating_sub(1),
                })),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot append to the durable log");
            ingest.metrics.refused("log_error");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the connector cannot store messages right now; send again later",
            )
        }
    }
}

/// Name/value pairs, in order.
type Pairs = Vec<(String, String)>;

fn header_properties(headers: &HeaderMap) -> (Pairs, Pairs) {
    let mut properties = Vec::new();
    let mut system = Vec::new();
    for (name, value) in headers {
        let Ok(value) = value.to_str() else { continue };
        let name = name.as_str();
        if let Some(p) = name.strip_prefix("iomt-system-property-") {
            system.push((p.to_owned(), value.to_owned()));
        } else if let Some(p) = name.strip_prefix("iomt-property-") {
            properties.push((p.to_owned(), value.to_owned()));
        }
    }
    (properties, system)
}

/// Splits a body into events, as the module docs say.
fn split_messages(bytes: &Bytes, ndjson: bool, envelope: bool) -> Result<Vec<DeviceEvent>, String> {
    let mut events = Vec::new();
    if ndjson {
        for line in bytes.split(|b| *b == b'\n') {
            let line = trim(line);
            if line.is_empty() {
                continue;
            }
            let body = bytes.slice_ref(line);
            events.push(if envelope {
                from_envelope(&body).unwrap_or_else(|_| DeviceEvent::message(body, "http"))
            } else {
                DeviceEvent::message(body, "http")
            });
        }
        return Ok(events);
    }
    let text = trim(bytes);
    if text.is_empty() {
        return Ok(events);
    }
    if text[0] == b'[' {
        let items: Vec<&serde_json::value::RawValue> = serde_json::from_slice(text)
            .map_err(|e| format!("the body is not a json array of messages: {e}"))?;
        for item in items {
            let body = Bytes::copy_from_slice(item.get().as_bytes());
            events.push(if envelope {
                from_envelope(&body)?
            } else {
                DeviceEvent::message(body, "http")
            });
        }
        return Ok(events);
    }
    let _: &serde_json::value::RawValue = serde_json::from_slice(text).map_err(|e| {
        format!("the body is not json ({e}); send NDJSON with Content-Type: application/x-ndjson to have each line judged on its own")
    })?;
    let body = bytes.slice_ref(text);
    events.push(if envelope {
        from_envelope(&body)?
    } else {
        DeviceEvent::message(body, "http")
    });
    Ok(events)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

fn from_envelope(bytes: &Bytes) -> Result<DeviceEvent, String> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "Body", borrow)]
        body: Option<&'a serde_json::value::RawValue>,
        #[serde(rename = "Properties", default)]
        properties: serde_json::Map<String, serde_json::Value>,
        #[serde(rename = "SystemProperties", default)]
        system_properties: serde_json::Map<String, serde_json::Value>,
    }
    let envelope: Envelope<'_> = serde_json::from_slice(bytes).map_err(|e| {
        format!("a message is not an event envelope {{Body, Properties, SystemProperties}}: {e}")
    })?;
    let text = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    let body = envelope
        .body
        .map(|b| Bytes::copy_from_slice(b.get().as_bytes()))
        .unwrap_or_default();
    let mut event = DeviceEvent::message(body, "http");
    event.properties = envelope
        .properties
        .into_iter()
        .map(|(k, v)| (k, text(v)))
        .collect();
    event.system_properties = envelope
        .system_properties
        .into_iter()
        .map(|(k, v)| (k, text(v)))
        .collect();
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bodies(events: &[DeviceEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| String::from_utf8(e.body.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn ndjson_keeps_every_line_even_bad_ones() {
        let body = Bytes::from_static(b"{\"a\":1}\n\n{bad\r\n{\"b\":2}");
        let events = split_messages(&body, true, false).unwrap();
        assert_eq!(bodies(&events), ["{\"a\":1}", "{bad", "{\"b\":2}"]);
    }

    #[test]
    fn json_array_and_single_message() {
        let events = split_messages(
            &Bytes::from_static(b" [ {\"a\":1}, {\"b\": [2]} ] "),
            false,
            false,
        )
        .unwrap();
        assert_eq!(bodies(&events), ["{\"a\":1}", "{\"b\": [2]}"]);
        let events = split_messages(&Bytes::from_static(b"{\"a\":1}\n"), false, false).unwrap();
        assert_eq!(bodies(&events), ["{\"a\":1}"]);
        assert!(split_messages(&Bytes::from_static(b"{\"a\":"), false, false).is_err());
    }

    #[test]
    fn envelopes_give_their_properties() {
        let body = Bytes::from_static(
            br#"{"Body":{"hr":70},"Properties":{"x":"1"},"SystemProperties":{"iothub-connection-device-id":"d1","n":5}}"#,
        );
        let events = split_messages(&body, false, true).unwrap();
        assert_eq!(bodies(&events), [r#"{"hr":70}"#]);
        assert_eq!(events[0].properties, [("x".to_owned(), "1".to_owned())]);
        assert_eq!(
            events[0].system_properties,
            [
                ("iothub-connection-device-id".to_owned(), "d1".to_owned()),
                ("n".to_owned(), "5".to_owned())
            ]
        );
    }
}
