//! The Kafka protocol: a source (raw device messages from Kafka topics or Azure Event Hubs'
//! Kafka endpoint) and the scale-out topic of normalized measurements between role
//! `normalize` and role `transform` instances.
//!
//! # Why Kafka is read by the pipeline, not through the durable log
//! Kafka already is a durable, partitioned log with consumer-group offsets. Copying it into the
//! local log would add a second checkpoint and lose what makes scale-out work: partitions
//! shared among instances. So a Kafka input feeds the pipeline directly, and its offsets play
//! the part of the local log's checkpoint: committed only after the batch is done
//! (see [`consumer`]).
//!
//! # Layout
//! * [`config`]: connection settings, security modes and the pure builders of librdkafka
//!   properties (unit-tested for every mode, including the SASL-over-TLS ones no local broker
//!   here can exercise).
//! * [`headers`]: Kafka headers, key and timestamp → IoT-Hub-style `Properties` and
//!   `SystemProperties`.
//! * [`consumer`]: batches from a consumer group, and their commits.
//! * [`producer`]: measurements to the normalized topic, keyed by device id.
//! * [`check`]: the metadata probe of `iomt check --config`.
//!
//! # What must hold
//! * No secret reaches a log line or `Debug` output; no payload or identifier is logged at info
//!   level or above (topics and partition counts are).

pub mod check;
pub mod config;
pub mod consumer;
pub mod headers;
pub mod producer;

pub use config::{
    KafkaConnection, KafkaSecurity, KafkaSourceConfig, OffsetReset, SaslMechanism, ScaleOutConfig,
};
pub use consumer::{ConsumedBatch, KafkaInput, Offsets};
pub use producer::{NormalizedProducer, ProduceError};

/// A Kafka client could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KafkaSetupError {
    /// A secret could not be read.
    #[error("{0}")]
    Secret(String),
    /// The Event Hubs connection string has no usable endpoint.
    #[error(
        "the event hubs connection string has no Endpoint=sb://<namespace>.servicebus.windows.net/ part: copy it from the portal's shared access policy, or set bootstrap_servers"
    )]
    EventHubsEndpoint,
    /// No bootstrap server is configured.
    #[error("no bootstrap server: set bootstrap_servers (host:port)")]
    NoBootstrap,
    /// librdkafka refused the settings.
    #[error("kafka client: {0}; check the settings under extra")]
    Client(rdkafka::error::KafkaError),
}
