//! The three identity modes, their errors, and the caches.

use iomt_model::ErrorClass;
use iomt_transform::observation::resource_id;
use serde_json::json;

use super::{device, hr};
use crate::config::{FhirClientConfig, IdentityMode};
use crate::error::FhirClientError;
use crate::fake::FakeFhir;
use crate::http::FhirClient;
use crate::identity::IdentityResolver;

fn resolver(fake: &FakeFhir, mode: IdentityMode, system: Option<&str>) -> IdentityResolver {
    let mut config: FhirClientConfig = fake.config();
    config.identity.mode = mode;
    config.identity.default_device_identifier_system = system.map(Into::into);
    IdentityResolver::new(FhirClient::new(&config).unwrap(), &config.identity)
}

#[tokio::test]
async fn lookup_finds_device_and_patient_and_caches_them() {
    let fake = FakeFhir::start().await;
    fake.insert(device(
        "dev-res",
        Some("urn:devices"),
        "dev-1",
        Some("Patient/pat-res"),
    ));
    let r = resolver(&fake, IdentityMode::Lookup, Some("urn:devices"));
    let ids = r
        .resolve(&hr("dev-1", "2024-01-01T10:00:05Z", "70"))
        .await
        .unwrap();
    assert_eq!(
        (&*ids.device, &*ids.patient, ids.encounter.clone()),
        ("dev-res", "pat-res", None)
    );
    assert_eq!(
        fake.log(),
        ["GET /fhir/Device?identifier=urn%3Adevices%7Cdev-1"]
    );
    // Cached: no second request, and the message's patient id is ignored.
    let mut other = hr("dev-1", "2024-01-01T11:00:05Z", "71");
    other.patient_id = Some("someone-else".into());
    assert_eq!(r.resolve(&other).await.unwrap(), ids);
    assert_eq!(fake.log().len(), 1);
}

#[tokio::test]
async fn lookup_failures_are_classified_and_not_cached() {
    let fake = FakeFhir::start().await;
    let r = resolver(&fake, IdentityMode::Lookup, None);
    let group = hr("dev-1", "2024-01-01T10:00:05Z", "70");
    let err = r.resolve(&group).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::FhirResourceNotFoundException);
    assert!(
        err.to_string()
            .starts_with("Device not found: no Device has the measurement's device id"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("dev-1"),
        "no identifiers in messages: {err}"
    );
    // Created meanwhile: found on the next try.
    fake.insert(device("d", None, "dev-1", Some("Patient/p")));
    assert_eq!(&*r.resolve(&group).await.unwrap().device, "d");
}

