//! The running pipeline: input → normalize → group → transform and persist (or, in role
//! `normalize`, produce to the normalized topic), with every failure dead-lettered and progress
//! checkpointed.
//!
//! # Inputs and outputs
//! A pipeline reads batches from one [`PipelineInput`]: the durable log (HTTP and MQTT
//! sources, redrives), or a Kafka consumer group (`sources.kafka`; in role `transform`, the
//! normalized topic, whose records are measurements and skip normalization). It writes to one
//! [`PipelineOutput`]: persist (group → [`Sink`]) or produce the measurements to the
//! normalized topic. The service runs one pipeline over the log and, with a Kafka input, a
//! second one over Kafka; see `docs/scale-out.md` for which role runs which.
//!
//! # How a batch flows
//! 1. **Gather**: records are read from the input until `flush_interval` has passed since the
//!    batch's first record arrived, or `max_batch_messages` are in hand.
//! 2. **Normalize** (on the blocking pool; pure): each record's message is wrapped in its
//!    `{Body, Properties, SystemProperties}` envelope and matched against the device mapping.
//!    A message that fails is dead-lettered byte for byte; the rest go on.
//! 3. **Produce** (role normalize): the measurements go to the normalized topic, produced
//!    again until every one is acknowledged. Otherwise:
//! 4. **Group** (on the blocking pool; pure) the batch's measurements per device, patient,
//!    encounter, type and window (SPEC §6), exactly as `iomt test-mapping` does.
//! 5. **Persist** the groups through the [`Sink`]: create, or merge into the existing
//!    Observation. A group rejected for a reason of its own (not found, mismatch, invalid
//!    value, 4xx) is dead-lettered at once. A retryable failure is tried again: while the
//!    destination is down (every write fails and its health probe fails) the pipeline waits
//!    and retries without limit — an outage dead-letters nothing; a group that keeps failing
//!    while the destination is healthy is dead-lettered after `max_attempts`.
//! 6. **Dead letters** of the batch are written (durably) to the store.
//! 7. **Checkpoint**: once what the batch saved is durable ([`Sink::sync`]: the local store
//!    flushes its write-ahead log), the log position after the batch is committed (the log
//!    may then drop the segments behind it), or the Kafka offsets after the batch are
//!    committed. On the log this runs while the next batch is written.
//!
//! ## Two halves, overlapped
//! Steps 1, 2 and 4 are CPU work; steps 3, 5, 6 and 7 mostly wait on a writer (the local
//! store writes on one thread, a FHIR server or broker answers over the network). Run one
//! after the other, one core idles while a batch is written. So each pipeline runs two futures
//! in its one task (`tokio::join!`; the heavy work is already on the blocking pool or in the
//! sink): a *preparer* that gathers and prepares batch N+1 while a *finisher* writes and
//! checkpoints batch N. They are joined by a channel of capacity one, and the preparer
//! reserves its slot *before* gathering, so at most two batches are in memory: the one being
//! written, and the one being gathered, prepared or waiting. A prepared batch carries the
//! mappings snapshot (FHIR templates) that prepared it, its dead letters so far, its ingest
//! times and its checkpoint (log position or Kafka offsets).
//!
//! When the finisher stops (an outage interrupted by shutdown, or a fatal error) it drops its
//! end of the channel; the preparer notices at once, even mid-gather, and stops. When the
//! preparer fails (the log cannot be read), the finisher still writes and checkpoints what it
//! was handed, then the error is returned. On drain the log preparer reads to the log's end,
//! and the Kafka preparer sends the batch in hand; then it closes the channel and the finisher
//! writes and commits what is left.
//!
//! # What must hold
//! * The checkpoint (log position or Kafka offset) moves past a record only once everything
//!   derived from it, and from every record before it, is persisted durably, produced and
//!   acknowledged, or in the dead-letter store. Checkpoints are committed by the finisher
//!   (or, on the log, a task it awaits before the next one starts), in batch order, so they
//!   only move forward. A crash at any point replays at most the batches not yet committed
//!   (the one being made durable, the one being written and the one prepared behind it),
//!   and replays are harmless: Observation ids are deterministic and merges idempotent. A
//!   Kafka commit that fails because a rebalance moved the partitions only means the new
//!   owner replays those batches.
//! * At most two batches per pipeline are in memory (see above), so memory stays bounded by
//!   `max_batch_messages` whatever the backlog.
//! * One bad message or group never stops the others.
//! * Batches of one input are written one at a time, in order, so the groups of one device
//!   are written in order (the FHIR client also orders each device's writes within a batch).
//!   Only preparing overlaps writing; preparing is pure. Across inputs (log and Kafka) no
//!   order is promised; a device sends through one of them.
//! * Nothing here logs message content or identifiers; the dead-letter store holds them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use iomt_log::{Entry, Log, LogReader, Record};
use iomt_model::Measurement;
use iomt_normalize::EnvelopeBuilder;
use iomt_store::{DeadLetterStore, NewDeadLetter, Stage};
use iomt_transform::group::group_batch;
use iomt_transform::{FhirTemplates, ObservationGroup, PeriodInterval};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::config::PipelineSettings;
use crate::error::{RuntimeError, join_error};
use crate::event::{DeviceEvent, EventKind};
use crate::kafka::{KafkaInput, NormalizedProducer, Offsets};
use crate::mappings::{Mappings, MappingsHandle};
use crate::metrics::{Metrics, OutcomeLabel};
use crate::sink::{SavedKind, Sink, SinkOutcome};
use crate::status::Status;

