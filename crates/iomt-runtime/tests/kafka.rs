//! The Kafka source and the scale-out roles against a real Kafka-protocol broker (tansu,
//! started on 127.0.0.1 by `iomt_testkit::Tansu`; no TLS or SASL there, so the Event Hubs
//! settings are covered by the unit tests of `kafka::config` only):
//! * role all: IoT-Hub-style messages on a 3-partition topic become Observations, and the
//!   group's committed offsets reach the end of every partition;
//! * a poison message is dead-lettered and its offset still committed;
//! * role normalize → normalized topic (keyed by device id, wire format) → role transform;
//! * two instances in one group split the partitions; after one stops, the other finishes
//!   everything, with no Observation lost or duplicated (on the real FHIR test server).
//!
//! Waits poll with deadlines; a broker quirk makes a rejoining member wait up to a minute for
//! partitions, so the hand-over test allows 120 s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iomt_fhir_client::{
    AuthConfig, ClientAuthMethod, FhirClientConfig, IdentityMode, Secret, SecretSource,
};
use iomt_model::Measurement;
use iomt_runtime::config::DestinationConfig;
use iomt_runtime::{PipelineConfig, RunningService};
use iomt_testkit::{FhirServer, FhirServerOptions, Tansu};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A configuration with the IoT Hub example mappings and the local store; `body` holds the
/// role, sources and scale_out blocks.
fn config(dir: &Path, body: &str) -> PipelineConfig {
    let examples = repo_root().join("examples/iothub");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
  reload_interval: 0s
pipeline:
  flush_interval: 200ms
destination:
  local: {{}}
admin:
  disabled: true
{body}
",
        data = dir.join("data").display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
    );
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    if let Err(problems) = config.validate() {
        panic!("{problems:?}");
    }
    config
}

fn kafka_source(broker: &Tansu, topic: &str, group: &str) -> String {
    format!(
        "sources:\n  kafka:\n    bootstrap_servers: {}\n    topics: [{topic}]\n    group_id: {group}\n",
        broker.bootstrap_servers()
    )
}

fn scale_out(broker: &Tansu, topic: &str) -> String {
    format!(
        "scale_out:\n  bootstrap_servers: {}\n  normalized_topic: {topic}\n",
        broker.bootstrap_servers()
    )
}

