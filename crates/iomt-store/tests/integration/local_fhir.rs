//! The local FHIR store: identity modes, create and merge with the same functions as the FHIR
//! path, export, reopening.

use chrono::{DateTime, Utc};
use iomt_store::{LocalFhirStore, LocalIdentityMode, LocalStoreConfig, StoreError, StoreOutcome};
use iomt_transform::observation::resource_id;
use iomt_transform::{
    FhirTemplates, IdPrecision, MergeOutcome, ObservationGroup, ObservationIdentity, ResolvedIds,
    SERVICE_SYSTEM,
};
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{group, groups, heart_rate, spo2, templates};

fn open(dir: &TempDir, config: LocalStoreConfig) -> LocalFhirStore {
    LocalFhirStore::open(&dir.path().join("fhir.db"), config).unwrap()
}

fn lookup_config() -> LocalStoreConfig {
    LocalStoreConfig {
        identity: LocalIdentityMode::Lookup,
        ..LocalStoreConfig::default()
    }
}

fn persist_one(
    store: &LocalFhirStore,
    templates: &FhirTemplates,
    g: ObservationGroup,
) -> StoreOutcome {
    let mut outcomes = store.persist(vec![g], templates);
    assert_eq!(outcomes.len(), 1);
    outcomes.remove(0)
}

fn created(outcome: StoreOutcome) -> String {
    match outcome {
        StoreOutcome::Created { id } => id,
        other => panic!("expected Created, got {other:?}"),
    }
}

fn failure(outcome: StoreOutcome) -> (ObservationGroup, StoreError) {
    match outcome {
        StoreOutcome::Failed(failure) => (failure.group, failure.error),
        other => panic!("expected Failed, got {other:?}"),
    }
}

/// The resource without `meta`, which only the store sets.
fn without_meta(resource: &Value) -> Value {
    let mut copy = resource.clone();
    copy.as_object_mut().unwrap().shift_remove("meta");
    copy
}

fn keys(resource: &Value) -> Vec<String> {
    resource.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn create_mode_creates_patient_device_and_the_observation_iomt_transform_builds() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let g = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));
    let before = Utc::now();
    let id = created(persist_one(&store, &templates, g.clone()));

    // Patient and Device with the FHIR path's deterministic ids.
    let patient_id = resource_id(None, "patient-0001");
    let device_id = resource_id(None, "wristband-0001");
    let patient = store
        .get("Patient", &patient_id)
        .unwrap()
        .expect("patient created");
    assert_eq!(patient["identifier"], json!([{"value": "patient-0001"}]));
    assert_eq!(patient["meta"]["versionId"], "1");
    let device = store
        .get("Device", &device_id)
        .unwrap()
        .expect("device created");
    assert_eq!(device["identifier"], json!([{"value": "wristband-0001"}]));
    assert_eq!(
        device["patient"]["reference"],
        format!("Patient/{patient_id}")
    );

    // The Observation is exactly what iomt-transform builds for the group, plus meta.
    let stored = store
        .get("Observation", &id)
        .unwrap()
        .expect("observation stored");
    let issued = DateTime::parse_from_rfc3339(stored["issued"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(issued >= before - chrono::TimeDelta::milliseconds(1) && issued <= Utc::now());
    let identity = ObservationIdentity::new(
        &g,
        &ResolvedIds::new(&patient_id, &device_id, None),
        IdPrecision::Seconds,
    )
    .unwrap();
    assert_eq!(id, identity.id);
    let template = templates.require("heartrate").unwrap();
    let expected = template
        .create_observation(&g, issued)
        .unwrap()
        .with_identity(identity.clone())
        .to_json();
    assert_eq!(without_meta(&stored), expected);
    let mut expected_keys = keys(&expected);
    expected_keys.insert(2, "meta".into());
    assert_eq!(
        keys(&stored),
        expected_keys,
        "meta right after id, FHIR order kept"
    );
    assert_eq!(stored["meta"]["versionId"], "1");
    assert!(
        stored["meta"]["lastUpdated"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(
        stored["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    assert_eq!(stored["device"]["reference"], format!("Device/{device_id}"));

    // Found by its identifier, as the FHIR path searches it.
    let found = store
        .find_by_identifier(
            "Observation",
            Some(SERVICE_SYSTEM),
            &identity.identifier_value,
        )
        .unwrap();
    assert_eq!(found, [stored]);

    let counts = store.counts().unwrap();
    assert_eq!(
        (
            counts.patients,
            counts.devices,
            counts.encounters,
            counts.observations
        ),
        (1, 1, 0, 1)
    );
}

#[test]
fn a_second_group_in_the_hour_merges_and_a_replay_is_unchanged() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let template = templates.require("heartrate").unwrap();
    let first = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));
    let second = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:30:00Z",
        80,
    ));
    let id = created(persist_one(&store, &templates, first));
    let before_merge = store.get("Observation", &id).unwrap().unwrap();

    match persist_one(&store, &templates, second.clone()) {
        StoreOutcome::Updated { id: updated } => assert_eq!(updated, id),
        other => panic!("expected Updated, got {other:?}"),
    }
    let merged = store.get("Observation", &id).unwrap().unwrap();
    assert_eq!(merged["meta"]["versionId"], "2");
    assert_eq!(merged["status"], "amended");
    // Exactly iomt-transform's merge of the group into the stored Observation.
    let MergeOutcome::Changed(expected) =
        template.merge_observation(&before_merge, &second).unwrap()
    else {
        panic!("the second group changes the observation");
    };
    assert_eq!(without_meta(&merged), without_meta(&expected));
    let data = merged["valueSampledData"]["data"].as_str().unwrap();
    let tokens: Vec<&str> = data.split(' ').collect();
    assert_eq!(tokens.len(), 3600);
    assert_eq!((tokens[5], tokens[1800]), ("72", "80"));

    // The same group again: nothing to write (from the cache) …
    match persist_one(&store, &templates, second.clone()) {
        StoreOutcome::Unchanged { id: same } => assert_eq!(same, id),
        other => panic!("expected Unchanged, got {other:?}"),
    }
    assert_eq!(
        store.get("Observation", &id).unwrap().unwrap()["meta"]["versionId"],
        "2"
    );
    // … and after reopening, from the file.
    drop(store);
    let store = open(&dir, LocalStoreConfig::default());
    match persist_one(&store, &templates, second) {
        StoreOutcome::Unchanged { id: same } => assert_eq!(same, id),
        other => panic!("expected Unchanged after reopening, got {other:?}"),
    }
    assert_eq!(store.counts().unwrap().observations, 1);
}

