//! What the log stores: [`Record`] (what a source appends) and [`Entry`] (what a reader gets
//! back, a record with its offset).
//!
//! The log does not interpret records: headers are opaque name/value pairs (content type,
//! source, MQTT topic, …) and the payload is the device message as received.

use bytes::Bytes;

/// One device message as a source appends it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// When the source received the message, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Name/value pairs kept with the message, in order. Names are at most 65,535 bytes and a
    /// record has at most 65,535 headers.
    pub headers: Vec<(String, Bytes)>,
    /// The message body.
    pub payload: Bytes,
}

impl Record {
    /// A record with no headers.
    pub fn new(timestamp_ms: i64, payload: impl Into<Bytes>) -> Record {
        Record {
            timestamp_ms,
            headers: Vec::new(),
            payload: payload.into(),
        }
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Record {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The bytes this record takes in a segment, framing included (see the crate docs' frame
    /// layout). Useful to size `max_commit_bytes` and `segment_bytes`.
    pub fn encoded_len(&self) -> usize {
        crate::frame::frame_len(self)
    }
}

/// A record read back, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's position in the log: dense from 0, never reused.
    pub offset: u64,
    /// The record as appended.
    pub record: Record,
}
