//! Observations persisted per second against the real test server, next to a plain HTTP
//! client PUTting the same Observations to the same server in the same run, and the CPU time
//! each spends per Observation.
//!
//! Not a timed test: it prints a table. Run it with
//! `cargo bench -p iomt-fhir-client --bench persist` (`-- --quick` for a short run; for
//! profiling one side, `-- --connector-only` or `-- --plain-only`, and `-- --c1` for
//! concurrency 1 alone; `-- --prefetch-batch N` sets `observations.prefetch_batch`,
//! `-- --rounds N` and `-- --per-run N` the runs per side and Observations per run: under
//! callgrind, two runs differing only in `--per-run` give the instructions per Observation;
//! `-- --lookup-token system_and_value` sets `observations.lookup_token`, and
//! `-- --server-dir PATH` runs another copy of the test server, e.g. an older one, to compare
//! both in one build).
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
//! concurrency level five times (twice with `--quick`), which side goes first alternating; the
//! best run of each is shown, which filters out moments when other work on the machine took
//! the CPU, and so is the median of the rounds' own ratios (`paired`: each round's connector
//! rate over the plain rate measured right before or after it), which is steadier when the
//! machine is shared; a `# c=N rounds` line after each row lists every round's ratio and
//! both sides' server CPU µs per Observation, for pooling several runs. CPU time is this
//! process's (user +
//! system); the server's CPU time per Observation (its threads' on-CPU time from
//! `/proc/<pid>/task/*/schedstat`, Linux only) is shown too: when the server is the bottleneck,
//! work the connector asks of it besides the PUTs (the lookup searches) is what lowers the
//! ratio.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use cpu_time::ProcessTime;
use iomt_fhir_client::{
    AuthConfig, ClientAuthMethod, FhirClient, FhirClientConfig, LookupToken, PersistOutcome,
    Persister, Secret, SecretSource,
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
    server_cpu_us: f64,
    requests_per_obs: f64,
}

impl Run {
    fn none() -> Run {
        Run {
            rate: f64::NAN,
            cpu_us: f64::NAN,
            server_cpu_us: f64::NAN,
            requests_per_obs: f64::NAN,
        }
    }
}

/// The on-CPU time of every thread of process `pid` so far (Linux; `None` elsewhere).
fn server_cpu(pid: u32) -> Option<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(Duration::from_nanos(total))
}

