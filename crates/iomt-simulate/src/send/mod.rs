//! Sending: a fleet's messages paced to a rate, batched into requests, delivered to a target.
//!
//! One file per target: [`HttpTarget`] (the connector's ingest endpoint), `MqttTarget`
//! (feature `mqtt`: QoS 1 to a broker, one topic per device) and `KafkaTarget` (feature
//! `kafka`: keyed, idempotent produce to a Kafka-protocol broker or Azure Event Hubs).
//! [`AnyTarget`] is the one the command line picks from a URL. [`run`] sends a [`Fleet`]'s
//! messages; [`replay`] sends given messages (a file) through the same pacer.
//!
//! [`run`] is the only place that reads the clock. It is a token bucket: every tick (at most
//! 250 ms, shorter at high rates so a tick fills about one request) it adds `rate × elapsed`
//! tokens, capped at two ticks' worth, and generates one message per whole token, timestamped
//! evenly across the elapsed interval. The messages are cut into requests of at most
//! `batch` messages that the target says may travel together ([`Target::batchable`]), and each
//! request is delivered by its own task, at most `concurrency` at once.
//!
//! # What must hold
//! * **Backpressure is honoured.** A [`Delivery::Throttled`] answer closes a gate shared by all
//!   requests until its `Retry-After` has passed: no request is sent and no token accrues
//!   meanwhile, so the run slows down instead of bursting afterwards. The throttled request is
//!   retried after the gate opens (up to [`SendOptions::max_throttle_retries`] times).
//! * **Every message is counted once**: `sent = accepted + Σ rejected + failed` when the target
//!   accepts whole requests (it reports how many it accepted; the counts follow its word), and
//!   always for targets that answer per message ([`Delivery::Each`]: MQTT, Kafka).
//! * **Accepted means acknowledged**: a target reports a message accepted only once the
//!   receiver has acknowledged it (HTTP 2xx, MQTT PUBACK, Kafka delivery report), never when it
//!   was merely written to a socket.
//! * **A refused key or an unreachable target ends the run** early ([`Ending`]): both would
//!   fail every later request too. A transport failure after the target has answered once is
//!   counted and the run goes on.
//! * When the run ends (count, duration, shutdown), no new request starts; requests in flight
//!   finish and are counted. After a shutdown or a refusal, throttled requests are not retried.

mod http;
#[cfg(feature = "kafka")]
mod kafka;
#[cfg(feature = "mqtt")]
mod mqtt;

pub use http::{HttpTarget, MESSAGES_PATH};
#[cfg(feature = "kafka")]
pub use kafka::{KafkaSasl, KafkaTarget, KafkaTargetConfig};
#[cfg(feature = "mqtt")]
pub use mqtt::{MqttTarget, MqttTargetConfig};

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::error::{ConfigError, ConfigProblem};
use crate::fleet::Fleet;
use crate::message::SimMessage;

/// Where simulated messages go: the HTTP ingest endpoint, an MQTT broker, a Kafka topic.
///
/// A target delivers one request (a batch of messages) and says what became of it; pacing,
/// batching, concurrency, retries and counting belong to [`run`], the same for every target.
pub trait Target: Send + Sync + 'static {
    /// Whether `next` may travel in the same request as `first` (for HTTP: the same
    /// properties, since they travel as headers of the whole request).
    fn batchable(&self, first: &SimMessage, next: &SimMessage) -> bool;

    /// Delivers one request.
    fn deliver(&self, batch: &[SimMessage]) -> impl Future<Output = Delivery> + Send;

    /// What a rejection status means for this target (an MQTT reason code, a Kafka error
    /// code), for the summary; `None` for HTTP, whose statuses speak for themselves.
    fn describe_status(&self, _status: u16) -> Option<String> {
        None
    }
}

/// One of the targets, chosen at run time (the command line's `--target URL`).
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyTarget {
    /// The connector's HTTP ingest endpoint.
    Http(HttpTarget),
    /// An MQTT broker.
    #[cfg(feature = "mqtt")]
    Mqtt(MqttTarget),
    /// A Kafka topic.
    #[cfg(feature = "kafka")]
    Kafka(KafkaTarget),
}