#[tokio::test]
async fn lookup_rejects_multiple_devices_and_unusable_patient_references() {
    let fake = FakeFhir::start().await;
    fake.insert(device("a", None, "dup", Some("Patient/p")));
    fake.insert(device("b", None, "dup", Some("Patient/p")));
    fake.insert(device(
        "c",
        None,
        "absolute",
        Some("https://elsewhere/Patient/p"),
    ));
    fake.insert(device("e", None, "unlinked", None));
    let r = resolver(&fake, IdentityMode::Lookup, None);
    let err = r
        .resolve(&hr("dup", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        FhirClientError::MultipleFound {
            resource_type: "Device",
            count: 2
        }
    ));
    assert_eq!(err.class(), ErrorClass::MultipleResourceFoundException);
    for id in ["absolute", "unlinked"] {
        let err = r
            .resolve(&hr(id, "2024-01-01T10:00:05Z", "1"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                FhirClientError::NotFound {
                    resource_type: "Patient",
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn identifiers_are_matched_exactly() {
    let fake = FakeFhir::start().await;
    // A server comparing only the first 8 characters returns both devices.
    fake.state().prefix_match = Some(8);
    fake.insert(device("a", None, "device-0001", Some("Patient/pa")));
    fake.insert(device("b", None, "device-0002", Some("Patient/pb")));
    let r = resolver(&fake, IdentityMode::Lookup, None);
    let ids = r
        .resolve(&hr("device-0002", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap();
    assert_eq!(&*ids.device, "b");
    assert_eq!(&*ids.patient, "pb");
}

#[tokio::test]
async fn encounters_are_resolved_per_group() {
    let fake = FakeFhir::start().await;
    fake.insert(device("d", None, "dev-1", Some("Patient/p")));
    fake.insert(json!({"resourceType": "Encounter", "id": "enc-a", "identifier": [{"system": "urn:x", "value": "visit-a"}]}));
    fake.insert(
        json!({"resourceType": "Encounter", "id": "enc-b", "identifier": [{"value": "visit-b"}]}),
    );
    for mode in [IdentityMode::Lookup, IdentityMode::LookupWithEncounter] {
        let r = resolver(&fake, mode, None);
        let mut g = hr("dev-1", "2024-01-01T10:00:05Z", "1");
        g.encounter_id = Some("visit-a".into());
        assert_eq!(
            r.resolve(&g).await.unwrap().encounter.as_deref(),
            Some("enc-a")
        );
        // A later group of the same device with another encounter gets that encounter.
        g.encounter_id = Some("visit-b".into());
        assert_eq!(
            r.resolve(&g).await.unwrap().encounter.as_deref(),
            Some("enc-b")
        );
        g.encounter_id = Some("visit-c".into());
        let err = r.resolve(&g).await.unwrap_err();
        assert!(matches!(
            err,
            FhirClientError::NotFound {
                resource_type: "Encounter",
                ..
            }
        ));
        g.encounter_id = None;
        let result = r.resolve(&g).await;
        match mode {
            IdentityMode::Lookup => assert_eq!(result.unwrap().encounter, None),
            _ => {
                let err = result.unwrap_err();
                assert_eq!(err.class(), ErrorClass::ResourceIdentityNotDefinedException);
                assert_eq!(
                    err.to_string(),
                    "the measurement has no Encounter id, but identity mode lookup_with_encounter needs one: extract it in the device mapping (encounterIdExpression)"
                );
            }
        }
    }
}

#[tokio::test]
async fn lookup_with_encounter_reports_a_missing_device_first() {
    let fake = FakeFhir::start().await;
    let r = resolver(&fake, IdentityMode::LookupWithEncounter, None);
    let err = r
        .resolve(&hr("dev-1", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        FhirClientError::NotFound {
            resource_type: "Device",
            ..
        }
    ));
}

#[tokio::test]
async fn create_makes_patient_and_device_with_deterministic_ids() {
    let fake = FakeFhir::start().await;
    let r = resolver(&fake, IdentityMode::Create, Some("urn:devices"));
    let ids = r
        .resolve(&hr("dev-1", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap();
    let patient_id = resource_id(None, "pat-1");
    let device_id = resource_id(Some("urn:devices"), "dev-1");
    assert_eq!(
        (&*ids.patient, &*ids.device),
        (patient_id.as_str(), device_id.as_str())
    );
    assert_eq!(
        fake.get("Patient", &patient_id).unwrap()["identifier"],
        json!([{"value": "pat-1"}])
    );
    let device = fake.get("Device", &device_id).unwrap();
    assert_eq!(
        device["identifier"],
        json!([{"system": "urn:devices", "value": "dev-1"}])
    );
    assert_eq!(
        device["patient"]["reference"],
        format!("Patient/{patient_id}")
    );
    // A second device of the same patient reuses the Patient.
    let ids2 = r
        .resolve(&hr("dev-2", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap();
    assert_eq!(ids2.patient, ids.patient);
    assert_eq!(fake.count("Patient"), 1);
    assert_eq!(fake.count("Device"), 2);
}

#[tokio::test]
async fn create_links_an_unlinked_device_and_refuses_a_mismatch() {
    let fake = FakeFhir::start().await;
    fake.insert(device("unlinked", None, "dev-1", None));
    fake.insert(json!({"resourceType": "Patient", "id": "p1", "identifier": [{"value": "pat-1"}]}));
    let r = resolver(&fake, IdentityMode::Create, None);
    let ids = r
        .resolve(&hr("dev-1", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap();
    assert_eq!((&*ids.device, &*ids.patient), ("unlinked", "p1"));
    let linked = fake.get("Device", "unlinked").unwrap();
    assert_eq!(linked["patient"]["reference"], "Patient/p1");
    assert_eq!(linked["meta"]["versionId"], "3", "updated with If-Match");
    assert!(fake.log().iter().any(|l| l == "PUT /fhir/Device/unlinked"));

    // A device whose patient reference is unusable and names someone else.
    fake.insert(device(
        "other",
        None,
        "dev-2",
        Some("https://elsewhere/Patient/zz"),
    ));
    let err = r
        .resolve(&hr("dev-2", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::PatientDeviceMismatchException);
}

#[tokio::test]
async fn create_needs_a_patient_id() {
    let fake = FakeFhir::start().await;
    let r = resolver(&fake, IdentityMode::Create, None);
    let mut g = hr("dev-1", "2024-01-01T10:00:05Z", "1");
    g.patient_id = Some("  ".into());
    let err = r.resolve(&g).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::ResourceIdentityNotDefinedException);
    assert_eq!(fake.count("Device"), 0);
}

#[tokio::test]
async fn create_reports_multiple_patients() {
    let fake = FakeFhir::start().await;
    fake.insert(json!({"resourceType": "Patient", "id": "p1", "identifier": [{"value": "pat-1"}]}));
    fake.insert(json!({"resourceType": "Patient", "id": "p2", "identifier": [{"value": "pat-1"}]}));
    let r = resolver(&fake, IdentityMode::Create, None);
    let err = r
        .resolve(&hr("dev-1", "2024-01-01T10:00:05Z", "1"))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        FhirClientError::MultipleFound {
            resource_type: "Patient",
            count: 2
        }
    ));
}
