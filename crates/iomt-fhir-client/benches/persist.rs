//! Observations persisted per second against the real test server, next to a plain HTTP
//! client PUTting the same Observations to the same server in the same run, and the CPU time
//! each spends per Observation.
//!
//! Not a timed test: it prints a table. Run it with
//! `cargo bench -p iomt-fhir-client --bench persist` (`-- --quick` for a short run; for
//! profiling one side, `-- --connector-only` or `-- --plain-only`, and `-- --c1` for
//! concurrency 1 alone).
//!
//! # What is compared
//! * **plain**: a reqwest client (the same version, pool and TLS stack as the connector),
//!   `concurrency` tasks PUTting prebuilt Observation bodies (`PUT Observation/{id}`, bearer
//!   token, `Prefer: return=minimal` as the connector sends, body read to the end). This is the
//!   floor: one request per Observation and no work besides sending.
//! * **connector**: [`Persister::persist`] on the groups those Observations were built from,
//!   with `http.max_concurrency = concurrency`, in batches of 1,000 groups. It builds each
//!   Observation, looks up the batch's existing Observations (`observations.prefetch_batch`
//!   identifiers per search) and PUTs each one. Device identities are resolved in an untimed
//!   warm-up first, as in a running service (the identity cache lives for hours).
//!
//! Both sides create new Observations on an emptied server (the server is reset and the devices
//! seeded again before every run, untimed), alternating plain and connector
//! concurrency level five times (twice with `--quick`); the best run of each is shown, which filters out
//! moments when other work on the machine took the CPU. CPU time is this process's (user +
//! system): the server is another process.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use cpu_time::ProcessTime;
use iomt_fhir_client::{
    AuthConfig, ClientAuthMethod, FhirClient, FhirClientConfig, PersistOutcome, Persister, Secret,
    SecretSource,
};
use iomt_testkit::{FhirServer, FhirServerOptions};
use iomt_transform::{
    FhirTemplates, IdPrecision, ObservationGroup, ObservationIdentity, PeriodInterval,
    PropertyValues, ResolvedIds, TimeValue, WindowSpec,
};
use serde_json::json;

const MAPPING: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "spo2", "periodInterval": 0,
    "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs",
      "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
    "codes": [{"code": "59408-5", "system": "http://loinc.org", "display": "Oxygen saturation"}],
    "value": {"valueType": "Quantity", "valueName": "spo2", "unit": "%",
              "system": "http://unitsofmeasure.org", "code": "%"}}}
]}"#;

const DEVICES: usize = 64;
const BATCH: usize = 1000;

