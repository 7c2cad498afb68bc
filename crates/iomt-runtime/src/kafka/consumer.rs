//! Reading batches from Kafka topics in a consumer group, and committing them.
//!
//! # The contract
//! * **Commit after the batch is done.** Auto-commit is off. A batch carries, per topic and
//!   partition, the offset after its last message; the pipeline commits it (synchronously) only
//!   once every message of the batch is persisted, dead-lettered or (role `normalize`) produced
//!   to the normalized topic and acknowledged. A crash replays at most the batches in flight.
//! * **Rebalances lose nothing.** When partitions move to another member, a commit for them may
//!   fail (the group generation changed): that is logged at debug level and counted, and the new
//!   owner reads again from the last commit. Reprocessing is harmless because Observation ids
//!   are deterministic and merges idempotent, and window state lives on the FHIR server (each
//!   batch is grouped on its own and merged into its Observation), so nothing in memory needs
//!   handing over.
//! * **Per-device order** holds as long as producers key messages by device id: one partition
//!   is read in order, by one member at a time, one batch at a time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use iomt_log::Record;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::KafkaSetupError;
use super::headers::{KafkaMessageParts, device_event};
use crate::event::EventKind;
use crate::metrics::{Metrics, SourceLabel};
use crate::status::Status;

/// The next offset to read, per topic and partition.
pub type Offsets = BTreeMap<(String, i32), i64>;

/// Messages read from Kafka, as log-shaped records, and the offsets that cover them.
#[derive(Debug, Default)]
pub struct ConsumedBatch {
    /// One record per message, in the order read.
    pub records: Vec<Record>,
    /// What to commit once the batch is done.
    pub offsets: Offsets,
}

/// The rdkafka client context: logs, errors and rebalances go to `tracing` and readiness.
pub struct IomtContext {
    status: Arc<Status>,
    metrics: Arc<Metrics>,
    name: &'static str,
}

impl IomtContext {
    /// A context reporting to `status` and `metrics` under `name` (`kafka`, `scale_out`).
    pub fn new(status: Arc<Status>, metrics: Arc<Metrics>, name: &'static str) -> IomtContext {
        IomtContext {
            status,
            metrics,
            name,
        }
    }
}

impl ClientContext for IomtContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                warn!(
                    client = self.name,
                    facility = fac,
                    "librdkafka: {log_message}"
                )
            }
            _ => debug!(
                client = self.name,
                facility = fac,
                "librdkafka: {log_message}"
            ),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        use rdkafka::types::RDKafkaErrorCode as C;
        if matches!(
            error.rdkafka_error_code(),
            Some(C::AllBrokersDown | C::Authentication | C::SaslAuthenticationFailed)
        ) {
            self.status.set_source_problem(
                self.name,
                Some(format!(
                    "kafka: {reason}; check bootstrap_servers, security and that the brokers run"
                )),
            );
        }
        debug!(client = self.name, error = %error, "kafka client error: {reason}");
    }
}

impl ConsumerContext for IomtContext {
    fn post_rebalance(
        &self,
        _consumer: &rdkafka::consumer::BaseConsumer<Self>,
        rebalance: &Rebalance<'_>,
    ) {
        match rebalance {
            Rebalance::Assign(list) => {
                self.metrics
                    .kafka_assigned_partitions
                    .set(list.count() as i64);
                info!(
                    client = self.name,
                    partitions = list.count(),
                    "kafka partitions assigned"
                )
            }
            Rebalance::Revoke(list) => {
                self.metrics.kafka_assigned_partitions.set(0);
                info!(
                    client = self.name,
                    partitions = list.count(),
                    "kafka partitions revoked"
                )
            }
            Rebalance::Error(e) => warn!(client = self.name, error = %e, "kafka rebalance failed"),
        }
    }
}

/// A consumer-group member reading `topics`; see the module docs for the contract.
pub struct KafkaInput {
    consumer: Arc<StreamConsumer<IomtContext>>,
    kind: EventKind,
    name: &'static str,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
}

