//! Scale-out: several `iomt` processes share a Kafka topic in one consumer group, one of them
//! is killed with SIGKILL while devices send and started again, and at the end every reading is
//! in the FHIR server exactly once: one hour Observation per device, each holding every reading
//! at its slot, none duplicated, none lost.
//!
//! Real components only, all on 127.0.0.1: the `iomt` binary, the tansu Kafka-protocol broker
//! (`iomt_testkit::Tansu`) and the FHIR test server (`iomt_testkit::FhirServer`).
//!
//! Why this shows window state survives a rebalance: an hour Observation is built from many
//! batches on several instances. A batch's offsets are committed only after its merge is on the
//! server, so the partitions a killed instance held are read again by their new owner from the
//! last commit, and merging the same readings again changes nothing (deterministic ids,
//! idempotent merges). A lost or doubled merge would show as a missing slot or a second
//! Observation.
//!
//! tansu sometimes gives a restarted group member no partitions for 25–60 s (see
//! `docs/sources.md`), so the waits here are long; they are deadlines, never sleeps that make
//! a test pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iomt_testkit::{FhirServer, FhirServerOptions, Tansu};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

const RAW_TOPIC: &str = "device-messages";
const NORMALIZED_TOPIC: &str = "normalized-measurements";
const DEVICES: usize = 12;
/// Readings per device per wave; three waves.
const READINGS_PER_WAVE: usize = 20;

