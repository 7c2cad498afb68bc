//! The FHIR client against the real test server (`test-peers/fhir-server`: Medplum's FHIR
//! router, R4 validation, `If-Match`, paging, OAuth2, fault injection), started through
//! `iomt-testkit`.
//!
//! Each test starts its own server (about a second), so tests are independent and run in
//! parallel. They need Node and `npm ci` in `test-peers/fhir-server`; without them they fail
//! with a message saying so. `IOMT_SKIP_FHIR_SERVER=1` skips them, loudly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use iomt_fhir_client::{
    AuthConfig, ClientAuthMethod, FhirClient, FhirClientConfig, FhirClientError, IdentityMode,
    JwtAlgorithm, LookupToken, PersistOutcome, Persister, RetryHint, Secret, SecretSource, Status,
    check::Check, run_checks,
};
use iomt_model::ErrorClass;
use iomt_testkit::{Faults, FhirServer, FhirServerOptions, IdentifierMatch, ScriptedFault};
use iomt_transform::observation::resource_id;
use iomt_transform::{
    FhirTemplates, IdPrecision, ObservationGroup, ObservationIdentity, PeriodInterval,
    PropertyValues, ResolvedIds, TimeValue, WindowSpec,
};
use serde_json::{Value, json};

const MAPPING: &str = r#"{"templateType": "CollectionFhir", "template": [
  {"templateType": "CodeValueFhir", "template": {"typeName": "heartrate", "periodInterval": 60,
    "category": [{"text": "Vital Signs", "codes": [{"code": "vital-signs",
      "system": "http://terminology.hl7.org/CodeSystem/observation-category"}]}],
    "codes": [{"code": "8867-4", "system": "http://loinc.org", "display": "Heart rate"}],
    "value": {"valueType": "SampledData", "valueName": "hr", "defaultPeriod": 1000, "unit": "/min"}}},
  {"templateType": "CodeValueFhir", "template": {"typeName": "spo2", "periodInterval": 0,
    "codes": [{"code": "59408-5", "system": "http://loinc.org"}],
    "value": {"valueType": "Quantity", "valueName": "spo2", "unit": "%",
              "system": "http://unitsofmeasure.org", "code": "%"}}}
]}"#;

fn start(options: FhirServerOptions) -> Option<FhirServer> {
    FhirServer::start_unless_skipped(options)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name)
}

/// Client credentials for the server's client, quick retries.
fn config(server: &FhirServer) -> FhirClientConfig {
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
    config.retry.initial_backoff = Duration::from_millis(10);
    config.retry.max_backoff = Duration::from_millis(100);
    config
}

fn templates() -> Arc<FhirTemplates> {
    Arc::new(FhirTemplates::from_json_str(MAPPING).unwrap())
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn group(kind: &str, device: &str, time: &str, value: &str) -> ObservationGroup {
    let (interval, property) = match kind {
        "heartrate" => (PeriodInterval::Hourly, "hr"),
        _ => (PeriodInterval::Single, "spo2"),
    };
    let t = at(time);
    ObservationGroup {
        type_name: kind.into(),
        device_id: device.into(),
        patient_id: Some("mrn-1".into()),
        encounter_id: None,
        correlation_id: None,
        window: WindowSpec::new(interval).window_for(t),
        properties: vec![PropertyValues {
            name: property.into(),
            values: vec![TimeValue {
                time: t,
                value: value.into(),
            }],
        }],
    }
}

fn hr(device: &str, time: &str, value: &str) -> ObservationGroup {
    group("heartrate", device, time, value)
}

fn spo2(device: &str, time: &str, value: &str) -> ObservationGroup {
    group("spo2", device, time, value)
}

/// Puts a Patient and a Device (identifier `dev-{i}`, system `urn:iomt:test`) on the server.
async fn seed_devices(client: &FhirClient, n: usize) {
    for i in 1..=n {
        put(
            client,
            json!({"resourceType": "Patient", "id": format!("p{i}"),
            "identifier": [{"value": format!("mrn-{i}")}]}),
        )
        .await;
        put(
            client,
            json!({"resourceType": "Device", "id": format!("d{i}"),
            "identifier": [{"system": "urn:iomt:test", "value": format!("dev-{i}")}],
            "patient": {"reference": format!("Patient/p{i}")}}),
        )
        .await;
    }
}

async fn put(client: &FhirClient, resource: Value) {
    let rtype: &'static str = match resource["resourceType"].as_str().unwrap() {
        "Patient" => "Patient",
        "Device" => "Device",
        "Encounter" => "Encounter",
        other => panic!("{other}"),
    };
    let id = resource["id"].as_str().unwrap().to_owned();
    client
        .update(
            rtype,
            &id,
            serde_json::to_vec(&resource).unwrap().into(),
            None,
        )
        .await
        .unwrap();
}

