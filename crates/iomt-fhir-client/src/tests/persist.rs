//! Create or merge, conflicts, caches, prefetch, failures that come back with their group,
//! and bundles.

use std::num::NonZeroUsize;

use iomt_model::ErrorClass;
use iomt_transform::{IdPrecision, ObservationIdentity, ResolvedIds, SERVICE_SYSTEM};
use serde_json::json;
use wiremock::ResponseTemplate;

use super::{device, hr, spo2, templates};
use crate::config::{FhirClientConfig, LookupToken};
use crate::error::{FhirClientError, RetryHint};
use crate::fake::FakeFhir;
use crate::persist::{PersistOutcome, Persister};

fn persister(config: &FhirClientConfig) -> Persister {
    Persister::new(config, templates()).unwrap()
}

fn with_devices(fake: &FakeFhir, n: usize) {
    for i in 1..=n {
        fake.insert(device(
            &format!("d{i}"),
            None,
            &format!("dev-{i}"),
            Some(&format!("Patient/p{i}")),
        ));
    }
}

fn kinds(outcomes: &[PersistOutcome]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            PersistOutcome::Created { .. } => "created",
            PersistOutcome::Updated { .. } => "updated",
            PersistOutcome::Unchanged { .. } => "unchanged",
            PersistOutcome::Failed(_) => "failed",
        })
        .collect()
}

fn observation_id(device: &str, patient: &str, group: &iomt_transform::ObservationGroup) -> String {
    ObservationIdentity::new(
        group,
        &ResolvedIds::new(patient, device, None),
        IdPrecision::Seconds,
    )
    .unwrap()
    .id
}

fn puts(fake: &FakeFhir) -> usize {
    fake.log().iter().filter(|l| l.starts_with("PUT ")).count()
}

#[tokio::test]
async fn create_then_merge_then_nothing() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    let first = hr("dev-1", "2024-01-01T10:00:05Z", "70");
    let id = observation_id("d1", "p1", &first);

    let out = p.persist(vec![first.clone()]).await;
    assert_eq!(kinds(&out), ["created"]);
    assert_eq!(out[0].id(), Some(id.as_str()));
    let stored = fake.get("Observation", &id).unwrap();
    assert_eq!(stored["status"], "final");
    assert_eq!(stored["subject"]["reference"], "Patient/p1");
    assert_eq!(stored["device"]["reference"], "Device/d1");
    assert_eq!(
        stored["identifier"][0]["value"],
        "p1.d1.heartrate.20240101100000Z.20240101105959Z"
    );

    fake.clear_log();
    let out = p
        .persist(vec![hr("dev-1", "2024-01-01T10:00:07Z", "72")])
        .await;
    assert_eq!(kinds(&out), ["updated"]);
    // From the caches: no search for the device nor for the Observation, one PUT.
    assert_eq!(fake.log(), [format!("PUT /fhir/Observation/{id}")]);
    let stored = fake.get("Observation", &id).unwrap();
    assert_eq!(stored["status"], "amended");
    assert_eq!(
        stored["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .split(' ')
            .take(8)
            .collect::<Vec<_>>(),
        ["E", "E", "E", "E", "E", "70", "E", "72"]
    );

    fake.clear_log();
    let out = p.persist(vec![first]).await;
    assert_eq!(kinds(&out), ["unchanged"]);
    assert!(fake.log().is_empty(), "{:?}", fake.log());
    let c = p.counters();
    assert_eq!(
        (
            c.observations_created,
            c.observations_updated,
            c.observations_unchanged
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_existing_observation_is_found_and_merged_with_if_match() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    // Written earlier (by another instance): not in this persister's cache.
    persister(&fake.config())
        .persist(vec![spo2("dev-1", "2024-01-01T10:00:00Z", "97")])
        .await;
    fake.clear_log();
    let p = persister(&fake.config());
    let out = p
        .persist(vec![spo2("dev-1", "2024-01-01T10:00:00Z", "98")])
        .await;
    assert_eq!(kinds(&out), ["updated"]);
    let id = out[0].id().unwrap().to_owned();
    let log = fake.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log[1].starts_with("GET /fhir/Observation?identifier=p1.d1.spo2."),
        "{log:?}"
    );
    assert_eq!(
        fake.get("Observation", &id).unwrap()["valueQuantity"]["value"],
        json!(98)
    );
}

#[tokio::test]
async fn a_stale_cache_entry_costs_a_412_and_a_reread() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    let out = p
        .persist(vec![hr("dev-1", "2024-01-01T10:00:05Z", "70")])
        .await;
    let id = out[0].id().unwrap().to_owned();
    // Someone else writes a new version behind the persister's back.
    let mut theirs = fake.get("Observation", &id).unwrap();
    theirs["note"] = json!([{"text": "edited elsewhere"}]);
    fake.insert(theirs);
    let out = p
        .persist(vec![hr("dev-1", "2024-01-01T10:00:06Z", "71")])
        .await;
    assert_eq!(kinds(&out), ["updated"]);
    let stored = fake.get("Observation", &id).unwrap();
    assert_eq!(
        stored["note"][0]["text"], "edited elsewhere",
        "their change survives"
    );
    assert!(
        stored["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("E E E E E 70 71")
    );
    assert_eq!(p.counters().conflicts, 1);
}

#[tokio::test]
async fn conflicts_that_persist_are_reported_retryable() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    p.persist(vec![hr("dev-1", "2024-01-01T10:00:05Z", "70")])
        .await;
    fake.fail_next("PUT", "^/fhir/Observation/", 10, ResponseTemplate::new(412))
        .await;
    let group = hr("dev-1", "2024-01-01T10:00:06Z", "71");
    let out = p.persist(vec![group.clone()]).await;
    let failure = out[0].failure().unwrap();
    assert_eq!(failure.group, group);
    assert!(
        matches!(
            failure.error,
            FhirClientError::Conflict {
                status: 412,
                attempts: 3,
                ..
            }
        ),
        "{:?}",
        failure.error
    );
    assert_eq!(failure.error.retry_hint(), RetryHint::WithBackoff);
    assert_eq!(failure.error.class(), ErrorClass::FhirClientException);
    assert_eq!(p.counters().conflicts, 3);
}