#[test]
fn groups_of_one_call_for_the_same_observation_merge_in_order() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let a = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));
    let b = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:06Z",
        73,
    ));
    let outcomes = store.persist(vec![a.clone(), b, a], &templates);
    let ids: Vec<&str> = outcomes.iter().map(|o| o.id().unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    assert!(matches!(outcomes[0], StoreOutcome::Created { .. }));
    assert!(matches!(outcomes[1], StoreOutcome::Updated { .. }));
    assert!(matches!(outcomes[2], StoreOutcome::Unchanged { .. }));
    let stored = store.get("Observation", ids[0]).unwrap().unwrap();
    assert_eq!(stored["meta"]["versionId"], "2");
    assert!(
        stored["valueSampledData"]["data"]
            .as_str()
            .unwrap()
            .starts_with("E E E E E 72 73 E")
    );
}

#[test]
fn instant_observations_are_created_once() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let g = group(&spo2(
        "oximeter-0002",
        "patient-0001",
        "2026-11-26T08:15:00Z",
        97,
    ));
    let id = created(persist_one(&store, &templates, g.clone()));
    let stored = store.get("Observation", &id).unwrap().unwrap();
    assert_eq!(stored["valueQuantity"]["value"], json!(97));
    assert_eq!(
        stored["effectivePeriod"]["start"],
        "2026-11-26T08:15:00.0000000Z"
    );
    // Built by the same function, serialized through the fast path: same JSON.
    let issued = DateTime::parse_from_rfc3339(stored["issued"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let identity = ObservationIdentity::new(
        &g,
        &ResolvedIds::new(
            &resource_id(None, "patient-0001"),
            &resource_id(None, "oximeter-0002"),
            None,
        ),
        IdPrecision::Seconds,
    )
    .unwrap();
    let expected = templates
        .require("spo2")
        .unwrap()
        .create_observation(&g, issued)
        .unwrap()
        .with_identity(identity)
        .to_json();
    assert_eq!(without_meta(&stored), expected);
    match persist_one(&store, &templates, g) {
        StoreOutcome::Unchanged { id: same } => assert_eq!(same, id),
        other => panic!("expected Unchanged, got {other:?}"),
    }
}

/// Create mode in one call of many new devices (several slices of Observations, on builder
/// threads): each Patient is created once however many of its devices the call meets, every
/// Device links to its Patient, and the same call again changes nothing.
#[test]
fn one_call_creates_each_patient_once_and_links_every_device() {
    let dir = TempDir::new().unwrap();
    let config = LocalStoreConfig {
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        ..LocalStoreConfig::default()
    };
    let store = open(&dir, config);
    let templates = templates();
    // 600 devices, two per patient: 600 hour Observations, three slices of them and more.
    let messages: Vec<String> = (0..600)
        .map(|d| {
            heart_rate(
                &format!("band-{d:04}"),
                &format!("patient-{:04}", d / 2),
                "2026-11-26T08:00:05Z",
                60 + d % 40,
            )
        })
        .collect();
    let batch = groups(&messages.iter().map(String::as_str).collect::<Vec<_>>());
    let outcomes = store.persist(batch.clone(), &templates);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StoreOutcome::Created { .. })),
        "{:?}",
        outcomes
            .iter()
            .find(|o| !matches!(o, StoreOutcome::Created { .. }))
    );
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.patients, counts.devices, counts.observations),
        (300, 600, 600)
    );
    for d in [0, 1, 255, 256, 257, 511, 599] {
        let patient_id = resource_id(None, &format!("patient-{:04}", d / 2));
        let device = store
            .get("Device", &resource_id(None, &format!("band-{d:04}")))
            .unwrap()
            .expect("device created");
        assert_eq!(
            device["patient"]["reference"],
            format!("Patient/{patient_id}")
        );
        assert_eq!(device["meta"]["versionId"], "1");
        let patient = store.get("Patient", &patient_id).unwrap().expect("patient");
        assert_eq!(patient["meta"]["versionId"], "1", "written once");
        let found = store
            .find_by_identifier("Patient", None, &format!("patient-{:04}", d / 2))
            .unwrap();
        assert_eq!(found.len(), 1);
    }

    // A new store on the same file (cold caches): the same call finds everything.
    drop(store);
    let store = open(&dir, LocalStoreConfig::default());
    let again = store.persist(batch, &templates);
    assert!(
        again
            .iter()
            .all(|o| matches!(o, StoreOutcome::Unchanged { .. })),
        "{again:?}"
    );
    assert_eq!(store.counts().unwrap().total(), counts.total());
}

