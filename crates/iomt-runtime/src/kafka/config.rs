//! Kafka connection settings and the pure functions that turn them into librdkafka properties.
//!
//! Building the `rdkafka::ClientConfig` is kept pure (no network; only the secrets are read)
//! because it is the only way the SASL-over-TLS settings Azure Event Hubs needs can be tested
//! here: the test broker (tansu) speaks neither TLS nor SASL.
//!
//! # What must hold
//! * Secrets (SASL passwords, Event Hubs connection strings) are [`SecretSource`]s: never in
//!   `Debug` output. The `ClientConfig` built from them holds them in clear, so it is never
//!   logged (rdkafka's `ClientConfig` derives `Debug`).
//! * `extra` properties are applied last, so anything librdkafka supports can be set, but a
//!   secret-looking property there is refused by validation: secrets go in `security`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use iomt_fhir_client::SecretSource;
use rdkafka::ClientConfig;
use serde::Deserialize;

use super::KafkaSetupError;

/// The port of Azure Event Hubs' Kafka endpoint.
pub const EVENT_HUBS_KAFKA_PORT: u16 = iomt_model::event_hubs::KAFKA_PORT;

/// How the client authenticates and encrypts.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KafkaSecurity {
    /// Plain TCP, no authentication (`security.protocol=plaintext`).
    #[default]
    None,
    /// SASL over TLS (`security.protocol=SASL_SSL`).
    SaslSsl {
        /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`.
        mechanism: SaslMechanism,
        /// The SASL user name.
        username: String,
        /// The SASL password.
        password: SecretSource,
        /// CA certificates (PEM) to trust instead of the system's.
        #[serde(default)]
        ca_file: Option<PathBuf>,
    },
    /// Azure Event Hubs' Kafka endpoint: SASL PLAIN over TLS, user `$ConnectionString`, the
    /// namespace (or event hub) connection string as the password.
    EventHubs {
        /// `Endpoint=sb://<namespace>.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…`.
        connection_string: SecretSource,
    },
}

/// A SASL mechanism.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub enum SaslMechanism {
    /// `PLAIN` (only over TLS).
    #[serde(rename = "PLAIN")]
    Plain,
    /// `SCRAM-SHA-256`.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// `SCRAM-SHA-512`.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka `sasl.mechanism` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Where the earliest offset is taken from when a group has no committed offset.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OffsetReset {
    /// From the start of the partition (the default: nothing retained is skipped).
    #[default]
    Earliest,
    /// Only messages produced after the group first joined.
    Latest,
}

/// How to reach a Kafka-protocol cluster (shared by `sources.kafka` and `scale_out`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaConnection {
    /// `host:port[,host:port…]`; derived from the connection string for Event Hubs.
    pub bootstrap_servers: Option<String>,
    /// The client id the broker sees (default `iomt`).
    pub client_id: Option<String>,
    /// Authentication and encryption.
    pub security: KafkaSecurity,
    /// Raw librdkafka properties, applied last.
    pub extra: BTreeMap<String, String>,
}

/// `sources.kafka`: raw device messages from Kafka topics, read in a consumer group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `host:port[,host:port…]` (may be left out with `security: {event_hubs: …}`).
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// The client id the broker sees (default `iomt`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// `none` (default), `{sasl_ssl: {…}}` or `{event_hubs: {…}}`.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// Raw librdkafka properties, applied last (no secrets: use `security`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// The topics (event hubs) to read.
    pub topics: Vec<String>,
    /// The consumer group; every instance sharing the work uses the same one.
    pub group_id: String,
    /// The group session timeout (default `6s`).
    #[serde(
        default = "default_session_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub session_timeout: Duration,
    /// Where a new group starts: `earliest` (default) or `latest`.
    #[serde(default)]
    pub auto_offset_reset: OffsetReset,
}