impl AnyTarget {
    /// Where messages go, without credentials: for the start line of a run.
    pub fn describe(&self) -> String {
        match self {
            AnyTarget::Http(t) => t.url().to_owned(),
            #[cfg(feature = "mqtt")]
            AnyTarget::Mqtt(t) => t.describe(),
            #[cfg(feature = "kafka")]
            AnyTarget::Kafka(t) => t.describe(),
        }
    }
}

impl Target for AnyTarget {
    fn batchable(&self, first: &SimMessage, next: &SimMessage) -> bool {
        match self {
            AnyTarget::Http(t) => t.batchable(first, next),
            #[cfg(feature = "mqtt")]
            AnyTarget::Mqtt(t) => t.batchable(first, next),
            #[cfg(feature = "kafka")]
            AnyTarget::Kafka(t) => t.batchable(first, next),
        }
    }

    async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
        match self {
            AnyTarget::Http(t) => t.deliver(batch).await,
            #[cfg(feature = "mqtt")]
            AnyTarget::Mqtt(t) => t.deliver(batch).await,
            #[cfg(feature = "kafka")]
            AnyTarget::Kafka(t) => t.deliver(batch).await,
        }
    }

    fn describe_status(&self, status: u16) -> Option<String> {
        match self {
            AnyTarget::Http(t) => t.describe_status(status),
            #[cfg(feature = "mqtt")]
            AnyTarget::Mqtt(t) => t.describe_status(status),
            #[cfg(feature = "kafka")]
            AnyTarget::Kafka(t) => t.describe_status(status),
        }
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The target took the messages durably.
    Accepted {
        /// How many it reports it accepted.
        messages: u64,
    },
    /// The target is overloaded: try again after `retry_after` (HTTP 429, or 503 with
    /// `Retry-After`).
    Throttled {
        /// The status, counted as the rejection if retries run out.
        status: u16,
        /// How long to wait.
        retry_after: Duration,
    },
    /// The target refused the credentials (HTTP 401, 403): the run ends.
    Refused {
        /// The status.
        status: u16,
    },
    /// The target rejected the request (any other status).
    Rejected {
        /// The status.
        status: u16,
    },
    /// No answer: connection refused, reset, timed out.
    Failed {
        /// What happened (no payload, no credentials).
        reason: String,
    },
    /// Each message was answered on its own (MQTT, Kafka), and they fared differently.
    Each {
        /// Messages acknowledged.
        accepted: u64,
        /// Messages refused, by the target's status ([`Target::describe_status`]).
        rejected: BTreeMap<u16, u64>,
        /// Messages whose fate is unknown (the connection was lost, the delivery timed out).
        failed: u64,
        /// Why the first of the failed ones failed.
        failure: Option<String>,
    },
}

/// A message rate: finite and above zero.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Rate(f64);

impl Rate {
    /// `per_second` messages per second.
    ///
    /// # Errors
    /// [`ConfigProblem::Rate`] unless it is finite and above zero.
    pub fn per_second(per_second: f64) -> Result<Rate, ConfigError> {
        if per_second.is_finite() && per_second > 0.0 {
            Ok(Rate(per_second))
        } else {
            Err(ConfigError {
                problems: vec![ConfigProblem::Rate { rate: per_second }],
            })
        }
    }

    /// Messages per second.
    pub fn get(self) -> f64 {
        self.0
    }
}

/// When a run stops by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Limit {
    /// After this many messages.
    Count(u64),
    /// After this long.
    Duration(Duration),
    /// Only on shutdown (or when the target refuses or cannot be reached).
    #[default]
    Unbounded,
}

/// How to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendOptions {
    /// Messages per second, over the whole fleet.
    pub rate: Rate,
    /// Most messages per request.
    pub batch: NonZeroUsize,
    /// Most requests in flight.
    pub concurrency: NonZeroUsize,
    /// When to stop.
    pub limit: Limit,
    /// How often one request is retried after throttling before its messages count as
    /// rejected.
    pub max_throttle_retries: u32,
}

impl SendOptions {
    /// `rate` with batches of 100, 4 requests in flight, no limit, 10 throttle retries.
    pub fn new(rate: Rate) -> SendOptions {
        SendOptions {
            rate,
            batch: NonZeroUsize::new(100).expect("not zero"),
            concurrency: NonZeroUsize::new(4).expect("not zero"),
            limit: Limit::Unbounded,
            max_throttle_retries: 10,
        }
    }

