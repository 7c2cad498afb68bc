//! Kafka message → [`DeviceEvent`]: headers, key and timestamp become IoT-Hub-style
//! `Properties` and `SystemProperties`, so `IotJsonPathContent` mappings written for IoT Hub
//! routed to Event Hubs work unchanged when the same messages are read through a Kafka endpoint.
//!
//! # The mapping (also in `docs/sources.md`)
//! * A header named `iothub-creation-time-utc` goes to `Properties` (IoT Hub carries it as an
//!   application property and `IotJsonPathContent` reads it from `$.Properties`, SPEC §4).
//! * Any other header whose name starts with `iothub-` or `x-opt-`, or is an AMQP message
//!   property or IoT Hub system property name ([`SYSTEM_PROPERTY_NAMES`]), goes to
//!   `SystemProperties`. Everything else goes to `Properties`. Values are read as UTF-8 text
//!   (invalid bytes replaced); a header without a value becomes an empty string.
//! * `SystemProperties` also get, unless a header already set them: `iothub-enqueuedtime` and
//!   `x-opt-enqueued-time` from the Kafka timestamp (ISO-8601 UTC, milliseconds; the original
//!   falls back to `iothub-enqueuedtime` for a measurement's time and uses the enqueued time as
//!   its ingestion time), `x-opt-sequence-number` from the offset, and `x-opt-partition-key`
//!   from the message key (as Event Hubs exposes a Kafka key).
//! * `Properties` get `kafka-topic`, the topic the message was read from (like `mqtt-topic`).
//!
//! What must hold: the body is kept byte for byte, and the same message always maps to the
//! same event (a redelivered message is normalized exactly as the first time).

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat};

use crate::event::{DeviceEvent, EventKind};

/// The source name in metrics and the log's `src` header.
pub const SOURCE: &str = "kafka";

/// Header names (besides `iothub-*` and `x-opt-*`) that are AMQP message properties or IoT Hub
/// system properties, and therefore `SystemProperties`.
pub const SYSTEM_PROPERTY_NAMES: &[&str] = &[
    "message-id",
    "user-id",
    "to",
    "subject",
    "reply-to",
    "correlation-id",
    "content-type",
    "content-encoding",
    "absolute-expiry-time",
    "creation-time",
    "group-id",
    "group-sequence",
    "reply-to-group-id",
    "dt-dataschema",
    "dt-subject",
];

/// The application property IoT Hub sets that mappings read from `Properties`.
const CREATION_TIME: &str = "iothub-creation-time-utc";

/// What the mapping needs of one Kafka message (kept apart from rdkafka's borrowed message so
/// the mapping is a pure, testable function).
#[derive(Debug, Clone, Copy)]
pub struct KafkaMessageParts<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The offset.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The message timestamp (ms since the epoch), if the broker gave one.
    pub timestamp_ms: Option<i64>,
    /// The payload (empty if none).
    pub payload: &'a [u8],
}

/// Whether a header belongs in `SystemProperties`.
pub fn is_system_property(name: &str) -> bool {
    if name.eq_ignore_ascii_case(CREATION_TIME) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    lower.starts_with("iothub-")
        || lower.starts_with("x-opt-")
        || SYSTEM_PROPERTY_NAMES.contains(&lower.as_str())
}