#[tokio::test]
async fn a_deleted_observation_is_created_again() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    let out = p
        .persist(vec![hr("dev-1", "2024-01-01T10:00:05Z", "70")])
        .await;
    let id = out[0].id().unwrap().to_owned();
    fake.state()
        .resources
        .remove(&("Observation".to_owned(), id.clone()));
    let out = p
        .persist(vec![hr("dev-1", "2024-01-01T10:00:06Z", "71")])
        .await;
    assert_eq!(kinds(&out), ["created"]);
    assert!(
        fake.get("Observation", &id).unwrap()["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("E E E E E E 71")
    );
}

#[tokio::test]
async fn groups_of_one_batch_are_looked_up_together() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 3);
    let p = persister(&fake.config());
    let groups: Vec<_> = (0..12)
        .map(|i| {
            spo2(
                &format!("dev-{}", i % 3 + 1),
                &format!("2024-01-01T10:00:{i:02}Z"),
                "97",
            )
        })
        .collect();
    let out = p.persist(groups).await;
    assert_eq!(kinds(&out), ["created"; 12]);
    let log = fake.log();
    let observation_searches: Vec<_> = log
        .iter()
        .filter(|l| l.contains("/fhir/Observation") && !l.starts_with("PUT"))
        .collect();
    assert_eq!(
        observation_searches,
        ["POST /fhir/Observation/_search"],
        "{log:?}"
    );
    assert_eq!(puts(&fake), 12);
    assert_eq!(fake.count("Observation"), 12);

    // prefetch_batch 1: one search per group, as the original.
    let fake = FakeFhir::start().await;
    with_devices(&fake, 3);
    let mut config = fake.config();
    config.observations.prefetch_batch = NonZeroUsize::new(1).unwrap();
    let groups: Vec<_> = (0..6)
        .map(|i| {
            spo2(
                &format!("dev-{}", i % 3 + 1),
                &format!("2024-01-01T10:00:{i:02}Z"),
                "97",
            )
        })
        .collect();
    persister(&config).persist(groups).await;
    let searches = fake
        .log()
        .iter()
        .filter(|l| l.starts_with("GET /fhir/Observation"))
        .count();
    assert_eq!(searches, 6);
}

