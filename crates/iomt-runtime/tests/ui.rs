//! The mapping debugger page on the service's admin listener: served, authenticated with the
//! admin keys, and showing the mappings in force.

use std::path::{Path, PathBuf};

use iomt_runtime::PipelineConfig;

const API_KEY: &str = "ui-test-key-0123456789";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn config(dir: &Path) -> PipelineConfig {
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
    let config = PipelineConfig::load(&path).unwrap();
    config.validate().unwrap();
    config
}

/// GET `url` with an optional bearer key: status and body.
async fn get(url: String, key: Option<&'static str>) -> (u16, String) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_serves_the_page_and_the_mappings_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path())).await.unwrap();
    let admin = service.admin_addr.unwrap();

    let (status, page) = get(format!("http://{admin}/ui/"), None).await;
    assert_eq!(status, 200);
    assert!(page.contains("iomt mapping debugger"));

    let (status, _) = get(format!("http://{admin}/v1/debugger/mappings"), None).await;
    assert_eq!(status, 401, "the debugger api needs the admin key");

    let (status, body) = get(
        format!("http://{admin}/v1/debugger/mappings"),
        Some(API_KEY),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    let device =
        std::fs::read_to_string(repo_root().join("examples/wearable/devicecontent.json")).unwrap();
    assert_eq!(body["deviceMapping"], device.as_str());

    service.shutdown().await.unwrap();
}