/// The device event for a Kafka message with `headers` (name, value).
pub fn device_event<'a>(
    parts: KafkaMessageParts<'_>,
    headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    kind: EventKind,
) -> DeviceEvent {
    let mut event = DeviceEvent::message(Bytes::copy_from_slice(parts.payload), SOURCE);
    event.kind = kind;
    for (name, value) in headers {
        let text = value.map_or_else(String::new, |v| String::from_utf8_lossy(v).into_owned());
        if is_system_property(name) {
            event.system_properties.push((name.to_owned(), text));
        } else {
            event.properties.push((name.to_owned(), text));
        }
    }
    let has = |event: &DeviceEvent, name: &str| {
        event
            .system_properties
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    if let Some(time) = parts
        .timestamp_ms
        .and_then(DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
    {
        for name in ["iothub-enqueuedtime", "x-opt-enqueued-time"] {
            if !has(&event, name) {
                event
                    .system_properties
                    .push((name.to_owned(), time.clone()));
            }
        }
    }
    if !has(&event, "x-opt-sequence-number") {
        event
            .system_properties
            .push(("x-opt-sequence-number".to_owned(), parts.offset.to_string()));
    }
    if let Some(key) = parts.key
        && !has(&event, "x-opt-partition-key")
    {
        event.system_properties.push((
            "x-opt-partition-key".to_owned(),
            String::from_utf8_lossy(key).into_owned(),
        ));
    }
    event
        .properties
        .push(("kafka-topic".to_owned(), parts.topic.to_owned()));
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts<'a>(key: Option<&'a [u8]>, timestamp_ms: Option<i64>) -> KafkaMessageParts<'a> {
        KafkaMessageParts {
            topic: "devicedata",
            offset: 41,
            key,
            timestamp_ms,
            payload: br#"{"heartRate":70}"#,
        }
    }

    fn h<'a>(name: &'a str, value: Option<&'a str>) -> (&'a str, Option<&'a [u8]>) {
        (name, value.map(str::as_bytes))
    }

    fn get<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn iot_hub_headers_become_system_properties_and_the_rest_properties() {
        let headers = vec![
            h("iothub-connection-device-id", Some("monitor-7")),
            h("iothub-enqueuedtime", Some("2026-11-26T08:00:00.120Z")),
            h("iothub-message-source", Some("Telemetry")),
            h("iothub-connection-auth-method", Some("{}")),
            h("iothub-creation-time-utc", Some("2026-11-26T07:59:59Z")),
            h("content-type", Some("application/json")),
            h("correlation-id", Some("c-1")),
            h("ward", Some("7B")),
            h("empty", None),
        ];
        let event = device_event(
            parts(Some("monitor-7".as_bytes()), Some(1_764_144_000_500)),
            headers,
            EventKind::Message,
        );
        assert_eq!(event.body.as_ref(), br#"{"heartRate":70}"#);
        assert_eq!(event.source, "kafka");
        let s = &event.system_properties;
        assert_eq!(get(s, "iothub-connection-device-id"), Some("monitor-7"));
        // A header wins over the Kafka timestamp.
        assert_eq!(
            get(s, "iothub-enqueuedtime"),
            Some("2026-11-26T08:00:00.120Z")
        );
        assert_eq!(
            get(s, "x-opt-enqueued-time"),
            Some("2025-11-26T08:00:00.500Z")
        );
        assert_eq!(get(s, "iothub-message-source"), Some("Telemetry"));
        assert_eq!(get(s, "content-type"), Some("application/json"));
        assert_eq!(get(s, "correlation-id"), Some("c-1"));
        assert_eq!(get(s, "x-opt-sequence-number"), Some("41"));
        assert_eq!(get(s, "x-opt-partition-key"), Some("monitor-7"));
        let p = &event.properties;
        assert_eq!(
            get(p, "iothub-creation-time-utc"),
            Some("2026-11-26T07:59:59Z")
        );
        assert_eq!(get(p, "ward"), Some("7B"));
        assert_eq!(get(p, "empty"), Some(""));
        assert_eq!(get(p, "kafka-topic"), Some("devicedata"));
        assert_eq!(get(s, "ward"), None);
    }

    #[test]
    fn without_an_enqueued_time_header_the_kafka_timestamp_is_used() {
        let event = device_event(parts(None, Some(0)), Vec::new(), EventKind::Message);
        assert_eq!(
            get(&event.system_properties, "iothub-enqueuedtime"),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(get(&event.system_properties, "x-opt-partition-key"), None);
        let event = device_event(parts(None, None), Vec::new(), EventKind::Measurements);
        assert_eq!(get(&event.system_properties, "iothub-enqueuedtime"), None);
        assert_eq!(event.kind, EventKind::Measurements);
    }

    #[test]
    fn mapped_events_read_back_from_a_log_record_unchanged() {
        let headers = vec![h("iothub-connection-device-id", Some("d"))];
        let event = device_event(
            parts(Some("d".as_bytes()), Some(5)),
            headers,
            EventKind::Message,
        );
        let record = event.clone().into_record(9);
        assert_eq!(DeviceEvent::from_record(&record), event);
    }
}