#[tokio::test]
async fn writes_start_while_later_lookups_are_still_out() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 2);
    // Two identifiers per lookup: device 1's groups are the first search, device 2's the
    // second, which the server answers only after 3 s.
    fake.state()
        .slow_searches
        .push((".d2.spo2.".into(), std::time::Duration::from_secs(3)));
    let mut config = fake.config();
    config.observations.prefetch_batch = NonZeroUsize::new(2).unwrap();
    config.http.max_concurrency = NonZeroUsize::new(4).unwrap();
    let p = persister(&config);
    let groups = vec![
        spo2("dev-1", "2024-01-01T10:00:00Z", "97"),
        spo2("dev-1", "2024-01-01T10:00:01Z", "97"),
        spo2("dev-2", "2024-01-01T10:00:00Z", "97"),
        spo2("dev-2", "2024-01-01T10:00:01Z", "97"),
    ];
    let started = std::time::Instant::now();
    let persisting = tokio::spawn(async move { p.persist(groups).await });
    // Device 1's writes do not wait for device 2's lookup.
    while puts(&fake) < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_millis(2500),
            "device 1 waited for device 2's lookup: {:?}",
            fake.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!persisting.is_finished());
    let out = persisting.await.unwrap();
    assert_eq!(kinds(&out), ["created"; 4]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(3));
    let searches = fake
        .log()
        .iter()
        .filter(|l| l.contains("Observation/_search"))
        .count();
    assert_eq!(searches, 2, "{:?}", fake.log());
}

#[tokio::test]
async fn a_failed_lookup_falls_back_to_one_search_per_group() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 2);
    let first = spo2("dev-1", "2024-01-01T10:00:00Z", "97");
    persister(&fake.config()).persist(vec![first.clone()]).await;
    // The batch lookup fails (500, not an outage); each group then searches on its own and
    // finds what exists.
    fake.fail_next(
        "POST",
        "/fhir/Observation/_search",
        10,
        ResponseTemplate::new(500),
    )
    .await;
    fake.clear_log();
    let mut changed = first.clone();
    changed.properties[0].values[0].value = "98".into();
    let out = persister(&fake.config())
        .persist(vec![changed, spo2("dev-2", "2024-01-01T10:00:00Z", "96")])
        .await;
    assert_eq!(kinds(&out), ["updated", "created"]);
    let log = fake.log();
    let one_by_one = log
        .iter()
        .filter(|l| l.starts_with("GET /fhir/Observation?"))
        .count();
    assert_eq!(one_by_one, 2, "{log:?}");
}

#[tokio::test]
async fn prefetch_matches_identifiers_exactly() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    p.persist(vec![spo2("dev-1", "2024-01-01T10:00:00Z", "90")])
        .await;
    // A server comparing only a prefix: every Observation of the device matches every search.
    fake.state().prefix_match = Some(40);
    let q = persister(&fake.config());
    let out = q
        .persist(vec![
            spo2("dev-1", "2024-01-01T10:00:00Z", "91"),
            spo2("dev-1", "2024-01-01T10:00:01Z", "92"),
        ])
        .await;
    assert_eq!(kinds(&out), ["updated", "created"]);
    assert_eq!(fake.count("Observation"), 2);
}

#[tokio::test]
async fn lookups_send_the_value_alone_unless_told_otherwise() {
    for (token, prefix) in [
        (LookupToken::Value, String::new()),
        (LookupToken::SystemAndValue, format!("{SERVICE_SYSTEM}|")),
    ] {
        let fake = FakeFhir::start().await;
        with_devices(&fake, 1);
        let mut config = fake.config();
        config.observations.lookup_token = token;
        let groups = [
            spo2("dev-1", "2024-01-01T10:00:00Z", "90"),
            spo2("dev-1", "2024-01-01T10:00:01Z", "91"),
            spo2("dev-1", "2024-01-01T10:00:02Z", "92"),
        ];
        let value = |g| {
            ObservationIdentity::new(g, &ResolvedIds::new("p1", "d1", None), IdPrecision::Seconds)
                .unwrap()
                .identifier_value
        };
        // Two groups: one batch lookup; then one group alone: its own search.
        let p = persister(&config);
        p.persist(groups[..2].to_vec()).await;
        p.persist(groups[2..].to_vec()).await;
        let searches: Vec<String> = fake
            .identifier_searches()
            .await
            .into_iter()
            .filter(|s| s.contains(".spo2."))
            .collect();
        assert_eq!(
            searches,
            [
                format!(
                    "{prefix}{},{prefix}{}",
                    value(&groups[0]),
                    value(&groups[1])
                ),
                format!("{prefix}{}", value(&groups[2])),
            ],
            "{token:?}"
        );
    }
}

