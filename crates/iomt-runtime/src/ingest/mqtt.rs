//! MQTT ingest: subscribe to topic filters on a broker and append what arrives to the durable
//! log, speaking MQTT 5 through `rumqttc`.
//!
//! # The contract
//! * **At least once with QoS 1.** Acknowledgements are manual: a PUBLISH is acknowledged only
//!   after the log has made its record durable. A crash or a stop before that leaves it
//!   unacknowledged, and the broker sends it again in the next session. A message can therefore
//!   arrive twice (the pipeline's Observations are idempotent per group), but never be lost.
//! * **The broker keeps messages while the connector is down.** With QoS 1 the session is
//!   persistent: `clean_start` off and a session expiry interval (`session_expiry`, default one
//!   week), so QoS 1 messages published while the connector is stopped are delivered after it
//!   restarts, up to the broker's own queue limit (mosquitto's `max_queued_messages`, default
//!   1000). QoS 0 is at most once: a clean session, and messages are not kept.
//! * **Backpressure by not acknowledging.** At most `max_inflight` QoS 1 messages are
//!   unacknowledged at once (MQTT 5 *receive maximum*: the broker sends no more until some are
//!   acknowledged). While the log is over `log.max_size`, the source stops reading and
//!   acknowledging until it drains, so the broker holds the rest.
//! * **Reconnect with exponential backoff, then resubscribe.** Every accepted connection
//!   subscribes again (retained messages are only forwarded for new subscriptions). An
//!   acknowledgement is only sent on the connection its PUBLISH came on: after a reconnect the
//!   broker sends the unacknowledged ones again, and those are acknowledged instead.
//! * **Graceful stop:** stop reading, append what was received (unless the log is full),
//!   acknowledge it, DISCONNECT. What is not acknowledged is sent again next session.
//! * **Brokers may send more than the receive maximum** (mosquitto 2.0.11 was seen to): a
//!   bounded channel between the connection task and the appender then fills, the connection
//!   task stops reading the socket, and TCP pushes back.
//!
//! # What mappings see
//! Each message body is stored as received. `Properties` hold `mqtt-topic` (the topic it was
//! published to) and every MQTT 5 user property; `SystemProperties` hold
//! `iothub-enqueuedtime` (when the connector received it) and, with `device_id_topic_level`,
//! `iothub-connection-device-id` taken from that topic level — so `IotJsonPathContent` mappings
//! written for IoT Hub work unchanged (`devices/{id}/telemetry` with level 1).
//!
//! Logs never carry topics, device ids or payloads at info level or above (topics name devices).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use iomt_fhir_client::SecretSource;
use iomt_log::{Log, Record};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnectReturnCode, Filter, Packet, Publish, RetainForwardRule, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tracing::{debug, error, info, warn};

use crate::event::DeviceEvent;
use crate::metrics::{Metrics, SourceLabel};
use crate::status::Status;

/// The source's name in metrics, readiness and the log's `src` header.
pub const SOURCE: &str = "mqtt";

/// Room in the client's request queue for an acknowledgement of every packet id that can be
/// outstanding (65535), plus subscribe and disconnect requests: queuing an acknowledgement must
/// never fail or wait. A lost acknowledgement would hold one of the broker's in-flight slots for
/// the rest of the connection, and enough of them stall delivery. (The queue grows on demand.)
const REQUEST_QUEUE: usize = u16::MAX as usize + 16;

