//! The service's errors: what stops it, and what to do about it.

use std::path::PathBuf;

/// Why the service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The mappings could not be loaded.
    #[error(transparent)]
    Mappings(#[from] crate::mappings::MappingLoadError),
    /// The durable log failed.
    #[error("durable log: {0}")]
    Log(#[from] iomt_log::LogError),
    /// A store (dead-letter, local FHIR) failed.
    #[error("store: {0}")]
    Store(#[from] iomt_store::StoreError),
    /// The FHIR client could not be built.
    #[error("fhir destination: {0}")]
    Fhir(#[from] iomt_fhir_client::FhirClientError),
    /// A listener's authentication could not be set up.
    #[error("{listener} listener: {source}")]
    Auth {
        /// `http` or `admin`.
        listener: &'static str,
        /// The cause.
        source: crate::auth::AuthSetupError,
    },
    /// A listener's TLS could not be set up.
    #[error("{listener} listener: {source}")]
    Tls {
        /// `http` or `admin`.
        listener: &'static str,
        /// The cause.
        source: crate::tls::TlsError,
    },
    /// The MQTT source's settings could not be used.
    #[error("mqtt source: {0}")]
    Mqtt(#[from] crate::ingest::mqtt::MqttSourceError),
    /// A Kafka client (source, normalized topic) could not be set up.
    #[error("kafka: {0}")]
    Kafka(#[from] crate::kafka::KafkaSetupError),
    /// A listener could not bind.
    #[error("{0}")]
    Bind(std::io::Error),
    /// A data folder could not be created.
    #[error("cannot create the data folder {path}: {source}; check permissions or set data_dir")]
    DataDir {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Work was stopped by shutdown before it finished (nothing was checkpointed).
    #[error("interrupted by shutdown")]
    Interrupted,
}

/// A blocking or spawned task that did not return: its panic goes on (a bug is not turned
/// into an error), and a task cancelled by the runtime's shutdown is [`RuntimeError::Interrupted`].
pub(crate) fn join_error(e: tokio::task::JoinError) -> RuntimeError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    RuntimeError::Interrupted
}
