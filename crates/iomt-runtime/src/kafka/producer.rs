//! Writing normalized measurements to the normalized topic (role `normalize`).
//!
//! # The contract
//! * One Kafka message per measurement, its payload the original's wire format
//!   ([`Measurement::to_wire_json`]) and its key the device id, as the original wrote its
//!   `normalizeddata` event hub: a device's measurements land on one partition, in order.
//! * The producer is idempotent (`enable.idempotence=true`, `acks=all`): librdkafka's own
//!   retries neither duplicate nor reorder.
//! * [`NormalizedProducer::produce`] returns only when every message of the batch is
//!   acknowledged, or reports that some were not; the caller then produces the batch again
//!   (duplicates on the normalized topic are harmless: grouping and merging are idempotent) and
//!   commits its input only after a fully acknowledged produce.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iomt_model::Measurement;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::KafkaSetupError;
use super::consumer::IomtContext;
use crate::metrics::Metrics;
use crate::status::Status;

/// Why a batch was not fully acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{failed} of {total} measurements were not acknowledged by the kafka brokers: {first}; the batch is produced again"
)]
pub struct ProduceError {
    /// How many failed.
    pub failed: usize,
    /// How many were sent.
    pub total: usize,
    /// The first failure (no payloads, no identifiers).
    pub first: String,
}

/// The producer of the normalized topic.
pub struct NormalizedProducer {
    producer: FutureProducer<IomtContext>,
    topic: String,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
}

impl NormalizedProducer {
    /// Creates the producer (no network wait).
    ///
    /// # Errors
    /// librdkafka refused the properties.
    pub fn new(
        config: &ClientConfig,
        topic: &str,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Result<NormalizedProducer, KafkaSetupError> {
        let producer: FutureProducer<IomtContext> = config
            .create_with_context(IomtContext::new(
                status.clone(),
                metrics.clone(),
                PRODUCER_NAME,
            ))
            .map_err(KafkaSetupError::Client)?;
        Ok(NormalizedProducer {
            producer,
            topic: topic.to_owned(),
            metrics,
            status,
        })
    }

    /// Produces every measurement (key: device id) and waits for all acknowledgements.
    ///
    /// # Errors
    /// Some messages were not acknowledged (see [`ProduceError`]).
    pub async fn produce(&self, measurements: &[Measurement]) -> Result<(), ProduceError> {
        if measurements.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let total = measurements.len();
        let mut deliveries = Vec::with_capacity(total);
        let mut failed = 0;
        let mut first: Option<String> = None;
        for m in measurements {
            let payload = m.to_wire_json();
            let mut record = FutureRecord::to(&self.topic)
                .key(m.device_id.as_str())
                .payload(payload.as_str());
            loop {
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push(delivery);
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The local queue is full: let deliveries drain, then try again.
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        failed += 1;
                        first.get_or_insert_with(|| e.to_string());
                        break;
                    }
                }
            }
        }
        for delivery in deliveries {
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failed += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
                Err(_) => {
                    failed += 1;
                    first.get_or_insert_with(|| "the producer was closed".to_owned());
                }
            }
        }
        self.metrics
            .kafka_produce_seconds
            .observe(started.elapsed().as_secs_f64());
        if failed == 0 {
            self.metrics.kafka_messages_produced.inc_by(total as u64);
            self.status.set_source_problem(PRODUCER_NAME, None);
            Ok(())
        } else {
            self.metrics.kafka_produce_errors.inc_by(failed as u64);
            let error = ProduceError {
                failed,
                total,
                first: first.unwrap_or_default(),
            };
            self.status
                .set_source_problem(PRODUCER_NAME, Some(error.to_string()));
            Err(error)
        }
    }
}

/// The readiness name of the normalized-topic producer.
pub const PRODUCER_NAME: &str = "scale_out producer";