/// MQTT ingest settings (`sources.mqtt`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// The broker's host name or IP address (with TLS, the name its certificate is for).
    pub host: String,
    /// The broker's port (default 1883, or 8883 with `tls`).
    #[serde(default)]
    pub port: Option<u16>,
    /// The client id. The broker keeps the persistent session under it, so it must be stable
    /// across restarts and unique among the broker's clients.
    pub client_id: String,
    /// Topic filters to subscribe to (`+` and `#` wildcards; `$share/<group>/…` for shared
    /// subscriptions).
    pub topics: Vec<String>,
    /// The subscription QoS: 0 (at most once) or 1 (at least once, the default).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// The user name, if the broker requires one.
    #[serde(default)]
    pub username: Option<String>,
    /// The password (from an environment variable or a file; inline only for local runs).
    #[serde(default)]
    pub password: Option<SecretSource>,
    /// TLS; without it the connection is plain TCP.
    #[serde(default)]
    pub tls: Option<MqttTlsConfig>,
    /// The topic level (0-based) holding the device id, copied to
    /// `SystemProperties["iothub-connection-device-id"]` (e.g. 1 for `devices/{id}/telemetry`).
    #[serde(default)]
    pub device_id_topic_level: Option<usize>,
    /// How long the broker keeps the session (and queues QoS 1 messages) while the connector is
    /// disconnected (default `7d`; QoS 1 only).
    #[serde(
        default = "default_session_expiry",
        deserialize_with = "crate::config::duration"
    )]
    pub session_expiry: Duration,
    /// The MQTT keep-alive interval (default `30s`, at least `5s`).
    #[serde(
        default = "default_keep_alive",
        deserialize_with = "crate::config::duration"
    )]
    pub keep_alive: Duration,
    /// The first wait before reconnecting (default `500ms`); it doubles up to `reconnect_max`.
    #[serde(
        default = "default_reconnect_initial",
        deserialize_with = "crate::config::duration"
    )]
    pub reconnect_initial: Duration,
    /// The longest wait between reconnection attempts (default `30s`).
    #[serde(
        default = "default_reconnect_max",
        deserialize_with = "crate::config::duration"
    )]
    pub reconnect_max: Duration,
    /// How many QoS 1 messages may be unacknowledged at once (MQTT 5 receive maximum,
    /// default 256); also the largest append batch.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u16,
    /// How long the first message of a batch waits for more before the batch is appended
    /// (default `5ms`).
    #[serde(
        default = "default_batch_wait",
        deserialize_with = "crate::config::duration"
    )]
    pub batch_wait: Duration,
    /// The largest message accepted (default `256KiB`); the broker drops larger ones for us.
    #[serde(
        default = "default_max_message",
        deserialize_with = "crate::config::byte_size"
    )]
    pub max_message_size: u64,
}

/// TLS to the broker: the CA to trust and, for mutual TLS, a client certificate and key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttTlsConfig {
    /// PEM CA certificates that may sign the broker's certificate (for a public CA, the system
    /// bundle, e.g. `/etc/ssl/certs/ca-certificates.crt`).
    pub ca_file: PathBuf,
    /// A PEM client certificate chain, for brokers that require one.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client certificate's PEM private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

fn default_qos() -> u8 {
    1
}

fn default_session_expiry() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}

fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}

fn default_reconnect_initial() -> Duration {
    Duration::from_millis(500)
}

fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}

fn default_max_inflight() -> u16 {
    256
}

fn default_batch_wait() -> Duration {
    Duration::from_millis(5)
}

fn default_max_message() -> u64 {
    256 << 10
}

