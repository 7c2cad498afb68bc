//! The service end to end on loopback: HTTP ingest → durable log → pipeline → local FHIR store
//! and dead-letter store, with the admin API.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iomt_runtime::{PipelineConfig, RunningService};
use iomt_store::{DeadLetterFilter, Stage};

const API_KEY: &str = "test-key-0123456789abcdef";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(dir: &Path, extra: &str) -> PipelineConfig {
    let examples = repo_root().join("examples/wearable");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
  reload_interval: 100ms
sources:
  http:
    listen: 127.0.0.1:0
    max_body: 64KiB
    auth:
      api_keys: [{{value: {API_KEY}}}]
pipeline:
  flush_interval: 100ms
  keep_unmatched: true
destination:
  local: {{}}
admin:
  listen: 127.0.0.1:0
  auth:
    api_keys: [{{value: {API_KEY}}}]
{extra}",
        data = dir.display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    config.validate().unwrap();
    config
}

async fn post(
    service: &RunningService,
    path: &str,
    body: &str,
    content_type: &str,
    key: Option<&str>,
) -> (u16, serde_json::Value) {
    let url = format!("http://{}{path}", service.http_addr.unwrap());
    let body = body.to_owned();
    let content_type = content_type.to_owned();
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut request = agent.post(&url).header("content-type", &content_type);
        if let Some(key) = key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let mut response = request.send(body.as_bytes()).unwrap();
        let status = response.status().as_u16();
        let value = response
            .body_mut()
            .read_json::<serde_json::Value>()
            .unwrap_or_default();
        (status, value)
    })
    .await
    .unwrap()
}

/// Posts `body` as NDJSON with the API key, requires the 202 of a durable append and returns
/// the answer.
async fn ingest_ndjson(service: &RunningService, body: &str) -> serde_json::Value {
    let (status, answer) = post(
        service,
        "/v1/messages",
        body,
        "application/x-ndjson",
        Some(API_KEY),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    answer
}

async fn admin_get(service: &RunningService, path: &str, key: Option<&str>) -> (u16, String) {
    let url = format!("http://{}{path}", service.admin_addr.unwrap());
    let key = key.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        let mut request = agent.get(&url);
        if let Some(key) = key {
            request = request.header("authorization", &format!("Bearer {key}"));
        }
        let mut response = request.call().unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.body_mut().read_to_string().unwrap_or_default(),
        )
    })
    .await
    .unwrap()
}

/// Waits until the pipeline has handled everything in the log.
/// How many Observations the service's local store holds.
fn stored_observations(service: &RunningService) -> u64 {
    let store = service.local_store.as_ref().expect("a local store");
    store.counts().unwrap().observations
}