/// One device message as IoT Hub routes it: body, and the headers Event Hubs' Kafka endpoint
/// shows for the AMQP properties.
struct Sent {
    device: String,
    body: String,
    headers: Vec<(&'static str, String)>,
}

/// A heart rate of `device` at second `second` (5 s apart fill one hourly Observation).
fn heart_rate(device: &str, second: u32, rate: u32) -> Sent {
    let at = format!("2026-11-26T08:{:02}:{:02}Z", second / 60, second % 60);
    Sent {
        device: device.to_owned(),
        body: format!(r#"{{"heartRate":{rate},"patientId":"patient-{device}"}}"#),
        headers: vec![
            ("iothub-connection-device-id", device.to_owned()),
            ("iothub-creation-time-utc", at),
            ("iothub-message-source", "Telemetry".to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
    }
}

/// `count` heart rates for each of `devices` devices, starting at second `from`.
fn traffic(devices: usize, count: u32, from: u32) -> Vec<Sent> {
    let mut out = Vec::new();
    for i in 0..count {
        for d in 0..devices {
            out.push(heart_rate(&format!("monitor-{d:02}"), from + i * 5, 60 + i));
        }
    }
    out
}

/// Produces `messages` keyed by device id; returns the end offset of every partition written.
async fn produce(broker: &Tansu, topic: &str, messages: &[Sent]) -> BTreeMap<i32, i64> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut ends = BTreeMap::new();
    for m in messages {
        let mut headers = OwnedHeaders::new();
        for (name, value) in &m.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value.as_str()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(&m.device)
            .payload(&m.body)
            .headers(headers);
        let delivery = producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("the broker acknowledged the message");
        let end = ends.entry(delivery.partition).or_insert(0);
        *end = (*end).max(delivery.offset + 1);
    }
    ends
}

/// The group's committed offsets for `topic`'s `partitions`.
fn committed(broker: &Tansu, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", group)
        .create()
        .unwrap();
    let mut list = TopicPartitionList::new();
    for p in 0..partitions {
        list.add_partition(topic, p);
    }
    let Ok(list) = consumer.committed_offsets(list, Duration::from_secs(5)) else {
        return BTreeMap::new();
    };
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect()
}

async fn eventually(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every heart-rate Observation of the local store: device reference → sampled values.
fn local_heart_rates(service: &RunningService) -> BTreeMap<String, Vec<String>> {
    let mut out = Vec::new();
    service
        .local_store
        .as_ref()
        .unwrap()
        .export_ndjson(&mut out, &["Observation"])
        .unwrap();
    sampled_values(
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap()),
    )
}

/// Observation → (its id, the non-missing values of its sampled data).
fn sampled_values(observations: impl Iterator<Item = Value>) -> BTreeMap<String, Vec<String>> {
    observations
        .filter_map(|o| {
            let data = o["valueSampledData"]["data"].as_str()?.to_owned();
            let values = data
                .split(' ')
                .filter(|v| *v != "E" && !v.is_empty())
                .map(str::to_owned)
                .collect();
            Some((o["id"].as_str()?.to_owned(), values))
        })
        .collect()
}

/// Whether every Observation holds exactly `expected`, in time order.
fn all_hold(values: &BTreeMap<String, Vec<String>>, expected: &[f64]) -> bool {
    values.values().all(|v| {
        v.iter()
            .map(|x| x.parse::<f64>().unwrap())
            .collect::<Vec<_>>()
            == expected
    })
}

fn total(values: &BTreeMap<String, Vec<String>>) -> usize {
    values.values().map(Vec::len).sum()
}

fn metric(service: &RunningService, name: &str) -> f64 {
    service
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_all_turns_kafka_messages_into_observations_and_commits_to_the_end() {
    let Some(broker) = Tansu::start_unless_skipped() else {
        return;
    };
    broker.create_topic("devicedata", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(
        dir.path(),
        &kafka_source(&broker, "devicedata", "iomt-all"),
    ))
    .await
    .unwrap();

    let messages = traffic(6, 5, 0);
    let ends = produce(&broker, "devicedata", &messages).await;
    assert!(ends.len() > 1, "keys spread over partitions: {ends:?}");
    eventually("every value is stored", Duration::from_secs(60), || {
        total(&local_heart_rates(&service)) == messages.len()
    })
    .await;
    let stored = local_heart_rates(&service);
    assert_eq!(stored.len(), 6, "one hourly Observation per device");
    assert!(
        all_hold(&stored, &[60.0, 61.0, 62.0, 63.0, 64.0]),
        "{stored:?}"
    );
    // The device came from the iothub-connection-device-id header (a SystemProperty).
    let store = service.local_store.clone().unwrap();
    assert_eq!(
        store
            .find_by_identifier("Device", None, "monitor-03")
            .unwrap()
            .len(),
        1
    );
    eventually(
        "the committed offsets reach the end of every partition",
        Duration::from_secs(30),
        || committed(&broker, "iomt-all", "devicedata", 3) == ends,
    )
    .await;
    assert_eq!(
        metric(&service, "iomt_kafka_messages_consumed_total"),
        messages.len() as f64
    );
    assert!(
        service.status.source_problems().is_empty(),
        "{:?}",
        service.status.source_problems()
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_show_in_readiness() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(
        dir.path(),
        &format!(
            "sources:\n  kafka:\n    bootstrap_servers: 127.0.0.1:{port}\n    topics: [devicedata]\n    group_id: g\n"
        ),
    ))
    .await
    .unwrap();
    eventually(
        "readiness names the kafka source",
        Duration::from_secs(30),
        || {
            service
                .status
                .source_problems()
                .iter()
                .any(|(source, problem)| source == "kafka" && problem.contains("kafka"))
        },
    )
    .await;
    let readiness = service.status.readiness(false, None);
    assert!(!readiness.ready);
    assert!(
        readiness
            .problems
            .iter()
            .any(|p| p.starts_with("source kafka: ")),
        "{:?}",
        readiness.problems
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_and_its_offset_committed() {
    let Some(broker) = Tansu::start_unless_skipped() else {
        return;
    };
    broker.create_topic("devicedata", 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(
        dir.path(),
        &kafka_source(&broker, "devicedata", "iomt-poison"),
    ))
    .await
    .unwrap();
    let mut messages = traffic(1, 1, 0);
    messages.push(Sent {
        device: "monitor-00".into(),
        body: "{not json".into(),
        headers: vec![("iothub-connection-device-id", "monitor-00".into())],
    });
    messages.extend(traffic(1, 1, 5));
    let ends = produce(&broker, "devicedata", &messages).await;
    assert_eq!(ends, BTreeMap::from([(0, 3)]));
    eventually(
        "the poison message is dead-lettered",
        Duration::from_secs(60),
        || !service.dead_letters.counts().unwrap().is_empty(),
    )
    .await;
    let counts = service.dead_letters.counts().unwrap();
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts[0].0, "InvalidDataFormatException");
    assert_eq!(counts[0].2, 1);
    eventually(
        "both good values are stored",
        Duration::from_secs(30),
        || total(&local_heart_rates(&service)) == 2,
    )
    .await;
    eventually(
        "the offset after the poison message is committed",
        Duration::from_secs(30),
        || committed(&broker, "iomt-poison", "devicedata", 1) == ends,
    )
    .await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn normalize_writes_keyed_wire_format_measurements_that_transform_persists() {
    let Some(broker) = Tansu::start_unless_skipped() else {
        return;
    };
    broker.create_topic("devicedata", 3).unwrap();
    broker.create_topic("normalizeddata", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let normalize = iomt_runtime::start(&config(
        &dir.path().join("normalize"),
        &format!(
            "role: normalize\n{}{}",
            kafka_source(&broker, "devicedata", "iomt-normalize"),
            scale_out(&broker, "normalizeddata")
        ),
    ))
    .await
    .unwrap();
    assert!(
        normalize.local_store.is_none(),
        "role normalize persists nothing"
    );
    let transform = iomt_runtime::start(&config(
        &dir.path().join("transform"),
        &format!("role: transform\n{}", scale_out(&broker, "normalizeddata")),
    ))
    .await
    .unwrap();

    let messages = traffic(6, 4, 0);
    produce(&broker, "devicedata", &messages).await;
    eventually(
        "every value is stored by the transform instance",
        Duration::from_secs(60),
        || total(&local_heart_rates(&transform)) == messages.len(),
    )
    .await;
    let stored = local_heart_rates(&transform);
    assert_eq!(stored.len(), 6, "{stored:?}");
    assert!(all_hold(&stored, &[60.0, 61.0, 62.0, 63.0]), "{stored:?}");
    assert_eq!(
        metric(&normalize, "iomt_kafka_messages_produced_total"),
        messages.len() as f64
    );

    // The normalized topic holds one wire-format measurement per message, keyed by device id,
    // each device on one partition.
    let reader: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "test-reader")
        .set("session.timeout.ms", "6000")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    reader.subscribe(&["normalizeddata"]).unwrap();
    let mut partitions: BTreeMap<String, std::collections::BTreeSet<i32>> = BTreeMap::new();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < messages.len() {
        assert!(Instant::now() < deadline, "read {read} normalized messages");
        let Some(message) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let key = std::str::from_utf8(message.key().unwrap())
            .unwrap()
            .to_owned();
        let m =
            Measurement::from_wire_json(std::str::from_utf8(message.payload().unwrap()).unwrap())
                .unwrap();
        assert_eq!(m.device_id, key);
        assert_eq!(m.type_name, "heartrate");
        partitions
            .entry(key)
            .or_default()
            .insert(message.partition());
        read += 1;
    }
    assert_eq!(partitions.len(), 6);
    assert!(partitions.values().all(|p| p.len() == 1), "{partitions:?}");

    normalize.shutdown().await.unwrap();
    transform.shutdown().await.unwrap();
}

fn fhir_config(server: &FhirServer) -> FhirClientConfig {
    let mut config = FhirClientConfig::new(server.base_url());
    config.auth = AuthConfig::ClientCredentials {
        token_url: server.token_url(),
        client_id: server.client().client_id.clone(),
        client_secret: SecretSource::Value(Secret::new(server.client().client_secret.clone())),
        scope: Some("system/*.*".into()),
        resource: None,
        client_auth: ClientAuthMethod::ClientSecretPost,
        refresh_before_expiry: Duration::from_secs(60),
    };
    config.identity.mode = IdentityMode::Create;
    config.identity.default_device_identifier_system = Some("urn:iomt:test".into());
    config
}

fn server_heart_rates(server: &FhirServer) -> BTreeMap<String, Vec<String>> {
    let token = server.fetch_token().unwrap();
    let mut response = server
        .agent()
        .get(&server.url("Observation?_count=1000"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let bundle: Value = response.body_mut().read_json().unwrap();
    let entries = bundle["entry"].as_array().cloned().unwrap_or_default();
    sampled_values(entries.into_iter().map(|e| e["resource"].clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_split_partitions_and_one_finishes_after_the_other_stops() {
    let Some(broker) = Tansu::start_unless_skipped() else {
        return;
    };
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    broker.create_topic("devicedata", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let instance = |name: &str| {
        let mut c = config(
            &dir.path().join(name),
            &kafka_source(&broker, "devicedata", "iomt-shared"),
        );
        c.destination = Some(DestinationConfig::Fhir(Box::new(fhir_config(&server))));
        c
    };
    let first = iomt_runtime::start(&instance("a")).await.unwrap();
    let second = iomt_runtime::start(&instance("b")).await.unwrap();
    let owned = |s: &RunningService| metric(s, "iomt_kafka_assigned_partitions");
    eventually(
        "the two members share the three partitions",
        Duration::from_secs(120),
        || owned(&first) >= 1.0 && owned(&second) >= 1.0 && owned(&first) + owned(&second) == 3.0,
    )
    .await;

    let devices = 12;
    let early = traffic(devices, 3, 0);
    let mut ends = produce(&broker, "devicedata", &early).await;
    eventually(
        "the first traffic is stored",
        Duration::from_secs(60),
        || total(&server_heart_rates(&server)) == early.len(),
    )
    .await;
    let consumed = |s: &RunningService| metric(s, "iomt_kafka_messages_consumed_total");
    assert!(
        consumed(&first) > 0.0 && consumed(&second) > 0.0,
        "both members read: {} and {}",
        consumed(&first),
        consumed(&second)
    );

    // More traffic, then one member leaves while it may be in the middle of it.
    let late = traffic(devices, 3, 15);
    for (p, end) in produce(&broker, "devicedata", &late).await {
        ends.insert(p, end);
    }
    first.shutdown().await.unwrap();
    eventually(
        "the remaining member stores everything",
        Duration::from_secs(120),
        || total(&server_heart_rates(&server)) == early.len() + late.len(),
    )
    .await;
    let stored = server_heart_rates(&server);
    assert_eq!(
        stored.len(),
        devices,
        "one Observation per device: {stored:?}"
    );
    assert!(
        all_hold(&stored, &[60.0, 61.0, 62.0, 60.0, 61.0, 62.0]),
        "{stored:?}"
    );
    eventually(
        "the group's offsets reach the end",
        Duration::from_secs(60),
        || committed(&broker, "iomt-shared", "devicedata", 3) == ends,
    )
    .await;
    second.shutdown().await.unwrap();
}