/// Why the MQTT source could not be set up or connect.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MqttSourceError {
    /// The password could not be read.
    #[error("sources.mqtt.password: {0}")]
    Secret(#[from] iomt_fhir_client::SecretError),
    /// A TLS file could not be used.
    #[error("sources.mqtt.tls: cannot use {file}: {reason}")]
    TlsFile {
        /// The file.
        file: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The TLS settings do not form a client configuration.
    #[error("sources.mqtt.tls: {0}; check that the key belongs to the client certificate")]
    Tls(String),
    /// The broker answered CONNECT with a refusal.
    #[error("{0}")]
    Refused(String),
    /// The broker could not be reached or the connection failed.
    #[error("cannot connect to the mqtt broker: {0}; check sources.mqtt.host, port and tls")]
    Connect(String),
}

impl MqttSourceConfig {
    /// The port, defaulted by whether TLS is on.
    pub fn port(&self) -> u16 {
        self.port
            .unwrap_or(if self.tls.is_some() { 8883 } else { 1883 })
    }

    fn qos_level(&self) -> QoS {
        if self.qos == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        }
    }

    /// Resolves relative file paths against the configuration file's folder.
    pub(crate) fn resolve_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        if let Some(SecretSource::File(p)) = self.password.as_mut() {
            resolve(p);
        }
        if let Some(tls) = self.tls.as_mut() {
            resolve(&mut tls.ca_file);
            if let Some(p) = tls.cert_file.as_mut() {
                resolve(p);
            }
            if let Some(p) = tls.key_file.as_mut() {
                resolve(p);
            }
        }
    }

    /// Reports every problem under `path` (no network I/O; TLS files and secrets are read).
    pub(crate) fn check(&self, path: &str, problem: &mut impl FnMut(&str, String)) {
        if self.host.trim().is_empty() {
            problem(
                &format!("{path}.host"),
                "must not be empty: give the broker's host name or address".into(),
            );
        }
        if self.port == Some(0) {
            problem(&format!("{path}.port"), "must not be 0".into());
        }
        if self.client_id.trim().is_empty() {
            problem(
                &format!("{path}.client_id"),
                "must not be empty: the broker keeps the session under it; choose a stable, unique id"
                    .into(),
            );
        }
        if self.topics.is_empty() {
            problem(
                &format!("{path}.topics"),
                "no topic filter: add one, e.g. devices/+/telemetry".into(),
            );
        }
        for (i, topic) in self.topics.iter().enumerate() {
            if let Err(reason) = check_topic_filter(topic) {
                problem(&format!("{path}.topics[{i}]"), reason);
            }
        }
        if self.qos > 1 {
            problem(
                &format!("{path}.qos"),
                format!("QoS {} is not supported: use 0 or 1", self.qos),
            );
        }
        if self.password.is_some() && self.username.is_none() {
            problem(
                &format!("{path}.password"),
                "is set without a username: add sources.mqtt.username".into(),
            );
        }
        if let Some(password) = &self.password
            && let Err(e) = password.resolve()
        {
            problem(&format!("{path}.password"), e.to_string());
        }
        if let Some(tls) = &self.tls
            && let Err(e) = client_tls(tls)
        {
            problem(&format!("{path}.tls"), e.to_string());
        }
        if self.keep_alive < Duration::from_secs(5) || self.keep_alive.as_secs() > 65_535 {
            problem(
                &format!("{path}.keep_alive"),
                "must be between 5s and 65535s".into(),
            );
        }
        if self.session_expiry.as_secs() > u64::from(u32::MAX) {
            problem(
                &format!("{path}.session_expiry"),
                "is over the MQTT limit of 4294967295 seconds (136 years)".into(),
            );
        }
        if self.reconnect_initial.is_zero() {
            problem(
                &format!("{path}.reconnect_initial"),
                "must be greater than zero, e.g. 500ms".into(),
            );
        }
        if self.reconnect_max < self.reconnect_initial {
            problem(
                &format!("{path}.reconnect_max"),
                "must not be shorter than reconnect_initial".into(),
            );
        }
        if self.max_inflight == 0 {
            problem(
                &format!("{path}.max_inflight"),
                "must be greater than zero".into(),
            );
        }
        if self.max_message_size == 0 || self.max_message_size > 256 << 20 {
            problem(
                &format!("{path}.max_message_size"),
                "must be between 1 byte and 256MiB".into(),
            );
        }
    }

    /// The client options: identity, session, flow control, credentials and transport.
    fn options(&self) -> Result<MqttOptions, MqttSourceError> {
        let mut options = MqttOptions::new(self.client_id.clone(), self.host.clone(), self.port());
        let qos1 = self.qos_level() == QoS::AtLeastOnce;
        options
            .set_keep_alive(self.keep_alive.max(Duration::from_secs(5)))
            .set_clean_start(!qos1)
            .set_manual_acks(qos1)
            .set_receive_maximum(Some(self.max_inflight.max(1)))
            .set_max_packet_size(Some(
                u32::try_from(self.max_message_size).unwrap_or(u32::MAX),
            ))
            .set_connection_timeout(10)
            .set_request_channel_capacity(REQUEST_QUEUE);
        if qos1 {
            options.set_session_expiry_interval(Some(
                u32::try_from(self.session_expiry.as_secs()).unwrap_or(u32::MAX),
            ));
        }
        if let Some(username) = &self.username {
            let password = match &self.password {
                Some(p) => p.resolve()?.expose().to_owned(),
                None => String::new(),
            };
            options.set_credentials(username.clone(), password);
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                client_tls(tls)?,
            )));
        }
        Ok(options)
    }

    fn filters(&self) -> Vec<Filter> {
        self.topics
            .iter()
            .map(|topic| {
                let mut filter = Filter::new(topic.clone(), self.qos_level());
                filter.retain_forward_rule = RetainForwardRule::OnNewSubscribe;
                filter
            })
            .collect()
    }
}