struct Run {
    rate: f64,
    cpu_us: f64,
    requests_per_obs: f64,
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // For profiling one side alone (`perf record … persist-* --connector-only`).
    let connector_only = std::env::args().any(|a| a == "--connector-only");
    let plain_only = std::env::args().any(|a| a == "--plain-only");
    let rounds = if quick { 2 } else { 5 };
    let per_run: usize = if quick { 600 } else { 2000 };
    let levels: &[usize] = if std::env::args().any(|a| a == "--c1") {
        &[1]
    } else {
        &[1, 8, 32]
    };
    let server = FhirServer::start(
        FhirServerOptions::default()
            .validate(false)
            .log_requests(false),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let templates = Arc::new(FhirTemplates::from_json_str(MAPPING).unwrap());
    let base = at("2024-01-01T00:00:00Z");

    println!(
        "persist benchmark: {per_run} new Observations per run, {DEVICES} devices, server validation off, \
         client-credentials auth; best of {rounds} runs per side"
    );
    println!(
        "{:>11} | {:>13} | {:>13} | {:>6} | {:>15} | {:>15} | {:>13}",
        "concurrency",
        "plain obs/s",
        "connector obs/s",
        "ratio",
        "plain CPU µs/obs",
        "conn. CPU µs/obs",
        "conn. req/obs"
    );
    let mut offset = 0i64;
    for &concurrency in levels {
        let mut plain_best: Option<Run> = None;
        let mut conn_best: Option<Run> = None;
        for _ in 0..rounds {
            offset += 1;
            let groups = groups(base + TimeDelta::days(offset), per_run);
            let plain = if connector_only {
                Run {
                    rate: f64::NAN,
                    cpu_us: f64::NAN,
                    requests_per_obs: 1.0,
                }
            } else {
                runtime.block_on(plain_run(&server, &templates, &groups, concurrency))
            };
            let conn = if plain_only {
                Run {
                    rate: f64::NAN,
                    cpu_us: f64::NAN,
                    requests_per_obs: f64::NAN,
                }
            } else {
                runtime.block_on(connector_run(&server, &templates, groups, concurrency))
            };
            if plain_best
                .as_ref()
                .is_none_or(|b| plain.rate.total_cmp(&b.rate).is_gt())
            {
                plain_best = Some(plain);
            }
            if conn_best.as_ref().is_none_or(|b| conn.rate > b.rate) {
                conn_best = Some(conn);
            }
        }
        let (plain, conn) = (plain_best.unwrap(), conn_best.unwrap());
        println!(
            "{:>11} | {:>13.0} | {:>15.0} | {:>5.0}% | {:>16.1} | {:>16.1} | {:>13.3}",
            concurrency,
            plain.rate,
            conn.rate,
            100.0 * conn.rate / plain.rate,
            plain.cpu_us,
            conn.cpu_us,
            conn.requests_per_obs,
        );
    }
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// `n` SpO2 groups spread over the devices, one instant each (one new Observation each).
fn groups(start: DateTime<Utc>, n: usize) -> Vec<ObservationGroup> {
    (0..n)
        .map(|i| {
            let t = start + TimeDelta::seconds((i / DEVICES) as i64);
            ObservationGroup {
                type_name: "spo2".into(),
                device_id: format!("dev-{}", i % DEVICES),
                patient_id: Some(format!("mrn-{}", i % DEVICES)),
                encounter_id: None,
                correlation_id: None,
                window: WindowSpec::new(PeriodInterval::Single).window_for(t),
                properties: vec![PropertyValues {
                    name: "spo2".into(),
                    values: vec![TimeValue {
                        time: t,
                        value: format!("{}", 90 + i % 10),
                    }],
                }],
            }
        })
        .collect()
}

fn config(server: &FhirServer, concurrency: usize) -> FhirClientConfig {
    let mut config = FhirClientConfig::new(server.base_url());
    config.auth = AuthConfig::ClientCredentials {
        token_url: server.token_url(),
        client_id: server.client().client_id.clone(),
        client_secret: SecretSource::Value(Secret::new(server.client().client_secret.clone())),
        scope: None,
        resource: None,
        client_auth: ClientAuthMethod::ClientSecretPost,
        refresh_before_expiry: Duration::from_secs(60),
    };
    config.identity.default_device_identifier_system = Some("urn:bench".into());
    config.http.max_concurrency = NonZeroUsize::new(concurrency).unwrap();
    config
}

/// Empties the server and puts the Patients and Devices back (untimed).
async fn reset_and_seed(server: &FhirServer, client: &FhirClient) {
    server.reset().unwrap();
    for d in 0..DEVICES {
        let patient = json!({"resourceType": "Patient", "id": format!("p{d}"),
            "identifier": [{"value": format!("mrn-{d}")}]});
        let device = json!({"resourceType": "Device", "id": format!("d{d}"),
            "identifier": [{"system": "urn:bench", "value": format!("dev-{d}")}],
            "patient": {"reference": format!("Patient/p{d}")}});
        for (t, r) in [("Patient", patient), ("Device", device)] {
            let id = r["id"].as_str().unwrap().to_owned();
            client
                .update(t, &id, serde_json::to_vec(&r).unwrap().into(), None)
                .await
                .unwrap();
        }
    }
}

async fn plain_run(
    server: &FhirServer,
    templates: &Arc<FhirTemplates>,
    groups: &[ObservationGroup],
    concurrency: usize,
) -> Run {
    let seeder = FhirClient::new(&config(server, 4)).unwrap();
    reset_and_seed(server, &seeder).await;
    // The same Observations the connector writes, built beforehand.
    let template = templates.require("spo2").unwrap();
    let bodies: Arc<Vec<(String, Bytes)>> = Arc::new(
        groups
            .iter()
            .map(|g| {
                let d = g.device_id.trim_start_matches("dev-");
                let ids = ResolvedIds::new(&format!("p{d}"), &format!("d{d}"), None);
                let identity = ObservationIdentity::new(g, &ids, IdPrecision::Seconds).unwrap();
                let obs = template
                    .create_observation(g, Utc::now())
                    .unwrap()
                    .with_identity(identity.clone());
                (
                    server.url(&format!("Observation/{}", identity.id)),
                    Bytes::from(obs.to_json_bytes()),
                )
            })
            .collect(),
    );
    let token = server.fetch_token().unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = ProcessTime::now();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, bodies, next, token) =
            (http.clone(), bodies.clone(), next.clone(), token.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((url, body)) = bodies.get(i) else {
                    break;
                };
                let response = http
                    .put(url)
                    .bearer_auth(&token)
                    .header("content-type", "application/fhir+json")
                    .header("accept", "application/fhir+json")
                    .header("prefer", "return=minimal")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = response.status();
                let _ = response.bytes().await.unwrap();
                assert!(status.is_success(), "plain PUT answered {status}");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let elapsed = started.elapsed();
    let cpu = cpu.elapsed();
    let n = groups.len() as f64;
    Run {
        rate: n / elapsed.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n,
        requests_per_obs: 1.0,
    }
}

async fn connector_run(
    server: &FhirServer,
    templates: &Arc<FhirTemplates>,
    groups: Vec<ObservationGroup>,
    concurrency: usize,
) -> Run {
    let persister = Persister::new(&config(server, concurrency), templates.clone()).unwrap();
    reset_and_seed(server, persister.client()).await;
    // Warm-up (untimed): resolve every device once, as a running service has.
    let warm: Vec<ObservationGroup> = (0..DEVICES)
        .map(|d| {
            let mut g = groups[d].clone();
            g.window.start -= TimeDelta::days(365);
            g.window.end = g.window.start;
            g.properties[0].values[0].time = g.window.start;
            g
        })
        .collect();
    let warmed = persister.persist(warm).await;
    assert!(warmed.iter().all(|o| o.failure().is_none()));
    let before = persister.counters();
    let n = groups.len() as f64;
    let cpu = ProcessTime::now();
    let started = Instant::now();
    let mut rest = groups.into_iter().peekable();
    while rest.peek().is_some() {
        let batch: Vec<ObservationGroup> = rest.by_ref().take(BATCH).collect();
        for outcome in persister.persist(batch).await {
            match outcome {
                PersistOutcome::Created { .. } => {}
                other => panic!("expected a create: {other:?}"),
            }
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu.elapsed();
    let after = persister.counters();
    Run {
        rate: n / elapsed.as_secs_f64(),
        cpu_us: cpu.as_secs_f64() * 1e6 / n,
        requests_per_obs: (after.requests - before.requests) as f64 / n,
    }
}
