//! The Kafka target: each message produced to one topic with the device id as its key, through
//! librdkafka (`rdkafka`), to a Kafka cluster, a Kafka-protocol broker (tansu in the tests) or
//! Azure Event Hubs' Kafka endpoint.
//!
//! # What a message looks like on the topic
//! It mirrors what an IoT Hub route to Event Hubs delivers through the Kafka endpoint, so the
//! connector's Kafka source hands the mappings the same `Properties` and `SystemProperties`:
//! * the value is the message body, the key the device id (one device's messages stay in one
//!   partition, in order);
//! * every property and every system property is a header with its own name and UTF-8 value
//!   (`iothub-connection-device-id`, `iothub-enqueuedtime`, `iothub-creation-time-utc`, …);
//! * the record timestamp is the message's `iothub-enqueuedtime` when it has one, else the
//!   producer's clock.
//!
//! # What must hold
//! * **Accepted means acknowledged by all in-sync replicas**: the producer is idempotent
//!   (`enable.idempotence`, hence `acks=all`), and a message counts as accepted only when its
//!   delivery report says so. A message whose delivery timed out counts as failed (its fate is
//!   unknown), a broker error as rejected with its Kafka error code.
//! * **Credentials never reach the summary or the logs**: errors are described by code.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use chrono::DateTime;
use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::{Delivery, Target};
use crate::error::TargetError;
use crate::message::{ENQUEUED_TIME_SYSTEM_PROPERTY, SimMessage};

/// How long librdkafka tries to deliver one message before reporting it failed.
const MESSAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// SASL PLAIN credentials (always over TLS: `SASL_SSL`).
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    /// The user name (`$ConnectionString` for Event Hubs).
    pub username: String,
    /// The password (the connection string for Event Hubs).
    pub password: String,
}

impl std::fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl KafkaSasl {
    /// The credentials Azure Event Hubs' Kafka endpoint takes: user name `$ConnectionString`,
    /// the namespace (or event hub) connection string as password.
    ///
    /// # Errors
    /// [`TargetError::InvalidConnectionString`] unless it has an `Endpoint=sb://…` and a
    /// shared access key.
    pub fn event_hubs(connection_string: &str) -> Result<KafkaSasl, TargetError> {
        let connection_string = connection_string.trim();
        event_hubs_host(connection_string)?;
        if !connection_string.contains("SharedAccessKey=") {
            return Err(TargetError::InvalidConnectionString {
                reason:
                    "it has no SharedAccessKey=…: copy the whole connection string from the portal"
                        .into(),
            });
        }
        Ok(KafkaSasl {
            username: "$ConnectionString".to_owned(),
            password: connection_string.to_owned(),
        })
    }
}

/// The namespace host of an Event Hubs connection string (`Endpoint=sb://<host>/`), read as the
/// service reads it (`iomt_model::event_hubs`).
fn event_hubs_host(connection_string: &str) -> Result<&str, TargetError> {
    iomt_model::event_hubs::namespace_host(connection_string).ok_or_else(|| {
        TargetError::InvalidConnectionString {
            reason: "it has no Endpoint=sb://<namespace>.servicebus.windows.net/: copy the whole connection string from the portal".into(),
        }
    })
}

/// Where and how to produce.
#[derive(Debug, Clone, Default)]
pub struct KafkaTargetConfig {
    /// `kafka://host:port[,host:port…]/topic`.
    pub url: String,
    /// SASL PLAIN over TLS; plaintext without.
    pub sasl: Option<KafkaSasl>,
    /// With SASL: a PEM CA file instead of the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Further librdkafka settings (`linger.ms`, …), applied last.
    pub extra: Vec<(String, String)>,
}

impl KafkaTargetConfig {
    /// The brokers and the topic of the URL.
    ///
    /// # Errors
    /// [`TargetError::InvalidUrl`] unless it is `kafka://host:port[,host:port…]/topic`.
    pub fn brokers_and_topic(&self) -> Result<(String, String), TargetError> {
        let invalid = || TargetError::InvalidUrl {
            url: self.url.clone(),
        };
        let rest = self.url.strip_prefix("kafka://").ok_or_else(invalid)?;
        let (brokers, topic) = rest.split_once('/').ok_or_else(invalid)?;
        let topic = topic.trim_end_matches('/');
        let topic_ok = !topic.is_empty()
            && topic.len() <= 249
            && topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        let brokers_ok = !brokers.is_empty()
            && brokers.split(',').all(|b| {
                b.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            });
        if !topic_ok || !brokers_ok {
            return Err(invalid());
        }
        Ok((brokers.to_owned(), topic.to_owned()))
    }

