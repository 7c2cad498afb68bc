//! `iomt replay` as users run it, against the real service (in-process, local store, HTTP
//! source on 127.0.0.1): NDJSON with a bad line through the HTTP source, straight into the
//! durable log and then found by a service run (and refused while the service holds the log),
//! a dead-letter export replayed with its original message, and IoT Hub envelopes replayed
//! through a real MQTT broker (mosquitto) to each device's topic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use iomt_runtime::{PipelineConfig, RunningService};
use iomt_store::DeadLetterFilter;

const API_KEY: &str = "replay-test-key-0123456789";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The wearable pipeline: HTTP source with a key, local store, no admin listener.
fn config(dir: &Path) -> PipelineConfig {
    let examples = repo_root().join("examples/wearable");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
  reload_interval: 0s
sources:
  http:
    listen: 127.0.0.1:0
    auth:
      api_keys: [{{value: {API_KEY}}}]
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
    config.validate().unwrap();
    config
}

/// Runs the `iomt` binary (blocking: call from `spawn_blocking` inside a runtime).
fn iomt(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(args)
        .current_dir(repo_root())
        .env("IOMT_API_KEY", API_KEY)
        .stdin(Stdio::null())
        .output()
        .expect("iomt runs")
}

async fn iomt_async(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || iomt(&args.iter().map(String::as_str).collect::<Vec<_>>()))
        .await
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `count` simulated wearable messages (seeded), one per line.
fn simulated(count: u32, extra: &[&str]) -> Vec<String> {
    let count = count.to_string();
    let mut args = vec![
        "simulate", "--output", "-", "--seed", "7", "--rate", "1", "--count", &count,
    ];
    args.extend_from_slice(extra);
    let out = iomt(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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

fn received(service: &RunningService, source: &str) -> u64 {
    let prefix = format!("iomt_messages_received_total{{source=\"{source}\"}} ");
    service
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_with_a_bad_line_goes_through_the_http_source() {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path())).await.unwrap();
    let mut lines = simulated(20, &[]);
    lines.insert(4, r#"{"deviceId": "broken""#.to_owned());
    lines.insert(9, String::new());
    let file = dir.path().join("messages.ndjson");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let target = format!("http://{}", service.http_addr.unwrap());
    let out = iomt_async(vec![
        "replay".into(),
        file.display().to_string(),
        "--target".into(),
        target,
        "--rate".into(),
        "200/s".into(),
    ])
    .await;
    let report = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a bad line fails the run: {report}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("lines     21 read, 1 bad"), "{report}");
    assert!(stdout.contains("  line 5: not JSON"), "{report}");
    assert!(stdout.contains("accepted  20\n"), "{report}");
    assert!(stdout.contains("rejected  0"), "{report}");

    eventually("the 20 messages were received", || {
        received(&service, "http") == 20
    })
    .await;
    eventually("observations were stored", || observations(&service) > 0).await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_log_is_found_by_the_next_service_run_and_refused_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let file = dir.path().join("messages.ndjson");
    std::fs::write(&file, simulated(12, &[]).join("\n") + "\n").unwrap();
    let data = dir.path().join("data");

    let out = iomt_async(vec![
        "replay".into(),
        file.display().to_string(),
        "--into-log".into(),
        data.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("accepted  12\n"),
        "{}",
        text(&out)
    );

    let service = iomt_runtime::start(&config).await.unwrap();
    eventually("the replayed messages became observations", || {
        observations(&service) > 0
    })
    .await;
    assert_eq!(received(&service, "http"), 0, "nothing came over HTTP");

    let out = iomt_async(vec![
        "replay".into(),
        file.display().to_string(),
        "--into-log".into(),
        data.display().to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is locked: the service is running") && stderr.contains("--target http://"),
        "{}",
        text(&out)
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_export_replays_the_original_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let service = iomt_runtime::start(&config).await.unwrap();
    let target = format!("http://{}", service.http_addr.unwrap());

    // Bad on purpose: each fails normalization and is dead-lettered with its message. Those
    // cut short are not JSON, which replay reports as bad lines: keep the others.
    let lines: Vec<String> = simulated(12, &["--bad-rate", "1"])
        .into_iter()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .take(3)
        .collect();
    assert_eq!(lines.len(), 3, "enough bad messages that are JSON");
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, lines.join("\n") + "\n").unwrap();
    let out = iomt_async(vec![
        "replay".into(),
        bad.display().to_string(),
        "--target".into(),
        target.clone(),
    ])
    .await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("accepted  3\n"),
        "{}",
        text(&out)
    );
    let store = service.dead_letters.clone();
    eventually("three dead letters", || {
        store.list(&DeadLetterFilter::default()).unwrap().len() == 3
    })
    .await;
    let first = store.list(&DeadLetterFilter::default()).unwrap()[0].id;
    let original = store.get(first).unwrap().unwrap();

    // The export as users make it: `iomt dead-letter show`, compacted to one line.
    let out = iomt_async(vec![
        "dead-letter".into(),
        "show".into(),
        "--config".into(),
        dir.path().join("pipeline.yaml").display().to_string(),
        first.to_string(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let entry: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let export = dir.path().join("export.ndjson");
    std::fs::write(&export, format!("{entry}\n")).unwrap();

    let out = iomt_async(vec![
        "replay".into(),
        export.display().to_string(),
        "--target".into(),
        target,
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("accepted  1\n"),
        "{}",
        text(&out)
    );
    // Still bad, so dead-lettered again: the same bytes and the same properties arrived.
    eventually("a fourth dead letter", || {
        store.list(&DeadLetterFilter::default()).unwrap().len() == 4
    })
    .await;
    let last = store.list(&DeadLetterFilter::default()).unwrap()[3].id;
    let replayed = store.get(last).unwrap().unwrap();
    assert_eq!(replayed.payload, original.payload);
    let properties = |h: &[(String, String)]| -> Vec<(String, String)> {
        h.iter()
            .filter(|(n, _)| n.starts_with("p:"))
            .cloned()
            .collect()
    };
    assert_eq!(properties(&replayed.headers), properties(&original.headers));
    assert_eq!(replayed.class, original.class);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_replay_through_mqtt_to_each_devices_topic() {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};

    let Some(broker) = iomt_testkit::Mosquitto::start_unless_skipped(Default::default()) else {
        return;
    };
    let mut options = MqttOptions::new("replay-test-subscriber", "127.0.0.1", broker.port());
    options.set_clean_start(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("replayed/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("the broker answers")
            .expect("the subscriber connects");
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }

    // IoT Hub envelopes: the device id is only in the system properties.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envelopes.ndjson");
    std::fs::write(
        &file,
        simulated(9, &["--shape", "iot-hub", "--devices", "3"]).join("\n") + "\n",
    )
    .unwrap();
    let out = iomt_async(vec![
        "replay".into(),
        file.display().to_string(),
        "--target".into(),
        format!("mqtt://127.0.0.1:{}/replayed", broker.port()),
    ])
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("accepted  9\n"),
        "{}",
        text(&out)
    );

    let mut topics = std::collections::BTreeMap::<String, usize>::new();
    while topics.values().sum::<usize>() < 9 {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("the replayed messages arrive")
            .expect("the subscriber stays connected");
        if let Event::Incoming(Packet::Publish(publish)) = event {
            let body: serde_json::Value = serde_json::from_slice(&publish.payload).unwrap();
            assert!(
                body.get("Body").is_none(),
                "the body, not the envelope: {body}"
            );
            let properties = publish.properties.unwrap().user_properties;
            assert!(
                properties
                    .iter()
                    .any(|(name, _)| name == "iothub-creation-time-utc"),
                "{properties:?}"
            );
            *topics
                .entry(String::from_utf8_lossy(&publish.topic).into_owned())
                .or_default() += 1;
        }
    }
    assert_eq!(
        topics.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "replayed/sim-0001",
            "replayed/sim-0002",
            "replayed/sim-0003"
        ]
    );
}