/// `scale_out`: the normalized topic that role `normalize` writes and role `transform` reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleOutConfig {
    /// `host:port[,host:port…]` (may be left out with `security: {event_hubs: …}`).
    #[serde(default)]
    pub bootstrap_servers: Option<String>,
    /// The client id the broker sees (default `iomt`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// `none` (default), `{sasl_ssl: {…}}` or `{event_hubs: {…}}`.
    #[serde(default)]
    pub security: KafkaSecurity,
    /// Raw librdkafka properties, applied last (no secrets: use `security`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
    /// The topic of normalized measurements (the original's `normalizeddata` event hub).
    pub normalized_topic: String,
    /// The consumer group of the `transform` instances (default `iomt-transform`).
    #[serde(default = "default_transform_group")]
    pub group_id: String,
    /// The group session timeout (default `6s`).
    #[serde(
        default = "default_session_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub session_timeout: Duration,
    /// How long a produced message may wait for its acknowledgement before the batch is
    /// produced again (default `30s`).
    #[serde(
        default = "default_delivery_timeout",
        deserialize_with = "crate::config::duration"
    )]
    pub delivery_timeout: Duration,
}

fn default_session_timeout() -> Duration {
    Duration::from_secs(6)
}

fn default_transform_group() -> String {
    "iomt-transform".into()
}

fn default_delivery_timeout() -> Duration {
    Duration::from_secs(30)
}

impl KafkaSourceConfig {
    /// The connection part.
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            client_id: self.client_id.clone(),
            security: self.security.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Resolves relative file paths against the configuration's folder.
    pub(crate) fn resolve_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        resolve_security(&mut self.security, resolve);
    }
}

impl ScaleOutConfig {
    /// The connection part.
    pub fn connection(&self) -> KafkaConnection {
        KafkaConnection {
            bootstrap_servers: self.bootstrap_servers.clone(),
            client_id: self.client_id.clone(),
            security: self.security.clone(),
            extra: self.extra.clone(),
        }
    }

    /// Resolves relative file paths against the configuration's folder.
    pub(crate) fn resolve_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        resolve_security(&mut self.security, resolve);
    }
}

fn resolve_security(security: &mut KafkaSecurity, resolve: impl Fn(&mut PathBuf)) {
    match security {
        KafkaSecurity::None => {}
        KafkaSecurity::SaslSsl {
            password, ca_file, ..
        } => {
            if let SecretSource::File(p) = password {
                resolve(p);
            }
            if let Some(p) = ca_file {
                resolve(p);
            }
        }
        KafkaSecurity::EventHubs { connection_string } => {
            if let SecretSource::File(p) = connection_string {
                resolve(p);
            }
        }
    }
}

/// The bootstrap host of an Event Hubs connection string: `<namespace>.servicebus.windows.net:9093`
/// from its `Endpoint=sb://<namespace>.servicebus.windows.net/`.
///
/// # Errors
/// The string has no `Endpoint=sb://host` part.
pub fn event_hubs_bootstrap(connection_string: &str) -> Result<String, KafkaSetupError> {
    iomt_model::event_hubs::kafka_bootstrap(connection_string)
        .ok_or(KafkaSetupError::EventHubsEndpoint)
}

