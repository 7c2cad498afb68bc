//! The MQTT target: each message published at QoS 1 to `<prefix>/<device-id>` on a broker,
//! speaking MQTT 5 through `rumqttc`.
//!
//! One topic per device, so the connector's MQTT source can take the device id from a topic
//! level (`device_id_topic_level`: the prefix's level count). A message's `Properties` travel
//! as MQTT 5 user properties, which the source hands to the mappings as `Properties`; its
//! `SystemProperties` do not travel: the source sets `iothub-connection-device-id` from the
//! topic and `iothub-enqueuedtime` itself, as IoT Hub would.
//!
//! # What must hold
//! * **Accepted means PUBACKed.** A message counts as accepted only when the broker's PUBACK for
//!   it arrived with a success reason (`Success` or `NoMatchingSubscribers`); another reason is
//!   a rejection with its MQTT reason code.
//! * **Acknowledgements are matched to messages by packet id.** Publishes enter the client's
//!   queue in the order their waiters are queued (one lock around both), and the event loop
//!   reports `Outgoing::Publish(pkid)` in that order, so the n-th report belongs to the n-th
//!   waiter.
//! * **A lost connection is not resumed.** Every message waiting for its PUBACK counts as
//!   failed (its fate is unknown: the broker may have it), and so does every later one: a run
//!   against a broker that went away ends with the failures counted, not with duplicates.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, PublishProperties};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::rustls;

use super::{Delivery, Target};
use crate::error::TargetError;
use crate::message::SimMessage;

/// How many publish requests may wait in the client's queue.
const REQUEST_QUEUE: usize = 1000;

/// Where and how to publish.
#[derive(Debug, Clone, Default)]
pub struct MqttTargetConfig {
    /// `mqtt://host[:port][/topic-prefix]` or `mqtts://…` (ports 1883 and 8883 by default).
    pub url: String,
    /// The user name, if the broker wants one.
    pub username: Option<String>,
    /// The password (with `username`).
    pub password: Option<String>,
    /// For `mqtts`: the PEM file of the CA that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// The client id (default `iomt-simulate-<process id>`).
    pub client_id: Option<String>,
}

/// Publishes each message at QoS 1 to `<prefix>/<device-id>` and waits for its PUBACK.
pub struct MqttTarget {
    client: AsyncClient,
    prefix: String,
    shown: String,
    waiters: Arc<Mutex<Waiters>>,
    /// Held while a waiter is queued and its publish enters the client's queue.
    order: tokio::sync::Mutex<()>,
    poller: JoinHandle<()>,
}

impl std::fmt::Debug for MqttTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTarget")
            .field("target", &self.shown)
            .finish_non_exhaustive()
    }
}

/// What became of one publish.
#[derive(Debug)]
enum Ack {
    Accepted,
    Rejected(u16),
    Refused(u16),
    Failed(String),
}

/// The publishes waiting for their packet id, then for their PUBACK.
#[derive(Default)]
struct Waiters {
    queued: VecDeque<oneshot::Sender<Ack>>,
    in_flight: HashMap<u16, oneshot::Sender<Ack>>,
    /// Set when the connection was lost or refused: every later publish gets this.
    broken: Option<Ack>,
}

impl Waiters {
    fn fail_all(&mut self, ack: &Ack) {
        for waiter in self
            .queued
            .drain(..)
            .chain(self.in_flight.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(copy(ack));
        }
    }
}

fn copy(ack: &Ack) -> Ack {
    match ack {
        Ack::Accepted => Ack::Accepted,
        Ack::Rejected(code) => Ack::Rejected(*code),
        Ack::Refused(code) => Ack::Refused(*code),
        Ack::Failed(reason) => Ack::Failed(reason.clone()),
    }
}