#[test]
fn lookup_mode_needs_the_device() {
    let dir = TempDir::new().unwrap();
    let config = LocalStoreConfig {
        default_device_identifier_system: Some("urn:devices".into()),
        ..lookup_config()
    };
    let store = open(&dir, config);
    let templates = templates();
    let g = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));

    let (back, error) = failure(persist_one(&store, &templates, g.clone()));
    assert_eq!(back, g, "the group comes back unchanged");
    assert_eq!(error.class(), "FhirResourceNotFoundException");
    assert!(!error.is_retryable());
    assert!(matches!(
        error,
        StoreError::NotFound {
            resource_type: "Device",
            ..
        }
    ));
    assert_eq!(store.counts().unwrap().total(), 0, "lookup creates nothing");

    // A Device with the identifier but another system is not it.
    store
        .put_resource(&json!({"resourceType": "Device", "id": "wrong-system",
            "identifier": [{"system": "urn:other", "value": "wristband-0001"}],
            "patient": {"reference": "Patient/p-1"}}))
        .unwrap();
    let (_, error) = failure(persist_one(&store, &templates, g.clone()));
    assert_eq!(error.class(), "FhirResourceNotFoundException");

    // A Device without a usable patient reference: the Patient is not found.
    store
        .put_resource(&json!({"resourceType": "Device", "id": "dev-1",
            "identifier": [{"system": "urn:devices", "value": "wristband-0001"}],
            "patient": {"reference": "https://elsewhere/Patient/p-1"}}))
        .unwrap();
    let (_, error) = failure(persist_one(&store, &templates, g.clone()));
    assert!(matches!(
        error,
        StoreError::NotFound {
            resource_type: "Patient",
            ..
        }
    ));

    // Seeded properly: the Observation links the seeded resources.
    store
        .put_resource(&json!({"resourceType": "Patient", "id": "p-1",
            "identifier": [{"value": "mrn-1"}]}))
        .unwrap();
    store
        .put_resource(&json!({"resourceType": "Device", "id": "dev-1",
            "identifier": [{"system": "urn:devices", "value": "wristband-0001"}],
            "patient": {"reference": "Patient/p-1"}}))
        .unwrap();
    let id = created(persist_one(&store, &templates, g.clone()));
    let stored = store.get("Observation", &id).unwrap().unwrap();
    assert_eq!(stored["subject"]["reference"], "Patient/p-1");
    assert_eq!(stored["device"]["reference"], "Device/dev-1");
    let identity = ObservationIdentity::new(
        &g,
        &ResolvedIds::new("p-1", "dev-1", None),
        IdPrecision::Seconds,
    )
    .unwrap();
    assert_eq!(id, identity.id);

    // Two Devices with the identifier.
    store
        .put_resource(&json!({"resourceType": "Device", "id": "dev-2",
            "identifier": [{"system": "urn:devices", "value": "wristband-0001"}],
            "patient": {"reference": "Patient/p-1"}}))
        .unwrap();
    let (_, error) = failure(persist_one(&store, &templates, g));
    assert_eq!(error.class(), "MultipleResourceFoundException");
}

#[test]
fn lookup_resolves_encounters_and_lookup_with_encounter_requires_one() {
    let dir = TempDir::new().unwrap();
    let store = open(
        &dir,
        LocalStoreConfig {
            identity: LocalIdentityMode::LookupWithEncounter,
            ..LocalStoreConfig::default()
        },
    );
    let templates = templates();
    store
        .put_resource(&json!({"resourceType": "Patient", "id": "p-1"}))
        .unwrap();
    store
        .put_resource(&json!({"resourceType": "Device", "id": "dev-1",
            "identifier": [{"value": "wristband-0001"}],
            "patient": {"reference": "Patient/p-1"}}))
        .unwrap();
    let mut g = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));
    let (_, error) = failure(persist_one(&store, &templates, g.clone()));
    assert_eq!(error.class(), "ResourceIdentityNotDefinedException");

    g.encounter_id = Some("visit-7".into());
    let (_, error) = failure(persist_one(&store, &templates, g.clone()));
    assert!(matches!(
        error,
        StoreError::NotFound {
            resource_type: "Encounter",
            ..
        }
    ));

    store
        .put_resource(&json!({"resourceType": "Encounter", "id": "enc-7",
            "identifier": [{"system": "urn:visits", "value": "visit-7"}]}))
        .unwrap();
    let id = created(persist_one(&store, &templates, g));
    let stored = store.get("Observation", &id).unwrap().unwrap();
    assert_eq!(stored["encounter"]["reference"], "Encounter/enc-7");
}