/// Server CPU µs per Observation since `before`.
fn server_us_since(server: &FhirServer, before: Option<Duration>, n: f64) -> f64 {
    match (before, server_cpu(server.pid())) {
        (Some(b), Some(a)) => a.saturating_sub(b).as_secs_f64() * 1e6 / n,
        _ => f64::NAN,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // For profiling one side alone (`perf record … persist-* --connector-only`).
    let connector_only = std::env::args().any(|a| a == "--connector-only");
    let plain_only = std::env::args().any(|a| a == "--plain-only");
    let rounds = flag_value("--rounds").unwrap_or(if quick { 2 } else { 5 });
    let per_run: usize = flag_value("--per-run").unwrap_or(if quick { 600 } else { 2000 });
    let levels: &[usize] = if std::env::args().any(|a| a == "--c1") {
        &[1]
    } else {
        &[1, 8, 32]
    };
    let mut options = FhirServerOptions::default()
        .validate(false)
        .log_requests(false);
    if let Some(dir) = flag_text("--server-dir") {
        options = options.server_dir(dir);
    }
    let server = FhirServer::start(options).unwrap_or_else(|e| panic!("{e}"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let templates = Arc::new(FhirTemplates::from_json_str(MAPPING).unwrap());
    let base = at("2024-01-01T00:00:00Z");

    println!(
        "persist benchmark: {per_run} new Observations per run, {DEVICES} devices, server validation off, \
         client-credentials auth, lookup token {:?}; best of {rounds} runs per side",
        lookup_token()
    );
    println!(
        "{:>11} | {:>11} | {:>15} | {:>5} | {:>7} | {:>16} | {:>16} | {:>16} | {:>16} | {:>13}",
        "concurrency",
        "plain obs/s",
        "connector obs/s",
        "ratio",
        "paired",
        "plain CPU µs/obs",
        "conn. CPU µs/obs",
        "plain srv µs/obs",
        "conn. srv µs/obs",
        "conn. req/obs"
    );
    let mut offset = 0i64;
    for &concurrency in levels {
        let mut plain_best: Option<Run> = None;
        let mut conn_best: Option<Run> = None;
        let mut paired: Vec<f64> = Vec::new();
        // Per round: the rate ratio, and each side's server CPU µs per Observation.
        let mut rounds_seen: Vec<(f64, f64, f64)> = Vec::new();
        for round in 0..rounds {
            offset += 1;
            let groups = groups(base + TimeDelta::days(offset), per_run);
            let run_plain = |groups: &[ObservationGroup]| {
                if connector_only {
                    Run::none()
                } else {
                    runtime.block_on(plain_run(&server, &templates, groups, concurrency))
                }
            };
            let run_connector = |groups: Vec<ObservationGroup>| {
                if plain_only {
                    Run::none()
                } else {
                    runtime.block_on(connector_run(&server, &templates, groups, concurrency))
                }
            };
            // Alternate which side goes first, so a drift in the machine's load favours
            // neither.
            let (plain, conn) = if round % 2 == 0 {
                let plain = run_plain(&groups);
                (plain, run_connector(groups))
            } else {
                let conn = run_connector(groups.clone());
                (run_plain(&groups), conn)
            };
            paired.push(conn.rate / plain.rate);
            rounds_seen.push((
                conn.rate / plain.rate,
                plain.server_cpu_us,
                conn.server_cpu_us,
            ));
            if plain_best
                .as_ref()
                .is_none_or(|b| plain.rate.total_cmp(&b.rate).is_gt())
            {
                plain_best = Some(plain);
            }
            if conn_best
                .as_ref()
                .is_none_or(|b| conn.rate.total_cmp(&b.rate).is_gt())
            {
                conn_best = Some(conn);
            }
        }
        let (plain, conn) = (plain_best.unwrap(), conn_best.unwrap());
        paired.sort_by(f64::total_cmp);
        let median = paired[paired.len() / 2];
        println!(
            "{:>11} | {:>11.0} | {:>15.0} | {:>4.0}% | {:>6.0}% | {:>16.1} | {:>16.1} | {:>16.1} | {:>16.1} | {:>13.3}",
            concurrency,
            plain.rate,
            conn.rate,
            100.0 * conn.rate / plain.rate,
            100.0 * median,
            plain.cpu_us,
            conn.cpu_us,
            plain.server_cpu_us,
            conn.server_cpu_us,
            conn.requests_per_obs,
        );
        // Every round, for pooling several runs: ratio, then plain/connector server µs per
        // Observation.
        let rounds_text: Vec<String> = rounds_seen
            .iter()
            .map(|(ratio, plain_srv, conn_srv)| {
                format!("{:.0}%:{plain_srv:.0}/{conn_srv:.0}", 100.0 * ratio)
            })
            .collect();
        println!("# c={concurrency} rounds {}", rounds_text.join(" "));
    }
}

/// The number after `name` on the command line (`--prefetch-batch 100`: lookup searches of
/// that many identifiers instead of the default, to see the trade-off).
fn flag_value(name: &str) -> Option<usize> {
    flag_text(name)?.parse().ok()
}

/// The word after `name` on the command line.
fn flag_text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == name)?;
    args.get(at + 1).cloned()
}

/// `observations.lookup_token` for the connector: the default unless `--lookup-token` says.
fn lookup_token() -> LookupToken {
    match flag_text("--lookup-token").as_deref() {
        None => LookupToken::default(),
        Some("value") => LookupToken::Value,
        Some("system_and_value") => LookupToken::SystemAndValue,
        Some(other) => panic!("--lookup-token value|system_and_value, not {other}"),
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
    let server_before = server_cpu(server.pid());
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
        server_cpu_us: server_us_since(server, server_before, n),
        requests_per_obs: 1.0,
    }
}

async fn connector_run(
    server: &FhirServer,
    templates: &Arc<FhirTemplates>,
    groups: Vec<ObservationGroup>,
    concurrency: usize,
) -> Run {
    let mut config = config(server, concurrency);
    config.observations.lookup_token = lookup_token();
    if let Some(n) = flag_value("--prefetch-batch") {
        config.observations.prefetch_batch =
            NonZeroUsize::new(n).expect("--prefetch-batch N, N > 0");
    }
    let persister = Persister::new(&config, templates.clone()).unwrap();
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
    let server_before = server_cpu(server.pid());
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
        server_cpu_us: server_us_since(server, server_before, n),
        requests_per_obs: (after.requests - before.requests) as f64 / n,
    }
}