/// The log consumer name under which the pipeline checkpoints.
pub const CONSUMER: &str = "pipeline";

/// The class given to messages no device template matched (kept only with
/// `pipeline.keep_unmatched`).
pub const UNMATCHED_CLASS: &str = "NoMatchingTemplate";

/// Where a pipeline's batches come from.
pub enum PipelineInput {
    /// The durable log (HTTP and MQTT sources, redrives); checkpointed under [`CONSUMER`].
    Log(Log),
    /// A Kafka consumer group (`sources.kafka`, or `scale_out.normalized_topic` in role
    /// transform); its offsets are committed after each batch.
    Kafka(Arc<KafkaInput>),
}

/// What a pipeline does with a batch's measurements.
#[derive(Clone)]
pub enum PipelineOutput {
    /// Group, transform and persist through the sink (roles all and transform).
    Persist(Sink),
    /// Produce them to the normalized topic (role normalize).
    Produce(Arc<NormalizedProducer>),
}

impl PipelineOutput {
    /// A short name for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            PipelineOutput::Persist(sink) => sink.kind(),
            PipelineOutput::Produce(_) => "normalized topic",
        }
    }
}

/// One record of a batch, and its log offset when it came from the durable log.
struct BatchRecord {
    log_offset: Option<u64>,
    record: Record,
}

/// Everything the pipeline task needs.
pub struct Pipeline {
    /// Where batches come from.
    pub input: PipelineInput,
    /// Where their measurements go.
    pub output: PipelineOutput,
    /// The mappings in force.
    pub mappings: Arc<MappingsHandle>,
    /// Where failures go.
    pub dead_letters: Arc<DeadLetterStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Settings.
    pub settings: PipelineSettings,
    /// Readiness and progress, shared with the admin listener.
    pub status: Arc<Status>,
}

/// What normalizing a batch produced.
#[derive(Default)]
struct Normalized {
    measurements: Vec<Measurement>,
    dead: Vec<NewDeadLetter>,
    normalized: u64,
    unmatched: u64,
}

/// A batch whose CPU work is done: what is left to write, and what travels with it.
struct PreparedBatch<'a> {
    work: PreparedWork<'a>,
    /// Dead letters of normalize and group, stored with those of the write.
    dead: Vec<NewDeadLetter>,
    /// The ingest time (ms since the epoch) of each record, for `ingest_to_persisted`.
    ingest_times: Vec<i64>,
}