/// One instance's configuration: `role`, reading the raw topic (roles all and normalize) or the
/// normalized one (transform), persisting to the FHIR server (all and transform).
fn write_config(
    dir: &Path,
    name: &str,
    role: &str,
    server: &FhirServer,
    broker: &Tansu,
) -> PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wearable");
    let sources = if role == "transform" {
        String::new()
    } else {
        format!(
            "sources:\n  kafka:\n    bootstrap_servers: {bootstrap}\n    topics: [{RAW_TOPIC}]\n    \
             group_id: iomt-scale-out-test\n",
            bootstrap = broker.bootstrap_servers()
        )
    };
    let scale_out = if role == "all" {
        String::new()
    } else {
        format!(
            "scale_out:\n  bootstrap_servers: {bootstrap}\n  normalized_topic: {NORMALIZED_TOPIC}\n",
            bootstrap = broker.bootstrap_servers()
        )
    };
    let text = format!(
        "version: 1
role: {role}
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
{sources}{scale_out}pipeline:
  flush_interval: 200ms
destination:
  fhir:
    base_url: {base}
    auth:
      type: client_credentials
      token_url: {token}
      client_id: {client}
      client_secret: {{value: {secret}}}
      scope: system/*.*
    retry: {{initial_backoff: 50ms, max_backoff: 500ms}}
    identity: {{mode: create}}
admin:
  disabled: true
",
        data = dir.join(format!("data-{name}")).display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
        base = server.base_url(),
        token = server.token_url(),
        client = server.client().client_id,
        secret = server.client().client_secret,
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A running `iomt run --config …` process.
struct Instance {
    config: PathBuf,
    child: Option<Child>,
}

impl Instance {
    fn start(config: PathBuf) -> Instance {
        let mut instance = Instance {
            config,
            child: None,
        };
        instance.spawn();
        instance
    }

    fn spawn(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_iomt"))
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown, no flush, no commit.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The heart rate a device sends at `second` of the hour (distinct per device and second, so
/// a value in the wrong slot or the wrong Observation is caught).
fn heart_rate(device: usize, second: usize) -> usize {
    40 + (device * 7 + second) % 120
}

fn device_id(device: usize) -> String {
    format!("scale-dev-{device:02}")
}

/// Produces wave `wave` (readings at seconds `wave * READINGS_PER_WAVE ..`), keyed by device.
async fn produce_wave(producer: &FutureProducer, wave: usize) {
    let mut messages = Vec::new();
    for device in 0..DEVICES {
        for i in 0..READINGS_PER_WAVE {
            let second = wave * READINGS_PER_WAVE + i;
            let body = format!(
                r#"{{"deviceId":"{id}","patientId":"scale-patient-{device:02}","endDate":"2026-11-26T06:{m:02}:{s:02}Z","heartRate":{hr}}}"#,
                id = device_id(device),
                m = second / 60,
                s = second % 60,
                hr = heart_rate(device, second),
            );
            messages.push((device_id(device), body));
        }
    }
    let deliveries: Vec<_> = messages
        .iter()
        .map(|(key, body)| {
            producer
                .send_result(FutureRecord::to(RAW_TOPIC).key(key).payload(body))
                .expect("queued")
        })
        .collect();
    for delivery in deliveries {
        delivery
            .await
            .expect("delivery answered")
            .expect("the broker acknowledged the message");
    }
}

/// Every heart-rate Observation on the server: (device identifier value, SampledData data).
fn heart_rate_observations(server: &FhirServer) -> Vec<(String, String)> {
    let token = server.fetch_token().unwrap();
    let mut out = Vec::new();
    loop {
        let url = server.url(&format!(
            "Observation?code=8867-4&_count=200&_offset={}",
            out.len()
        ));
        let mut response = server
            .agent()
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let bundle: serde_json::Value = response.body_mut().read_json().unwrap();
        let page: Vec<(String, String)> = bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        let r = &e["resource"];
                        (
                            r["device"]["reference"].as_str().unwrap_or("").to_owned(),
                            r["valueSampledData"]["data"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let done = page.len() < 200;
        out.extend(page);
        if done {
            return out;
        }
    }
}

/// The readings in a SampledData `data` string: slot → value (`E` slots left out).
fn slots(data: &str) -> BTreeMap<usize, String> {
    data.split(' ')
        .enumerate()
        .filter(|(_, v)| *v != "E")
        .map(|(i, v)| (i, v.to_owned()))
        .collect()
}

/// What the server must hold at the end: per device, slot → heart rate.
fn expected(waves: usize) -> Vec<BTreeMap<usize, String>> {
    (0..DEVICES)
        .map(|device| {
            (0..waves * READINGS_PER_WAVE)
                .map(|second| (second, heart_rate(device, second).to_string()))
                .collect()
        })
        .collect()
}

/// Waits until the server holds exactly [`expected`]; fails with what differs.
fn wait_until_complete(server: &FhirServer, waves: usize, within: Duration) {
    let mut want: Vec<BTreeMap<usize, String>> = expected(waves);
    want.sort();
    let deadline = Instant::now() + within;
    loop {
        let observations = heart_rate_observations(server);
        let mut have: Vec<BTreeMap<usize, String>> =
            observations.iter().map(|(_, data)| slots(data)).collect();
        have.sort();
        if have == want {
            return;
        }
        if Instant::now() > deadline {
            let filled: usize = have.iter().map(BTreeMap::len).sum();
            panic!(
                "after {within:?}: {} heart-rate Observations holding {filled} readings; \
                 want {} Observations holding {} readings, one per device",
                have.len(),
                want.len(),
                DEVICES * waves * READINGS_PER_WAVE
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn producer(broker: &Tansu) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer")
}

/// Three instances of `role` share the raw topic (roles all and normalize) or the normalized
/// topic (transform, fed by one normalize instance); one is killed between waves and restarted.
/// One scenario at a time: each starts a broker, a FHIR server and four or five `iomt`
/// processes, which is all a 2-core machine should run at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn three_instances_survive_a_kill(role: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(broker) = Tansu::start_unless_skipped() else {
        return;
    };
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    broker.create_topic(RAW_TOPIC, 6).unwrap();
    broker.create_topic(NORMALIZED_TOPIC, 6).unwrap();
    let dir = tempfile::tempdir().unwrap();

    // The instances under test, plus whatever completes the pipeline for their role.
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| {
            Instance::start(write_config(
                dir.path(),
                &format!("{role}-{i}"),
                role,
                &server,
                &broker,
            ))
        })
        .collect();
    let _partners: Vec<Instance> = match role {
        "normalize" => vec![Instance::start(write_config(
            dir.path(),
            "transform-partner",
            "transform",
            &server,
            &broker,
        ))],
        "transform" => vec![Instance::start(write_config(
            dir.path(),
            "normalize-partner",
            "normalize",
            &server,
            &broker,
        ))],
        _ => Vec::new(),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer = producer(&broker);

    runtime.block_on(produce_wave(&producer, 0));
    wait_until_complete(&server, 1, Duration::from_secs(120));

    // Kill one instance while the next wave is in flight; the others take its partitions.
    runtime.block_on(produce_wave(&producer, 1));
    instances[1].kill();
    wait_until_complete(&server, 2, Duration::from_secs(180));

    // Restart it: the group rebalances again while the last wave arrives.
    instances[1].spawn();
    runtime.block_on(produce_wave(&producer, 2));
    wait_until_complete(&server, 3, Duration::from_secs(180));

    let observations = heart_rate_observations(&server);
    assert_eq!(observations.len(), DEVICES, "one Observation per device");
    let mut devices: Vec<&String> = observations.iter().map(|(d, _)| d).collect();
    devices.sort();
    devices.dedup();
    assert_eq!(
        devices.len(),
        DEVICES,
        "each device's Observation is its own"
    );
}

#[test]
fn three_all_instances_share_the_device_topic_across_a_kill() {
    three_instances_survive_a_kill("all");
}

#[test]
fn three_normalize_instances_share_the_device_topic_across_a_kill() {
    three_instances_survive_a_kill("normalize");
}

#[test]
fn three_transform_instances_share_the_normalized_topic_across_a_kill() {
    three_instances_survive_a_kill("transform");
}