async fn caught_up(service: &RunningService) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let end = service.log.stats().end_offset;
        if end > 0 && service.status.checkpoint() >= end {
            return;
        }
        assert!(Instant::now() < deadline, "pipeline did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_land_as_observations_and_failures_as_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), "")).await.unwrap();
    let messages =
        std::fs::read_to_string(repo_root().join("examples/wearable/messages.ndjson")).unwrap();
    let unmatched = "{\"deviceId\":\"x\",\"somethingElse\":1}\n";
    let body = format!("{messages}{unmatched}");

    let answer = ingest_ndjson(&service, &body).await;
    assert_eq!(answer["accepted"], 10);
    caught_up(&service).await;

    let store = service.local_store.clone().unwrap();
    let counts = store.counts().unwrap();
    // heart rate (2 devices x hour windows + oximeter), spo2, blood pressure, steps,
    // temperature: at least one Observation per type that normalized.
    assert!(counts.observations >= 6, "{counts:?}");
    assert!(counts.devices >= 5 && counts.patients >= 4, "{counts:?}");

    let dead = service
        .dead_letters
        .list(&DeadLetterFilter::default())
        .unwrap();
    let classes: Vec<(&str, Stage)> = dead.iter().map(|d| (d.class.as_str(), d.stage)).collect();
    assert!(
        classes.contains(&("InvalidDataFormatException", Stage::Normalize)),
        "{classes:?}"
    );
    assert!(
        classes.contains(&("IncompatibleDataException", Stage::Normalize)),
        "{classes:?}"
    );
    assert!(
        classes.contains(&("NoMatchingTemplate", Stage::Normalize)),
        "{classes:?}"
    );
    let bad = dead
        .iter()
        .find(|d| d.class == "InvalidDataFormatException")
        .unwrap();
    let entry = service.dead_letters.get(bad.id).unwrap().unwrap();
    assert_eq!(
        entry.payload, b"not json at all",
        "the message is kept byte for byte"
    );

    // The admin API: open health, authenticated dead letters, metrics that add up.
    assert_eq!(admin_get(&service, "/healthz", None).await.0, 200);
    let (ready, text) = admin_get(&service, "/readyz", None).await;
    assert_eq!(ready, 200, "{text}");
    assert_eq!(admin_get(&service, "/v1/dead-letters", None).await.0, 401);
    let (code, listed) =
        admin_get(&service, "/v1/dead-letters?stage=normalize", Some(API_KEY)).await;
    assert_eq!(code, 200);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 3);
    let (_, metrics) = admin_get(&service, "/metrics", None).await;
    assert!(
        metrics.contains("iomt_messages_received_total{source=\"http\"} 10"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iomt_messages_normalized_total 7"),
        "{metrics}"
    );
    assert!(
        metrics.contains("iomt_messages_unmatched_total 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("patient-0001"),
        "no identifiers in metrics"
    );

    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_refuses_what_it_cannot_take_and_stores_nothing_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), "")).await.unwrap();
    let one = r#"{"deviceId":"d","patientId":"p","endDate":"2026-11-26T08:00:00Z","heartRate":70}"#;

    assert_eq!(
        post(&service, "/v1/messages", one, "application/json", None)
            .await
            .0,
        401
    );
    assert_eq!(
        post(
            &service,
            "/v1/messages",
            one,
            "application/json",
            Some("wrong-key-0123456789")
        )
        .await
        .0,
        401
    );
    let (status, answer) = post(
        &service,
        "/v1/messages",
        "{\"a\":",
        "application/json",
        Some(API_KEY),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        answer["error"].as_str().unwrap().contains("not json"),
        "{answer}"
    );
    let big = format!("[{}]", vec![one; 1000].join(","));
    assert_eq!(
        post(
            &service,
            "/v1/messages",
            &big,
            "application/json",
            Some(API_KEY)
        )
        .await
        .0,
        413
    );
    assert_eq!(
        service.log.stats().end_offset,
        0,
        "nothing refused was stored"
    );

    let (status, answer) = post(
        &service,
        "/v1/messages",
        &format!("[{one},{one}]"),
        "application/json",
        Some(API_KEY),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(answer["accepted"], 2);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_mapping_reload_keeps_the_last_good_mappings() {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples/wearable");
    let device = dir.path().join("devicecontent.json");
    std::fs::copy(examples.join("devicecontent.json"), &device).unwrap();
    let mut config = config(dir.path(), "");
    config.mappings.device = device.clone();
    let service = iomt_runtime::start(&config).await.unwrap();

    std::fs::write(
        &device,
        "{\"templateType\": \"CollectionContent\", \"template\": [{]}",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = admin_get(&service, "/readyz", None).await;
        if code == 503 && text.contains("mapping reload failed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reload failure not reported: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still normalizing with the last good mapping.
    let one = r#"{"deviceId":"d","patientId":"p","endDate":"2026-11-26T08:00:00Z","heartRate":70}"#;
    assert_eq!(
        post(
            &service,
            "/v1/messages",
            one,
            "application/json",
            Some(API_KEY)
        )
        .await
        .0,
        202
    );
    caught_up(&service).await;
    assert_eq!(stored_observations(&service), 1);

    std::fs::copy(examples.join("devicecontent.json"), &device).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while admin_get(&service, "/readyz", None).await.0 != 200 {
        assert!(Instant::now() < deadline, "valid reload not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redriven_dead_letters_land_after_the_mapping_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let examples = repo_root().join("examples/wearable");
    // A FHIR mapping without the heart-rate template: heart-rate groups are dead-lettered.
    let fhir_text = std::fs::read_to_string(examples.join("fhirmapping.json")).unwrap();
    let mut fhir: serde_json::Value = serde_json::from_str(&fhir_text).unwrap();
    fhir["template"]
        .as_array_mut()
        .unwrap()
        .retain(|t| t["template"]["typeName"] != "heartrate");
    let fhir_path = dir.path().join("fhirmapping.json");
    std::fs::write(&fhir_path, serde_json::to_string_pretty(&fhir).unwrap()).unwrap();
    let mut config = config(dir.path(), "");
    config.mappings.fhir = fhir_path.clone();
    let service = iomt_runtime::start(&config).await.unwrap();

    let one = r#"{"deviceId":"d","patientId":"p","endDate":"2026-11-26T08:00:00Z","heartRate":70}"#;
    assert_eq!(
        post(
            &service,
            "/v1/messages",
            one,
            "application/json",
            Some(API_KEY)
        )
        .await
        .0,
        202
    );
    caught_up(&service).await;
    let dead = service
        .dead_letters
        .list(&DeadLetterFilter::default())
        .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].class.as_str(), dead[0].stage),
        ("TemplateNotFoundException", Stage::Group)
    );
    assert_eq!(stored_observations(&service), 0);

    // Fix the mapping, wait for the reload, redrive.
    std::fs::write(&fhir_path, &fhir_text).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let report = iomt_runtime::dead_letter::redrive(
        &service.dead_letters,
        &service.log,
        &DeadLetterFilter::default(),
    )
    .await
    .unwrap();
    assert_eq!(report.redriven, 1);
    caught_up(&service).await;
    assert_eq!(stored_observations(&service), 1);
    assert!(
        service
            .dead_letters
            .list(&DeadLetterFilter::default())
            .unwrap()
            .is_empty()
    );
    service.shutdown().await.unwrap();
}

/// An SpO2 reading: one instant Observation per (device, second).
fn spo2(device: &str, second: u32) -> String {
    format!(
        r#"{{"deviceId":"{device}","patientId":"patient-{device}","endDate":"2026-11-26T08:{:02}:{:02}Z","spo2":{}}}"#,
        second / 60,
        second % 60,
        90 + second % 10
    )
}

/// `config` with batches of at most `max_batch` messages.
fn small_batches(dir: &Path, max_batch: usize) -> PipelineConfig {
    let mut config = config(dir, "");
    config.pipeline.max_batch_messages = max_batch;
    config.validate().unwrap();
    config
}

/// Many small batches, so the pipeline prepares the next batch while it writes one: every
/// checkpoint it publishes stays behind what the local store holds, checkpoints only move
/// forward, and the last one is the log's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_advance_in_order_and_never_ahead_of_the_store() {
    const MESSAGES: u32 = 400;
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&small_batches(dir.path(), 10))
        .await
        .unwrap();
    let store = service.local_store.clone().unwrap();
    let lines: Vec<String> = (0..MESSAGES).map(|i| spo2("dev-order", i)).collect();

    let send = async {
        for chunk in lines.chunks(100) {
            ingest_ndjson(&service, &chunk.join("\n")).await;
        }
    };
    let watch = async {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = 0;
        let mut seen = Vec::new();
        loop {
            // Checkpoint first, then the store: the store can only have grown in between.
            let checkpoint = service.status.checkpoint();
            let stored = store.counts().unwrap().observations;
            assert!(
                checkpoint >= last,
                "the checkpoint moved back from {last} to {checkpoint}"
            );
            assert!(
                stored >= checkpoint,
                "checkpoint {checkpoint} is ahead of the {stored} Observations stored"
            );
            if seen.last() != Some(&checkpoint) {
                seen.push(checkpoint);
            }
            last = checkpoint;
            if checkpoint >= u64::from(MESSAGES) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "pipeline did not catch up: checkpoint {checkpoint}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    let ((), seen) = tokio::join!(send, watch);

    assert!(
        seen.len() > 2,
        "the checkpoint advanced batch by batch: {seen:?}"
    );
    assert_eq!(service.log.stats().end_offset, u64::from(MESSAGES));
    assert_eq!(service.status.checkpoint(), u64::from(MESSAGES));
    assert_eq!(
        service.log.committed(iomt_runtime::pipeline::CONSUMER),
        Some(u64::from(MESSAGES)),
        "the durable checkpoint is the log's end"
    );
    assert_eq!(
        store.counts().unwrap().observations,
        u64::from(MESSAGES),
        "every message is one Observation"
    );
    assert!(
        service
            .dead_letters
            .list(&DeadLetterFilter::default())
            .unwrap()
            .is_empty()
    );
    service.shutdown().await.unwrap();
}

/// Shutting down while the destination is down: the batch being written and the one prepared
/// behind it are not committed, the service stops promptly, and the next run writes them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_during_an_outage_commits_nothing_and_the_next_run_writes_everything() {
    const MESSAGES: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let mut outage = small_batches(dir.path(), 10);
    outage.destination = Some(iomt_runtime::config::DestinationConfig::Fhir(Box::new(
        iomt_fhir_client::FhirClientConfig::new("http://127.0.0.1:1/fhir"),
    )));
    let service = iomt_runtime::start(&outage).await.unwrap();
    let lines: Vec<String> = (0..MESSAGES).map(|i| spo2("dev-outage", i)).collect();
    ingest_ndjson(&service, &lines.join("\n")).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.status.destination_error().is_none() {
        assert!(Instant::now() < deadline, "the outage was not noticed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let log = service.log.clone();
    service.shutdown().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown during an outage took {:?}",
        started.elapsed()
    );
    assert_eq!(
        log.committed(iomt_runtime::pipeline::CONSUMER),
        Some(0),
        "nothing is committed while the destination is down"
    );
    drop(log);

    let service = iomt_runtime::start(&small_batches(dir.path(), 10))
        .await
        .unwrap();
    caught_up(&service).await;
    assert_eq!(stored_observations(&service), u64::from(MESSAGES));
    assert!(
        service
            .dead_letters
            .list(&DeadLetterFilter::default())
            .unwrap()
            .is_empty(),
        "an outage dead-letters nothing"
    );
    service.shutdown().await.unwrap();
}