fn kinds(outcomes: &[PersistOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .map(|o| match o {
            PersistOutcome::Created { .. } => "created".to_owned(),
            PersistOutcome::Updated { .. } => "updated".to_owned(),
            PersistOutcome::Unchanged { .. } => "unchanged".to_owned(),
            PersistOutcome::Failed(f) => format!("failed: {}", f.error),
        })
        .collect()
}

fn lookup_config(server: &FhirServer) -> FhirClientConfig {
    let mut c = config(server);
    c.identity.default_device_identifier_system = Some("urn:iomt:test".into());
    c
}

#[test]
fn lookup_create_merge_and_unchanged() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let config = lookup_config(&server);
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        let info = p.healthcheck().await.unwrap();
        assert!(info.fhir_version.unwrap().starts_with("4.0"));

        let out = p
            .persist(vec![hr("dev-1", "2024-03-01T08:00:02Z", "61")])
            .await;
        assert_eq!(kinds(&out), ["created"]);
        let id = out[0].id().unwrap().to_owned();
        let out = p
            .persist(vec![
                hr("dev-1", "2024-03-01T08:00:04Z", "63"),
                hr("dev-1", "2024-03-01T08:00:03Z", "62"),
            ])
            .await;
        assert_eq!(kinds(&out), ["updated", "updated"]);
        let out = p
            .persist(vec![hr("dev-1", "2024-03-01T08:00:03Z", "62")])
            .await;
        assert_eq!(kinds(&out), ["unchanged"]);

        let stored = p.client().read("Observation", &id).await.unwrap().unwrap();
        assert_eq!(stored["status"], "amended");
        assert_eq!(stored["subject"]["reference"], "Patient/p1");
        assert_eq!(stored["device"]["reference"], "Device/d1");
        assert_eq!(
            stored["identifier"][0]["value"],
            "p1.d1.heartrate.20240301080000Z.20240301085959Z"
        );
        assert!(
            stored["valueSampledData"]["data"]
                .as_str()
                .unwrap()
                .starts_with("E E 61 62 63 E"),
            "{stored}"
        );
        // A fresh persister (no caches) finds the Observation by identifier and merges.
        let q = Persister::new(&config, templates()).unwrap();
        let out = q
            .persist(vec![hr("dev-1", "2024-03-01T08:00:02Z", "61")])
            .await;
        assert_eq!(kinds(&out), ["unchanged"]);
        let stats = server.stats().unwrap();
        assert_eq!(stats.count("PUT", "Observation", 201), 1);
        assert_eq!(stats.count("PUT", "Observation", 200), 2);
    });
}

