//! Benchmark of the broker sources (not a timed test), issue 6:
//! 1. **Kafka → normalize → normalized topic**, with one and with two instances (role
//!    `normalize`, each in its own service in this process, one consumer group): `messages`
//!    wearable messages (default 200,000) are produced to a 6-partition raw topic first, then the
//!    instances start; the figure is messages per second from their start until every message's
//!    measurements are acknowledged by the broker on the normalized topic.
//! 2. **MQTT → local store**, end to end: a publisher sends `messages` wearable messages at QoS 1
//!    to mosquitto as fast as the broker acknowledges them; the service's MQTT source appends
//!    them to its durable log (fsync on) and acknowledges each once durable; the pipeline
//!    normalizes, groups and writes them to the local FHIR store. The figure is messages per
//!    second from the first publish until the pipeline's checkpoint passes the last message.
//!
//! Brokers: tansu 0.6.0 (in-memory storage; `iomt_testkit::Tansu`) and Debian's mosquitto
//! 2.0.11 (`iomt_testkit::Mosquitto`), both on 127.0.0.1, on the same 2 cores as the service.
//!
//! `cargo bench -p iomt-runtime --bench sources` (arguments: `-- --messages N --devices N`).

use std::path::Path;
use std::time::{Duration, Instant};

use iomt_runtime::PipelineConfig;

mod common;
use common::{arg, fleet};
use iomt_testkit::{Mosquitto, MosquittoOptions, Tansu};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

#[global_allocator]
static GLOBAL: iomt_alloc::MiMalloc = iomt_alloc::MiMalloc;

const RAW_TOPIC: &str = "bench-device-messages";
const NORMALIZED_TOPIC: &str = "bench-normalized";
const PARTITIONS: u32 = 6;