/// Checks a topic filter as MQTT defines it: levels split by `/`, `+` a whole level, `#` a
/// whole and last level.
fn check_topic_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() {
        return Err("must not be empty".into());
    }
    if filter.contains('\0') {
        return Err("must not contain a NUL character".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Err(format!(
                "{filter:?}: `#` must be a whole level and the last one, e.g. devices/#"
            ));
        }
        if level.contains('+') && *level != "+" {
            return Err(format!(
                "{filter:?}: `+` must be a whole level, e.g. devices/+/telemetry"
            ));
        }
    }
    if levels.first() == Some(&"$share") && (levels.len() < 3 || levels[1].is_empty()) {
        return Err(format!(
            "{filter:?}: a shared subscription is $share/<group>/<filter>"
        ));
    }
    Ok(())
}

/// The rustls client configuration (aws-lc-rs, as every other TLS connection of the service).
fn client_tls(tls: &MqttTlsConfig) -> Result<Arc<rustls::ClientConfig>, MqttSourceError> {
    let file_error = |path: &std::path::Path, reason: String| MqttSourceError::TlsFile {
        file: path.to_string_lossy().into_owned(),
        reason,
    };
    let certs = |path: &std::path::Path| -> Result<Vec<CertificateDer<'static>>, MqttSourceError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| file_error(path, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| file_error(path, e.to_string()))?;
        if certs.is_empty() {
            return Err(file_error(
                path,
                "no CERTIFICATE block found: give PEM certificates".into(),
            ));
        }
        Ok(certs)
    };
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs(&tls.ca_file)?);
    if added == 0 {
        return Err(file_error(
            &tls.ca_file,
            "no usable CA certificate in it".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| MqttSourceError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = certs(cert)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                file_error(
                    key,
                    format!("{e}: give a PEM private key (PKCS#8, PKCS#1 or SEC1)"),
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| MqttSourceError::Tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(MqttSourceError::Tls(
                "cert_file and key_file go together: give both or neither".into(),
            ));
        }
    };
    Ok(Arc::new(config))
}

/// Says why a connection attempt failed, in words that say what to change.
fn describe(error: &ConnectionError) -> MqttSourceError {
    match error {
        ConnectionError::ConnectionRefused(code) => MqttSourceError::Refused(refusal(*code)),
        ConnectionError::Tls(e) => MqttSourceError::Connect(format!(
            "tls handshake failed ({e}); check sources.mqtt.tls.ca_file and that the broker's certificate names sources.mqtt.host"
        )),
        other => MqttSourceError::Connect(other.to_string()),
    }
}

fn refusal(code: ConnectReturnCode) -> String {
    use ConnectReturnCode as C;
    let what = match code {
        C::BadUserNamePassword => {
            "the mqtt broker refused the user name or password: check sources.mqtt.username and sources.mqtt.password"
        }
        C::NotAuthorized => {
            // mosquitto answers a wrong password with this code too.
            "the mqtt broker refused the credentials (not authorized): check sources.mqtt.username and sources.mqtt.password (or the client certificate) and the broker's access rules"
        }
        C::ClientIdentifierNotValid | C::BadClientId => {
            "the mqtt broker refused sources.mqtt.client_id: choose another (short, letters and digits)"
        }
        C::Banned => "the mqtt broker has banned this client: ask the broker's operator",
        C::RefusedProtocolVersion | C::UnsupportedProtocolVersion => {
            "the mqtt broker does not speak MQTT 5: upgrade it (mosquitto 1.6 or later)"
        }
        C::ServerUnavailable | C::ServerBusy | C::ConnectionRateExceeded | C::QuotaExceeded => {
            "the mqtt broker is busy or unavailable; the connector keeps trying"
        }
        C::BadAuthenticationMethod => {
            "the mqtt broker wants another authentication method: check its configuration"
        }
        _ => "the mqtt broker refused the connection",
    };
    format!("{what} (reason: {code:?})")
}

/// Connects once, waits for the broker's answer, and disconnects: the connectivity probe for
/// `iomt check`.
///
/// # Errors
/// [`MqttSourceError`] saying why the broker could not be used.
pub async fn check_connection(config: &MqttSourceConfig) -> Result<(), MqttSourceError> {
    let mut options = config.options()?;
    // A probe must not disturb the connector's persistent session.
    options
        .set_client_id(format!("{}-check", config.client_id))
        .set_clean_start(true)
        .set_session_expiry_interval(None);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let result = loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => break Ok(()),
            Ok(_) => {}
            Err(e) => break Err(describe(&e)),
        }
    };
    if result.is_ok() {
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Ok(event) = eventloop.poll().await {
                if event == Event::Outgoing(Outgoing::Disconnect) {
                    break;
                }
            }
        })
        .await;
    }
    result
}

