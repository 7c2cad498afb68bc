//! Simulated IoMT device traffic: physiologically plausible messages in the shapes the example
//! mappings read, for the demo, for load benchmarks and for trying mappings.
//!
//! There are three consumers of this crate: `iomt run` without a configuration (it feeds the
//! generator in-process), `iomt simulate` (it sends to a running connector or writes NDJSON),
//! and the tests of the mapping examples.
//!
//! # Layout
//! * [`Fleet`] — the pure generator. Each device has a stable id and patient, and its own
//!   physiology ([`physiology`]): heart rate as a bounded random walk around a resting rate
//!   with activity bursts, SpO2, correlated systolic/diastolic pressure, steps counting up
//!   within a day, body temperature. [`Fleet::next_message`] takes the instant to read at.
//! * [`Shape`] — the wire formats: `examples/wearable`, `examples/iothub`,
//!   `examples/iotcentral`. [`SimMessage`] is one message; [`SimMessage::envelope_json`] is its
//!   `{Body, Properties, SystemProperties}` form.
//! * `send` (feature `http`, on by default) — [`send::run`] paces a fleet to a rate, batches and
//!   delivers to a [`send::Target`]; [`send::replay`] does the same for given messages (what
//!   `iomt replay` reads). [`send::HttpTarget`] is the connector's ingest endpoint;
//!   `send::MqttTarget` (feature `mqtt`) publishes at QoS 1 to one topic per device;
//!   `send::KafkaTarget` (feature `kafka`) produces keyed by device id with the IoT Hub
//!   properties as headers. `send::AnyTarget` is whichever a URL names.
//!
//! # Design decisions
//! * **Pure core, clock at the edge.** The generator reads no clock and does no I/O; the
//!   sender is the only code that reads the time and passes it in. So a seed and a start
//!   instant reproduce a data set exactly, and the generator needs no async runtime (build
//!   with `default-features = false` to leave tokio and reqwest out).
//! * **The example mappings are the contract.** Fields, types and timestamps are the ones
//!   those mappings read; the tests run every good message through them into Observations,
//!   and every bad one into a normalization failure.
//! * **Steps are a running daily total stamped at the day's start (UTC).** The wearable
//!   example maps steps to one Quantity per day, which holds exactly one value: reports
//!   stamped at their own instants would make a day with two reports fail. With one instant
//!   per day they collapse into one measurement, and a later report replaces the value when
//!   the Observation is merged.
//! * **Bad messages are the defects real fleets send** ([`BadKind`]): truncated JSON, a
//!   missing device id or timestamp, a nested value or a numeric timestamp, a `null` reading.
//!
//! # What must hold
//! * The same configuration and the same `now` sequence give the same messages.
//! * Every reading is within its physiological bounds ([`physiology`]).
//! * Good messages normalize and map with their shape's example mappings; bad ones fail
//!   normalization.
//!
//! # Example
//! ```
//! use chrono::{TimeDelta, TimeZone, Utc};
//! use iomt_simulate::{Fleet, FleetConfig, MessageKind, Shape};
//!
//! let mut fleet = Fleet::new(FleetConfig { devices: 2, shape: Shape::IotHub, ..FleetConfig::default() })?;
//! let start = Utc.with_ymd_and_hms(2026, 11, 26, 8, 0, 0).unwrap();
//! let message = fleet.next_message(start);
//! assert_eq!(message.device_id, "sim-0001");
//! assert!(matches!(message.kind, MessageKind::Good(_)));
//! let envelope: serde_json::Value = serde_json::from_slice(&message.envelope_json())?;
//! assert_eq!(envelope["SystemProperties"]["iothub-connection-device-id"], "sim-0001");
//! assert_eq!(fleet.next_message(start + TimeDelta::seconds(1)).device_id, "sim-0002");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod error;
mod fleet;
mod message;
pub mod physiology;
#[cfg(feature = "http")]
pub mod send;
mod shape;

pub use error::{ConfigError, ConfigProblem, ParseShapeError, TargetError};
pub use fleet::{Fleet, FleetConfig};
pub use message::{
    BadKind, CREATION_TIME_PROPERTY, DEVICE_ID_SYSTEM_PROPERTY, ENQUEUED_TIME_SYSTEM_PROPERTY,
    MessageKind, SimMessage,
};
pub use shape::{Shape, Signal};