impl MqttTarget {
    /// Connects (in the background; the first delivery waits for the broker's answer).
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    /// [`TargetError::InvalidUrl`] for a URL that is not `mqtt(s)://host…`;
    /// [`TargetError::Tls`] when the CA file cannot be used.
    pub fn new(config: &MqttTargetConfig) -> Result<MqttTarget, TargetError> {
        let invalid = || TargetError::InvalidUrl {
            url: config.url.clone(),
        };
        let url = reqwest::Url::parse(&config.url).map_err(|_| invalid())?;
        let tls = match url.scheme() {
            "mqtt" => false,
            "mqtts" => true,
            _ => return Err(invalid()),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(invalid)?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port().unwrap_or(if tls { 8883 } else { 1883 });
        let prefix = url.path().trim_matches('/').to_owned();
        if prefix.contains(['+', '#']) {
            return Err(TargetError::InvalidUrl {
                url: config.url.clone(),
            });
        }
        let client_id = config
            .client_id
            .clone()
            .unwrap_or_else(|| format!("iomt-simulate-{}", std::process::id()));
        let mut options = MqttOptions::new(client_id, host.clone(), port);
        options
            .set_clean_start(true)
            .set_keep_alive(Duration::from_secs(30));
        if let Some(user) = &config.username {
            options.set_credentials(user.clone(), config.password.clone().unwrap_or_default());
        }
        if tls {
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(client_tls(
                config.ca_file.as_deref(),
            )?)));
        } else if config.ca_file.is_some() {
            return Err(TargetError::Tls {
                reason: "a CA file is only used with mqtts:// URLs: use mqtts:// or drop it".into(),
            });
        }
        let (client, eventloop) = AsyncClient::new(options, REQUEST_QUEUE);
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let poller = tokio::spawn(poll(eventloop, Arc::clone(&waiters)));
        let scheme = if tls { "mqtts" } else { "mqtt" };
        Ok(MqttTarget {
            client,
            shown: format!("{scheme}://{host}:{port}/{prefix}"),
            prefix,
            waiters,
            order: tokio::sync::Mutex::new(()),
            poller,
        })
    }

    /// The broker and topic prefix, without credentials.
    pub fn describe(&self) -> String {
        self.shown.clone()
    }

    /// The topic a device's messages go to.
    pub fn topic(&self, device_id: &str) -> String {
        let device = if device_id.is_empty() {
            "unknown"
        } else {
            device_id
        };
        if self.prefix.is_empty() {
            device.to_owned()
        } else {
            format!("{}/{device}", self.prefix)
        }
    }

    /// Publishes one message and returns the waiter for its acknowledgement.
    async fn publish(&self, message: &SimMessage) -> oneshot::Receiver<Ack> {
        let (tx, rx) = oneshot::channel();
        let properties = PublishProperties {
            user_properties: message.properties.clone(),
            ..PublishProperties::default()
        };
        let _order = self.order.lock().await;
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(broken) = &waiters.broken {
                let _ = tx.send(copy(broken));
                return rx;
            }
            waiters.queued.push_back(tx);
        }
        let sent = self
            .client
            .publish_with_properties(
                self.topic(&message.device_id),
                QoS::AtLeastOnce,
                false,
                message.body.clone(),
                properties,
            )
            .await;
        if let Err(e) = sent {
            let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
            // The request never entered the queue: its waiter is the last one queued.
            if let Some(tx) = waiters.queued.pop_back() {
                let _ = tx.send(Ack::Failed(format!("cannot publish: {e}")));
            }
        }
        rx
    }
}

impl Drop for MqttTarget {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
        self.poller.abort();
    }
}

impl Target for MqttTarget {
    fn batchable(&self, _: &SimMessage, _: &SimMessage) -> bool {
        true
    }

    async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
        let mut pending = Vec::with_capacity(batch.len());
        for message in batch {
            pending.push(self.publish(message).await);
        }
        let mut accepted = 0;
        let mut rejected = BTreeMap::new();
        let mut failed = 0;
        let mut failure = None;
        let mut refused = None;
        for rx in pending {
            match rx.await {
                Ok(Ack::Accepted) => accepted += 1,
                Ok(Ack::Rejected(code)) => *rejected.entry(code).or_default() += 1,
                Ok(Ack::Refused(code)) => {
                    refused = Some(code);
                    *rejected.entry(code).or_default() += 1;
                }
                Ok(Ack::Failed(reason)) => {
                    failed += 1;
                    failure.get_or_insert(reason);
                }
                Err(_) => {
                    failed += 1;
                    failure.get_or_insert_with(|| "the mqtt connection ended".to_owned());
                }
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
        let name = match status {
            128 => "unspecified error",
            131 => "implementation specific error",
            134 => "bad user name or password",
            135 => "not authorized",
            144 => "topic name invalid",
            145 => "packet identifier in use",
            151 => "quota exceeded",
            153 => "payload format invalid",
            _ => "error",
        };
        Some(format!("mqtt reason {status} ({name})"))
    }
}

/// Drives the connection: matches packet ids to waiters and PUBACKs to packet ids.
async fn poll(mut eventloop: EventLoop, waiters: Arc<Mutex<Waiters>>) {
    loop {
        let event = eventloop.poll().await;
        let mut w = waiters.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(waiter) = w.queued.pop_front() {
                    w.in_flight.insert(pkid, waiter);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if let Some(waiter) = w.in_flight.remove(&ack.pkid) {
                    let _ = waiter.send(match ack.reason {
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {
                            Ack::Accepted
                        }
                        other => Ack::Rejected(puback_code(other)),
                    });
                }
            }
            Ok(_) => {}
            Err(error) => {
                let ack = match error {
                    ConnectionError::ConnectionRefused(code) => Ack::Refused(connack_code(code)),
                    other => Ack::Failed(format!("mqtt connection lost: {other}")),
                };
                w.fail_all(&ack);
                w.broken = Some(ack);
                return;
            }
        }
    }
}