#[test]
fn create_mode_creates_patient_and_device() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = config(&server);
        config.identity.mode = IdentityMode::Create;
        config.identity.default_device_identifier_system = Some("urn:iomt:test".into());
        let p = Persister::new(&config, templates()).unwrap();
        let out = p
            .persist(vec![
                spo2("new-dev", "2024-03-01T08:00:00Z", "97"),
                spo2("new-dev", "2024-03-01T08:00:01Z", "96"),
            ])
            .await;
        assert_eq!(kinds(&out), ["created", "created"]);
        let patient_id = resource_id(None, "mrn-1");
        let device_id = resource_id(Some("urn:iomt:test"), "new-dev");
        let patient = p
            .client()
            .read("Patient", &patient_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(patient["identifier"], json!([{"value": "mrn-1"}]));
        let device = p
            .client()
            .read("Device", &device_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            device["patient"]["reference"],
            format!("Patient/{patient_id}")
        );
        let observation = p
            .client()
            .read("Observation", out[0].id().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            observation["subject"]["reference"],
            format!("Patient/{patient_id}")
        );

        // The same device with another patient: the device is linked to the first one.
        let mut other = spo2("unlinked", "2024-03-01T08:00:00Z", "97");
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "dx",
            "identifier": [{"system": "urn:iomt:test", "value": "unlinked"}],
            "patient": {"reference": "Patient/someone-else"}}),
        )
        .await;
        other.patient_id = Some("mrn-1".into());
        // Lookup succeeds (the device has a usable patient reference): the message's patient
        // is ignored, as in the original.
        let out = p.persist(vec![other]).await;
        assert_eq!(kinds(&out), ["created"]);
    });
}

#[test]
fn identity_failures_are_classified() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "dup-a",
            "identifier": [{"system": "urn:iomt:test", "value": "dup"}]}),
        )
        .await;
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "dup-b",
            "identifier": [{"system": "urn:iomt:test", "value": "dup"}]}),
        )
        .await;
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "lonely",
            "identifier": [{"system": "urn:iomt:test", "value": "no-patient"}]}),
        )
        .await;
        let out = p
            .persist(vec![
                spo2("missing", "2024-03-01T08:00:00Z", "97"),
                spo2("dup", "2024-03-01T08:00:00Z", "97"),
                spo2("no-patient", "2024-03-01T08:00:00Z", "97"),
            ])
            .await;
        let classes: Vec<ErrorClass> = out
            .iter()
            .map(|o| o.failure().unwrap().error.class())
            .collect();
        assert_eq!(
            classes,
            [
                ErrorClass::FhirResourceNotFoundException,
                ErrorClass::MultipleResourceFoundException,
                ErrorClass::FhirResourceNotFoundException,
            ]
        );

        // Create mode: a device linked to a patient through an unusable reference that is not
        // the message's patient is a mismatch.
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "abs",
            "identifier": [{"system": "urn:iomt:test", "value": "absolute"}],
            "patient": {"reference": "https://elsewhere.example/fhir/Patient/zz"}}),
        )
        .await;
        config.identity.mode = IdentityMode::Create;
        let c = Persister::new(&config, templates()).unwrap();
        let out = c
            .persist(vec![spo2("absolute", "2024-03-01T08:00:00Z", "97")])
            .await;
        assert_eq!(
            out[0].failure().unwrap().error.class(),
            ErrorClass::PatientDeviceMismatchException
        );
        let mut no_patient = spo2("brand-new", "2024-03-01T08:00:00Z", "97");
        no_patient.patient_id = None;
        let out = c.persist(vec![no_patient]).await;
        assert_eq!(
            out[0].failure().unwrap().error.class(),
            ErrorClass::ResourceIdentityNotDefinedException
        );
    });
}

#[test]
fn lookup_with_encounter() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        config.identity.mode = IdentityMode::LookupWithEncounter;
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        put(
            p.client(),
            json!({"resourceType": "Encounter", "id": "e1", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "identifier": [{"value": "visit-1"}]}),
        )
        .await;
        let mut with = spo2("dev-1", "2024-03-01T08:00:00Z", "97");
        with.encounter_id = Some("visit-1".into());
        let mut unknown = spo2("dev-1", "2024-03-01T08:00:01Z", "97");
        unknown.encounter_id = Some("visit-9".into());
        let without = spo2("dev-1", "2024-03-01T08:00:02Z", "97");
        let out = p.persist(vec![with, unknown, without]).await;
        assert_eq!(kinds(&out)[0], "created");
        let obs = p
            .client()
            .read("Observation", out[0].id().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(obs["encounter"]["reference"], "Encounter/e1");
        assert_eq!(
            out[1].failure().unwrap().error.class(),
            ErrorClass::FhirResourceNotFoundException
        );
        assert_eq!(
            out[2].failure().unwrap().error.class(),
            ErrorClass::ResourceIdentityNotDefinedException
        );
    });
}