/// The librdkafka properties every client of `connection` shares (bootstrap, client id,
/// security, then `extra`). Reads the secrets; no network.
///
/// # Errors
/// A secret cannot be read, the Event Hubs connection string has no endpoint, or no
/// bootstrap server is known.
pub fn client_config(connection: &KafkaConnection) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = ClientConfig::new();
    config.set(
        "client.id",
        connection.client_id.as_deref().unwrap_or("iomt"),
    );
    let mut bootstrap = connection.bootstrap_servers.clone();
    match &connection.security {
        KafkaSecurity::None => {
            config.set("security.protocol", "plaintext");
        }
        KafkaSecurity::SaslSsl {
            mechanism,
            username,
            password,
            ca_file,
        } => {
            let password = password
                .resolve()
                .map_err(|e| KafkaSetupError::Secret(e.to_string()))?;
            config
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", mechanism.as_str())
                .set("sasl.username", username)
                .set("sasl.password", password.expose());
            if let Some(ca) = ca_file {
                config.set("ssl.ca.location", ca.to_string_lossy());
            }
        }
        KafkaSecurity::EventHubs { connection_string } => {
            let text = connection_string
                .resolve()
                .map_err(|e| KafkaSetupError::Secret(e.to_string()))?;
            let text = text.expose().trim();
            if bootstrap.is_none() {
                bootstrap = Some(event_hubs_bootstrap(text)?);
            }
            config
                .set("security.protocol", "SASL_SSL")
                .set("sasl.mechanism", "PLAIN")
                .set("sasl.username", "$ConnectionString")
                .set("sasl.password", text);
        }
    }
    let bootstrap = bootstrap
        .filter(|b| !b.trim().is_empty())
        .ok_or(KafkaSetupError::NoBootstrap)?;
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in &connection.extra {
        config.set(key, value);
    }
    Ok(config)
}

/// The consumer properties: the connection's, plus a group with manual commits.
/// `extra` still wins, except for `enable.auto.commit`, which must stay off.
///
/// # Errors
/// As [`client_config`].
pub fn consumer_config(
    connection: &KafkaConnection,
    group_id: &str,
    session_timeout: Duration,
    offset_reset: OffsetReset,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = client_config(connection)?;
    let defaults = [
        (
            "session.timeout.ms",
            session_timeout.as_millis().to_string(),
        ),
        (
            "auto.offset.reset",
            match offset_reset {
                OffsetReset::Earliest => "earliest".to_owned(),
                OffsetReset::Latest => "latest".to_owned(),
            },
        ),
        ("enable.partition.eof", "false".to_owned()),
    ];
    for (key, value) in defaults {
        if !connection.extra.contains_key(key) {
            config.set(key, value);
        }
    }
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    Ok(config)
}

/// The producer properties: the connection's, plus an idempotent producer that waits for
/// every in-sync replica. `extra` cannot turn either off.
///
/// # Errors
/// As [`client_config`].
pub fn producer_config(
    connection: &KafkaConnection,
    delivery_timeout: Duration,
) -> Result<ClientConfig, KafkaSetupError> {
    let mut config = client_config(connection)?;
    if !connection.extra.contains_key("message.timeout.ms") {
        config.set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
    }
    if !connection.extra.contains_key("linger.ms") {
        config.set("linger.ms", "5");
    }
    config.set("enable.idempotence", "true").set("acks", "all");
    Ok(config)
}

/// Whether a raw property name looks like it holds a secret (refused in `extra`).
pub(crate) fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password") || key.contains("secret") || key.ends_with(".key.pem")
}

