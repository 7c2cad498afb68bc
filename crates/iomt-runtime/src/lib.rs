//! The connector service, `iomt run`: sources → durable log → normalize → group → transform →
//! persist, with a dead-letter store, an admin listener (health, readiness, metrics,
//! dead-letter API) and mapping reload.
//!
//! # Layout (in the order a message flows)
//! * [`config`]: `pipeline.yaml`, strict, every error with its path.
//! * [`ingest`]: sources (HTTP, MQTT); they append [`event::DeviceEvent`]s to the log and
//!   acknowledge only once durable. [`auth`], [`tls`] and [`listener`] serve them.
//! * [`kafka`]: the Kafka source (also Azure Event Hubs) and the scale-out topic between
//!   role `normalize` and role `transform` instances; Kafka feeds the pipeline directly and
//!   its offsets are committed after each batch.
//! * [`pipeline`]: the batch loop over the log: normalize, group, persist through a
//!   [`sink::Sink`] (FHIR server or local store), dead-letter, checkpoint.
//! * [`dead_letter`]: redriving stored failures.
//! * [`admin`], [`metrics`], [`status`]: what the operator sees; [`ui`]: the mapping
//!   debugger page, served on the admin listener.
//! * [`service`]: start and graceful shutdown of the whole.
//!
//! # Design decisions
//! * **Batch per flush interval, merge across batches.** As the original does, every batch
//!   is grouped on its own and each group is created or merged into its Observation; an
//!   hour's Observation grows batch by batch. No window state lives only in memory, so a
//!   crash loses nothing and a checkpoint is simply "the batch is done".
//! * **One batch at a time.** Per-device order then holds across batches without
//!   coordination; parallelism is inside a batch (the FHIR client writes devices
//!   concurrently; normalization runs on the blocking pool).
//! * **Outages wait, bad data moves aside.** Retryable failures during an outage are retried
//!   without limit and never dead-lettered; a group's own failure is dead-lettered with its
//!   class and the pipeline moves on.
//!
//! # Invariants
//! * A source acknowledges a message only after the log made it durable.
//! * The pipeline's checkpoint passes a record only when its results are persisted or
//!   dead-lettered.
//! * Logs carry no message content or identifiers; the dead-letter store (authenticated API,
//!   local file) holds them.

pub mod admin;
pub mod auth;
pub mod config;
pub mod dead_letter;
pub mod error;
pub mod event;
pub mod ingest;
pub mod kafka;
pub mod listener;
pub mod mappings;
pub mod metrics;
pub mod pipeline;
pub mod service;
pub mod sink;
pub mod status;
pub mod tls;
pub mod ui;

pub use config::PipelineConfig;
pub use error::RuntimeError;
pub use service::{RunningService, start};
