//! The MQTT source against a real broker (Debian's mosquitto, started on 127.0.0.1 by
//! `iomt_testkit::Mosquitto`): QoS 1 messages become Observations in the local store with the
//! device id taken from the topic, a wrong password is refused with a reason, TLS with a client
//! certificate works, messages published while the connector is stopped arrive after it
//! restarts (persistent session), and a broker restart is survived (reconnect and resubscribe).
//!
//! Publishers are `rumqttc` MQTT 5 clients, as devices or gateways would be.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iomt_runtime::{PipelineConfig, RunningService};
use iomt_testkit::{Mosquitto, MosquittoOptions, MosquittoTls};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{TlsConfiguration, Transport};
use tokio_rustls::rustls;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A pipeline with only the MQTT source (IoT Hub style mapping) writing to the local store.
fn config(dir: &Path, mqtt: &str) -> PipelineConfig {
    let examples = repo_root().join("examples/iothub");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
  reload_interval: 0s
sources:
  mqtt:
{mqtt}
pipeline:
  flush_interval: 100ms
destination:
  local: {{}}
admin:
  disabled: true
",
        data = dir.join("data").display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    if let Err(problems) = config.validate() {
        panic!("{problems:?}");
    }
    config
}

/// The `sources.mqtt` block for `broker`, with short reconnect waits.
fn mqtt_block(broker: &Mosquitto, client_id: &str, extra: &str) -> String {
    let mut block = format!(
        "    host: 127.0.0.1\n    port: {}\n    client_id: {client_id}\n    topics: [devices/+/telemetry]\n    qos: 1\n    device_id_topic_level: 1\n    reconnect_initial: 100ms\n    reconnect_max: 1s\n",
        broker.port()
    );
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        block.push_str("    ");
        block.push_str(line);
        block.push('\n');
    }
    block
}

/// Waits until `condition` holds, failing with `what` after 20 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the MQTT source reports no problem (connected and subscribed).
async fn connected(service: &RunningService) {
    // The SUBACK arrives just after the CONNACK; give it a moment to be handled.
    eventually("the mqtt source is connected", || {
        service.status.source_problems().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
}

fn observations(service: &RunningService) -> u64 {
    service
        .local_store
        .as_ref()
        .unwrap()
        .counts()
        .unwrap()
        .observations
}

fn received(service: &RunningService) -> String {
    service
        .metrics
        .render()
        .lines()
        .find(|l| l.starts_with("iomt_messages_received_total{source=\"mqtt\"}"))
        .unwrap_or_default()
        .to_owned()
}

/// A publisher: how to reach the broker.
#[derive(Clone)]
struct Publisher {
    port: u16,
    credentials: Option<(String, String)>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Publisher {
    fn plain(broker: &Mosquitto) -> Publisher {
        Publisher {
            port: broker.port(),
            credentials: None,
            tls: None,
        }
    }

    /// Publishes each `(topic, body)` at QoS 1 and returns once the broker acknowledged all.
    async fn publish(&self, messages: &[(String, String)]) {
        let mut options = MqttOptions::new(
            format!("publisher-{}", std::process::id()),
            "127.0.0.1",
            self.port,
        );
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
                tls.clone(),
            )));
        }
        // Room for every request, so queuing them never waits for the event loop below.
        let (client, mut eventloop) = AsyncClient::new(options, messages.len() + 2);
        for (topic, body) in messages {
            let properties = PublishProperties {
                user_properties: vec![("sent-by".into(), "test-publisher".into())],
                ..Default::default()
            };
            client
                .publish_with_properties(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    false,
                    body.clone(),
                    properties,
                )
                .await
                .unwrap();
        }
        let mut acked = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while acked < messages.len() {
            let event = tokio::time::timeout_at(deadline, eventloop.poll())
                .await
                .expect("the broker acknowledged the publishes in time")
                .expect("the publisher's connection works");
            if let Event::Incoming(Packet::PubAck(_)) = event {
                acked += 1;
            }
        }
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
}