#[test]
fn create_mode_links_an_unlinked_device_and_refuses_a_mismatch() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    store
        .put_resource(&json!({"resourceType": "Device", "id": "unlinked",
            "identifier": [{"value": "wristband-0001"}]}))
        .unwrap();
    store
        .put_resource(&json!({"resourceType": "Patient", "id": "p1",
            "identifier": [{"value": "patient-0001"}]}))
        .unwrap();
    let g = group(&heart_rate(
        "wristband-0001",
        "patient-0001",
        "2026-11-26T08:00:05Z",
        72,
    ));
    let id = created(persist_one(&store, &templates, g));
    let device = store.get("Device", "unlinked").unwrap().unwrap();
    assert_eq!(device["patient"]["reference"], "Patient/p1");
    assert_eq!(device["meta"]["versionId"], "2");
    assert_eq!(
        store.get("Observation", &id).unwrap().unwrap()["subject"]["reference"],
        "Patient/p1"
    );

    // A device whose patient reference is unusable and names someone else.
    store
        .put_resource(&json!({"resourceType": "Device", "id": "other",
            "identifier": [{"value": "cuff-0003"}],
            "patient": {"reference": "https://elsewhere/Patient/zz"}}))
        .unwrap();
    let bp = group(
        r#"{"deviceId":"cuff-0003","patientId":"patient-0002","endDate":"2026-11-26T08:05:00Z","systolic":121,"diastolic":79}"#,
    );
    let (_, error) = failure(persist_one(&store, &templates, bp));
    assert_eq!(error.class(), "PatientDeviceMismatchException");
    assert!(!error.is_retryable());

    // No patient id: nothing can be created.
    let mut no_patient = group(&heart_rate("band-9", "x", "2026-11-26T08:00:05Z", 60));
    no_patient.patient_id = None;
    let (_, error) = failure(persist_one(&store, &templates, no_patient));
    assert_eq!(error.class(), "ResourceIdentityNotDefinedException");
    assert!(
        store
            .find_by_identifier("Device", None, "band-9")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn one_group_failing_does_not_fail_the_others() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let good = group(&spo2(
        "oximeter-0002",
        "patient-0001",
        "2026-11-26T08:15:00Z",
        97,
    ));
    let mut unknown = good.clone();
    unknown.type_name = "glucose".into();
    let mut two_values = group(&spo2(
        "oximeter-0002",
        "patient-0001",
        "2026-11-26T08:16:00Z",
        98,
    ));
    let mut extra = two_values.properties[0].values[0].clone();
    extra.time += chrono::TimeDelta::milliseconds(1);
    two_values.properties[0].values.push(extra);
    let outcomes = store.persist(vec![unknown, good, two_values], &templates);
    assert_eq!(
        outcomes[0].error().unwrap().class(),
        "TemplateNotFoundException"
    );
    assert!(matches!(outcomes[1], StoreOutcome::Created { .. }));
    assert_eq!(
        outcomes[2].error().unwrap().class(),
        "InvalidQuantityFhirValueException"
    );
    assert_eq!(store.counts().unwrap().observations, 1);
}

#[test]
fn put_resource_assigns_ids_and_versions() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let id = store
        .put_resource(&json!({"resourceType": "Patient", "identifier": [{"system": "urn:mrn", "value": "42"}]}))
        .unwrap();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    let patient = store.get("Patient", &id).unwrap().unwrap();
    assert_eq!(keys(&patient), ["resourceType", "id", "meta", "identifier"]);
    assert_eq!(patient["meta"]["versionId"], "1");

    let mut changed = patient.clone();
    changed["identifier"] = json!([{"system": "urn:mrn", "value": "43"}]);
    assert_eq!(store.put_resource(&changed).unwrap(), id);
    let patient = store.get("Patient", &id).unwrap().unwrap();
    assert_eq!(patient["meta"]["versionId"], "2");
    // The identifier index follows the body.
    assert!(
        store
            .find_by_identifier("Patient", Some("urn:mrn"), "42")
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .find_by_identifier("Patient", Some("urn:mrn"), "43")
            .unwrap(),
        std::slice::from_ref(&patient)
    );
    assert_eq!(
        store.find_by_identifier("Patient", None, "43").unwrap(),
        [patient]
    );
    assert!(
        store
            .find_by_identifier("Patient", Some("urn:other"), "43")
            .unwrap()
            .is_empty()
    );

    let err = store
        .put_resource(&json!({"resourceType": "Organization", "id": "o"}))
        .unwrap_err();
    assert!(
        matches!(err, StoreError::UnsupportedResourceType { .. }),
        "{err:?}"
    );
    let err = store
        .put_resource(&json!({"resourceType": "Patient", "id": "has/slash"}))
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidResource { .. }), "{err:?}");
    assert!(store.put_resource(&json!([1])).is_err());
    assert!(store.put_resource(&json!({"id": "x"})).is_err());
    assert!(store.get("Organization", "o").is_err());
    assert_eq!(store.get("Patient", "missing").unwrap(), None);
}

#[test]
fn export_writes_one_parseable_resource_per_line() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let messages: Vec<String> = include_str!("../../../../examples/wearable/messages.ndjson")
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(str::to_owned)
        .filter(|l| !l.contains("\"diastolic\":null"))
        .collect();
    let refs: Vec<&str> = messages.iter().map(String::as_str).collect();
    let all = groups(&refs);
    let outcomes = store.persist(all, &templates);
    assert!(outcomes.iter().all(|o| o.error().is_none()), "{outcomes:?}");
    let counts = store.counts().unwrap();
    assert!(
        counts.observations >= 6 && counts.patients == 4 && counts.devices == 6,
        "{counts:?}"
    );

    let mut out = Vec::new();
    let written = store.export_ndjson(&mut out, &[]).unwrap();
    assert_eq!(written, counts.total());
    let text = String::from_utf8(out).unwrap();
    assert!(text.ends_with('\n'));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() as u64, written);
    let mut types: Vec<String> = Vec::new();
    for line in &lines {
        let resource: Value = serde_json::from_str(line).unwrap();
        let resource_type = resource["resourceType"].as_str().unwrap().to_owned();
        let id = resource["id"].as_str().unwrap();
        assert_eq!(
            store.get(&resource_type, id).unwrap().as_ref(),
            Some(&resource)
        );
        if types.last() != Some(&resource_type) {
            types.push(resource_type);
        }
    }
    assert_eq!(
        types,
        ["Patient", "Device", "Observation"],
        "grouped by type, in order"
    );

    let mut only = Vec::new();
    let n = store.export_ndjson(&mut only, &["Observation"]).unwrap();
    assert_eq!(n, counts.observations);
    assert_eq!(String::from_utf8(only).unwrap().lines().count() as u64, n);
    let err = store
        .export_ndjson(&mut Vec::new(), &["Bundle"])
        .unwrap_err();
    assert!(matches!(err, StoreError::UnsupportedResourceType { .. }));

    struct Broken;
    impl std::io::Write for Broken {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("disk full"))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let err = store.export_ndjson(&mut Broken, &[]).unwrap_err();
    assert!(
        matches!(err, StoreError::Export { .. }) && err.is_retryable(),
        "{err:?}"
    );
}