#[test]
fn exact_matching_on_a_case_insensitive_prefix_matching_server() {
    let options = FhirServerOptions::default()
        .identifier_match(IdentifierMatch::CaseInsensitive)
        .identifier_max_length(24)
        .page_size(2);
    let Some(server) = start(options) else { return };
    runtime().block_on(async {
        let config = lookup_config(&server);
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        put(
            p.client(),
            json!({"resourceType": "Device", "id": "upper",
            "identifier": [{"system": "urn:iomt:test", "value": "DEV-1"}],
            "patient": {"reference": "Patient/p1"}}),
        )
        .await;
        // Several Observations whose identifiers share a 24-character prefix.
        let groups: Vec<_> = (0..5)
            .map(|i| spo2("dev-1", &format!("2024-03-01T08:00:0{i}Z"), "97"))
            .collect();
        let out = p.persist(groups.clone()).await;
        assert_eq!(kinds(&out), ["created"; 5]);
        // Without caches: each group must find exactly its own Observation among the
        // prefix matches, following next links.
        let q = Persister::new(&config, templates()).unwrap();
        let out = q.persist(groups).await;
        assert_eq!(kinds(&out), ["unchanged"; 5]);
        let obs = q
            .client()
            .read("Observation", out[0].id().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(obs["device"]["reference"], "Device/d1");
    });
}

/// Searching by identifier value alone (the default) or by `system|value`, an Observation
/// whose identifier has the connector's value under another system is never taken for the
/// connector's: not in a batch lookup, not in a one-group search, not when both exist.
#[test]
fn the_same_value_in_another_system_is_never_matched() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        for (n, token) in [LookupToken::Value, LookupToken::SystemAndValue]
            .into_iter()
            .enumerate()
        {
            server.reset().unwrap();
            let mut config = lookup_config(&server);
            config.observations.lookup_token = token;
            let p = Persister::new(&config, templates()).unwrap();
            seed_devices(p.client(), 1).await;
            // Two groups (a batch lookup) and one alone (its own search), each shadowed by a
            // foreign Observation with the same identifier value in another system.
            let groups = [
                spo2("dev-1", &format!("2024-03-0{}T08:00:00Z", n + 1), "97"),
                spo2("dev-1", &format!("2024-03-0{}T08:00:01Z", n + 1), "96"),
                spo2("dev-1", &format!("2024-03-0{}T08:00:02Z", n + 1), "95"),
            ];
            for (i, g) in groups.iter().enumerate() {
                let identity = ObservationIdentity::new(
                    g,
                    &ResolvedIds::new("p1", "d1", None),
                    IdPrecision::Seconds,
                )
                .unwrap();
                let foreign = json!({"resourceType": "Observation", "id": format!("foreign-{i}"),
                    "status": "final", "code": {"text": "not the connector's"},
                    "identifier": [{"system": "urn:other", "value": identity.identifier_value}],
                    "valueQuantity": {"value": 1}});
                p.client()
                    .update(
                        "Observation",
                        &format!("foreign-{i}"),
                        serde_json::to_vec(&foreign).unwrap().into(),
                        None,
                    )
                    .await
                    .unwrap();
            }
            let out = p.persist(groups[..2].to_vec()).await;
            assert_eq!(kinds(&out), ["created", "created"], "{token:?}");
            let out = p.persist(groups[2..].to_vec()).await;
            assert_eq!(kinds(&out), ["created"], "{token:?}");
            // Now each value exists in both systems: a fresh persister (no cache) finds and
            // merges its own Observation, neither the foreign one nor "several found".
            let mut changed = groups.to_vec();
            for g in &mut changed {
                g.properties[0].values[0].value = "90".into();
            }
            let q = Persister::new(&config, templates()).unwrap();
            let mut out = q.persist(changed[..2].to_vec()).await;
            out.extend(q.persist(changed[2..].to_vec()).await);
            assert_eq!(kinds(&out), ["updated"; 3], "{token:?}");
            for (i, o) in out.iter().enumerate() {
                let own = q
                    .client()
                    .read("Observation", o.id().unwrap())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(
                    own["valueQuantity"]["value"].as_f64(),
                    Some(90.0),
                    "{token:?}"
                );
                let foreign = q
                    .client()
                    .read("Observation", &format!("foreign-{i}"))
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(foreign["meta"]["versionId"], "1", "{token:?}");
                assert_eq!(
                    foreign["valueQuantity"]["value"].as_f64(),
                    Some(1.0),
                    "{token:?}"
                );
            }
        }
    });
}