/// What the event loop task hands to the consumer.
enum Incoming {
    /// A connection was accepted (session present or not).
    Connected { session_present: bool },
    /// A message, and the connection generation it came on.
    Message { publish: Publish, generation: u64 },
    /// The broker answered a SUBSCRIBE.
    Subscribed(Vec<SubscribeReasonCode>),
    /// A connection attempt or a connection failed.
    Failed(MqttSourceError),
}

/// Starts the MQTT source: one task polls the broker connection, one appends and acknowledges.
/// It stops (gracefully, see the module docs) when `stop` turns true.
///
/// # Errors
/// The settings cannot be used (password, TLS files); connection problems are retried and
/// reported through readiness instead.
pub fn spawn(
    config: &MqttSourceConfig,
    log: Log,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    stop: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, MqttSourceError> {
    let options = config.options()?;
    let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
    let (tx, rx) = mpsc::channel(usize::from(config.max_inflight) + 16);
    let generation = Arc::new(AtomicU64::new(0));
    status.set_source_problem(SOURCE, Some("connecting to the mqtt broker".into()));
    let poller = tokio::spawn(poll(
        eventloop,
        tx,
        generation.clone(),
        Backoff::new(config.reconnect_initial, config.reconnect_max),
        stop.clone(),
    ));
    let consumer = Consumer {
        client,
        filters: config.filters(),
        device_id_level: config.device_id_topic_level,
        max_batch: usize::from(config.max_inflight.max(1)),
        batch_wait: config.batch_wait,
        log,
        metrics,
        status,
        generation,
    };
    Ok(tokio::spawn(consumer.run(rx, poller, stop)))
}

/// Exponential backoff between connection attempts.
struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    fn reset(&mut self) {
        self.next = self.initial;
    }

    fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

/// Polls the connection for as long as the source runs, reconnecting with backoff. Never
/// cancelled mid-poll (rumqttc's poll is not cancel-safe while it writes).
async fn poll(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Incoming>,
    generation: Arc<AtomicU64>,
    mut backoff: Backoff,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let incoming = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(connack))) => {
                backoff.reset();
                Incoming::Connected {
                    session_present: connack.session_present,
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => Incoming::Message {
                publish,
                generation: generation.load(Ordering::Acquire),
            },
            Ok(Event::Incoming(Packet::SubAck(suback))) => {
                Incoming::Subscribed(suback.return_codes)
            }
            Ok(Event::Incoming(Packet::Disconnect(disconnect))) => {
                warn!(reason = ?disconnect.reason_code, "the mqtt broker closed the connection");
                continue;
            }
            // Our DISCONNECT is out: the graceful stop is complete.
            Ok(Event::Outgoing(Outgoing::Disconnect)) => return,
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                // Acknowledgements for this connection's messages must not go out on the next.
                generation.fetch_add(1, Ordering::AcqRel);
                let failure = describe(&e);
                if tx.send(Incoming::Failed(failure)).await.is_err() {
                    return;
                }
                let wait = backoff.next_wait();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
        if tx.send(incoming).await.is_err() {
            return;
        }
    }
}