impl KafkaInput {
    /// Creates the consumer and subscribes (no network wait: the group is joined on the first
    /// read). `kind` says what the messages are: raw device messages or measurements.
    ///
    /// # Errors
    /// librdkafka refused the properties, or the subscription.
    pub fn new(
        config: &ClientConfig,
        topics: &[String],
        kind: EventKind,
        name: &'static str,
        metrics: Arc<Metrics>,
        status: Arc<Status>,
    ) -> Result<KafkaInput, KafkaSetupError> {
        let consumer: StreamConsumer<IomtContext> = config
            .create_with_context(IomtContext::new(status.clone(), metrics.clone(), name))
            .map_err(KafkaSetupError::Client)?;
        let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(KafkaSetupError::Client)?;
        Ok(KafkaInput {
            consumer: Arc::new(consumer),
            kind,
            name,
            metrics,
            status,
        })
    }

    /// The name under which readiness problems are reported.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Reads one batch: waits up to `interval` for a first message, then gathers until
    /// `interval` has passed since it arrived or `max` are in hand. Returns early (with what it
    /// has) when `drain` turns true.
    pub async fn next_batch(
        &self,
        max: usize,
        interval: Duration,
        drain: &mut watch::Receiver<bool>,
    ) -> ConsumedBatch {
        let mut batch = ConsumedBatch::default();
        let mut deadline = Instant::now() + interval;
        while batch.records.len() < max {
            if *drain.borrow() {
                break;
            }
            let received = tokio::select! {
                r = self.consumer.recv() => r.map(|m| self.record(&m, &mut batch.offsets)),
                _ = tokio::time::sleep_until(deadline) => break,
                _ = drain.wait_for(|d| *d) => break,
            };
            match received {
                Ok(record) => {
                    if batch.records.is_empty() {
                        deadline = Instant::now() + interval;
                    }
                    batch.records.push(record);
                }
                Err(e) => {
                    debug!(client = self.name, error = %e, "kafka read failed; retrying");
                    self.status
                        .set_source_problem(self.name, Some(format!("kafka: cannot read: {e}")));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if !batch.records.is_empty() {
            self.status.set_source_problem(self.name, None);
            let count = batch.records.len() as u64;
            self.metrics.kafka_messages_consumed.inc_by(count);
            // Counted as received too, so `received = normalized + unmatched + errors` holds
            // for Kafka as for the sources that write the log.
            self.metrics
                .messages_received
                .get_or_create(&SourceLabel {
                    source: self.name.to_owned(),
                })
                .inc_by(count);
        }
        batch
    }

    fn record(&self, message: &impl Message, offsets: &mut Offsets) -> Record {
        let parts = KafkaMessageParts {
            topic: message.topic(),
            offset: message.offset(),
            key: message.key(),
            timestamp_ms: message.timestamp().to_millis(),
            payload: message.payload().unwrap_or_default(),
        };
        let headers: Vec<(&str, Option<&[u8]>)> = message
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let event = device_event(parts, headers, self.kind);
        offsets.insert(
            (message.topic().to_owned(), message.partition()),
            message.offset() + 1,
        );
        event.into_record(Utc::now().timestamp_millis())
    }

    /// Commits `offsets` synchronously. A failure (typically: the partitions were revoked by a
    /// rebalance) is logged at debug level and counted; the next owner reads from the previous
    /// commit, which is harmless (see the module docs).
    pub async fn commit(&self, offsets: &Offsets) -> bool {
        if offsets.is_empty() {
            return true;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), offset) in offsets {
            if list
                .add_partition_offset(topic, *partition, Offset::Offset(*offset))
                .is_err()
            {
                return false;
            }
        }
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || consumer.commit(&list, CommitMode::Sync))
            .await
            .map_err(|_| ());
        match result {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                self.metrics.kafka_commit_failures.inc();
                debug!(client = self.name, error = %e, "kafka commit failed (partitions revoked?); the next owner reprocesses from the last commit");
                false
            }
            Err(()) => false,
        }
    }

    /// Checks the brokers answer (a metadata request), setting or clearing the readiness
    /// problem.
    pub async fn probe(&self) {
        let consumer = self.consumer.clone();
        let result = tokio::task::spawn_blocking(move || {
            consumer
                .fetch_metadata(None, Duration::from_secs(5))
                .map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => self.status.set_source_problem(self.name, None),
            Ok(Err(e)) => self.status.set_source_problem(
                self.name,
                Some(format!(
                    "kafka: cannot reach the brokers: {e}; check bootstrap_servers and security"
                )),
            ),
            Err(_) => {}
        }
    }
}