/// Checks a connection's settings without I/O beyond reading secrets and CA files.
pub(crate) fn check_connection(
    path: &str,
    connection: &KafkaConnection,
    problem: &mut impl FnMut(&str, String),
) {
    let has_bootstrap = connection
        .bootstrap_servers
        .as_deref()
        .is_some_and(|b| !b.trim().is_empty());
    match &connection.security {
        KafkaSecurity::None => {}
        KafkaSecurity::SaslSsl {
            username,
            password,
            ca_file,
            ..
        } => {
            if username.trim().is_empty() {
                problem(
                    &format!("{path}.security.sasl_ssl.username"),
                    "must not be empty".into(),
                );
            }
            if let Err(e) = password.resolve() {
                problem(&format!("{path}.security.sasl_ssl.password"), e.to_string());
            }
            if let Some(ca) = ca_file
                && let Err(e) = std::fs::metadata(ca)
            {
                problem(
                    &format!("{path}.security.sasl_ssl.ca_file"),
                    format!("cannot read {}: {e}", ca.display()),
                );
            }
        }
        KafkaSecurity::EventHubs { connection_string } => match connection_string.resolve() {
            Ok(text) => {
                if !has_bootstrap && event_hubs_bootstrap(text.expose()).is_err() {
                    problem(
                        &format!("{path}.security.event_hubs.connection_string"),
                        KafkaSetupError::EventHubsEndpoint.to_string(),
                    );
                }
            }
            Err(e) => problem(
                &format!("{path}.security.event_hubs.connection_string"),
                e.to_string(),
            ),
        },
    }
    if !has_bootstrap && !matches!(connection.security, KafkaSecurity::EventHubs { .. }) {
        problem(
            &format!("{path}.bootstrap_servers"),
            "is required: write host:port[,host:port…]".into(),
        );
    }
    for key in connection.extra.keys() {
        if is_secret_property(key) {
            problem(
                &format!("{path}.extra.{key}"),
                "looks like a secret: raw properties are not secret; use security.sasl_ssl or security.event_hubs".into(),
            );
        }
        if key == "enable.auto.commit" || key == "group.id" {
            problem(
                &format!("{path}.extra.{key}"),
                "is set by iomt (offsets are committed after the batch is persisted): remove it"
                    .into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomt_fhir_client::Secret;

    fn get<'a>(config: &'a ClientConfig, key: &str) -> Option<&'a str> {
        config.get(key)
    }

    #[test]
    fn plaintext_sets_bootstrap_client_id_and_extra() {
        let connection = KafkaConnection {
            bootstrap_servers: Some("127.0.0.1:9092".into()),
            client_id: None,
            security: KafkaSecurity::None,
            extra: BTreeMap::from([("fetch.min.bytes".into(), "1000".into())]),
        };
        let c = client_config(&connection).unwrap();
        assert_eq!(get(&c, "bootstrap.servers"), Some("127.0.0.1:9092"));
        assert_eq!(get(&c, "client.id"), Some("iomt"));
        assert_eq!(get(&c, "security.protocol"), Some("plaintext"));
        assert_eq!(get(&c, "fetch.min.bytes"), Some("1000"));
        assert_eq!(get(&c, "sasl.password"), None);
    }

    #[test]
    fn sasl_ssl_sets_mechanism_credentials_and_ca() {
        for (mechanism, name) in [
            (SaslMechanism::Plain, "PLAIN"),
            (SaslMechanism::ScramSha256, "SCRAM-SHA-256"),
            (SaslMechanism::ScramSha512, "SCRAM-SHA-512"),
        ] {
            let connection = KafkaConnection {
                bootstrap_servers: Some("kafka.example.org:9093".into()),
                client_id: Some("ward-7".into()),
                security: KafkaSecurity::SaslSsl {
                    mechanism,
                    username: "iomt".into(),
                    password: SecretSource::Value(Secret::new("pa55")),
                    ca_file: Some(PathBuf::from("/etc/ca.pem")),
                },
                extra: BTreeMap::new(),
            };
            let c = client_config(&connection).unwrap();
            assert_eq!(get(&c, "security.protocol"), Some("SASL_SSL"));
            assert_eq!(get(&c, "sasl.mechanism"), Some(name));
            assert_eq!(get(&c, "sasl.username"), Some("iomt"));
            assert_eq!(get(&c, "sasl.password"), Some("pa55"));
            assert_eq!(get(&c, "ssl.ca.location"), Some("/etc/ca.pem"));
            assert_eq!(get(&c, "client.id"), Some("ward-7"));
            assert!(!format!("{connection:?}").contains("pa55"));
        }
    }

    const EH: &str = "Endpoint=sb://contoso-iot.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=c2VjcmV0;EntityPath=devicedata";

    #[test]
    fn event_hubs_uses_the_connection_string_as_password_and_derives_bootstrap() {
        let connection = KafkaConnection {
            security: KafkaSecurity::EventHubs {
                connection_string: SecretSource::Value(Secret::new(EH)),
            },
            ..KafkaConnection::default()
        };
        let c = client_config(&connection).unwrap();
        assert_eq!(
            get(&c, "bootstrap.servers"),
            Some("contoso-iot.servicebus.windows.net:9093")
        );
        assert_eq!(get(&c, "security.protocol"), Some("SASL_SSL"));
        assert_eq!(get(&c, "sasl.mechanism"), Some("PLAIN"));
        assert_eq!(get(&c, "sasl.username"), Some("$ConnectionString"));
        assert_eq!(get(&c, "sasl.password"), Some(EH));
        assert!(!format!("{connection:?}").contains("c2VjcmV0"));

        let explicit = KafkaConnection {
            bootstrap_servers: Some("private-link.example:9093".into()),
            ..connection
        };
        let c = client_config(&explicit).unwrap();
        assert_eq!(
            get(&c, "bootstrap.servers"),
            Some("private-link.example:9093")
        );
    }

    #[test]
    fn event_hubs_without_endpoint_is_refused() {
        assert!(matches!(
            event_hubs_bootstrap("SharedAccessKeyName=a;SharedAccessKey=b"),
            Err(KafkaSetupError::EventHubsEndpoint)
        ));
        assert_eq!(
            event_hubs_bootstrap("endpoint=sb://x.servicebus.windows.net").unwrap(),
            "x.servicebus.windows.net:9093"
        );
    }

    #[test]
    fn no_bootstrap_is_an_error() {
        assert!(matches!(
            client_config(&KafkaConnection::default()),
            Err(KafkaSetupError::NoBootstrap)
        ));
    }

    #[test]
    fn consumer_commits_manually_and_extra_cannot_turn_that_off() {
        let connection = KafkaConnection {
            bootstrap_servers: Some("b:1".into()),
            extra: BTreeMap::from([
                ("enable.auto.commit".into(), "true".into()),
                ("session.timeout.ms".into(), "10000".into()),
            ]),
            ..KafkaConnection::default()
        };
        let c = consumer_config(
            &connection,
            "g",
            Duration::from_secs(6),
            OffsetReset::Earliest,
        )
        .unwrap();
        assert_eq!(get(&c, "group.id"), Some("g"));
        assert_eq!(get(&c, "enable.auto.commit"), Some("false"));
        assert_eq!(get(&c, "session.timeout.ms"), Some("10000"));
        assert_eq!(get(&c, "auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn producer_is_idempotent_with_acks_all() {
        let connection = KafkaConnection {
            bootstrap_servers: Some("b:1".into()),
            extra: BTreeMap::from([("acks".into(), "1".into())]),
            ..KafkaConnection::default()
        };
        let c = producer_config(&connection, Duration::from_secs(30)).unwrap();
        assert_eq!(get(&c, "enable.idempotence"), Some("true"));
        assert_eq!(get(&c, "acks"), Some("all"));
        assert_eq!(get(&c, "message.timeout.ms"), Some("30000"));
    }

    #[test]
    fn checks_report_missing_bootstrap_secrets_in_extra_and_unreadable_secrets() {
        let connection = KafkaConnection {
            security: KafkaSecurity::SaslSsl {
                mechanism: SaslMechanism::Plain,
                username: String::new(),
                password: SecretSource::Env("IOMT_TEST_SURELY_UNSET_VARIABLE".into()),
                ca_file: None,
            },
            extra: BTreeMap::from([("ssl.key.password".into(), "x".into())]),
            ..KafkaConnection::default()
        };
        let mut paths = Vec::new();
        check_connection("sources.kafka", &connection, &mut |p: &str, _| {
            paths.push(p.to_owned())
        });
        assert_eq!(
            paths,
            [
                "sources.kafka.security.sasl_ssl.username",
                "sources.kafka.security.sasl_ssl.password",
                "sources.kafka.bootstrap_servers",
                "sources.kafka.extra.ssl.key.password",
            ]
        );
    }
}