struct Consumer {
    client: AsyncClient,
    filters: Vec<Filter>,
    device_id_level: Option<usize>,
    max_batch: usize,
    batch_wait: Duration,
    log: Log,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    generation: Arc<AtomicU64>,
}

/// A received message waiting for its append.
struct Pending {
    publish: Publish,
    generation: u64,
}

impl Consumer {
    async fn run(
        self,
        mut rx: mpsc::Receiver<Incoming>,
        poller: JoinHandle<()>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut batch: Vec<Pending> = Vec::new();
        let mut paused = false;
        loop {
            if self.log.is_full() {
                paused = true;
                self.status.set_source_problem(
                    SOURCE,
                    Some("paused: the durable log is over log.max_size; unacknowledged messages wait at the broker".into()),
                );
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            if paused {
                // Readiness shows the connection's state again (a failure sets it anew).
                paused = false;
                self.status.set_source_problem(SOURCE, None);
            }
            let message = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => break,
                message = rx.recv() => message,
            };
            let Some(message) = message else { break };
            self.handle(message, &mut batch);
            if batch.is_empty() {
                continue;
            }
            // Gather what arrives within batch_wait, then append once.
            let deadline = Instant::now() + self.batch_wait;
            while batch.len() < self.max_batch {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(message)) => self.handle(message, &mut batch),
                    Ok(None) | Err(_) => break,
                }
            }
            if !self.append(&mut batch, &stop).await {
                break;
            }
        }
        // Graceful stop: append and acknowledge what was received (unless the log is full:
        // then it stays unacknowledged at the broker), then disconnect.
        if !self.log.is_full() {
            while let Ok(message) = rx.try_recv() {
                self.handle(message, &mut batch);
            }
        }
        let _ = self.append(&mut batch, &stop).await;
        if self.client.try_disconnect().is_err() {
            debug!("the mqtt event loop had already stopped");
        }
        // Whatever arrives now is not acknowledged: the broker sends it again next session.
        let drain = async { while rx.recv().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(3), drain)
            .await
            .is_err()
        {
            poller.abort();
        }
        let _ = poller.await;
        self.status.set_source_problem(SOURCE, None);
        info!("mqtt source stopped");
    }

    fn handle(&self, message: Incoming, batch: &mut Vec<Pending>) {
        match message {
            Incoming::Connected { session_present } => {
                info!(session_present, "connected to the mqtt broker");
                self.status.set_source_problem(SOURCE, None);
                // Every accepted connection subscribes again: a broker that lost the session
                // (restart without persistence, expiry) would otherwise send nothing.
                if let Err(e) = self.client.try_subscribe_many(self.filters.clone()) {
                    warn!(error = %e, "cannot queue the mqtt subscription");
                }
            }
            Incoming::Subscribed(codes) => {
                let refused = codes
                    .iter()
                    .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    .count();
                if refused > 0 {
                    error!(refused, codes = ?codes, "the mqtt broker refused topic filters");
                    self.status.set_source_problem(
                        SOURCE,
                        Some(format!(
                            "the mqtt broker refused {refused} of the topic filters in sources.mqtt.topics ({codes:?}): check the broker's access rules"
                        )),
                    );
                } else {
                    debug!("mqtt subscription confirmed");
                }
            }
            Incoming::Message {
                publish,
                generation,
            } => batch.push(Pending {
                publish,
                generation,
            }),
            Incoming::Failed(reason) => {
                warn!(error = %reason, "mqtt connection failed; reconnecting with backoff");
                self.status
                    .set_source_problem(SOURCE, Some(reason.to_string()));
            }
        }
    }

    /// Appends the batch to the log (retrying log errors until it succeeds or the service
    /// stops), then acknowledges it. Returns false when stopped before the append succeeded.
    async fn append(&self, batch: &mut Vec<Pending>, stop: &watch::Receiver<bool>) -> bool {
        if batch.is_empty() {
            return true;
        }
        let now = Utc::now();
        let enqueued = now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let records: Vec<Record> = batch
            .iter()
            .map(|p| {
                device_event(&p.publish, self.device_id_level, &enqueued)
                    .into_record(now.timestamp_millis())
            })
            .collect();
        let mut wait = Duration::from_millis(100);
        loop {
            match self.log.append(records.clone()).await {
                Ok(_) => break,
                Err(e) => {
                    error!(error = %e, "cannot append mqtt messages to the durable log; retrying");
                    if *stop.borrow() {
                        // Not acknowledged: the broker keeps them for the next session.
                        batch.clear();
                        return false;
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.metrics
            .messages_received
            .get_or_create(&SourceLabel {
                source: SOURCE.into(),
            })
            .inc_by(batch.len() as u64);
        let current = self.generation.load(Ordering::Acquire);
        for pending in batch.drain(..) {
            if pending.publish.qos == QoS::AtMostOnce || pending.generation != current {
                continue;
            }
            if let Err(e) = self.client.try_ack(&pending.publish) {
                // The broker sends it again in the next session; the log may then hold it twice.
                warn!(error = %e, "cannot queue an mqtt acknowledgement");
            }
        }
        true
    }
}

/// The log event for a message: its body, and the properties mappings read.
fn device_event(publish: &Publish, device_id_level: Option<usize>, enqueued: &str) -> DeviceEvent {
    let mut event = DeviceEvent::message(publish.payload.clone(), SOURCE);
    let topic = String::from_utf8_lossy(&publish.topic).into_owned();
    if let Some(level) = device_id_level
        && let Some(device) = topic.split('/').nth(level)
        && !device.is_empty()
    {
        event
            .system_properties
            .push(("iothub-connection-device-id".to_owned(), device.to_owned()));
    }
    event
        .system_properties
        .push(("iothub-enqueuedtime".to_owned(), enqueued.to_owned()));
    event.properties.push(("mqtt-topic".to_owned(), topic));
    if let Some(properties) = &publish.properties {
        event
            .properties
            .extend(properties.user_properties.iter().cloned());
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> MqttSourceConfig {
        let text = format!(
            "host: 127.0.0.1\nclient_id: iomt-test\ntopics: [devices/+/telemetry]\n{extra}"
        );
        serde_saphyr::from_str(&text).unwrap()
    }

    fn problems(config: &MqttSourceConfig) -> Vec<(String, String)> {
        let mut found = Vec::new();
        config.check("sources.mqtt", &mut |path: &str, message: String| {
            found.push((path.to_owned(), message))
        });
        found
    }

    #[test]
    fn defaults_are_qos1_persistent_with_bounded_inflight() {
        let c = config("");
        assert_eq!(c.qos, 1);
        assert_eq!(c.port(), 1883);
        assert_eq!(c.max_inflight, 256);
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let options = c.options().unwrap();
        assert!(!options.clean_start());
        assert!(options.manual_acks());
        assert_eq!(options.session_expiry_interval(), Some(7 * 24 * 3600));
        assert_eq!(options.receive_maximum(), Some(256));

        let qos0 = config("qos: 0");
        let options = qos0.options().unwrap();
        assert!(options.clean_start());
        assert!(!options.manual_acks());
        assert_eq!(options.session_expiry_interval(), None);
    }

    #[test]
    fn topic_filters_follow_mqtt_rules() {
        for good in [
            "a/b",
            "devices/+/telemetry",
            "#",
            "devices/#",
            "+",
            "$share/g/devices/#",
        ] {
            assert!(check_topic_filter(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "devices/#/x",
            "devices/a#",
            "devices/+x/t",
            "$share//a",
            "$share/g",
        ] {
            assert!(check_topic_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validation_names_every_problem() {
        let c = config(
            "qos: 2\npassword: {value: x}\nkeep_alive: 1s\nmax_inflight: 0\nreconnect_initial: 10s\nreconnect_max: 1s\ntls: {ca_file: /nonexistent/ca.pem}",
        );
        let mut c = c;
        c.topics.push("bad/#/x".into());
        let paths: Vec<String> = problems(&c).into_iter().map(|(p, _)| p).collect();
        for expected in [
            "sources.mqtt.qos",
            "sources.mqtt.password",
            "sources.mqtt.keep_alive",
            "sources.mqtt.max_inflight",
            "sources.mqtt.reconnect_max",
            "sources.mqtt.tls",
            "sources.mqtt.topics[1]",
        ] {
            assert!(
                paths.iter().any(|p| p == expected),
                "{expected} missing in {paths:?}"
            );
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = "host: h\nclient_id: c\ntopics: [a]\nqso: 1\n";
        let e = serde_saphyr::from_str::<MqttSourceConfig>(text).unwrap_err();
        assert!(e.to_string().contains("qso"), "{e}");
    }

    #[test]
    fn backoff_doubles_to_its_limit_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let waits: Vec<u128> = (0..4).map(|_| b.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(100));
    }

    #[test]
    fn topic_and_user_properties_reach_the_mappings() {
        let mut publish = Publish::new(
            "devices/bedside-7/telemetry",
            QoS::AtLeastOnce,
            &b"{\"hr\":70}"[..],
            None,
        );
        publish.properties = Some(rumqttc::v5::mqttbytes::v5::PublishProperties {
            user_properties: vec![(
                "iothub-creation-time-utc".into(),
                "2026-11-26T08:00:00Z".into(),
            )],
            ..Default::default()
        });
        let event = device_event(&publish, Some(1), "2026-11-26T08:00:01.000Z");
        assert_eq!(event.body.as_ref(), b"{\"hr\":70}");
        assert_eq!(event.source, "mqtt");
        assert_eq!(
            event.system_properties,
            [
                (
                    "iothub-connection-device-id".to_owned(),
                    "bedside-7".to_owned()
                ),
                (
                    "iothub-enqueuedtime".to_owned(),
                    "2026-11-26T08:00:01.000Z".to_owned()
                ),
            ]
        );
        assert_eq!(
            event.properties,
            [
                (
                    "mqtt-topic".to_owned(),
                    "devices/bedside-7/telemetry".to_owned()
                ),
                (
                    "iothub-creation-time-utc".to_owned(),
                    "2026-11-26T08:00:00Z".to_owned()
                ),
            ]
        );
        // A level the topic does not have gives no device id rather than a wrong one.
        let event = device_event(&publish, Some(5), "t");
        assert!(
            event
                .system_properties
                .iter()
                .all(|(k, _)| k != "iothub-connection-device-id")
        );
    }

    #[test]
    fn refusals_say_what_to_check() {
        let text = refusal(ConnectReturnCode::BadUserNamePassword);
        assert!(text.contains("sources.mqtt.password"), "{text}");
        let text = refusal(ConnectReturnCode::NotAuthorized);
        assert!(text.contains("sources.mqtt.password"), "{text}");
    }
}
