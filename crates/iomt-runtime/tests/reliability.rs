//! Reliability against the real test FHIR server (`test-peers/fhir-server`) on loopback: a
//! destination outage loses nothing and dead-letters nothing, and poison messages move aside
//! without delaying good traffic.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use iomt_fhir_client::{
    AuthConfig, ClientAuthMethod, FhirClientConfig, IdentityMode, Secret, SecretSource,
};
use iomt_runtime::config::DestinationConfig;
use iomt_runtime::{PipelineConfig, RunningService};
use iomt_store::{DeadLetterFilter, Stage};
use iomt_testkit::{Faults, FhirServer, FhirServerOptions};
use serde_json::{Value, json};

const API_KEY: &str = "test-key-0123456789abcdef";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fhir_config(server: &FhirServer, mode: IdentityMode) -> FhirClientConfig {
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
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_backoff = Duration::from_millis(200);
    config.retry.max_attempts = std::num::NonZeroU32::new(2).unwrap();
    config.http.request_timeout = Duration::from_secs(2);
    config.identity.mode = mode;
    config.identity.default_device_identifier_system = Some("urn:iomt:test".into());
    config
}

fn service_config(dir: &Path, fhir: FhirClientConfig) -> PipelineConfig {
    let examples = repo_root().join("examples/wearable");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
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
  listen: 127.0.0.1:0
  auth:
    api_keys: [{{value: {API_KEY}}}]
",
        data = dir.display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let mut config = PipelineConfig::load(&path).unwrap();
    config.destination = Some(DestinationConfig::Fhir(Box::new(fhir)));
    config.validate().unwrap();
    config
}

/// An SpO2 reading: one instant Observation per (device, second).
fn spo2(device: &str, second: u32, value: u32) -> String {
    format!(
        r#"{{"deviceId":"{device}","patientId":"patient-{device}","endDate":"2026-11-26T08:{:02}:{:02}Z","spo2":{value}}}"#,
        second / 60,
        second % 60
    )
}

async fn post_ndjson(service: &RunningService, lines: &[String]) -> u16 {
    let url = format!("http://{}/v1/messages", service.http_addr.unwrap());
    let body = lines.join("\n");
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        agent
            .post(&url)
            .header("content-type", "application/x-ndjson")
            .header("authorization", &format!("Bearer {API_KEY}"))
            .send(body.as_bytes())
            .unwrap()
            .status()
            .as_u16()
    })
    .await
    .unwrap()
}

/// Every Observation on the server (identifier values), via a search with a token.
fn observations(server: &FhirServer) -> Vec<String> {
    let token = server.fetch_token().unwrap();
    let mut response = server
        .agent()
        .get(&server.url("Observation?_count=1000"))
        .header("authorization", &format!("Bearer {token}"))
        .call()
        .unwrap();
    let bundle: Value = response.body_mut().read_json().unwrap();
    bundle["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    e["resource"]["identifier"][0]["value"]
                        .as_str()
                        .unwrap()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn put(server: &FhirServer, resource: Value) {
    let token = server.fetch_token().unwrap();
    let url = server.url(&format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap(),
        resource["id"].as_str().unwrap()
    ));
    let status = server
        .agent()
        .put(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/fhir+json")
        .send(resource.to_string().as_bytes())
        .unwrap()
        .status();
    assert!(status.is_success(), "{status}");
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn caught_up(service: &RunningService) -> bool {
    let end = service.log.stats().end_offset;
    end > 0 && service.status.checkpoint() >= end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_loses_nothing_and_delivery_resumes() {
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = service_config(dir.path(), fhir_config(&server, IdentityMode::Create));
    let service = iomt_runtime::start(&config).await.unwrap();

    // The server goes away: every connection is dropped.
    server
        .set_faults(&Faults {
            drop_rate: 1.0,
            include_token: true,
            ..Faults::default()
        })
        .unwrap();
    let lines: Vec<String> = (0..40).map(|i| spo2("dev-1", i, 95 + i % 5)).collect();
    assert_eq!(
        post_ndjson(&service, &lines).await,
        202,
        "ingest keeps accepting during the outage"
    );
    let status = service.status.clone();
    wait_for("the outage to be noticed", Duration::from_secs(20), || {
        status.destination_error().is_some()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !caught_up(&service),
        "nothing is checkpointed while the destination is down"
    );
    assert!(
        service
            .dead_letters
            .list(&DeadLetterFilter::default())
            .unwrap()
            .is_empty(),
        "an outage dead-letters nothing"
    );

    // The server comes back: everything lands, exactly once.
    server.clear_faults().unwrap();
    let more: Vec<String> = (40..60).map(|i| spo2("dev-1", i, 97)).collect();
    assert_eq!(post_ndjson(&service, &more).await, 202);
    wait_for("delivery to resume", Duration::from_secs(60), || {
        caught_up(&service)
    })
    .await;
    let mut landed = observations(&server);
    assert_eq!(landed.len(), 60, "every message is one Observation");
    landed.sort();
    landed.dedup();
    assert_eq!(landed.len(), 60, "no duplicates");
    assert!(
        service
            .dead_letters
            .list(&DeadLetterFilter::default())
            .unwrap()
            .is_empty()
    );
    assert!(service.status.destination_error().is_none());
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_moves_aside_and_good_traffic_lands_on_time() {
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    for i in 1..=3 {
        put(
            &server,
            json!({"resourceType": "Patient", "id": format!("p{i}"),
            "identifier": [{"value": format!("patient-dev-{i}")}]}),
        );
        put(
            &server,
            json!({"resourceType": "Device", "id": format!("d{i}"),
            "identifier": [{"system": "urn:iomt:test", "value": format!("dev-{i}")}],
            "patient": {"reference": format!("Patient/p{i}")}}),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let config = service_config(dir.path(), fhir_config(&server, IdentityMode::Lookup));
    let service = iomt_runtime::start(&config).await.unwrap();

    let mut good = 0;
    let started = Instant::now();
    for round in 0..5u32 {
        let mut lines = Vec::new();
        for device in 1..=3 {
            lines.push(spo2(&format!("dev-{device}"), round * 10 + device, 96));
            good += 1;
        }
        lines.push("{not json".to_owned());
        lines.push(r#"{"deviceId":"dev-1","patientId":"patient-dev-1","endDate":"2026-11-26T09:00:00Z","spo2":null}"#.to_owned());
        lines.push(spo2("unknown-device", round, 90));
        assert_eq!(post_ndjson(&service, &lines).await, 202);
    }
    wait_for("everything to be handled", Duration::from_secs(30), || {
        caught_up(&service)
    })
    .await;
    let elapsed = started.elapsed();
    assert_eq!(observations(&server).len(), good);
    assert!(
        elapsed < Duration::from_secs(10),
        "good traffic took {elapsed:?}"
    );

    let dead = service
        .dead_letters
        .list(&DeadLetterFilter::default())
        .unwrap();
    let count = |class: &str, stage: Stage| {
        dead.iter()
            .filter(|d| d.class == class && d.stage == stage)
            .count()
    };
    assert_eq!(
        count("InvalidDataFormatException", Stage::Normalize),
        5,
        "{dead:?}"
    );
    assert_eq!(
        count("IncompatibleDataException", Stage::Normalize),
        5,
        "{dead:?}"
    );
    assert_eq!(
        count("FhirResourceNotFoundException", Stage::Persist),
        5,
        "{dead:?}"
    );
    assert_eq!(dead.len(), 15);
    service.shutdown().await.unwrap();
}