/// The write a prepared batch still needs, with the output it goes to.
enum PreparedWork<'a> {
    /// Role normalize: the measurements, to produce to the normalized topic.
    Produce {
        producer: &'a NormalizedProducer,
        measurements: Vec<Measurement>,
    },
    /// Roles all and transform: the groups, and the FHIR templates of the mappings snapshot
    /// that grouped them.
    Persist {
        sink: &'a Sink,
        groups: Vec<ObservationGroup>,
        templates: Arc<FhirTemplates>,
    },
}

impl Pipeline {
    /// Runs until `drain` turns true and the input is done: for the log, every record
    /// appended before that is handled (sources must be stopped before `drain` is set, so the
    /// log's end is final); for Kafka, the batches in hand (at most two: the one being
    /// written and the one prepared behind it) are finished and committed.
    ///
    /// # Errors
    /// The log or the dead-letter store failed in a way that retrying cannot fix (the
    /// service stops; nothing unhandled is checkpointed).
    pub async fn run(self, drain: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        match &self.input {
            PipelineInput::Log(log) => self.run_log(log.clone(), drain).await,
            PipelineInput::Kafka(input) => self.run_kafka(input.clone(), drain).await,
        }
    }

    async fn run_kafka(
        &self,
        input: Arc<KafkaInput>,
        drain: watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        info!(
            input = input.name(),
            output = self.output.kind(),
            "pipeline started on kafka"
        );
        let (sender, receiver) = mpsc::channel(1);
        let (prepared, finished) = tokio::join!(
            self.prepare_kafka(&input, sender, drain.clone()),
            self.finish_kafka(&input, receiver, drain),
        );
        match finished.and(prepared) {
            Ok(()) => {
                info!(input = input.name(), "kafka pipeline stopped");
                Ok(())
            }
            Err(RuntimeError::Interrupted) => {
                info!(
                    input = input.name(),
                    "pipeline stopped during an outage; the batch is not committed and will be read again"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The Kafka preparer: gathers and prepares batches until `drain` turns true (the batch
    /// in hand is still prepared and sent) or the finisher is gone.
    async fn prepare_kafka<'a>(
        &'a self,
        input: &KafkaInput,
        batches: mpsc::Sender<(PreparedBatch<'a>, Offsets)>,
        mut drain: watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        loop {
            if *drain.borrow() {
                return Ok(());
            }
            // Room first, then gather: at most one prepared batch waits while one is written.
            let Ok(permit) = batches.reserve().await else {
                return Ok(());
            };
            let step = async {
                let batch = input
                    .next_batch(
                        self.settings.max_batch_messages,
                        self.settings.flush_interval,
                        &mut drain,
                    )
                    .await;
                if batch.records.is_empty() {
                    return Ok(None);
                }
                let records = batch
                    .records
                    .into_iter()
                    .map(|record| BatchRecord {
                        log_offset: None,
                        record,
                    })
                    .collect();
                let prepared = self.prepare_batch(records).await?;
                Ok::<_, RuntimeError>(Some((prepared, batch.offsets)))
            };
            let prepared = tokio::select! {
                prepared = step => prepared?,
                // The finisher failed: stop at once, nothing more will be written.
                () = batches.closed() => return Ok(()),
            };
            if let Some(prepared) = prepared {
                permit.send(prepared);
            }
        }
    }

    /// The Kafka finisher: writes each prepared batch, makes it durable, then commits its
    /// offsets, in order.
    async fn finish_kafka(
        &self,
        input: &KafkaInput,
        mut batches: mpsc::Receiver<(PreparedBatch<'_>, Offsets)>,
        drain: watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        while let Some((prepared, offsets)) = batches.recv().await {
            self.finish_batch(prepared, &drain).await?;
            if let Some(sink) = self.sink() {
                sink.sync().await?;
            }
            input.commit(&offsets).await;
        }
        Ok(())
    }

    async fn run_log(&self, log: Log, drain: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        let reader = log.reader(CONSUMER)?;
        info!(
            position = reader.position(),
            output = self.output.kind(),
            "pipeline started"
        );
        self.status.set_pipeline_running(true);
        let (sender, receiver) = mpsc::channel(1);
        let (prepared, finished) = tokio::join!(
            self.prepare_log(&log, reader, sender, drain.clone()),
            self.finish_log(&log, receiver, drain),
        );
        self.status.set_pipeline_running(false);
        match finished.and(prepared) {
            Ok(position) => {
                info!(position, "pipeline drained");
                Ok(())
            }
            Err(RuntimeError::Interrupted) => {
                info!("pipeline stopped during an outage; the batch stays in the log");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The log preparer: gathers and prepares batches until `drain` has turned true and the
    /// log's end is reached, or the finisher is gone; returns the reader's position.
    async fn prepare_log<'a>(
        &'a self,
        log: &Log,
        mut reader: LogReader,
        batches: mpsc::Sender<(PreparedBatch<'a>, u64)>,
        mut drain: watch::Receiver<bool>,
    ) -> Result<u64, RuntimeError> {
        loop {
            // Room first, then gather: at most one prepared batch waits while one is written.
            let Ok(permit) = batches.reserve().await else {
                return Ok(reader.position());
            };
            let draining = *drain.borrow();
            let step = async {
                let entries = self.gather(&mut reader, draining, &mut drain).await?;
                let Some(next) = entries.last().map(|e| e.offset + 1) else {
                    return Ok(None);
                };
                let records = entries
                    .into_iter()
                    .map(|e| BatchRecord {
                        log_offset: Some(e.offset),
                        record: e.record,
                    })
                    .collect();
                let prepared = self.prepare_batch(records).await?;
                Ok::<_, RuntimeError>(Some((prepared, next)))
            };
            let prepared = tokio::select! {
                prepared = step => prepared?,
                // The finisher failed: stop at once, nothing more will be written.
                () = batches.closed() => None,
            };
            if batches.is_closed() {
                return Ok(reader.position());
            }
            match prepared {
                Some(prepared) => permit.send(prepared),
                None => {
                    if draining && reader.position() >= log.stats().end_offset {
                        return Ok(reader.position());
                    }
                    // Nothing new: the lag is whatever is not yet committed.
                    let committed = log.committed(CONSUMER).unwrap_or(reader.position());
                    update_lag(&self.metrics, log, committed);
                }
            }
        }
    }

    /// The log finisher: writes each prepared batch; then, while the next batch is written,
    /// makes it durable ([`Sink::sync`]) and commits the log position after it. Commits go
    /// in batch order: a batch's starts once the previous one's is done.
    async fn finish_log(
        &self,
        log: &Log,
        mut batches: mpsc::Receiver<(PreparedBatch<'_>, u64)>,
        drain: watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let mut committing: Option<tokio::task::JoinHandle<Result<(), RuntimeError>>> = None;
        while let Some((prepared, next)) = batches.recv().await {
            let finished = self.finish_batch(prepared, &drain).await;
            if let Some(previous) = committing.take() {
                previous.await.map_err(join_error)??;
            }
            finished?;
            committing = Some(tokio::spawn(self.commit_log(log, next)));
        }
        if let Some(last) = committing {
            last.await.map_err(join_error)??;
        }
        Ok(())
    }

    /// Makes everything written so far durable, then commits the log position `next`.
    fn commit_log(
        &self,
        log: &Log,
        next: u64,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send + 'static {
        let sink = self.sink().cloned();
        let (log, status, metrics) = (log.clone(), self.status.clone(), self.metrics.clone());
        async move {
            if let Some(sink) = sink {
                sink.sync().await?;
            }
            // Two syncs: off the async workers, which also drive the preparer.
            let committing = log.clone();
            tokio::task::spawn_blocking(move || committing.commit(CONSUMER, next))
                .await
                .map_err(join_error)??;
            status.set_checkpoint(next);
            update_lag(&metrics, &log, next);
            Ok(())
        }
    }

    /// The sink, when the pipeline persists.
    fn sink(&self) -> Option<&Sink> {
        match &self.output {
            PipelineOutput::Persist(sink) => Some(sink),
            PipelineOutput::Produce(_) => None,
        }
    }

    /// Reads one batch: waits for a first record (up to the flush interval), then gathers
    /// until the flush interval has passed since it arrived.
    async fn gather(
        &self,
        reader: &mut LogReader,
        draining: bool,
        drain: &mut watch::Receiver<bool>,
    ) -> Result<Vec<Entry>, RuntimeError> {
        let max = self.settings.max_batch_messages;
        let interval = self.settings.flush_interval;
        let first_wait = if draining {
            Duration::from_millis(50)
        } else {
            interval
        };
        let mut entries = tokio::select! {
            read = reader.next_batch(max, first_wait) => read?,
            _ = drain.wait_for(|d| *d), if !draining => return Ok(Vec::new()),
        };
        if entries.is_empty() {
            return Ok(entries);
        }
        let deadline = Instant::now() + interval;
        while entries.len() < max && !draining {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let more = tokio::select! {
                read = reader.next_batch(max - entries.len(), left) => read?,
                _ = drain.wait_for(|d| *d) => break,
            };
            entries.extend(more);
        }
        Ok(entries)
    }

    /// The CPU half of a batch (steps 2 and 4): normalize and, when persisting, group, on the
    /// blocking pool. The mappings snapshot it used travels with the batch.
    async fn prepare_batch(
        &self,
        entries: Vec<BatchRecord>,
    ) -> Result<PreparedBatch<'_>, RuntimeError> {
        let ingest_times: Vec<i64> = entries.iter().map(|e| e.record.timestamp_ms).collect();
        let mappings = self.mappings.current();
        let keep_unmatched = self.settings.keep_unmatched;

        let started = Instant::now();
        let worker_mappings = mappings.clone();
        let normalized = tokio::task::spawn_blocking(move || {
            normalize_batch(entries, &worker_mappings, keep_unmatched)
        })
        .await
        .map_err(join_error)?;
        self.metrics
            .stage("normalize", started.elapsed().as_secs_f64());
        self.metrics
            .messages_normalized
            .inc_by(normalized.normalized);
        self.metrics.messages_unmatched.inc_by(normalized.unmatched);
        self.metrics
            .measurements
            .inc_by(normalized.measurements.len() as u64);
        let mut dead = normalized.dead;

        let work = match &self.output {
            PipelineOutput::Produce(producer) => PreparedWork::Produce {
                producer,
                measurements: normalized.measurements,
            },
            PipelineOutput::Persist(sink) => {
                let started = Instant::now();
                let templates = mappings.fhir.clone();
                let (groups, group_dead) = tokio::task::spawn_blocking(move || {
                    group_measurements(normalized.measurements, &templates)
                })
                .await
                .map_err(join_error)?;
                self.metrics.stage("group", started.elapsed().as_secs_f64());
                self.metrics.groups.inc_by(groups.len() as u64);
                dead.extend(group_dead);
                PreparedWork::Persist {
                    sink,
                    groups,
                    templates: mappings.fhir.clone(),
                }
            }
        };
        Ok(PreparedBatch {
            work,
            dead,
            ingest_times,
        })
    }

    /// The writing half of a batch (steps 3, 5 and 6): produce or persist with the retry
    /// policy, then store the batch's dead letters. When this returns `Ok`, everything derived
    /// from the batch's records is written or dead-lettered, so its checkpoint may be committed.
    async fn finish_batch(
        &self,
        prepared: PreparedBatch<'_>,
        drain: &watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let PreparedBatch {
            work,
            mut dead,
            ingest_times,
        } = prepared;
        match work {
            PreparedWork::Produce {
                producer,
                measurements,
            } => {
                let started = Instant::now();
                self.produce(producer, &measurements, drain).await?;
                self.metrics
                    .stage("produce", started.elapsed().as_secs_f64());
            }
            PreparedWork::Persist {
                sink,
                groups,
                templates,
            } => {
                let started = Instant::now();
                let persist_dead = self.persist_groups(sink, groups, templates, drain).await?;
                self.metrics
                    .stage("persist", started.elapsed().as_secs_f64());
                dead.extend(persist_dead);
            }
        }

        for d in &dead {
            self.metrics.error(&d.stage.to_string(), &d.class);
        }
        if !dead.is_empty() {
            self.store_dead_letters(dead, drain).await?;
        }

        let now_ms = Utc::now().timestamp_millis();
        for t in &ingest_times {
            self.metrics
                .ingest_to_persisted_seconds
                .observe((now_ms - t).max(0) as f64 / 1000.0);
        }
        if let Some(newest) = ingest_times.iter().max() {
            self.metrics.last_handled_ingest_time.set(newest / 1000);
            self.status.set_last_handled(*newest);
        }
        Ok(())
    }

    /// Produces a batch's measurements to the normalized topic, again and again until every
    /// one is acknowledged (duplicates are harmless downstream); a drain during a failure
    /// interrupts (nothing is committed).
    async fn produce(
        &self,
        producer: &NormalizedProducer,
        measurements: &[Measurement],
        drain: &watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let mut backoff = Duration::from_millis(200);
        loop {
            match producer.produce(measurements).await {
                Ok(()) => {
                    self.status.set_destination_error(None);
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = %e, backoff = ?backoff, "normalized topic unavailable; producing the batch again");
                    self.status.set_destination_error(Some(e.to_string()));
                    if *drain.borrow() {
                        return Err(RuntimeError::Interrupted);
                    }
                    let mut drain = drain.clone();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = drain.wait_for(|d| *d) => return Err(RuntimeError::Interrupted),
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Persists with the retry policy of the module docs; returns the dead letters.
    async fn persist_groups(
        &self,
        sink: &Sink,
        groups: Vec<ObservationGroup>,
        templates: Arc<FhirTemplates>,
        drain: &watch::Receiver<bool>,
    ) -> Result<Vec<NewDeadLetter>, RuntimeError> {
        let mut dead = Vec::new();
        // The groups to write and, beside them, the attempts each has failed.
        let mut attempts = vec![0; groups.len()];
        let mut pending = groups;
        let mut backoff = Duration::from_millis(500);
        while !pending.is_empty() {
            let total = pending.len();
            let outcomes = sink.persist(pending, templates.clone()).await;
            let mut retry = Vec::new();
            let mut saved_any = false;
            let mut saved = [0u64; 3];
            for (outcome, attempt) in outcomes.into_iter().zip(std::mem::take(&mut attempts)) {
                match outcome {
                    SinkOutcome::Saved(kind) => {
                        saved_any = true;
                        saved[kind as usize] += 1;
                    }
                    SinkOutcome::Failed(f) if !f.retryable => {
                        saved_any = true; // the destination answered
                        dead.push(group_dead_letter(
                            &f.group,
                            Stage::Persist,
                            &f.class,
                            &f.reason,
                            false,
                        ));
                    }
                    SinkOutcome::Failed(f) => retry.push((f, attempt + 1)),
                }
            }
            for kind in [SavedKind::Created, SavedKind::Updated, SavedKind::Unchanged] {
                if saved[kind as usize] > 0 {
                    self.metrics
                        .observations_saved
                        .get_or_create(&OutcomeLabel {
                            outcome: kind.label().into(),
                        })
                        .inc_by(saved[kind as usize]);
                }
            }
            pending = Vec::new();
            if retry.is_empty() {
                self.metrics.destination_unavailable.set(0);
                self.status.set_destination_error(None);
                break;
            }
            let outage = !saved_any && retry.len() == total && !sink.healthy().await;
            if outage {
                let reason = retry[0].0.reason.clone();
                warn!(groups = retry.len(), error = %reason, backoff = ?backoff, "destination unavailable; waiting before retrying the batch");
                self.metrics.destination_unavailable.set(1);
                self.status.set_destination_error(Some(reason));
                // During an outage attempts are not counted: nothing is dead-lettered.
                for (f, attempt) in retry {
                    pending.push(f.group);
                    attempts.push(attempt - 1);
                }
            } else {
                for (f, attempt) in retry {
                    if attempt >= self.settings.max_attempts {
                        dead.push(group_dead_letter(
                            &f.group,
                            Stage::Persist,
                            &f.class,
                            &f.reason,
                            true,
                        ));
                    } else {
                        pending.push(f.group);
                        attempts.push(attempt);
                    }
                }
                self.metrics.persist_retries.inc_by(pending.len() as u64);
            }
            if pending.is_empty() {
                break;
            }
            if *drain.borrow() && outage {
                return Err(RuntimeError::Interrupted);
            }
            let mut drain = drain.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = drain.wait_for(|d| *d), if outage => return Err(RuntimeError::Interrupted),
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        Ok(dead)
    }

    async fn store_dead_letters(
        &self,
        dead: Vec<NewDeadLetter>,
        drain: &watch::Receiver<bool>,
    ) -> Result<(), RuntimeError> {
        let count = dead.len() as u64;
        let dead = Arc::new(dead);
        let mut backoff = Duration::from_millis(200);
        loop {
            let store = self.dead_letters.clone();
            let entries = dead.clone();
            let result = tokio::task::spawn_blocking(move || store.put(&entries))
                .await
                .map_err(join_error)?;
            match result {
                Ok(_) => {
                    self.metrics.dead_letters_stored.inc_by(count);
                    debug!(count, "dead letters stored");
                    return Ok(());
                }
                Err(e) => {
                    error!(error = %e, "cannot write the dead-letter store; retrying (the batch is not checkpointed)");
                    if *drain.borrow() {
                        return Err(RuntimeError::Interrupted);
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
}

/// Sets the log's lag and size metrics, for a consumer at `position`.
fn update_lag(metrics: &Metrics, log: &Log, position: u64) {
    let stats = log.stats();
    metrics
        .log_lag_records
        .set(stats.end_offset.saturating_sub(position) as i64);
    metrics.log_bytes.set(stats.retained_bytes as i64);
}

/// Event properties as the envelope takes them: every value a JSON string, as IoT Hub and
/// Event Hubs deliver application and system properties.
fn as_json_strings(pairs: &[(String, String)]) -> Vec<(String, serde_json::Value)> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

/// Step 2: every record of the batch through the device mapping.
fn normalize_batch(
    entries: Vec<BatchRecord>,
    mappings: &Mappings,
    keep_unmatched: bool,
) -> Normalized {
    let mut out = Normalized::default();
    let mut envelope = EnvelopeBuilder::new();
    let now = Utc::now();
    for entry in entries {
        let event = DeviceEvent::from_record(&entry.record);
        match event.kind {
            EventKind::Measurements => match parse_measurements(&event.body) {
                Ok(ms) => {
                    out.normalized += 1;
                    out.measurements.extend(ms);
                }
                Err(reason) => out.dead.push(message_dead_letter(
                    &entry,
                    &event,
                    Stage::Normalize,
                    "InvalidDataFormatException",
                    reason,
                    now,
                )),
            },
            EventKind::Message => {
                let properties = as_json_strings(&event.properties);
                let system = as_json_strings(&event.system_properties);
                let before = out.measurements.len();
                let result = envelope
                    .build(&event.body, &properties, &system)
                    .and_then(|token| {
                        mappings
                            .device
                            .normalize_into(&token, &mut out.measurements)
                    });
                match result {
                    Ok(()) if out.measurements.len() > before => out.normalized += 1,
                    Ok(()) => {
                        out.unmatched += 1;
                        if keep_unmatched {
                            out.dead.push(message_dead_letter(
                                &entry,
                                &event,
                                Stage::Normalize,
                                UNMATCHED_CLASS,
                                "no device template matched this message: check the templates' typeMatchExpression against it with `iomt test-mapping`".into(),
                                now,
                            ));
                        }
                    }
                    Err(e) => out.dead.push(message_dead_letter(
                        &entry,
                        &event,
                        Stage::Normalize,
                        e.class().name(),
                        e.to_string(),
                        now,
                    )),
                }
            }
        }
    }
    out
}

fn parse_measurements(body: &[u8]) -> Result<Vec<Measurement>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "measurements are not utf-8".to_owned())?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Measurement::from_wire_json(l).map_err(|e| e.to_string()))
        .collect()
}

/// Step 3: group as SPEC §6, one dead letter per group that cannot be grouped.
fn group_measurements(
    measurements: Vec<Measurement>,
    templates: &FhirTemplates,
) -> (Vec<ObservationGroup>, Vec<NewDeadLetter>) {
    let mut groups = Vec::new();
    let mut dead = Vec::new();
    for group in group_batch(measurements) {
        let Some(template) = templates.get(group.type_name()) else {
            let reason = format!(
                "no fhir template has typeName {:?}: add one to the fhir mapping, or fix the device template's typeName",
                group.type_name()
            );
            dead.push(measurements_dead_letter(
                &group.measurements,
                Stage::Group,
                "TemplateNotFoundException",
                &reason,
                false,
            ));
            continue;
        };
        let spec = template.window_spec();
        let keep =
            (spec.interval == PeriodInterval::CorrelationId).then(|| group.measurements.clone());
        match group.observation_groups(&spec) {
            Ok(gs) => groups.extend(gs),
            Err(e) => dead.push(measurements_dead_letter(
                keep.as_deref().unwrap_or_default(),
                Stage::Group,
                e.class().name(),
                &e.to_string(),
                false,
            )),
        }
    }
    (groups, dead)
}

fn message_dead_letter(
    entry: &BatchRecord,
    event: &DeviceEvent,
    stage: Stage,
    class: &str,
    reason: String,
    now: DateTime<Utc>,
) -> NewDeadLetter {
    NewDeadLetter {
        class: class.to_owned(),
        stage,
        reason,
        occurred_at: now,
        device_id: None,
        retryable: false,
        source: event.source.clone(),
        log_offset: entry.log_offset,
        headers: entry
            .record
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        payload: event.body.to_vec(),
    }
}

fn measurements_dead_letter(
    measurements: &[Measurement],
    stage: Stage,
    class: &str,
    reason: &str,
    retryable: bool,
) -> NewDeadLetter {
    let mut payload = String::new();
    for m in measurements {
        payload.push_str(&m.to_wire_json());
        payload.push('\n');
    }
    NewDeadLetter {
        class: class.to_owned(),
        stage,
        reason: reason.to_owned(),
        occurred_at: Utc::now(),
        device_id: measurements.first().map(|m| m.device_id.clone()),
        retryable,
        source: "pipeline".into(),
        log_offset: None,
        headers: vec![("kind".into(), "measurements".into())],
        payload: payload.into_bytes(),
    }
}

fn group_dead_letter(
    group: &ObservationGroup,
    stage: Stage,
    class: &str,
    reason: &str,
    retryable: bool,
) -> NewDeadLetter {
    measurements_dead_letter(&measurements_of(group), stage, class, reason, retryable)
}

/// The measurements a group was made of (one per instant, all its properties), so a
/// dead-lettered group can be redriven through grouping again.
pub(crate) fn measurements_of(group: &ObservationGroup) -> Vec<Measurement> {
    let mut by_time: std::collections::BTreeMap<DateTime<Utc>, Measurement> =
        std::collections::BTreeMap::new();
    for property in &group.properties {
        for tv in &property.values {
            by_time
                .entry(tv.time)
                .or_insert_with(|| Measurement {
                    type_name: group.type_name.clone(),
                    occurrence_time_utc: tv.time,
                    ingestion_time_utc: None,
                    device_id: group.device_id.clone(),
                    patient_id: group.patient_id.clone(),
                    encounter_id: group.encounter_id.clone(),
                    correlation_id: group.correlation_id.clone(),
                    properties: Vec::new(),
                })
                .properties
                .push(iomt_model::MeasurementProperty {
                    name: property.name.clone(),
                    value: tv.value.clone(),
                });
        }
    }
    by_time.into_values().collect()
}
