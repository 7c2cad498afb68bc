//! The data every iomt stage shares: measurements, their wire format, timestamps, and the error
//! catalogue.
//!
//! # Why a separate crate
//! Normalization produces [`Measurement`]s, grouping and transformation consume them, and
//! deployments that run the two halves on different machines exchange them over a broker in
//! the original connector's wire format. Keeping the type, its encoding and the partition-key
//! hash here lets mixed deployments (original C# normalization feeding iomt transformation, or
//! the reverse) interoperate, and keeps the pure stages free of I/O dependencies.
//!
//! # Invariants
//! * Every timestamp in a [`Measurement`] is UTC ([`chrono::DateTime<Utc>`]); offsets in device
//!   data are converted when read, zone-less times are taken as UTC (see `docs/deviations.md`).
//! * [`Measurement::to_wire_json`] writes the original's member order and spelling, and
//!   [`Measurement::from_wire_json`] reads what the original writes.

pub mod dotnet;
pub mod error;
pub mod event_hubs;
pub mod mapping_error;
pub mod measurement;
pub mod partition;
pub mod spanned;
pub mod timestamp;

pub use error::{ErrorClass, Severity};
pub use mapping_error::TemplateError;
pub use measurement::{Measurement, MeasurementProperty, WireFormatError};
pub use partition::{PartitionKeyError, partition_key};