#[tokio::test]
async fn two_groups_for_one_observation_in_one_batch_are_written_in_order() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let p = persister(&fake.config());
    let out = p
        .persist(vec![
            hr("dev-1", "2024-01-01T10:00:01Z", "60"),
            hr("dev-1", "2024-01-01T10:00:02Z", "61"),
            hr("dev-1", "2024-01-01T10:00:03Z", "62"),
        ])
        .await;
    assert_eq!(kinds(&out), ["created", "updated", "updated"]);
    let id = out[0].id().unwrap();
    let data = fake.get("Observation", id).unwrap()["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(data.starts_with("E 60 61 62 E"), "{data}");
}

#[tokio::test]
async fn failures_come_back_with_their_group_and_class() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 2);
    let p = persister(&fake.config());
    let unknown_type = {
        let mut g = spo2("dev-1", "2024-01-01T10:00:00Z", "97");
        g.type_name = "glucose".into();
        g
    };
    let unknown_device = spo2("dev-9", "2024-01-01T10:00:00Z", "97");
    let bad_value = spo2("dev-2", "2024-01-01T10:00:00Z", "ninety");
    let good = spo2("dev-1", "2024-01-01T10:00:01Z", "97");
    let out = p
        .persist(vec![
            unknown_type.clone(),
            unknown_device.clone(),
            bad_value.clone(),
            good,
        ])
        .await;
    assert_eq!(kinds(&out), ["failed", "failed", "failed", "created"]);
    let f = |i: usize| out[i].failure().unwrap();
    assert_eq!(f(0).group, unknown_type);
    assert_eq!(f(0).error.class(), ErrorClass::TemplateNotFoundException);
    assert_eq!(f(1).group, unknown_device);
    assert_eq!(
        f(1).error.class(),
        ErrorClass::FhirResourceNotFoundException
    );
    assert_eq!(f(2).group, bad_value);
    assert_eq!(
        f(2).error.class(),
        ErrorClass::InvalidQuantityFhirValueException
    );
    assert_eq!(p.counters().groups_failed, 3);
}

#[tokio::test]
async fn a_rejected_write_carries_the_servers_explanation() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    fake.fail_next(
        "PUT",
        "^/fhir/Observation/",
        1,
        ResponseTemplate::new(422).set_body_json(json!({"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invariant", "diagnostics": "obs-6: dataAbsentReason SHALL only be present if value[x] is not present"}]})),
    )
    .await;
    let p = persister(&fake.config());
    let out = p
        .persist(vec![
            spo2("dev-1", "2024-01-01T10:00:00Z", "97"),
            spo2("dev-1", "2024-01-01T10:00:01Z", "97"),
        ])
        .await;
    assert_eq!(kinds(&out), ["failed", "created"]);
    let error = &out[0].failure().unwrap().error;
    assert_eq!(
        error.to_string(),
        "update Observation: the server rejected the request with http 422: error invariant: obs-6: dataAbsentReason SHALL only be present if value[x] is not present"
    );
    assert_eq!(error.retry_hint(), RetryHint::NoRetry);
}

#[tokio::test]
async fn a_missing_device_is_searched_once_per_batch() {
    let fake = FakeFhir::start().await;
    let p = persister(&fake.config());
    let groups: Vec<_> = (0..5)
        .map(|i| spo2("dev-x", &format!("2024-01-01T10:00:0{i}Z"), "97"))
        .collect();
    let out = p.persist(groups).await;
    assert_eq!(kinds(&out), ["failed"; 5]);
    assert_eq!(fake.log().len(), 1, "{:?}", fake.log());
}