#[test]
fn conflicts_are_reread_and_retried() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let config = lookup_config(&server);
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        p.persist(vec![hr("dev-1", "2024-03-01T08:00:00Z", "60")])
            .await;
        server
            .set_faults(&Faults {
                rate_412: 0.5,
                seed: Some(7),
                ..Faults::default()
            })
            .unwrap();
        let groups: Vec<_> = (1..20)
            .map(|i| {
                hr(
                    "dev-1",
                    &format!("2024-03-01T08:00:{i:02}Z"),
                    &format!("{}", 60 + i),
                )
            })
            .collect();
        let out = p.persist(groups).await;
        let failed: Vec<_> = out.iter().filter_map(|o| o.failure()).collect();
        // Each group gets three tries at a coin flip; a few may still lose all three.
        for f in &failed {
            assert!(
                matches!(
                    f.error,
                    FhirClientError::Conflict {
                        status: 412,
                        attempts: 3,
                        ..
                    }
                ),
                "{}",
                f.error
            );
            assert_eq!(f.error.retry_hint(), RetryHint::WithBackoff);
        }
        assert!(failed.len() <= 5, "{}", failed.len());
        assert!(p.counters().conflicts > 0);
        assert!(
            server
                .stats()
                .unwrap()
                .faults
                .get("412")
                .copied()
                .unwrap_or(0)
                > 0
        );

        // Always 412: reported after the configured retries.
        server
            .set_faults(&Faults {
                rate_412: 1.0,
                ..Faults::default()
            })
            .unwrap();
        let out = p
            .persist(vec![hr("dev-1", "2024-03-01T08:00:30Z", "90")])
            .await;
        let error = &out[0].failure().unwrap().error;
        assert!(
            matches!(error, FhirClientError::Conflict { attempts: 3, .. }),
            "{error}"
        );
    });
}

#[test]
fn throttling_honours_retry_after() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let config = lookup_config(&server);
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        server
            .set_faults(&Faults {
                script: vec![ScriptedFault::Status(429)],
                retry_after: Some(1),
                methods: Some(vec!["PUT".into()]),
                ..Faults::default()
            })
            .unwrap();
        let started = Instant::now();
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
            .await;
        assert_eq!(kinds(&out), ["created"]);
        assert!(
            started.elapsed() >= Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(p.counters().throttled, 1);

        // A server throttling every request: reported as throttled, retryable.
        server
            .set_faults(&Faults {
                rate_429: 1.0,
                retry_after: Some(0),
                ..Faults::default()
            })
            .unwrap();
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:01Z", "97")])
            .await;
        let error = &out[0].failure().unwrap().error;
        assert!(
            matches!(error, FhirClientError::Throttled { .. }),
            "{error}"
        );
        assert_eq!(error.retry_hint(), RetryHint::WithBackoff);
    });
}

