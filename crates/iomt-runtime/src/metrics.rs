//! The service's Prometheus metrics, named after the counters users know from the original
//! connector and MedTech (incoming messages, normalized messages, measurements, groups,
//! resources saved, errors by class), plus stage latencies and data freshness.
//!
//! # What must hold
//! * Labels carry only bounded, non-identifying values (stage, error class, outcome, source
//!   kind): never a device id, patient id or message content.
//! * Every message the pipeline reads ends in exactly one of: normalized, unmatched (no
//!   template produced a measurement), or errored — so
//!   `received = normalized + unmatched + errors{stage="normalize"}` over the same period,
//!   which `docs/troubleshooting.md` uses to find where data went.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A source kind label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `http`, `mqtt`, `kafka`, `redrive`.
    pub source: String,
}

/// A stage and error class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The pipeline stage.
    pub stage: String,
    /// The error class from the catalogue.
    pub class: String,
}

/// An outcome label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `created`, `updated`, `unchanged`.
    pub outcome: String,
}

/// A stage label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The pipeline stage.
    pub stage: String,
}

/// A result label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `ok` or `failed`.
    pub result: String,
}

/// Every metric of one service.
pub struct Metrics {
    registry: Registry,
    /// Messages accepted by a source (durable in the log).
    pub messages_received: Family<SourceLabel, Counter>,
    /// Requests a source refused, by reason (`unauthorized`, `too_large`, `backpressure`, …).
    pub requests_refused: Family<ResultLabel, Counter>,
    /// Messages that produced at least one measurement.
    pub messages_normalized: Counter,
    /// Messages no device template matched.
    pub messages_unmatched: Counter,
    /// Measurements produced.
    pub measurements: Counter,
    /// Observation groups formed.
    pub groups: Counter,
    /// Observations written or found unchanged, by outcome.
    pub observations_saved: Family<OutcomeLabel, Counter>,
    /// Errors by stage and class (each one is in the dead-letter store).
    pub errors: Family<ErrorLabels, Counter>,
    /// Groups retried because of a retryable failure.
    pub persist_retries: Counter,
    /// Batch processing time per stage.
    pub stage_seconds: Family<StageLabel, Histogram>,
    /// Time from ingest (durable in the log) to persisted.
    pub ingest_to_persisted_seconds: Histogram,
    /// Mapping reloads by result.
    pub mapping_reloads: Family<ResultLabel, Counter>,
    /// Unix time (seconds) of the ingest of the newest message whose batch is fully handled.
    pub last_handled_ingest_time: Gauge<i64, AtomicI64>,
    /// Records appended and not yet handled.
    pub log_lag_records: Gauge<i64, AtomicI64>,
    /// Bytes retained by the log.
    pub log_bytes: Gauge<i64, AtomicI64>,
    /// 1 while the FHIR destination has failed every write of the last attempt (an outage).
    pub destination_unavailable: Gauge<i64, AtomicI64>,
    /// Entries in the dead-letter store.
    pub dead_letters_stored: Counter<u64, AtomicU64>,
    /// Messages read from Kafka topics (the raw source or the normalized topic).
    pub kafka_messages_consumed: Counter,
    /// Offset commits that failed (usually partitions revoked by a rebalance; the next owner
    /// reprocesses from the previous commit).
    pub kafka_commit_failures: Counter,
    /// Measurements produced to the normalized topic and acknowledged.
    pub kafka_messages_produced: Counter,
    /// Measurements the brokers did not acknowledge (the batch is produced again).
    pub kafka_produce_errors: Counter,
    /// Time to produce a batch to the normalized topic until every acknowledgement.
    pub kafka_produce_seconds: Histogram,
    /// Kafka partitions this instance's consumer currently owns.
    pub kafka_assigned_partitions: Gauge<i64, AtomicI64>,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.001, 2.0, 16)
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("iomt");
        let messages_received = Family::<SourceLabel, Counter>::default();
        registry.register(
            "messages_received",
            "Device messages accepted by a source and durable in the log",
            messages_received.clone(),
        );
        let requests_refused = Family::<ResultLabel, Counter>::default();
        registry.register(
            "requests_refused",
            "Source requests refused, by reason",
            requests_refused.clone(),
        );
        let messages_normalized = Counter::default();
        registry.register(
            "messages_normalized",
            "Messages that produced at least one measurement",
            messages_normalized.clone(),
        );
        let messages_unmatched = Counter::default();
        registry.register(
            "messages_unmatched",
            "Messages that no device template matched",
            messages_unmatched.clone(),
        );
        let measurements = Counter::default();
        registry.register(
            "measurements",
            "Measurements produced by normalization",
            measurements.clone(),
        );
        let groups = Counter::default();
        registry.register(
            "observation_groups",
            "Observation groups formed",
            groups.clone(),
        );
        let observations_saved = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "observations_saved",
            "Observations created, updated, or found unchanged",
            observations_saved.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "errors",
            "Failures by stage and error class; each is in the dead-letter store",
            errors.clone(),
        );
        let persist_retries = Counter::default();
        registry.register(
            "persist_retries",
            "Groups tried again after a retryable failure",
            persist_retries.clone(),
        );
        let stage_seconds = Family::<StageLabel, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "stage_duration_seconds",
            "Time per batch in each stage",
            stage_seconds.clone(),
        );
        let ingest_to_persisted_seconds = Histogram::new(latency_buckets());
        registry.register(
            "ingest_to_persisted_seconds",
            "Time from a message being durable in the log to its batch being persisted",
            ingest_to_persisted_seconds.clone(),
        );
        let mapping_reloads = Family::<ResultLabel, Counter>::default();
        registry.register(
            "mapping_reloads",
            "Mapping reloads by result",
            mapping_reloads.clone(),
        );
        let last_handled_ingest_time = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "last_handled_ingest_timestamp_seconds",
            "Ingest time of the newest message whose batch is fully handled (data freshness)",
            last_handled_ingest_time.clone(),
        );
        let log_lag_records = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "log_lag_records",
            "Records in the log not yet handled by the pipeline",
            log_lag_records.clone(),
        );
        let log_bytes = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "log_bytes",
            "Bytes retained by the durable log",
            log_bytes.clone(),
        );
        let destination_unavailable = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "destination_unavailable",
            "1 while every write to the destination fails (an outage)",
            destination_unavailable.clone(),
        );
        let dead_letters_stored = Counter::<u64, AtomicU64>::default();
        registry.register(
            "dead_letters_stored",
            "Entries written to the dead-letter store",
            dead_letters_stored.clone(),
        );
        let kafka_messages_consumed = Counter::default();
        registry.register(
            "kafka_messages_consumed",
            "Messages read from Kafka topics",
            kafka_messages_consumed.clone(),
        );
        let kafka_commit_failures = Counter::default();
        registry.register(
            "kafka_commit_failures",
            "Kafka offset commits that failed (partitions revoked by a rebalance, broker errors)",
            kafka_commit_failures.clone(),
        );
        let kafka_messages_produced = Counter::default();
        registry.register(
            "kafka_messages_produced",
            "Measurements produced to the normalized topic and acknowledged",
            kafka_messages_produced.clone(),
        );
        let kafka_produce_errors = Counter::default();
        registry.register(
            "kafka_produce_errors",
            "Measurements the Kafka brokers did not acknowledge",
            kafka_produce_errors.clone(),
        );
        let kafka_produce_seconds = Histogram::new(latency_buckets());
        registry.register(
            "kafka_produce_duration_seconds",
            "Time to produce a batch to the normalized topic until every acknowledgement",
            kafka_produce_seconds.clone(),
        );
        let kafka_assigned_partitions = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "kafka_assigned_partitions",
            "Kafka partitions this instance's consumer currently owns",
            kafka_assigned_partitions.clone(),
        );
        Metrics {
            registry,
            kafka_assigned_partitions,
            kafka_messages_consumed,
            kafka_commit_failures,
            kafka_messages_produced,
            kafka_produce_errors,
            kafka_produce_seconds,
            messages_received,
            requests_refused,
            messages_normalized,
            messages_unmatched,
            measurements,
            groups,
            observations_saved,
            errors,
            persist_retries,
            stage_seconds,
            ingest_to_persisted_seconds,
            mapping_reloads,
            last_handled_ingest_time,
            log_lag_records,
            log_bytes,
            destination_unavailable,
            dead_letters_stored,
        }
    }

    /// Counts one error.
    pub fn error(&self, stage: &str, class: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                stage: stage.to_owned(),
                class: class.to_owned(),
            })
            .inc();
    }

    /// Observes a stage's batch time.
    pub fn stage(&self, stage: &str, seconds: f64) {
        self.stage_seconds
            .get_or_create(&StageLabel {
                stage: stage.to_owned(),
            })
            .observe(seconds);
    }

    /// Counts a refused request.
    pub fn refused(&self, reason: &str) {
        self.requests_refused
            .get_or_create(&ResultLabel {
                result: reason.to_owned(),
            })
            .inc();
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