    /// The librdkafka producer settings (credentials included: never print them).
    ///
    /// # Errors
    /// [`TargetError::InvalidUrl`] for a bad URL.
    pub fn client_config(&self) -> Result<ClientConfig, TargetError> {
        let (brokers, _) = self.brokers_and_topic()?;
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            .set("client.id", "iomt-simulate")
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
            .set(
                "message.timeout.ms",
                MESSAGE_TIMEOUT.as_millis().to_string(),
            );
        if let Some(sasl) = &self.sasl {
            config
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
            if let Some(ca) = &self.ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        Ok(config)
    }
}

/// Produces each message to one topic, keyed by device id, and waits for its delivery report.
pub struct KafkaTarget {
    producer: FutureProducer,
    topic: String,
    shown: String,
    /// What each status counted so far means (librdkafka's words for its code).
    status_names: Mutex<BTreeMap<u16, String>>,
}

impl std::fmt::Debug for KafkaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaTarget")
            .field("target", &self.shown)
            .finish_non_exhaustive()
    }
}

impl KafkaTarget {
    /// A producer for `config` (it connects in the background). Must be called within a tokio
    /// runtime.
    ///
    /// # Errors
    /// [`TargetError::InvalidUrl`] for a bad URL; [`TargetError::Client`] when librdkafka
    /// refuses the settings.
    pub fn new(config: &KafkaTargetConfig) -> Result<KafkaTarget, TargetError> {
        let (brokers, topic) = config.brokers_and_topic()?;
        let producer =
            config
                .client_config()?
                .create()
                .map_err(|e: KafkaError| TargetError::Client {
                    reason: e.to_string(),
                })?;
        Ok(KafkaTarget {
            producer,
            shown: format!("kafka://{brokers}/{topic}"),
            topic,
            status_names: Mutex::new(BTreeMap::new()),
        })
    }