    /// The pacer's tick: about one full request per tick, between 10 and 250 ms.
    fn tick(&self) -> Duration {
        let per_request = self.batch.get() as f64 / self.rate.get();
        Duration::from_secs_f64(per_request.clamp(0.010, 0.250))
    }
}

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Ending {
    /// The count or duration was reached.
    #[default]
    Completed,
    /// The shutdown future completed (Ctrl-C).
    Interrupted,
    /// The target refused the credentials.
    Refused {
        /// The HTTP status (401, 403).
        status: u16,
    },
    /// The target never answered.
    Unreachable {
        /// The first failure.
        reason: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    /// Messages handed to the target (each once, however often retried).
    pub sent: u64,
    /// Of those, bad on purpose.
    pub bad_sent: u64,
    /// Requests made, retries included.
    pub requests: u64,
    /// Messages the target reported accepted.
    pub accepted: u64,
    /// Messages rejected, by HTTP status (throttled ones that ran out of retries included), MQTT
    /// reason code or Kafka error code.
    pub rejected: BTreeMap<u16, u64>,
    /// What the statuses in `rejected` mean, where the target says ([`Target::describe_status`]).
    pub status_names: BTreeMap<u16, String>,
    /// Messages whose request got no answer.
    pub failed: u64,
    /// Throttling answers received (each delayed the run by its `Retry-After`).
    pub throttled: u64,
    /// From the start until the last request finished.
    pub duration: Duration,
    /// Why the run ended.
    pub ending: Ending,
}

impl Summary {
    /// Messages sent per second over the run.
    pub fn achieved_rate(&self) -> f64 {
        let seconds = self.duration.as_secs_f64();
        if seconds > 0.0 {
            self.sent as f64 / seconds
        } else {
            0.0
        }
    }

    /// Messages rejected, all statuses.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "sent      {} messages ({} bad on purpose)",
            self.sent, self.bad_sent
        )?;
        writeln!(f, "requests  {}", self.requests)?;
        writeln!(f, "accepted  {}", self.accepted)?;
        if self.rejected.is_empty() {
            writeln!(f, "rejected  0")?;
        } else {
            let by_status: Vec<String> = self
                .rejected
                .iter()
                .map(|(status, n)| match self.status_names.get(status) {
                    Some(name) => format!("{n} with {name}"),
                    None => format!("{n} with {status}"),
                })
                .collect();
            writeln!(
                f,
                "rejected  {} ({})",
                self.rejected_total(),
                by_status.join(", ")
            )?;
        }
        writeln!(f, "failed    {} (no answer)", self.failed)?;
        writeln!(f, "throttled {} times", self.throttled)?;
        write!(
            f,
            "duration  {:.1} s, {:.1} messages/s",
            self.duration.as_secs_f64(),
            self.achieved_rate()
        )?;
        match &self.ending {
            Ending::Completed => Ok(()),
            Ending::Interrupted => write!(f, "\nstopped   interrupted"),
            Ending::Refused { status } => match self.status_names.get(status) {
                Some(name) => write!(
                    f,
                    "\nstopped   the target refused the credentials ({name}): check the user name and password (or connection string) and the access rules"
                ),
                None => write!(
                    f,
                    "\nstopped   the target refused the API key ({status}): check --api-key-env or --api-key-file"
                ),
            },
            Ending::Unreachable { reason } => write!(
                f,
                "\nstopped   the target did not answer ({reason}): is the connector running at that address?"
            ),
        }
    }
}

/// State shared by the pacer and the request tasks.
#[derive(Default)]
struct Shared {
    summary: Mutex<Summary>,
    /// No request is sent before this instant (throttling).
    gate: Mutex<Option<Instant>>,
    /// Set once: why the run must end early.
    stop: Mutex<Option<Ending>>,
    stop_notify: Notify,
    /// Whether the target has answered at all.
    answered: AtomicBool,
    /// Whether throttled requests should give up instead of retrying.
    winding_down: AtomicBool,
}