#[test]
fn server_errors_and_dropped_connections_are_survived() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        // 12 attempts: eight failures in a row (p = 0.35^8 per request) must not fail the test.
        config.retry.max_attempts = std::num::NonZeroU32::new(12).unwrap();
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 3).await;
        server
            .set_faults(&Faults {
                rate_503: 0.15,
                drop_rate: 0.1,
                drop_after_rate: 0.1,
                seed: Some(42),
                ..Faults::default()
            })
            .unwrap();
        let groups: Vec<_> = (0..30)
            .map(|i| {
                hr(
                    &format!("dev-{}", i % 3 + 1),
                    &format!("2024-03-01T09:00:{i:02}Z"),
                    &format!("{}", 50 + i),
                )
            })
            .collect();
        let out = p.persist(groups).await;
        assert!(
            out.iter().all(|o| o.failure().is_none()),
            "{:?}",
            kinds(&out)
        );
        server.clear_faults().unwrap();
        let faults = server.stats().unwrap().faults;
        assert!(faults.values().sum::<u64>() > 5, "{faults:?}");
        // Every value landed, whatever the outcome said (a write whose answer was lost looks
        // unchanged when retried).
        for d in 1..=3 {
            let g = hr(&format!("dev-{d}"), "2024-03-01T09:00:00Z", "0");
            let ids = ResolvedIds::new(&format!("p{d}"), &format!("d{d}"), None);
            let id = ObservationIdentity::new(&g, &ids, IdPrecision::Seconds)
                .unwrap()
                .id;
            let obs = p.client().read("Observation", &id).await.unwrap().unwrap();
            let data = obs["valueSampledData"]["data"].as_str().unwrap().to_owned();
            let values: Vec<&str> = data.split(' ').filter(|v| *v != "E").collect();
            assert_eq!(values.len(), 10, "{data}");
        }
    });
}

#[test]
fn a_wrong_secret_is_classified_in_plain_words() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        if let AuthConfig::ClientCredentials { client_secret, .. } = &mut config.auth {
            *client_secret = SecretSource::Value(Secret::new("not-the-secret"));
        }
        let p = Persister::new(&config, templates()).unwrap();
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
            .await;
        let error = &out[0].failure().unwrap().error;
        assert!(
            matches!(error, FhirClientError::TokenRejected { status: 401, .. }),
            "{error:?}"
        );
        assert!(error.is_systemic());
        assert!(
            error
                .to_string()
                .starts_with("the token endpoint refused a token with http 401 (invalid_client"),
            "{error}"
        );
        assert!(!error.to_string().contains("not-the-secret"));

        let report = run_checks(&config).await;
        assert!(!report.is_ok());
        let token = report.finding(Check::Token).unwrap();
        assert_eq!(token.status, Status::Fail);
        assert!(
            token
                .message
                .contains("check auth.client_id and the client secret"),
            "{report}"
        );
        assert!(!report.to_string().contains("not-the-secret"));
    });
}

#[test]
fn tokens_are_refreshed_before_expiry_and_after_revocation() {
    let Some(server) = start(FhirServerOptions::default().token_ttl(Duration::from_secs(2))) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        config.auth = match config.auth {
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                resource,
                refresh_before_expiry,
                ..
            } => AuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                resource,
                refresh_before_expiry,
                client_auth: ClientAuthMethod::ClientSecretBasic,
            },
            other => other,
        };
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        p.persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
            .await;
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:01Z", "97")])
            .await;
        assert_eq!(kinds(&out), ["created"]);
        let stats = server.stats().unwrap();
        // At least one refresh (a slow machine may need another during the first batch).
        assert!(stats.tokens.issued >= 2, "{stats:?}");
        assert_eq!(
            stats.by_status.get("401"),
            None,
            "refreshed before expiry: {stats:?}"
        );
        let issued = stats.tokens.issued;

        server.revoke_tokens().unwrap();
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:02Z", "97")])
            .await;
        assert_eq!(kinds(&out), ["created"]);
        let stats = server.stats().unwrap();
        assert!(stats.tokens.issued > issued, "{stats:?}");
        assert_eq!(stats.by_status.get("401"), Some(&1));
    });
}