#[test]
fn reopening_keeps_everything() {
    let dir = TempDir::new().unwrap();
    let templates = templates();
    let (counts, export) = {
        let store = open(&dir, LocalStoreConfig::default());
        let hr: Vec<String> = (0..20)
            .map(|i| {
                heart_rate(
                    &format!("band-{}", i % 4),
                    &format!("p-{}", i % 4),
                    &format!("2026-11-26T08:00:{i:02}Z"),
                    60 + i,
                )
            })
            .collect();
        let refs: Vec<&str> = hr.iter().map(String::as_str).collect();
        for g in groups(&refs) {
            assert!(persist_one(&store, &templates, g).error().is_none());
        }
        let mut export = Vec::new();
        store.export_ndjson(&mut export, &[]).unwrap();
        (store.counts().unwrap(), export)
    };
    assert_eq!(
        (counts.patients, counts.devices, counts.observations),
        (4, 4, 4)
    );
    let store = open(&dir, lookup_config());
    assert_eq!(store.counts().unwrap(), counts);
    let mut again = Vec::new();
    store.export_ndjson(&mut again, &[]).unwrap();
    assert_eq!(again, export);
    // The devices created before are found in lookup mode after reopening.
    let g = group(&heart_rate("band-1", "p-1", "2026-11-26T08:00:59Z", 99));
    match persist_one(&store, &templates, g) {
        StoreOutcome::Updated { .. } => {}
        other => panic!("expected Updated, got {other:?}"),
    }
}

#[test]
fn millisecond_precision_gives_instants_their_own_observations() {
    let dir = TempDir::new().unwrap();
    let store = open(
        &dir,
        LocalStoreConfig {
            id_precision: IdPrecision::Milliseconds,
            ..LocalStoreConfig::default()
        },
    );
    let templates = templates();
    let a = group(&spo2("ox", "p", "2026-11-26T08:15:00.100Z", 97));
    let b = group(&spo2("ox", "p", "2026-11-26T08:15:00.200Z", 98));
    let outcomes = store.persist(vec![a, b], &templates);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StoreOutcome::Created { .. }))
    );
    assert_ne!(outcomes[0].id(), outcomes[1].id());

    // With seconds (the default) the second merges into the first (SPEC §16.7).
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let a = group(&spo2("ox", "p", "2026-11-26T08:15:00.100Z", 97));
    let b = group(&spo2("ox", "p", "2026-11-26T08:15:00.200Z", 98));
    let outcomes = store.persist(vec![a, b], &templates);
    assert!(matches!(outcomes[0], StoreOutcome::Created { .. }));
    assert!(matches!(outcomes[1], StoreOutcome::Updated { .. }));
    let stored = store
        .get("Observation", outcomes[0].id().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(stored["valueQuantity"]["value"], json!(98));
}

#[test]
fn a_failed_write_keeps_nothing_of_the_call() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let a = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:05Z", 70));
    let b = group(&heart_rate("band-b", "p-b", "2026-11-26T08:00:05Z", 71));
    // Another program's trigger makes the second Observation's insert fail.
    let other = rusqlite::Connection::open(dir.path().join("fhir.db")).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON resource \
             WHEN NEW.resource_type = 'Observation' \
              AND (SELECT count(*) FROM resource WHERE resource_type = 'Observation') >= 1 \
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
        )
        .unwrap();
    let outcomes = store.persist(vec![a.clone(), b.clone()], &templates);
    for (outcome, sent) in outcomes.into_iter().zip([&a, &b]) {
        let (back, error) = failure(outcome);
        assert_eq!(&back, sent);
        assert!(matches!(error, StoreError::Storage { .. }), "{error:?}");
        assert_eq!(error.class(), iomt_store::STORE_ERROR_CLASS);
    }
    assert_eq!(
        store.counts().unwrap().total(),
        0,
        "rolled back: no Patient, Device or Observation"
    );

    // Neither cache kept anything of the failed call: everything is created again.
    other.execute_batch("DROP TRIGGER refuse").unwrap();
    let outcomes = store.persist(vec![a, b], &templates);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StoreOutcome::Created { .. })),
        "{outcomes:?}"
    );
    let counts = store.counts().unwrap();
    assert_eq!(
        (counts.patients, counts.devices, counts.observations),
        (2, 2, 2)
    );
}