fn puback_code(reason: PubAckReason) -> u16 {
    match reason {
        PubAckReason::Success => 0,
        PubAckReason::NoMatchingSubscribers => 16,
        PubAckReason::UnspecifiedError => 128,
        PubAckReason::ImplementationSpecificError => 131,
        PubAckReason::NotAuthorized => 135,
        PubAckReason::TopicNameInvalid => 144,
        PubAckReason::PacketIdentifierInUse => 145,
        PubAckReason::QuotaExceeded => 151,
        PubAckReason::PayloadFormatInvalid => 153,
    }
}

fn connack_code(code: ConnectReturnCode) -> u16 {
    match code {
        ConnectReturnCode::BadUserNamePassword => 134,
        ConnectReturnCode::NotAuthorized => 135,
        _ => 128,
    }
}

/// rustls with aws-lc-rs; the CA file's certificates as roots (required: no system store is
/// read, so a private broker's CA must be named).
fn client_tls(ca_file: Option<&std::path::Path>) -> Result<Arc<rustls::ClientConfig>, TargetError> {
    let Some(path) = ca_file else {
        return Err(TargetError::Tls {
            reason: "mqtts needs the broker's CA certificate: give --mqtt-ca-file".into(),
        });
    };
    let file_error = |reason: String| TargetError::Tls {
        reason: format!("{}: {reason}", path.display()),
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(file_error(
            "no usable CA certificate in it: give a PEM certificate".into(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TargetError::Tls {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Result<MqttTarget, TargetError> {
        MqttTarget::new(&MqttTargetConfig {
            url: url.into(),
            ..MqttTargetConfig::default()
        })
    }

    #[tokio::test]
    async fn topics_are_prefix_and_device() {
        let t = target("mqtt://127.0.0.1:1/devices/sim/").unwrap();
        assert_eq!(t.topic("sim-0001"), "devices/sim/sim-0001");
        assert_eq!(t.describe(), "mqtt://127.0.0.1:1/devices/sim");
        let t = target("mqtt://broker.test").unwrap();
        assert_eq!(t.topic("d"), "d");
        assert_eq!(t.topic(""), "unknown");
        assert_eq!(t.describe(), "mqtt://broker.test:1883/");
    }

    #[tokio::test]
    async fn bad_urls_and_tls_settings_are_refused() {
        for bad in ["http://h/x", "mqtt://", "mqtt://h/a/+/b", "not a url"] {
            assert!(
                matches!(target(bad), Err(TargetError::InvalidUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            target("mqtts://h/x"),
            Err(TargetError::Tls { .. })
        ));
    }

    #[tokio::test]
    async fn an_unreachable_broker_fails_the_delivery() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let t = target(&format!("mqtt://127.0.0.1:{port}/d")).unwrap();
        let mut fleet = crate::Fleet::new(crate::FleetConfig::default()).unwrap();
        let message = fleet.next_message(chrono::Utc::now());
        let delivery = tokio::time::timeout(Duration::from_secs(10), t.deliver(&[message]))
            .await
            .unwrap();
        assert!(
            matches!(
                delivery,
                Delivery::Each {
                    accepted: 0,
                    failed: 1,
                    ..
                }
            ),
            "{delivery:?}"
        );
    }
}