#[test]
fn smart_backend_services() {
    let rsa = std::fs::read_to_string(testdata("rsa-public.pem")).unwrap();
    let ec = std::fs::read_to_string(testdata("ec384-public.pem")).unwrap();
    let options = FhirServerOptions::default()
        .jwt_client("iomt-smart-rs", rsa)
        .jwt_client("iomt-smart-es", ec);
    let Some(server) = start(options) else { return };
    runtime().block_on(async {
        for (client_id, key, algorithm) in [
            ("iomt-smart-rs", "rsa-private.pem", JwtAlgorithm::RS384),
            ("iomt-smart-es", "ec384-private.pem", JwtAlgorithm::ES384),
        ] {
            let mut config = lookup_config(&server);
            config.auth = AuthConfig::SmartBackend {
                token_url: server.token_url(),
                client_id: client_id.into(),
                private_key: SecretSource::File(testdata(key)),
                algorithm,
                key_id: "test-key".into(),
                scope: "system/Observation.write system/Device.read".into(),
                jku: None,
                refresh_before_expiry: Duration::from_secs(60),
            };
            let p = Persister::new(&config, templates()).unwrap();
            seed_devices(p.client(), 1).await;
            let out = p
                .persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
                .await;
            assert!(out[0].failure().is_none(), "{client_id}: {:?}", kinds(&out));
            assert!(run_checks(&config).await.is_ok());
        }
        assert!(server.stats().unwrap().tokens.issued >= 2);
        // The wrong key for a registered client.
        let mut config = lookup_config(&server);
        config.auth = AuthConfig::SmartBackend {
            token_url: server.token_url(),
            client_id: "iomt-smart-es".into(),
            private_key: SecretSource::File(testdata("rsa-private.pem")),
            algorithm: JwtAlgorithm::RS384,
            key_id: "test-key".into(),
            scope: "system/*.*".into(),
            jku: None,
            refresh_before_expiry: Duration::from_secs(60),
        };
        let err = FhirClient::new(&config)
            .unwrap()
            .authenticate()
            .await
            .unwrap_err();
        assert!(
            matches!(err, FhirClientError::TokenRejected { status: 401, .. }),
            "{err}"
        );
    });
}

#[test]
fn static_bearer_token() {
    let Some(server) = start(FhirServerOptions::default().static_token("static-token-for-tests"))
    else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        config.auth = AuthConfig::Bearer {
            token: SecretSource::Value(Secret::new("static-token-for-tests")),
        };
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 1).await;
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
            .await;
        assert_eq!(kinds(&out), ["created"]);
        config.auth = AuthConfig::Bearer {
            token: SecretSource::Value(Secret::new("a-wrong-token")),
        };
        let p = Persister::new(&config, templates()).unwrap();
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:01Z", "97")])
            .await;
        let error = &out[0].failure().unwrap().error;
        assert!(
            matches!(error, FhirClientError::Unauthorized { .. }),
            "{error}"
        );
        let report = run_checks(&config).await;
        let search = report.finding(Check::AuthorizedSearch).unwrap();
        assert_eq!(search.status, Status::Fail, "{report}");
        assert!(
            search.message.contains("rejected the token (401)"),
            "{report}"
        );
    });
}