#[tokio::test]
async fn an_outage_fails_the_batch_fast() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 4);
    fake.fail_next("*", ".*", 1000, ResponseTemplate::new(503))
        .await;
    let p = persister(&fake.config());
    let groups: Vec<_> = (0..40)
        .map(|i| {
            spo2(
                &format!("dev-{}", i % 4 + 1),
                &format!("2024-01-01T10:00:{i:02}Z"),
                "97",
            )
        })
        .collect();
    let out = p.persist(groups).await;
    assert_eq!(kinds(&out), ["failed"; 40]);
    for o in &out {
        let e = &o.failure().unwrap().error;
        assert!(
            matches!(e, FhirClientError::ServerError { status: 503, .. }),
            "{e:?}"
        );
        assert_eq!(e.retry_hint(), RetryHint::WithBackoff);
    }
    // At most one in-flight device search per worker, each with its 3 attempts.
    assert!(fake.received().await <= 4 * 3, "{}", fake.received().await);
}

#[tokio::test]
async fn bundles_write_rounds_of_distinct_observations() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 2);
    let mut config = fake.config();
    config.bundles.enabled = true;
    config.bundles.max_entries = NonZeroUsize::new(10).unwrap();
    let p = persister(&config);
    let out = p
        .persist(vec![
            hr("dev-1", "2024-01-01T10:00:05Z", "70"),
            hr("dev-1", "2024-01-01T10:00:06Z", "71"),
            spo2("dev-1", "2024-01-01T10:00:00Z", "97"),
            spo2("dev-2", "2024-01-01T10:00:00Z", "96"),
            spo2("dev-2", "2024-01-01T10:00:01Z", "95"),
        ])
        .await;
    assert_eq!(
        kinds(&out),
        ["created", "updated", "created", "created", "created"]
    );
    let log = fake.log();
    assert_eq!(
        log.iter().filter(|l| *l == "POST /fhir/").count(),
        2,
        "{log:?}"
    );
    assert_eq!(puts(&fake), 0);
    assert_eq!(p.counters().bundles_sent, 2);
    let hr_id = out[0].id().unwrap();
    assert!(
        fake.get("Observation", hr_id).unwrap()["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("E E E E E 70 71")
    );
}

#[tokio::test]
async fn bundle_entries_that_conflict_are_reread_and_retried() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    let mut config = fake.config();
    config.bundles.enabled = true;
    let p = persister(&config);
    let out = p
        .persist(vec![
            hr("dev-1", "2024-01-01T10:00:05Z", "70"),
            spo2("dev-1", "2024-01-01T10:00:00Z", "97"),
        ])
        .await;
    let id = out[0].id().unwrap().to_owned();
    let theirs = fake.get("Observation", &id).unwrap();
    fake.insert(theirs); // a new version: the cached one is stale
    let out = p
        .persist(vec![
            hr("dev-1", "2024-01-01T10:00:06Z", "71"),
            spo2("dev-1", "2024-01-01T10:00:00Z", "98"),
        ])
        .await;
    assert_eq!(kinds(&out), ["updated", "updated"]);
    assert_eq!(p.counters().conflicts, 1);
    assert!(
        fake.get("Observation", &id).unwrap()["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("E E E E E 70 71")
    );
}

#[tokio::test]
async fn a_rejected_bundle_fails_its_groups() {
    let fake = FakeFhir::start().await;
    with_devices(&fake, 1);
    fake.fail_next("POST", "^/fhir/?$", 1, ResponseTemplate::new(400).set_body_json(json!({
        "resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-supported", "diagnostics": "batch is not supported"}]}))).await;
    let mut config = fake.config();
    config.bundles.enabled = true;
    let out = persister(&config)
        .persist(vec![spo2("dev-1", "2024-01-01T10:00:00Z", "97")])
        .await;
    let e = &out[0].failure().unwrap().error;
    assert_eq!(
        e.to_string(),
        "batch bundle: the server rejected the request with http 400: error not-supported: batch is not supported"
    );
}

#[tokio::test]
async fn the_health_check_reads_the_capability_statement() {
    let fake = FakeFhir::start().await;
    let info = persister(&fake.config()).healthcheck().await.unwrap();
    assert_eq!(info.fhir_version.as_deref(), Some("4.0.1"));
    assert_eq!(info.software.as_deref(), Some("fake 1"));
}