/// `persist_unsynced` commits without flushing; `sync` flushes what was written since the last
/// flush, reports a flush that failed, and keeps reporting it until one succeeds. (A flush
/// fails here because the log file is moved away; SQLite keeps writing to its open handle.)
#[test]
fn sync_flushes_what_persist_unsynced_wrote_and_reports_a_failed_flush() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let wal = dir.path().join("fhir.db-wal");
    let moved = dir.path().join("moved-wal");

    // Nothing written: nothing to flush, even without a log file to flush.
    store.sync().unwrap();
    let a = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:05Z", 70));
    let outcomes = store.persist_unsynced(vec![a.clone()], &templates);
    assert!(
        matches!(outcomes[..], [StoreOutcome::Created { .. }]),
        "{outcomes:?}"
    );
    // Committed: readers and later calls see it before any flush.
    assert_eq!(store.counts().unwrap().observations, 1);
    let replay = store.persist_unsynced(vec![a], &templates);
    assert!(
        matches!(replay[..], [StoreOutcome::Unchanged { .. }]),
        "{replay:?}"
    );

    std::fs::rename(&wal, &moved).unwrap();
    for _ in 0..2 {
        let error = store.sync().unwrap_err();
        assert!(matches!(error, StoreError::Storage { .. }), "{error:?}");
        assert!(
            error.to_string().contains("flushing the write-ahead log"),
            "{error}"
        );
    }
    std::fs::rename(&moved, &wal).unwrap();
    store.sync().unwrap();

    // Flushed: the next sync has nothing to do, even without the file.
    std::fs::rename(&wal, &moved).unwrap();
    store.sync().unwrap();
    // A write makes the next one flush again.
    let b = group(&heart_rate("band-b", "p-b", "2026-11-26T08:00:05Z", 71));
    let outcomes = store.persist_unsynced(vec![b], &templates);
    assert!(
        matches!(outcomes[..], [StoreOutcome::Created { .. }]),
        "{outcomes:?}"
    );
    assert!(store.sync().is_err());
    std::fs::rename(&moved, &wal).unwrap();
    store.sync().unwrap();
}

/// `persist` flushes before it returns: when the flush fails, every group it saved comes
/// back failed and retryable, and the retry finds them unchanged.
#[test]
fn a_failed_flush_fails_the_groups_persist_saved() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let wal = dir.path().join("fhir.db-wal");
    let moved = dir.path().join("moved-wal");
    let a = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:05Z", 70));
    // The log file exists once the first write began.
    store.persist(
        vec![group(&spo2("band-z", "p-z", "2026-11-26T08:00:05Z", 97))],
        &templates,
    );
    std::fs::rename(&wal, &moved).unwrap();
    let outcomes = store.persist(vec![a.clone()], &templates);
    let (back, error) = failure(outcomes.into_iter().next().unwrap());
    assert_eq!(back, a);
    assert!(error.is_retryable(), "{error:?}");
    std::fs::rename(&moved, &wal).unwrap();
    let retried = store.persist(vec![a], &templates);
    assert!(
        matches!(retried[..], [StoreOutcome::Unchanged { .. }]),
        "{retried:?}"
    );
}

#[test]
fn replayed_instants_are_found_by_their_insert() {
    // One-instant Observations are presumed new and not probed for: a replay must still merge
    // into what is stored, also with no cache (a reopened store) and on the builder thread.
    let templates = templates();
    let dir = TempDir::new().unwrap();
    let config = LocalStoreConfig {
        workers: std::num::NonZeroUsize::new(2).unwrap(),
        ..LocalStoreConfig::default()
    };
    let message = |device: usize, percent: u32| {
        spo2(
            &format!("ox-{device}"),
            &format!("p-{device}"),
            "2026-11-26T08:15:00Z",
            percent,
        )
    };
    let first: Vec<ObservationGroup> = (0..100).map(|d| group(&message(d, 95))).collect();
    let outcomes = open(&dir, config.clone()).persist(first, &templates);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StoreOutcome::Created { .. }))
    );

    // Reopened: 100 replays (50 the same, 50 with a new value) and 100 new ones.
    let store = open(&dir, config);
    let mut batch: Vec<ObservationGroup> = (0..100)
        .map(|d| group(&message(d, if d < 50 { 95 } else { 97 })))
        .collect();
    batch.extend((100..200).map(|d| group(&message(d, 95))));
    let outcomes = store.persist(batch, &templates);
    let kind = |range: std::ops::Range<usize>| -> Vec<&str> {
        outcomes[range]
            .iter()
            .map(|o| match o {
                StoreOutcome::Created { .. } => "created",
                StoreOutcome::Updated { .. } => "updated",
                StoreOutcome::Unchanged { .. } => "unchanged",
                StoreOutcome::Failed(failure) => panic!("failed: {}", failure.error),
            })
            .collect()
    };
    assert_eq!(kind(0..50), ["unchanged"; 50]);
    assert_eq!(kind(50..100), ["updated"; 50]);
    assert_eq!(kind(100..200), ["created"; 100]);
    assert_eq!(store.counts().unwrap().observations, 200);
    let updated = store
        .get("Observation", outcomes[60].id().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(updated["valueQuantity"]["value"], json!(97));
    assert_eq!(updated["meta"]["versionId"], "2");
    assert_eq!(updated["status"], "amended");

    // An Observation without identifiers under the id a new instant's identifier gives is
    // replaced, as a FHIR update of that id would.
    let g = group(&message(500, 93));
    let identity = ObservationIdentity::new(
        &g,
        &ResolvedIds::new(
            &resource_id(None, "p-500"),
            &resource_id(None, "ox-500"),
            None,
        ),
        IdPrecision::Seconds,
    )
    .unwrap();
    store
        .put_resource(&json!({"resourceType": "Observation", "id": identity.id, "status": "final"}))
        .unwrap();
    assert_eq!(created(persist_one(&store, &templates, g)), identity.id);
    let replaced = store.get("Observation", &identity.id).unwrap().unwrap();
    assert_eq!(replaced["meta"]["versionId"], "2");
    assert_eq!(
        replaced["identifier"][0]["value"],
        json!(identity.identifier_value)
    );
    assert_eq!(replaced["valueQuantity"]["value"], json!(93));
}

