//! Input messages: what the debugger is asked to run through the mappings.

use chrono::{DateTime, Utc};
use iomt_model::timestamp;
use sonic_rs::JsonValueTrait;

/// How a message's bytes reach the device templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MessageKind {
    /// A raw message body, wrapped as `{"Body": …, "Properties": {}, "SystemProperties": {}}`
    /// exactly as the service wraps every event (the default, as `iomt normalize`).
    #[default]
    Body,
    /// A token handed to the templates as it is: normally an event envelope already shaped
    /// `{Body, Properties, SystemProperties}` (`iomt normalize --envelope`); tools that test
    /// templates against a bare token, as the original's mapping validator did, use it too.
    Envelope,
}

/// One input message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How the bytes reach the templates.
    pub kind: MessageKind,
    /// The bytes as received (UTF-8 JSON; anything else is reported as a message error).
    pub bytes: Vec<u8>,
    /// The 1-based line the message came from, for reports.
    pub line: Option<usize>,
}

impl Message {
    /// A raw body, to be wrapped into an event envelope.
    pub fn body(bytes: impl Into<Vec<u8>>) -> Message {
        Message {
            kind: MessageKind::Body,
            bytes: bytes.into(),
            line: None,
        }
    }

    /// A token passed to the templates as it is (an event envelope).
    pub fn envelope(bytes: impl Into<Vec<u8>>) -> Message {
        Message {
            kind: MessageKind::Envelope,
            bytes: bytes.into(),
            line: None,
        }
    }

    /// The same message, remembering the input line it came from.
    pub fn at_line(mut self, line: usize) -> Message {
        self.line = Some(line);
        self
    }
}

/// The event's enqueued time, when its envelope carries one in `SystemProperties`
/// (`x-opt-enqueued-time` from Event Hubs, `iothub-enqueuedtime` from IoT Hub): the service sets
/// it as every measurement's `IngestionTimeUtc`, which decides which of two measurements with
/// the same occurrence time a batch keeps.
pub fn enqueued_time(token: &iomt_expr::Value) -> Option<DateTime<Utc>> {
    let system = token.get("SystemProperties")?;
    ["x-opt-enqueued-time", "iothub-enqueuedtime"]
        .iter()
        .find_map(|k| {
            system
                .get(k)
                .and_then(|v| v.as_str())
                .and_then(timestamp::parse)
        })
}