#[test]
fn bundles() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let mut config = lookup_config(&server);
        config.bundles.enabled = true;
        config.bundles.max_entries = std::num::NonZeroUsize::new(10).unwrap();
        let p = Persister::new(&config, templates()).unwrap();
        seed_devices(p.client(), 3).await;
        let mut groups: Vec<_> = (0..24)
            .map(|i| {
                spo2(
                    &format!("dev-{}", i % 3 + 1),
                    &format!("2024-03-01T08:00:{i:02}Z"),
                    "97",
                )
            })
            .collect();
        groups.push(hr("dev-1", "2024-03-01T08:00:01Z", "70"));
        groups.push(hr("dev-1", "2024-03-01T08:00:02Z", "71"));
        let out = p.persist(groups).await;
        let mut expected = vec!["created".to_owned(); 25];
        expected.push("updated".into());
        assert_eq!(kinds(&out), expected);
        let stats = server.stats().unwrap();
        assert_eq!(
            stats.by_method.get("PUT"),
            Some(&6),
            "only the seeding PUTs: {stats:?}"
        );
        assert!(stats.count("POST", "Bundle", 200) >= 3, "{stats:?}");
        let obs = p
            .client()
            .read("Observation", out[24].id().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert!(
            obs["valueSampledData"]["data"]
                .as_str()
                .unwrap()
                .starts_with("E 70 71"),
            "{obs}"
        );
        // Merging again through bundles, with a stale cache (a fresh persister has none).
        let q = Persister::new(&config, templates()).unwrap();
        let out = q
            .persist(vec![hr("dev-1", "2024-03-01T08:00:03Z", "72")])
            .await;
        assert_eq!(kinds(&out), ["updated"]);
    });
}

#[test]
fn rejected_observations_carry_the_servers_outcome() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        // A template whose quantity system is not a URI, which R4 validation refuses.
        let mapping = MAPPING.replace("http://unitsofmeasure.org", "not a uri");
        let templates = Arc::new(FhirTemplates::from_json_str(&mapping).unwrap());
        let config = lookup_config(&server);
        let p = Persister::new(&config, templates).unwrap();
        seed_devices(p.client(), 1).await;
        let out = p
            .persist(vec![spo2("dev-1", "2024-03-01T08:00:00Z", "97")])
            .await;
        let failure = out[0]
            .failure()
            .unwrap_or_else(|| panic!("{:?}", kinds(&out)));
        let error = &failure.error;
        assert!(
            matches!(
                error,
                FhirClientError::Rejected {
                    status: 400 | 422,
                    outcome: Some(_),
                    ..
                }
            ),
            "{error}"
        );
        assert!(
            error
                .to_string()
                .ends_with("error structure: Invalid uri format (Observation.value[x].system)"),
            "{error}"
        );
        assert_eq!(error.retry_hint(), RetryHint::NoRetry);
        assert_eq!(error.class(), ErrorClass::FhirClientException);
        let stats = server.stats().unwrap();
        let puts: u64 = stats
            .by_key
            .iter()
            .filter(|(k, _)| k.starts_with("PUT Observation"))
            .map(|(_, v)| *v)
            .sum();
        assert_eq!(puts, 1, "not retried: {:?}", stats.by_key);
    });
}

#[test]
fn check_in_plain_words() {
    let Some(server) = start(FhirServerOptions::default()) else {
        return;
    };
    runtime().block_on(async {
        let config = lookup_config(&server);
        let report = run_checks(&config).await;
        assert!(report.is_ok(), "{report}");
        assert_eq!(
            report.finding(Check::FhirVersion).unwrap().status,
            Status::Pass
        );

        let mut wrong_path = config.clone();
        wrong_path.base_url = format!("{}/not-fhir", server.origin());
        let report = run_checks(&wrong_path).await;
        let finding = report.finding(Check::CapabilityStatement).unwrap();
        assert_eq!(finding.status, Status::Fail, "{report}");
        assert!(finding.message.contains("answers 404"), "{report}");

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut refused = config.clone();
        refused.auth = AuthConfig::None;
        refused.base_url = format!("http://127.0.0.1:{port}");
        refused.retry.max_attempts = std::num::NonZeroU32::new(1).unwrap();
        let report = run_checks(&refused).await;
        assert!(
            report.to_string().contains("connection refused"),
            "{report}"
        );

        let mut no_auth = config.clone();
        no_auth.auth = AuthConfig::None;
        let report = run_checks(&no_auth).await;
        assert!(!report.is_ok());
        assert!(
            report.to_string().contains("requires authentication (401)"),
            "{report}"
        );
    });
}