#[test]
fn observations_written_outside_the_pipeline_are_found_too() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let first = group(&heart_rate("band-1", "p-1", "2026-11-26T08:00:05Z", 70));
    let later = group(&heart_rate("band-1", "p-1", "2026-11-26T08:00:06Z", 71));
    let id = created(persist_one(&store, &templates, first));
    let stored = store.get("Observation", &id).unwrap().unwrap();
    let identifier = stored["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let find = |system: Option<&str>, value: &str| -> Vec<String> {
        store
            .find_by_identifier("Observation", system, value)
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(find(None, &identifier), std::slice::from_ref(&id));
    assert_eq!(
        find(Some(SERVICE_SYSTEM), &identifier),
        std::slice::from_ref(&id)
    );
    assert!(find(Some("urn:other"), &identifier).is_empty());

    // Written back as it was (an import): still the one Observation with the identifier.
    store.put_resource(&stored).unwrap();
    assert_eq!(find(None, &identifier), std::slice::from_ref(&id));
    assert_eq!(
        store.get("Observation", &id).unwrap().unwrap()["meta"]["versionId"],
        "2"
    );

    // A copy under another id: two Observations with one identifier.
    let mut copy = stored.clone();
    copy["id"] = json!("0-manual");
    store.put_resource(&copy).unwrap();
    assert_eq!(find(None, &identifier), ["0-manual".to_owned(), id.clone()]);
    let (_, error) = failure(persist_one(&store, &templates, later.clone()));
    assert_eq!(error.class(), "MultipleResourceFoundException");

    // The original re-identified: the copy is the one, and the group merges into it.
    let mut renamed = stored.clone();
    renamed["identifier"] = json!([{"system": "urn:x", "value": "v"}]);
    store.put_resource(&renamed).unwrap();
    assert_eq!(find(None, &identifier), ["0-manual".to_owned()]);
    assert_eq!(find(Some("urn:x"), "v"), std::slice::from_ref(&id));
    match persist_one(&store, &templates, later) {
        StoreOutcome::Updated { id } => assert_eq!(id, "0-manual"),
        other => panic!("expected Updated, got {other:?}"),
    }
}

#[test]
fn a_failed_merge_of_a_cached_observation_is_merged_from_the_file_next_time() {
    // A call takes the hour it merges out of the cache; when its transaction rolls back, the
    // next call must find the committed hour in the file, not a lost or half-merged one.
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let first = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:05Z", 70));
    let second = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:10Z", 71));
    let third = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:15Z", 72));
    let id = created(persist_one(&store, &templates, first));
    let other = rusqlite::Connection::open(dir.path().join("fhir.db")).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE UPDATE ON resource \
             BEGIN SELECT RAISE(ABORT, 'refused by test'); END",
        )
        .unwrap();
    let (_, error) = failure(persist_one(&store, &templates, second.clone()));
    assert!(matches!(error, StoreError::Storage { .. }), "{error:?}");
    other.execute_batch("DROP TRIGGER refuse").unwrap();

    let outcomes = store.persist(vec![second, third], &templates);
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, StoreOutcome::Updated { id: u } if *u == id)),
        "{outcomes:?}"
    );
    let hour = store.get("Observation", &id).unwrap().unwrap();
    assert_eq!(
        hour["meta"]["versionId"], "3",
        "one create, then two merges"
    );
    let data = hour["valueSampledData"]["data"].as_str().unwrap();
    let tokens: Vec<&str> = data.split(' ').collect();
    assert_eq!((tokens[5], tokens[10], tokens[15]), ("70", "71", "72"));
    // And the cache holds the result: the same groups again change nothing.
    let again = group(&heart_rate("band-a", "p-a", "2026-11-26T08:00:15Z", 72));
    assert!(matches!(
        persist_one(&store, &templates, again),
        StoreOutcome::Unchanged { .. }
    ));
}