fn load(dir: &Path, body: &str) -> PipelineConfig {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wearable");
    let text = format!(
        "version: 1\ndata_dir: {data}\nmappings:\n  device: {device}\n  fhir: {fhir}\n  reload_interval: 0s\n{body}admin:\n  disabled: true\n",
        data = dir.display(),
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

/// Device id of a wearable message body (the simulator's stable ids), for the message key.
fn device_key(body: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap();
    value["deviceId"].as_str().unwrap_or_default().to_owned()
}

async fn produce_raw(broker: &Tansu, messages: usize, devices: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let mut fleet = fleet(devices, 3);
    let mut clock = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
        .unwrap()
        .to_utc();
    let mut left = messages;
    while left > 0 {
        let chunk: Vec<(String, Vec<u8>)> = (0..left.min(10_000))
            .map(|_| {
                clock += chrono::TimeDelta::milliseconds(2);
                let body = fleet.next_message(clock).body.to_vec();
                (device_key(&body), body)
            })
            .collect();
        left -= chunk.len();
        let pending: Vec<_> = chunk
            .iter()
            .map(|(key, body)| {
                producer
                    .send_result(FutureRecord::to(RAW_TOPIC).key(key).payload(body))
                    .unwrap()
            })
            .collect();
        for p in pending {
            p.await.unwrap().unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

async fn kafka_normalize(messages: usize, devices: usize, instances: usize) {
    let broker = Tansu::start().expect("tansu");
    broker.create_topic(RAW_TOPIC, PARTITIONS).unwrap();
    broker.create_topic(NORMALIZED_TOPIC, PARTITIONS).unwrap();
    produce_raw(&broker, messages, devices).await;
    let dirs: Vec<tempfile::TempDir> = (0..instances)
        .map(|_| tempfile::tempdir().unwrap())
        .collect();
    let block = format!(
        "role: normalize\nsources:\n  kafka:\n    bootstrap_servers: {b}\n    topics: [{RAW_TOPIC}]\n    group_id: bench-normalize\nscale_out:\n  bootstrap_servers: {b}\n  normalized_topic: {NORMALIZED_TOPIC}\npipeline:\n  flush_interval: 200ms\n",
        b = broker.bootstrap_servers()
    );
    let started = Instant::now();
    let mut services = Vec::new();
    for dir in &dirs {
        services.push(
            iomt_runtime::start(&load(dir.path(), &block))
                .await
                .unwrap(),
        );
    }
    // Done when every message is normalized and every measurement acknowledged by the broker.
    let done = |services: &[iomt_runtime::RunningService]| -> bool {
        let sum = |f: &dyn Fn(&iomt_runtime::metrics::Metrics) -> u64| -> u64 {
            services.iter().map(|s| f(&s.metrics)).sum()
        };
        sum(&|m| m.messages_normalized.get()) >= messages as u64
            && sum(&|m| m.kafka_messages_produced.get()) >= sum(&|m| m.measurements.get())
    };
    while !done(&services) {
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "normalize did not finish"
        );
    }
    let elapsed = started.elapsed();
    println!(
        "kafka normalize, {instances} instance(s): {messages} messages from {devices} devices in {:.2} s = {:.0} messages/s (tansu, {PARTITIONS} partitions, in-memory storage, idempotent producer, acks=all)",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64()
    );
    for s in services {
        s.shutdown().await.unwrap();
    }
}

async fn mqtt_to_local_store(messages: usize, devices: usize) {
    let broker = Mosquitto::start(MosquittoOptions::default()).expect("mosquitto");
    let dir = tempfile::tempdir().unwrap();
    let block = format!(
        "sources:\n  mqtt:\n    host: 127.0.0.1\n    port: {}\n    client_id: iomt-bench\n    topics: [devices/+/telemetry]\n    qos: 1\n    device_id_topic_level: 1\ndestination:\n  local: {{}}\n",
        broker.port()
    );
    let service = iomt_runtime::start(&load(dir.path(), &block))
        .await
        .unwrap();
    // Wait for the subscription before publishing (no retained messages at QoS 1 otherwise).
    let ready = Instant::now();
    while !service.status.source_problems().is_empty() {
        assert!(
            ready.elapsed() < Duration::from_secs(20),
            "mqtt source did not connect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut options =
        rumqttc::v5::MqttOptions::new("iomt-bench-publisher", "127.0.0.1", broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, 1024);
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0u64);
    let poller = tokio::spawn(async move {
        let mut acked = 0u64;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_))) => {
                    acked += 1;
                    let _ = acked_tx.send(acked);
                }
                Ok(_) => {}
                Err(e) => panic!("publisher connection failed: {e}"),
            }
        }
    });
    let started = Instant::now();
    let mut fleet = fleet(devices, 5);
    let mut clock = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
        .unwrap()
        .to_utc();
    for _ in 0..messages {
        clock += chrono::TimeDelta::milliseconds(2);
        let body = fleet.next_message(clock).body;
        let topic = format!("devices/{}/telemetry", device_key(&body));
        client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                false,
                body.to_vec(),
            )
            .await
            .unwrap();
    }
    acked_rx.wait_for(|n| *n >= messages as u64).await.unwrap();
    let published = started.elapsed();
    let end = service.log.stats().end_offset;
    while service.status.checkpoint() < end {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    poller.abort();
    let counts = service.local_store.clone().unwrap().counts().unwrap();
    println!(
        "mqtt to local store: {messages} messages from {devices} devices in {:.2} s = {:.0} messages/s end to end (published and acknowledged at QoS 1 at {:.0}/s); {} observations in the store (mosquitto 2.0.11, one publisher, QoS 1)",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        messages as f64 / published.as_secs_f64(),
        counts.observations,
    );
    service.shutdown().await.unwrap();
}

fn main() {
    iomt_alloc::configure();
    let quick = !std::env::args().any(|a| a == "--bench");
    let messages = arg("--messages", if quick { 2_000 } else { 200_000 });
    let devices = arg("--devices", if quick { 200 } else { 10_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if Tansu::skip_requested() || Mosquitto::skip_requested() {
        eprintln!("IOMT_SKIP_KAFKA or IOMT_SKIP_MQTT set: skipping the sources benchmark");
        return;
    }
    runtime.block_on(kafka_normalize(messages, devices, 1));
    runtime.block_on(kafka_normalize(messages, devices, 2));
    runtime.block_on(mqtt_to_local_store(messages, devices));
}