fn heart_rate(device: &str, patient: &str, minute: u32, rate: u32) -> (String, String) {
    (
        format!("devices/{device}/telemetry"),
        format!(
            r#"{{"heartRate":{rate},"patientId":"{patient}","at":"2026-11-26T08:{minute:02}:00Z"}}"#
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_messages_become_observations_with_the_device_id_from_the_topic() {
    let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), &mqtt_block(&broker, "iomt-basic", "")))
        .await
        .unwrap();
    connected(&service).await;

    let messages = vec![
        heart_rate("bedside-monitor-01", "patient-0001", 0, 78),
        heart_rate("bedside-monitor-01", "patient-0001", 1, 80),
        heart_rate("bedside-monitor-02", "patient-0002", 0, 64),
    ];
    Publisher::plain(&broker).publish(&messages).await;
    eventually("both devices' Observations are stored", || {
        observations(&service) >= 2
    })
    .await;
    let store = service.local_store.clone().unwrap();
    let devices = store
        .find_by_identifier("Device", None, "bedside-monitor-02")
        .unwrap();
    assert_eq!(
        devices.len(),
        1,
        "the device id came from the topic: {devices:?}"
    );
    assert_eq!(
        received(&service),
        "iomt_messages_received_total{source=\"mqtt\"} 3"
    );
    // Every record carries the topic and the publisher's user property for the mappings.
    let mut reader = service.log.reader("test-inspect").unwrap();
    let entries = reader
        .next_batch(10, Duration::from_millis(100))
        .await
        .unwrap();
    let event = iomt_runtime::event::DeviceEvent::from_record(&entries[0].record);
    assert!(event.properties.contains(&(
        "mqtt-topic".into(),
        "devices/bedside-monitor-01/telemetry".into()
    )));
    assert!(
        event
            .properties
            .contains(&("sent-by".into(), "test-publisher".into()))
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_refused_with_a_reason_and_the_right_one_works() {
    let Some(broker) =
        Mosquitto::start_unless_skipped(MosquittoOptions::default().user("iomt", "right-password"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let wrong = config(
        dir.path(),
        &mqtt_block(
            &broker,
            "iomt-auth",
            "username: iomt\npassword: {value: wrong-password}",
        ),
    );
    let mqtt = wrong.sources.mqtt.clone().unwrap();
    let error = iomt_runtime::ingest::mqtt::check_connection(&mqtt)
        .await
        .unwrap_err();
    // mosquitto 2.0 answers a wrong password with "not authorized" (0x87).
    assert!(
        error.to_string().contains("sources.mqtt.password"),
        "{error}"
    );

    let service = iomt_runtime::start(&wrong).await.unwrap();
    eventually("readiness names the refused credentials", || {
        service
            .status
            .readiness(false, None)
            .problems
            .iter()
            .any(|p| p.contains("source mqtt") && p.contains("sources.mqtt.password"))
    })
    .await;
    assert!(!service.status.readiness(false, None).ready);
    service.shutdown().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let right = config(
        dir.path(),
        &mqtt_block(
            &broker,
            "iomt-auth",
            "username: iomt\npassword: {value: right-password}",
        ),
    );
    iomt_runtime::ingest::mqtt::check_connection(right.sources.mqtt.as_ref().unwrap())
        .await
        .unwrap();
    let service = iomt_runtime::start(&right).await.unwrap();
    connected(&service).await;
    let publisher = Publisher {
        credentials: Some(("iomt".into(), "right-password".into())),
        ..Publisher::plain(&broker)
    };
    publisher
        .publish(&[heart_rate("bedside-monitor-01", "patient-0001", 0, 70)])
        .await;
    eventually("the Observation is stored", || observations(&service) == 1).await;
    service.shutdown().await.unwrap();
}

/// A throwaway PKI: a root CA, a server certificate for 127.0.0.1 and a client certificate.
struct Pki {
    dir: tempfile::TempDir,
    broker: MosquittoTls,
    client: Arc<rustls::ClientConfig>,
}

impl Pki {
    fn new() -> Pki {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "iomt test MQTT root CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        server
            .distinguished_name
            .push(DnType::CommonName, "mqtt.hospital.internal");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server.signed_by(&server_key, &ca).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client.distinguished_name.push(DnType::CommonName, "iomt");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client.signed_by(&client_key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("client.pem"), client_cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("client-key.pem"),
            client_key.serialize_pem(),
        )
        .unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![client_cert.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(rustls_pki_types::PrivatePkcs8KeyDer::from(
                    client_key.serialize_der(),
                )),
            )
            .unwrap();
        Pki {
            broker: MosquittoTls {
                ca_pem: ca.pem(),
                cert_pem: server_cert.pem(),
                key_pem: server_key.serialize_pem(),
                require_client_cert: true,
            },
            client: Arc::new(client_config),
            dir,
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_works() {
    let pki = Pki::new();
    let Some(broker) =
        Mosquitto::start_unless_skipped(MosquittoOptions::default().tls(pki.broker.clone()))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tls = format!(
        "tls:\n  ca_file: {}\n  cert_file: {}\n  key_file: {}",
        pki.path("ca.pem"),
        pki.path("client.pem"),
        pki.path("client-key.pem")
    );
    let config = config(dir.path(), &mqtt_block(&broker, "iomt-tls", &tls));
    iomt_runtime::ingest::mqtt::check_connection(config.sources.mqtt.as_ref().unwrap())
        .await
        .unwrap();

    // Without the client certificate the broker's TLS handshake refuses us, and readiness
    // says to look at the TLS settings.
    let dir_without = tempfile::tempdir().unwrap();
    let without = self::config(
        dir_without.path(),
        &mqtt_block(
            &broker,
            "iomt-tls-nocert",
            &format!("tls:\n  ca_file: {}", pki.path("ca.pem")),
        ),
    );
    let error =
        iomt_runtime::ingest::mqtt::check_connection(without.sources.mqtt.as_ref().unwrap())
            .await
            .unwrap_err();
    assert!(error.to_string().contains("sources.mqtt"), "{error}");

    let service = iomt_runtime::start(&config).await.unwrap();
    connected(&service).await;
    let publisher = Publisher {
        tls: Some(pki.client.clone()),
        ..Publisher::plain(&broker)
    };
    publisher
        .publish(&[heart_rate("bedside-monitor-09", "patient-0009", 0, 91)])
        .await;
    eventually("the Observation is stored", || observations(&service) == 1).await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_stopped_arrive_after_a_restart() {
    let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &mqtt_block(&broker, "iomt-persistent", ""));

    // The first run creates the persistent session (subscription kept by the broker).
    let service = iomt_runtime::start(&config).await.unwrap();
    connected(&service).await;
    service.shutdown().await.unwrap();

    let messages: Vec<(String, String)> = (0..5)
        .map(|i| heart_rate(&format!("offline-{i}"), &format!("patient-1{i}"), i, 60 + i))
        .collect();
    Publisher::plain(&broker).publish(&messages).await;

    let service = iomt_runtime::start(&config).await.unwrap();
    eventually("the queued messages are stored", || {
        observations(&service) == 5
    })
    .await;
    assert_eq!(
        received(&service),
        "iomt_messages_received_total{source=\"mqtt\"} 5"
    );
    service.shutdown().await.unwrap();

    // Acknowledged means gone from the broker: a third run receives nothing again.
    let service = iomt_runtime::start(&config).await.unwrap();
    connected(&service).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received(&service),
        "",
        "acknowledged messages were redelivered"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived_by_reconnecting_and_resubscribing() {
    let Some(mut broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(
        dir.path(),
        &mqtt_block(&broker, "iomt-restart", ""),
    ))
    .await
    .unwrap();
    connected(&service).await;

    // The test broker keeps no sessions across a restart, so only a new SUBSCRIBE brings
    // messages back.
    broker.restart().unwrap();
    eventually("the source noticed the lost connection", || {
        !service.status.source_problems().is_empty()
    })
    .await;
    connected(&service).await;
    Publisher::plain(&broker)
        .publish(&[heart_rate("bedside-monitor-03", "patient-0003", 0, 72)])
        .await;
    eventually("the Observation is stored", || observations(&service) == 1).await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_log_pauses_the_source_and_the_broker_keeps_the_rest() {
    let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let block = mqtt_block(&broker, "iomt-backpressure", "max_inflight: 2");
    // First run: the FHIR server is unreachable, so the log only grows; at 2 MiB it is full.
    let mut outage = config(dir.path(), &block);
    outage.destination = Some(iomt_runtime::config::DestinationConfig::Fhir(Box::new(
        iomt_fhir_client::FhirClientConfig::new("http://127.0.0.1:1/fhir"),
    )));
    outage.log.segment_size = 1 << 20;
    outage.log.max_size = 2 << 20;
    let service = iomt_runtime::start(&outage).await.unwrap();
    connected(&service).await;

    let pad = "x".repeat(200 << 10);
    let messages: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("devices/big-{i}/telemetry"),
                format!(
                    r#"{{"heartRate":{},"patientId":"patient-big-{i}","pad":"{pad}"}}"#,
                    60 + i
                ),
            )
        })
        .collect();
    let publisher = Publisher::plain(&broker);
    let published = tokio::spawn(async move { publisher.publish(&messages).await });
    eventually("readiness says the source is paused", || {
        service
            .status
            .readiness(false, None)
            .problems
            .iter()
            .any(|p| p.contains("source mqtt: paused"))
    })
    .await;
    published.await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let count = |line: String| -> u64 {
        line.rsplit(' ')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let first = count(received(&service));
    assert!(
        (10..20).contains(&first),
        "the source kept reading into a full log: {first} of 20 received"
    );
    service.shutdown().await.unwrap();

    // Second run, destination back: the log drains, the source resumes, and the broker hands
    // over what it kept. Every message ends as an Observation; none is lost.
    let mut local = config(dir.path(), &block);
    local.log.segment_size = 1 << 20;
    local.log.max_size = 2 << 20;
    let service = iomt_runtime::start(&local).await.unwrap();
    eventually("all 20 Observations are stored", || {
        observations(&service) == 20
    })
    .await;
    let second = count(received(&service));
    // What was not acknowledged while the log was full came from the broker in this run.
    assert!(
        first + second >= 20 && second > 0,
        "{first} received in the first run, {second} in the second"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_subscriptions_store_what_arrives() {
    let Some(broker) = Mosquitto::start_unless_skipped(MosquittoOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let block = mqtt_block(&broker, "iomt-qos0", "").replace("qos: 1", "qos: 0");
    let service = iomt_runtime::start(&config(dir.path(), &block))
        .await
        .unwrap();
    connected(&service).await;
    Publisher::plain(&broker)
        .publish(&[
            heart_rate("wearable-1", "patient-0101", 0, 70),
            heart_rate("wearable-2", "patient-0102", 0, 71),
        ])
        .await;
    eventually("both Observations are stored", || {
        observations(&service) == 2
    })
    .await;
    assert_eq!(
        received(&service),
        "iomt_messages_received_total{source=\"mqtt\"} 2"
    );
    service.shutdown().await.unwrap();
}

/// Regression: acknowledgements were queued with `try_ack` into a request queue sized for
/// `max_inflight`; under a burst (mosquitto sends more than the receive maximum) the queue
/// filled, acknowledgements were dropped, their in-flight slots at the broker were never freed,
/// and delivery stalled after about half of 20000 messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_delivered_completely() {
    let Some(broker) =
        Mosquitto::start_unless_skipped(MosquittoOptions::default().max_queued_messages(100_000))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), &mqtt_block(&broker, "iomt-burst", "")))
        .await
        .unwrap();
    connected(&service).await;
    let n = 10_000;
    let messages: Vec<(String, String)> = (0..n)
        .map(|i| {
            heart_rate(
                &format!("burst-{}", i % 50),
                &format!("patient-b{}", i % 50),
                0,
                60 + i % 40,
            )
        })
        .collect();
    Publisher::plain(&broker).publish(&messages).await;
    let expected = format!("iomt_messages_received_total{{source=\"mqtt\"}} {n}");
    eventually("every message of the burst is durable", || {
        received(&service) == expected
    })
    .await;
    service.shutdown().await.unwrap();
}