    /// The brokers and topic, without credentials.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// Hands one message to the producer's queue, waiting while the queue is full.
    async fn enqueue(&self, message: &SimMessage) -> Result<DeliveryFuture, KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(
            message.properties.len() + message.system_properties.len(),
        );
        for (name, value) in message.properties.iter().chain(&message.system_properties) {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_bytes()),
            });
        }
        let timestamp = message
            .system_properties
            .iter()
            .find(|(name, _)| name == ENQUEUED_TIME_SYSTEM_PROPERTY)
            .and_then(|(_, value)| DateTime::parse_from_rfc3339(value).ok())
            .map(|t| t.timestamp_millis());
        let mut record = FutureRecord::to(&self.topic)
            .payload(&message.body)
            .headers(headers);
        if !message.device_id.is_empty() {
            record = record.key(&message.device_id);
        }
        if let Some(ms) = timestamp {
            record = record.timestamp(ms);
        }
        loop {
            match self.producer.send_result(record) {
                Ok(future) => return Ok(future),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

impl Drop for KafkaTarget {
    fn drop(&mut self) {
        // Every delivery was awaited; this only waits for requests still on the wire.
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}

/// What a producer error means for the run.
enum Outcome {
    Rejected(u16),
    Refused(u16),
    Failed(String),
}

/// The summary status of a Kafka error code: broker codes as they are, librdkafka's own
/// (negative) codes as 1000 plus their magnitude.
fn status_of(code: RDKafkaErrorCode) -> u16 {
    let code = code as i32;
    let status = if code < 0 {
        1000 + code.unsigned_abs()
    } else {
        code.unsigned_abs()
    };
    u16::try_from(status).unwrap_or(u16::MAX)
}

fn classify(error: &KafkaError) -> Outcome {
    use RDKafkaErrorCode as C;
    let Some(code) = error.rdkafka_error_code() else {
        return Outcome::Failed(error.to_string());
    };
    let status = status_of(code);
    match code {
        C::MessageTimedOut
        | C::AllBrokersDown
        | C::BrokerTransportFailure
        | C::Resolve
        | C::RequestTimedOut
        | C::NetworkException
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition => Outcome::Failed(format!("kafka: {code}")),
        C::SaslAuthenticationFailed
        | C::Authentication
        | C::TopicAuthorizationFailed
        | C::ClusterAuthorizationFailed
        | C::TransactionalIdAuthorizationFailed => Outcome::Refused(status),
        _ => Outcome::Rejected(status),
    }
}

impl Target for KafkaTarget {
    fn batchable(&self, _: &SimMessage, _: &SimMessage) -> bool {
        true
    }

    async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
        let mut accepted = 0;
        let mut rejected = BTreeMap::new();
        let mut failed = 0;
        let mut failure = None;
        let mut refused = None;
        let names = &self.status_names;
        let name = |e: &KafkaError| {
            if let Some(code) = e.rdkafka_error_code() {
                names
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(status_of(code))
                    .or_insert_with(|| format!("{code:?}: {code}"));
            }
            classify(e)
        };
        let mut count = |outcome: Outcome| match outcome {
            Outcome::Rejected(status) => *rejected.entry(status).or_default() += 1,
            Outcome::Refused(status) => {
                refused = Some(status);
                *rejected.entry(status).or_default() += 1;
            }
            Outcome::Failed(reason) => {
                failed += 1;
                failure.get_or_insert(reason);
            }
        };
        let mut futures = Vec::with_capacity(batch.len());
        for message in batch {
            match self.enqueue(message).await {
                Ok(future) => futures.push(future),
                Err(e) => count(name(&e)),
            }
        }
        for future in futures {
            match future.await {
                Ok(Ok(_)) => accepted += 1,
                Ok(Err((e, _))) => count(name(&e)),
                Err(_) => count(Outcome::Failed("the kafka producer stopped".into())),
            }
        }
        if let Some(status) = refused
            && accepted == 0
        {
            return Delivery::Refused { status };
        }
        Delivery::Each {
            accepted,
            rejected,
            failed,
            failure,
        }
    }

    fn describe_status(&self, status: u16) -> Option<String> {
        let names = self.status_names.lock().unwrap_or_else(|e| e.into_inner());
        Some(match names.get(&status) {
            Some(name) => format!("kafka error {status} ({name})"),
            None => format!("kafka error {status}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> KafkaTargetConfig {
        KafkaTargetConfig {
            url: url.into(),
            ..KafkaTargetConfig::default()
        }
    }

    #[test]
    fn urls_name_brokers_and_one_topic() {
        assert_eq!(
            config("kafka://127.0.0.1:9092/device-messages")
                .brokers_and_topic()
                .unwrap(),
            ("127.0.0.1:9092".into(), "device-messages".into())
        );
        assert_eq!(
            config("kafka://a:1,b:2/t/").brokers_and_topic().unwrap(),
            ("a:1,b:2".into(), "t".into())
        );
        for bad in [
            "kafka://h:1/",
            "kafka://h/t",
            "kafka://h:x/t",
            "kafka:///t",
            "http://h:1/t",
            "kafka://h:1/a/b",
        ] {
            assert!(
                matches!(
                    config(bad).brokers_and_topic(),
                    Err(TargetError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn event_hubs_settings_are_sasl_plain_over_tls_with_the_connection_string() {
        let cs = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey=c2VjcmV0;EntityPath=telemetry";
        let sasl = KafkaSasl::event_hubs(cs).unwrap();
        assert_eq!(sasl.username, "$ConnectionString");
        assert_eq!(sasl.password, cs);
        assert!(
            !format!("{sasl:?}").contains("c2VjcmV0"),
            "no secret in Debug"
        );
        let config = KafkaTargetConfig {
            url: "kafka://ns.servicebus.windows.net:9093/telemetry".into(),
            sasl: Some(sasl),
            ..KafkaTargetConfig::default()
        }
        .client_config()
        .unwrap();
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(config.get("sasl.username"), Some("$ConnectionString"));
        assert_eq!(config.get("sasl.password"), Some(cs));
        assert_eq!(config.get("enable.idempotence"), Some("true"));
        assert_eq!(
            config.get("bootstrap.servers"),
            Some("ns.servicebus.windows.net:9093")
        );
        assert!(matches!(
            KafkaSasl::event_hubs("SharedAccessKey=x"),
            Err(TargetError::InvalidConnectionString { .. })
        ));
        assert!(matches!(
            KafkaSasl::event_hubs("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=x"),
            Err(TargetError::InvalidConnectionString { .. })
        ));
    }

    #[test]
    fn plaintext_without_credentials() {
        let config = config("kafka://127.0.0.1:9092/t").client_config().unwrap();
        assert_eq!(config.get("security.protocol"), None);
        assert_eq!(config.get("acks"), Some("all"));
    }
}