impl Shared {
    fn summary(&self) -> MutexGuard<'_, Summary> {
        self.summary.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn paused_until(&self) -> Option<Instant> {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pause(&self, duration: Duration) {
        let until = Instant::now() + duration;
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        if gate.is_none_or(|g| g < until) {
            *gate = Some(until);
        }
    }

    async fn wait_for_gate(&self) {
        while let Some(until) = self.paused_until() {
            if until <= Instant::now() {
                break;
            }
            tokio::time::sleep_until(until).await;
        }
    }

    fn stop(&self, ending: Ending) {
        let mut stop = self.stop.lock().unwrap_or_else(|e| e.into_inner());
        if stop.is_none() {
            *stop = Some(ending);
            self.winding_down.store(true, Ordering::Relaxed);
            self.stop_notify.notify_one();
        }
    }

    fn stop_reason(&self) -> Option<Ending> {
        self.stop.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sends `fleet`'s messages to `target` as `options` say, until the limit, `shutdown`, or an
/// early end (see the module docs), and reports what happened.
pub async fn run<T: Target>(
    fleet: &mut Fleet,
    target: Arc<T>,
    options: SendOptions,
    shutdown: impl Future<Output = ()>,
) -> Summary {
    pace(
        |at| Some(fleet.next_message(at)),
        u64::MAX,
        target,
        options,
        shutdown,
    )
    .await
}

/// Sends `messages` to `target` as they come, paced and batched as `options` say, until they
/// run out (the run then ends [`Ending::Completed`]), the limit, `shutdown` or an early end.
///
/// `messages` is pulled on the pacer's task: an iterator that blocks (reading standard input)
/// delays the pacer, which then sends what it has; it does not block other tasks on a
/// multi-threaded runtime. At most four rounds of requests (`4 × batch × concurrency`) are
/// pulled per tick, so a fast rate over a large file streams it instead of reading it whole.
pub async fn replay<T: Target>(
    messages: impl Iterator<Item = SimMessage>,
    target: Arc<T>,
    options: SendOptions,
    shutdown: impl Future<Output = ()>,
) -> Summary {
    let mut messages = messages;
    let per_tick = 4 * options.batch.get() as u64 * options.concurrency.get() as u64;
    pace(|_| messages.next(), per_tick, target, options, shutdown).await
}

/// The pacer behind [`run`] and [`replay`]: `next(at)` gives the message to send at `at`, or
/// `None` when there are no more; at most `per_tick` are taken per tick (the rest of the
/// tokens stay, up to the burst cap).
async fn pace<T: Target>(
    mut next: impl FnMut(chrono::DateTime<Utc>) -> Option<SimMessage>,
    per_tick: u64,
    target: Arc<T>,
    options: SendOptions,
    shutdown: impl Future<Output = ()>,
) -> Summary {
    let shared = Arc::new(Shared::default());
    let permits = Arc::new(Semaphore::new(options.concurrency.get()));
    let mut tasks = JoinSet::new();
    let rate = options.rate.get();
    let tick = options.tick();
    let burst = (rate * tick.as_secs_f64() * 2.0).max(1.0);

    let started = Instant::now();
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut tokens = 0.0_f64;
    let mut last = started;
    let mut produced = 0_u64;
    let mut messages = Vec::new();
    tokio::pin!(shutdown);

    let ending = 'pacing: loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Ending::Interrupted,
            () = shared.stop_notify.notified() => {}
            _ = ticker.tick() => {}
        }
        if let Some(ending) = shared.stop_reason() {
            break ending;
        }
        let mut now = Instant::now();
        let mut last_tick = false;
        if let Limit::Duration(limit) = options.limit
            && now >= started + limit
        {
            // The interval up to the end still gets its messages.
            now = started + limit;
            last_tick = true;
        }
        if shared.paused_until().is_some_and(|until| until > now) {
            if last_tick {
                break Ending::Completed;
            }
            last = now;
            continue;
        }
        let elapsed = now - last;
        last = now;
        tokens = (tokens + rate * elapsed.as_secs_f64()).min(burst);
        let mut n = (tokens as u64).min(per_tick);
        if let Limit::Count(count) = options.limit {
            n = n.min(count - produced);
        }
        tokens -= n as f64;

        // Spread the messages over the interval they stand for, so one device's readings
        // never share an instant even when it sends several per tick.
        let wall = Utc::now();
        let span_ms = elapsed.as_secs_f64() * 1000.0;
        messages.clear();
        let mut exhausted = false;
        for k in 0..n {
            let back = span_ms * (n - 1 - k) as f64 / n as f64;
            let at = wall - TimeDelta::microseconds((back * 1000.0) as i64);
            match next(at) {
                Some(message) => messages.push(message),
                None => {
                    exhausted = true;
                    break;
                }
            }
        }
        produced += messages.len() as u64;

        for batch in batches(&*target, &mut messages, options.batch.get()) {
            let permit = tokio::select! {
                biased;
                () = &mut shutdown => break 'pacing Ending::Interrupted,
                permit = Arc::clone(&permits).acquire_owned() => {
                    permit.expect("the semaphore is never closed")
                }
            };
            if let Some(ending) = shared.stop_reason() {
                break 'pacing ending;
            }
            {
                let mut summary = shared.summary();
                summary.sent += batch.len() as u64;
                summary.bad_sent += batch.iter().filter(|m| m.is_bad()).count() as u64;
            }
            tasks.spawn(deliver(
                Arc::clone(&target),
                batch,
                Arc::clone(&shared),
                options.max_throttle_retries,
                permit,
            ));
        }
        let count_reached = matches!(options.limit, Limit::Count(count) if produced >= count);
        if last_tick || count_reached || exhausted {
            break Ending::Completed;
        }
    };

    if ending != Ending::Completed {
        shared.winding_down.store(true, Ordering::Relaxed);
    }
    while tasks.join_next().await.is_some() {}

    let mut summary = std::mem::take(&mut *shared.summary());
    summary.status_names = summary
        .rejected
        .keys()
        .filter_map(|&status| Some((status, target.describe_status(status)?)))
        .collect();
    summary.duration = started.elapsed();
    summary.ending = match ending {
        Ending::Completed | Ending::Interrupted => shared.stop_reason().unwrap_or(ending),
        early => early,
    };
    summary
}

/// Cuts `messages` (drained) into requests: runs the target lets travel together, at most
/// `max` each.
fn batches<T: Target>(
    target: &T,
    messages: &mut Vec<SimMessage>,
    max: usize,
) -> Vec<Vec<SimMessage>> {
    let mut out: Vec<Vec<SimMessage>> = Vec::new();
    for message in messages.drain(..) {
        match out.last_mut() {
            Some(current) if current.len() < max && target.batchable(&current[0], &message) => {
                current.push(message);
            }
            _ => out.push(vec![message]),
        }
    }
    out
}

/// Delivers one request, retrying after throttling, and counts the outcome.
async fn deliver<T: Target>(
    target: Arc<T>,
    batch: Vec<SimMessage>,
    shared: Arc<Shared>,
    max_throttle_retries: u32,
    _permit: OwnedSemaphorePermit,
) {
    let len = batch.len() as u64;
    let mut retries = 0;
    loop {
        shared.wait_for_gate().await;
        shared.summary().requests += 1;
        let delivery = target.deliver(&batch).await;
        if !matches!(delivery, Delivery::Failed { .. } | Delivery::Each { .. }) {
            shared.answered.store(true, Ordering::Relaxed);
        }
        match delivery {
            Delivery::Accepted { messages } => shared.summary().accepted += messages,
            Delivery::Throttled {
                status,
                retry_after,
            } => {
                shared.summary().throttled += 1;
                if retries < max_throttle_retries && !shared.winding_down.load(Ordering::Relaxed) {
                    shared.pause(retry_after);
                    retries += 1;
                    continue;
                }
                *shared.summary().rejected.entry(status).or_default() += len;
            }
            Delivery::Refused { status } => {
                *shared.summary().rejected.entry(status).or_default() += len;
                shared.stop(Ending::Refused { status });
            }
            Delivery::Rejected { status } => {
                *shared.summary().rejected.entry(status).or_default() += len;
            }
            Delivery::Failed { reason } => {
                shared.summary().failed += len;
                if !shared.answered.load(Ordering::Relaxed) {
                    shared.stop(Ending::Unreachable { reason });
                }
            }
            Delivery::Each {
                accepted,
                rejected,
                failed,
                failure,
            } => {
                let answered = accepted > 0 || !rejected.is_empty();
                {
                    let mut summary = shared.summary();
                    summary.accepted += accepted;
                    for (status, n) in rejected {
                        *summary.rejected.entry(status).or_default() += n;
                    }
                    summary.failed += failed;
                }
                if answered {
                    shared.answered.store(true, Ordering::Relaxed);
                } else if failed > 0 && !shared.answered.load(Ordering::Relaxed) {
                    shared.stop(Ending::Unreachable {
                        reason: failure.unwrap_or_else(|| "no answer".to_owned()),
                    });
                }
            }
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FleetConfig, Shape};

    struct EveryOther;

    impl Target for EveryOther {
        fn batchable(&self, first: &SimMessage, next: &SimMessage) -> bool {
            first.properties == next.properties
        }

        async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
            Delivery::Accepted {
                messages: batch.len() as u64,
            }
        }
    }

    #[test]
    fn batches_cut_at_the_size_and_where_properties_change() {
        let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
        let now = Utc::now();
        let mut messages: Vec<SimMessage> = (0..7).map(|_| fleet.next_message(now)).collect();
        messages[5].properties.push(("x".into(), "1".into()));
        let sizes: Vec<usize> = batches(&EveryOther, &mut messages, 3)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [3, 2, 1, 1]);
        assert!(messages.is_empty());
    }

