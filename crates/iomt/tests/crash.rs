//! Crash safety of `iomt run`: the service is killed with SIGKILL again and again while
//! devices send, restarted each time, and at the end every acknowledged message is in the FHIR
//! server exactly once.
//!
//! Runs the real binary against the real test FHIR server (`test-peers/fhir-server`), all on
//! 127.0.0.1.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, TimeZone, Utc};
use iomt_testkit::{FhirServer, FhirServerOptions, ureq};

const API_KEY: &str = "crash-test-key-0123456789";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, server: &FhirServer, http: u16, admin: u16) -> std::path::PathBuf {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wearable");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
sources:
  http:
    listen: 127.0.0.1:{http}
    auth:
      api_keys: [{{value: {API_KEY}}}]
pipeline:
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
  listen: 127.0.0.1:{admin}
  auth:
    api_keys: [{{value: {API_KEY}}}]
",
        data = dir.join("data").display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
        base = server.base_url(),
        token = server.token_url(),
        client = server.client().client_id,
        secret = server.client().client_secret,
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    )
}

fn start(config: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_iomt"))
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_healthy(admin: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let healthy = || {
        agent()
            .get(&format!("http://127.0.0.1:{admin}/healthz"))
            .call()
            .is_ok_and(|r| r.status().as_u16() == 200)
    };
    while !healthy() {
        assert!(Instant::now() < deadline, "the service did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The identifier-free form of one reading: device and second, as the test knows it.
fn message(second: i64) -> String {
    let base = Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap();
    let t = base + TimeDelta::seconds(second);
    format!(
        r#"{{"deviceId":"crash-dev","patientId":"crash-patient","endDate":"{}","spo2":{}}}"#,
        t.format("%Y-%m-%dT%H:%M:%SZ"),
        90 + second % 10
    )
}

/// The effective instants of every SpO2 Observation on the server (all pages).
fn landed(server: &FhirServer) -> Vec<String> {
    let token = server.fetch_token().unwrap();
    let mut out = Vec::new();
    loop {
        let url = server.url(&format!("Observation?_count=500&_offset={}", out.len()));
        let mut response = server
            .agent()
            .get(&url)
            .header("authorization", &format!("Bearer {token}"))
            .call()
            .unwrap();
        let bundle: serde_json::Value = response.body_mut().read_json().unwrap();
        let page: Vec<String> = bundle["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| {
                        e["resource"]["effectivePeriod"]["start"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        let done = page.len() < 500;
        out.extend(page);
        if done {
            return out;
        }
    }
}

#[test]
fn every_acknowledged_message_lands_exactly_once_across_kill_9() {
    let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (http, admin) = (free_port(), free_port());
    let config = write_config(dir.path(), &server, http, admin);
    let url = format!("http://127.0.0.1:{http}/v1/messages");

    let mut acked: BTreeSet<i64> = BTreeSet::new();
    let mut next = 0i64;
    for round in 0..4 {
        let mut child = start(&config);
        wait_healthy(admin);
        let until = Instant::now() + Duration::from_millis(1200 + 300 * round);
        while Instant::now() < until {
            let seconds: Vec<i64> = (next..next + 10).collect();
            next += 10;
            let body: Vec<String> = seconds.iter().map(|s| message(*s)).collect();
            let answer = agent()
                .post(&url)
                .header("authorization", &format!("Bearer {API_KEY}"))
                .header("content-type", "application/x-ndjson")
                .send(body.join("\n").as_bytes());
            if let Ok(r) = answer
                && r.status().as_u16() == 202
            {
                acked.extend(seconds);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap(); // SIGKILL: no shutdown, no flush
        child.wait().unwrap();
    }
    assert!(
        acked.len() >= 40,
        "too few messages acknowledged: {}",
        acked.len()
    );

    // A last start catches up with whatever the killed runs left in the log.
    let mut child = start(&config);
    wait_healthy(admin);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut r = agent()
            .get(&format!("http://127.0.0.1:{admin}/v1/status"))
            .header("authorization", &format!("Bearer {API_KEY}"))
            .call()
            .unwrap();
        let status: serde_json::Value = r.body_mut().read_json().unwrap();
        if status["log"]["lag"] == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the service did not catch up: {status}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let landed = landed(&server);
    let unique: BTreeSet<&String> = landed.iter().collect();
    assert_eq!(unique.len(), landed.len(), "duplicate Observations");
    let base = Utc.with_ymd_and_hms(2026, 11, 26, 6, 0, 0).unwrap();
    let landed_seconds: BTreeSet<i64> = landed
        .iter()
        .map(|t| {
            (chrono::DateTime::parse_from_rfc3339(t)
                .unwrap()
                .with_timezone(&Utc)
                - base)
                .num_seconds()
        })
        .collect();
    let missing: Vec<&i64> = acked.difference(&landed_seconds).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages missing ({} landed), first: {:?}",
        missing.len(),
        acked.len(),
        landed.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        landed_seconds.iter().all(|s| *s < next),
        "nothing was invented"
    );
}