#[test]
fn building_in_parallel_writes_what_building_in_order_writes() {
    let templates = templates();
    // 600 Observations: more than one slice of chains, so builders run ahead of the writer.
    let messages: Vec<String> = (0..1800)
        .map(|i| {
            let device = i % 600;
            let second = i / 600;
            if device % 2 == 0 {
                heart_rate(
                    &format!("band-{device}"),
                    &format!("p-{device}"),
                    &format!("2026-11-26T08:00:{second:02}Z"),
                    60 + i,
                )
            } else {
                spo2(
                    &format!("ox-{device}"),
                    &format!("p-{device}"),
                    "2026-11-26T08:00:00Z",
                    90 + second,
                )
            }
        })
        .collect();
    // One group per message, so every Observation gets a create and two merges; the last ten
    // again are replays.
    let mut batch: Vec<ObservationGroup> = messages.iter().map(|m| group(m)).collect();
    batch.extend_from_within(1790..);
    let mut exports = Vec::new();
    let mut kinds = Vec::new();
    // Workers 1 builds on the writer alone; 2 and 4 build on helpers and the writer, in
    // order; transactions of 500 groups split an Observation's groups across transactions.
    for (workers, transaction_groups) in [(1, 10_000), (2, 10_000), (4, 10_000), (2, 500)] {
        let dir = TempDir::new().unwrap();
        let store = open(
            &dir,
            LocalStoreConfig {
                workers: std::num::NonZeroUsize::new(workers).unwrap(),
                transaction_groups: std::num::NonZeroUsize::new(transaction_groups).unwrap(),
                ..LocalStoreConfig::default()
            },
        );
        let outcomes = store.persist(batch.clone(), &templates);
        kinds.push(
            outcomes
                .iter()
                .map(|o| match o {
                    StoreOutcome::Created { id } => format!("created {id}"),
                    StoreOutcome::Updated { id } => format!("updated {id}"),
                    StoreOutcome::Unchanged { id } => format!("unchanged {id}"),
                    StoreOutcome::Failed(failure) => format!("failed {}", failure.error),
                })
                .collect::<Vec<_>>(),
        );
        let mut out = Vec::new();
        store.export_ndjson(&mut out, &[]).unwrap();
        let resources: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|line| {
                let mut r: Value = serde_json::from_str(line).unwrap();
                let object = r.as_object_mut().unwrap();
                object.shift_remove("issued");
                object["meta"]
                    .as_object_mut()
                    .unwrap()
                    .shift_remove("lastUpdated");
                r
            })
            .collect();
        exports.push(resources);
    }
    for other in &kinds[1..] {
        assert_eq!(&kinds[0], other);
    }
    assert_eq!(
        kinds[0].iter().filter(|k| k.starts_with("created")).count(),
        600
    );
    assert_eq!(
        kinds[0].iter().filter(|k| k.starts_with("updated")).count(),
        1200
    );
    assert_eq!(
        kinds[0]
            .iter()
            .filter(|k| k.starts_with("unchanged"))
            .count(),
        10
    );
    for other in &exports[1..] {
        assert_eq!(&exports[0], other);
    }
    let versions: Vec<&str> = exports[0]
        .iter()
        .filter(|r| r["resourceType"] == "Observation")
        .map(|r| r["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions.len(), 600);
    assert!(versions.iter().all(|v| *v == "3"), "{versions:?}");
}

#[test]
fn observations_are_stored_compressed_and_read_back_as_json() {
    let dir = TempDir::new().unwrap();
    let store = open(&dir, LocalStoreConfig::default());
    let templates = templates();
    let hour = group(&heart_rate("band-z", "p-z", "2026-11-26T08:00:05Z", 72));
    let instant = group(&spo2("band-z", "p-z", "2026-11-26T08:00:05Z", 97));
    let hour_id = created(persist_one(&store, &templates, hour));
    let instant_id = created(persist_one(&store, &templates, instant));

    let file = rusqlite::Connection::open(dir.path().join("fhir.db")).unwrap();
    let stored = |id: &str| -> Vec<u8> {
        file.query_row(
            "SELECT body FROM resource WHERE resource_type = 'Observation' AND id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap()
    };
    let hour_json =
        serde_json::to_vec(&store.get("Observation", &hour_id).unwrap().unwrap()).unwrap();
    let (hour_stored, instant_stored) = (stored(&hour_id), stored(&instant_id));
    assert_eq!(hour_stored[0], 0x02, "an hour of SampledData is compressed");
    assert!(
        hour_stored.len() * 4 < hour_json.len(),
        "{} bytes stored for {} of JSON",
        hour_stored.len(),
        hour_json.len()
    );
    let instant_json =
        serde_json::to_vec(&store.get("Observation", &instant_id).unwrap().unwrap()).unwrap();
    assert_eq!(
        instant_stored[0], 0x02,
        "a one-instant Observation is compressed against the dictionary"
    );
    assert!(
        instant_stored.len() * 2 < instant_json.len(),
        "{} bytes stored for {} of JSON",
        instant_stored.len(),
        instant_json.len()
    );

    // Export and identifier searches give the JSON, not the stored form.
    let mut export = Vec::new();
    store.export_ndjson(&mut export, &["Observation"]).unwrap();
    let lines: Vec<Value> = export
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().any(|o| o["id"] == hour_id.as_str()));
    let identifier =
        lines.iter().find(|o| o["id"] == hour_id.as_str()).unwrap()["identifier"][0]["value"]
            .as_str()
            .unwrap()
            .to_owned();
    let found = store
        .find_by_identifier("Observation", Some(SERVICE_SYSTEM), &identifier)
        .unwrap();
    assert_eq!(found.len(), 1);
    let data = found[0]["valueSampledData"]["data"].as_str().unwrap();
    assert_eq!(data.split(' ').count(), 3600);
}

#[test]
fn a_schema_1_file_is_upgraded_and_its_json_bodies_read_and_merged() {
    let dir = TempDir::new().unwrap();
    let templates = templates();
    let id = {
        let store = open(&dir, LocalStoreConfig::default());
        let first = group(&heart_rate("band-y", "p-y", "2026-11-26T08:00:05Z", 72));
        created(persist_one(&store, &templates, first))
    };
    // Make the file what iomt with schema 1 wrote: the body as plain JSON, user_version 1.
    {
        let store = open(&dir, LocalStoreConfig::default());
        let json = serde_json::to_vec(&store.get("Observation", &id).unwrap().unwrap()).unwrap();
        drop(store);
        let file = rusqlite::Connection::open(dir.path().join("fhir.db")).unwrap();
        file.execute(
            "UPDATE resource SET body = ?1 WHERE resource_type = 'Observation' AND id = ?2",
            rusqlite::params![json, id],
        )
        .unwrap();
        file.pragma_update(None, "user_version", 1).unwrap();
    }
    let store = open(&dir, LocalStoreConfig::default());
    let version: i64 = rusqlite::Connection::open(dir.path().join("fhir.db"))
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 3, "upgraded on open");
    let second = group(&heart_rate("band-y", "p-y", "2026-11-26T08:30:00Z", 80));
    match persist_one(&store, &templates, second) {
        StoreOutcome::Updated { id: updated } => assert_eq!(updated, id),
        other => panic!("expected Updated, got {other:?}"),
    }
    let merged = store.get("Observation", &id).unwrap().unwrap();
    let tokens: Vec<&str> = merged["valueSampledData"]["data"]
        .as_str()
        .unwrap()
        .split(' ')
        .collect();
    assert_eq!((tokens[5], tokens[1800]), ("72", "80"));
}