    #[test]
    fn rate_must_be_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Rate::per_second(bad).is_err(), "{bad}");
        }
        assert_eq!(Rate::per_second(0.5).unwrap().get(), 0.5);
    }

    #[test]
    fn the_tick_fills_about_one_request() {
        let mut options = SendOptions::new(Rate::per_second(1000.0).unwrap());
        assert_eq!(options.tick(), Duration::from_millis(100));
        options.rate = Rate::per_second(50.0).unwrap();
        assert_eq!(options.tick(), Duration::from_millis(250));
        options.rate = Rate::per_second(1e6).unwrap();
        assert_eq!(options.tick(), Duration::from_millis(10));
    }

    // Paused time: the pacer's schedule is what is under test, not the machine's speed.
    #[tokio::test(start_paused = true)]
    async fn paces_a_count_at_the_rate() {
        let mut fleet = Fleet::new(FleetConfig {
            shape: Shape::IotCentral,
            ..FleetConfig::default()
        })
        .unwrap();
        let mut options = SendOptions::new(Rate::per_second(100.0).unwrap());
        options.limit = Limit::Count(300);
        let summary = run(
            &mut fleet,
            Arc::new(EveryOther),
            options,
            std::future::pending(),
        )
        .await;
        assert_eq!(summary.sent, 300);
        assert_eq!(summary.accepted, 300);
        assert_eq!(summary.ending, Ending::Completed);
        let seconds = summary.duration.as_secs_f64();
        assert!((2.9..=3.1).contains(&seconds), "took {seconds} s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_duration_gets_rate_times_duration_messages() {
        let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
        let mut options = SendOptions::new(Rate::per_second(100.0).unwrap());
        options.limit = Limit::Duration(Duration::from_secs(2));
        let summary = run(
            &mut fleet,
            Arc::new(EveryOther),
            options,
            std::future::pending(),
        )
        .await;
        assert_eq!(summary.sent, 200);
        assert_eq!(summary.ending, Ending::Completed);
    }

    /// Throttles its second request for five seconds, then accepts everything; remembers when
    /// each request came.
    struct ThrottlesOnce {
        calls: Mutex<Vec<Instant>>,
    }

    impl Target for ThrottlesOnce {
        fn batchable(&self, _: &SimMessage, _: &SimMessage) -> bool {
            true
        }

        async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
            let call = {
                let mut calls = self.calls.lock().unwrap();
                calls.push(Instant::now());
                calls.len()
            };
            if call == 2 {
                Delivery::Throttled {
                    status: 429,
                    retry_after: Duration::from_secs(5),
                }
            } else {
                Delivery::Accepted {
                    messages: batch.len() as u64,
                }
            }
        }
    }

    // Paused time: the 5 s pause is asserted exactly, and the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn throttling_stops_sending_and_accruing_until_retry_after() {
        let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
        let mut options = SendOptions::new(Rate::per_second(40.0).unwrap());
        options.batch = NonZeroUsize::new(10).unwrap();
        options.limit = Limit::Count(60);
        let target = Arc::new(ThrottlesOnce {
            calls: Mutex::new(Vec::new()),
        });
        let summary = run(
            &mut fleet,
            Arc::clone(&target),
            options,
            std::future::pending(),
        )
        .await;
        assert_eq!(summary.sent, 60);
        assert_eq!(summary.accepted, 60);
        assert_eq!(summary.throttled, 1);
        assert_eq!(summary.requests, 7);
        let calls = target.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 7);
        let throttled_at = calls[1];
        assert!(
            calls[2..]
                .iter()
                .all(|&c| c >= throttled_at + Duration::from_secs(5)),
            "a request went out during the pause"
        );
        // No catching up after the pause: the remaining 40 messages take 1 s at 40/s, so the
        // run ends about 0.5 + 5 + 1 s after it started, not 1.5 s.
        let seconds = summary.duration.as_secs_f64();
        assert!((6.0..=7.0).contains(&seconds), "took {seconds} s");
    }

    // Paused time: the end of the input, not a limit, ends the run, at the rate.
    #[tokio::test(start_paused = true)]
    async fn replay_sends_every_message_and_ends_when_they_run_out() {
        let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
        let now = Utc::now();
        let messages: Vec<SimMessage> = (0..250).map(|_| fleet.next_message(now)).collect();
        let options = SendOptions::new(Rate::per_second(100.0).unwrap());
        let summary = replay(
            messages.into_iter(),
            Arc::new(EveryOther),
            options,
            std::future::pending(),
        )
        .await;
        assert_eq!(summary.sent, 250);
        assert_eq!(summary.accepted, 250);
        assert_eq!(summary.ending, Ending::Completed);
        // 2.5 s for 250 at 100/s; the end of the input is found one tick (250 ms) later.
        let seconds = summary.duration.as_secs_f64();
        assert!((2.4..=2.8).contains(&seconds), "took {seconds} s");
    }

    /// Acknowledges all but the first message of each request: the first is rejected with
    /// status 135, or fails when `fail` is set.
    struct EachButFirst {
        fail: bool,
    }

    impl Target for EachButFirst {
        fn batchable(&self, _: &SimMessage, _: &SimMessage) -> bool {
            true
        }

        async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
            let rest = batch.len() as u64 - 1;
            Delivery::Each {
                accepted: rest,
                rejected: if self.fail {
                    BTreeMap::new()
                } else {
                    BTreeMap::from([(135, 1)])
                },
                failed: u64::from(self.fail),
                failure: self.fail.then(|| "lost".to_owned()),
            }
        }

        fn describe_status(&self, status: u16) -> Option<String> {
            Some(format!("reason {status}"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn per_message_answers_are_counted_each() {
        for fail in [false, true] {
            let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
            let mut options = SendOptions::new(Rate::per_second(100.0).unwrap());
            options.batch = NonZeroUsize::new(10).unwrap();
            options.limit = Limit::Count(100);
            let summary = run(
                &mut fleet,
                Arc::new(EachButFirst { fail }),
                options,
                std::future::pending(),
            )
            .await;
            assert_eq!(summary.sent, 100);
            assert_eq!(
                summary.accepted + summary.rejected_total() + summary.failed,
                100,
                "each message counted once"
            );
            assert_eq!(summary.accepted, 90);
            assert_eq!(summary.ending, Ending::Completed);
            if fail {
                assert_eq!(summary.failed, 10);
            } else {
                assert_eq!(summary.rejected.get(&135), Some(&10));
                assert!(
                    summary.to_string().contains("10 with reason 135"),
                    "{summary}"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_the_run() {
        let mut fleet = Fleet::new(FleetConfig::default()).unwrap();
        let options = SendOptions::new(Rate::per_second(100.0).unwrap());
        let summary = run(
            &mut fleet,
            Arc::new(EveryOther),
            options,
            tokio::time::sleep(Duration::from_secs(1)),
        )
        .await;
        assert_eq!(summary.ending, Ending::Interrupted);
        assert!((75..=100).contains(&summary.sent), "{}", summary.sent);
    }
}
