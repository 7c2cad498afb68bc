//! What a log record holds: one device message as received, with its IoT-Hub-style
//! properties, or (for redriven groups) measurements in the original's wire format.
//!
//! The log stores opaque records; this module is the one place that gives their headers
//! meaning, so that every source writes, and the pipeline reads, the same shape.
//!
//! # What must hold
//! * The payload is the message exactly as received: a message that fails later is
//!   dead-lettered byte for byte, and a redrive replays exactly that.
//! * Header names are `p:<name>` for `Properties`, `s:<name>` for `SystemProperties`,
//!   `src` for the source, `kind` for the record kind; anything else is ignored.

use bytes::Bytes;
use iomt_log::Record;

/// What a record's payload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// A device message: normalized with the device mapping.
    Message,
    /// Measurements in the original's wire format, one JSON object per line (a redriven
    /// group): they skip normalization.
    Measurements,
}

/// One device message and its properties.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEvent {
    /// The message body as received.
    pub body: Bytes,
    /// `Properties` (application properties).
    pub properties: Vec<(String, String)>,
    /// `SystemProperties` (`iothub-connection-device-id`, `iothub-enqueuedtime`, …).
    pub system_properties: Vec<(String, String)>,
    /// Where it came from (`http`, `mqtt:topic`, `redrive`).
    pub source: String,
    /// What the payload is.
    pub kind: EventKind,
}

impl DeviceEvent {
    /// A plain device message from `source`.
    pub fn message(body: impl Into<Bytes>, source: &str) -> DeviceEvent {
        DeviceEvent {
            body: body.into(),
            properties: Vec::new(),
            system_properties: Vec::new(),
            source: source.to_owned(),
            kind: EventKind::Message,
        }
    }

    /// The log record for this event, stamped with `timestamp_ms` (the ingest time).
    pub fn into_record(self, timestamp_ms: i64) -> Record {
        let mut headers =
            Vec::with_capacity(2 + self.properties.len() + self.system_properties.len());
        headers.push(("src".to_owned(), Bytes::from(self.source)));
        if self.kind == EventKind::Measurements {
            headers.push(("kind".to_owned(), Bytes::from_static(b"measurements")));
        }
        for (name, value) in self.properties {
            headers.push((format!("p:{name}"), Bytes::from(value)));
        }
        for (name, value) in self.system_properties {
            headers.push((format!("s:{name}"), Bytes::from(value)));
        }
        Record {
            timestamp_ms,
            headers,
            payload: self.body,
        }
    }

    /// The event a record holds.
    pub fn from_record(record: &Record) -> DeviceEvent {
        DeviceEvent::from_headers(
            record.payload.clone(),
            record.headers.iter().map(|(n, v)| (n.as_str(), v.as_ref())),
        )
    }

    /// The event a payload and its record headers describe (the headers as the log stores
    /// them, or as the dead-letter store kept them).
    pub fn from_headers<'a>(
        payload: Bytes,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> DeviceEvent {
        let mut event = DeviceEvent::message(payload, "");
        for (name, value) in headers {
            let text = || String::from_utf8_lossy(value).into_owned();
            if let Some(p) = name.strip_prefix("p:") {
                event.properties.push((p.to_owned(), text()));
            } else if let Some(s) = name.strip_prefix("s:") {
                event.system_properties.push((s.to_owned(), text()));
            } else if name == "src" {
                event.source = text();
            } else if name == "kind" && value == b"measurements" {
                event.kind = EventKind::Measurements;
            }
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let event = DeviceEvent {
            body: Bytes::from_static(br#"{"hr":70}"#),
            properties: vec![("a".into(), "1".into())],
            system_properties: vec![("iothub-connection-device-id".into(), "dev-1".into())],
            source: "http".into(),
            kind: EventKind::Message,
        };
        let record = event.clone().into_record(42);
        assert_eq!(record.timestamp_ms, 42);
        assert_eq!(DeviceEvent::from_record(&record), event);
        let mut redrive = event.clone();
        redrive.kind = EventKind::Measurements;
        assert_eq!(
            DeviceEvent::from_record(&redrive.clone().into_record(1)).kind,
            EventKind::Measurements
        );
    }
}
