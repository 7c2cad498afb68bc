//! The retry matrix, timeouts, dropped connections, paging.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use iomt_model::ErrorClass;
use serde_json::json;
use wiremock::ResponseTemplate;

use super::device;
use crate::error::{ConnectFailure, FhirClientError, RetryHint};
use crate::fake::FakeFhir;
use crate::http::FhirClient;

fn outcome(text: &str) -> serde_json::Value {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": "error", "code": "invalid", "diagnostics": text}]})
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let fake = FakeFhir::start().await;
    fake.insert(device("d1", None, "dev-1", Some("Patient/p1")));
    fake.fail_next(
        "GET",
        "^/fhir/Device$",
        1,
        ResponseTemplate::new(429).insert_header("retry-after", "1"),
    )
    .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let started = Instant::now();
    let found = client
        .search("Device", &[("identifier", "dev-1")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    // The backoff alone would be a few milliseconds: the wait is the server's second.
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let c = client.counters();
    assert_eq!((c.throttled, c.retries, c.requests), (1, 1, 2));
}

#[tokio::test]
async fn retry_after_beyond_the_bound_fails_at_once_with_the_pause() {
    let fake = FakeFhir::start().await;
    fake.fail_next(
        "GET",
        "^/fhir/Device$",
        5,
        ResponseTemplate::new(429).insert_header("retry-after", "600"),
    )
    .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client
        .search("Device", &[("identifier", "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(err, FhirClientError::Throttled { attempts: 1, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_hint(), RetryHint::After(Duration::from_secs(600)));
    assert_eq!(err.class(), ErrorClass::FhirClientException);
    assert_eq!(fake.received().await, 1);
}

#[tokio::test]
async fn persistent_throttling_is_reported_after_the_attempts() {
    let fake = FakeFhir::start().await;
    fake.fail_next("GET", "^/fhir/Device$", 10, ResponseTemplate::new(429))
        .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client
        .search("Device", &[("identifier", "x")])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FhirClientError::Throttled {
                attempts: 3,
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.retry_hint(), RetryHint::WithBackoff);
    assert!(err.to_string().starts_with("search Device: the server is throttling requests (429) after 3 attempt(s): lower http.max_concurrency"), "{err}");
}

#[tokio::test]
async fn server_errors_are_retried() {
    let fake = FakeFhir::start().await;
    fake.insert(device("d1", None, "dev-1", Some("Patient/p1")));
    fake.fail_next("GET", "^/fhir/Device$", 2, ResponseTemplate::new(503))
        .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let found = client
        .search("Device", &[("identifier", "dev-1")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(client.counters().retries, 2);
}

#[tokio::test]
async fn server_errors_that_persist_carry_the_outcome() {
    let fake = FakeFhir::start().await;
    fake.fail_next(
        "PUT",
        "^/fhir/Observation/",
        10,
        ResponseTemplate::new(500).set_body_json(outcome("database unavailable")),
    )
    .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client
        .update(
            "Observation",
            "o1",
            br#"{"resourceType":"Observation"}"#.to_vec().into(),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "update Observation: the server failed with http 500 after 3 attempt(s): error invalid: database unavailable"
    );
    assert_eq!(err.retry_hint(), RetryHint::WithBackoff);
    assert_eq!(fake.received().await, 3);
}

#[tokio::test]
async fn rejections_are_not_retried_and_carry_the_outcome() {
    for status in [400u16, 404, 422] {
        let fake = FakeFhir::start().await;
        fake.fail_next(
            "PUT",
            "^/fhir/Observation/",
            10,
            ResponseTemplate::new(status)
                .set_body_json(outcome("Observation.code: minimum required = 1")),
        )
        .await;
        let client = FhirClient::new(&fake.config()).unwrap();
        let err = client
            .update(
                "Observation",
                "o1",
                br#"{"resourceType":"Observation"}"#.to_vec().into(),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "update Observation: the server rejected the request with http {status}: error invalid: Observation.code: minimum required = 1"
            )
        );
        assert_eq!(err.retry_hint(), RetryHint::NoRetry);
        assert_eq!(err.class(), ErrorClass::FhirClientException);
        assert_eq!(err.status(), Some(status));
        assert_eq!(fake.received().await, 1, "{status} must not be retried");
    }
}

#[tokio::test]
async fn forbidden_is_classified_and_not_retried() {
    let fake = FakeFhir::start().await;
    fake.fail_next("GET", "^/fhir/Device$", 10, ResponseTemplate::new(403))
        .await;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client.search("Device", &[]).await.unwrap_err();
    assert!(matches!(err, FhirClientError::Forbidden { .. }));
    assert!(err.is_systemic());
    assert_eq!(fake.received().await, 1);
}

#[tokio::test]
async fn timeouts_are_retried_and_classified() {
    let fake = FakeFhir::start().await;
    fake.fail_next(
        "GET",
        "^/fhir/metadata$",
        10,
        ResponseTemplate::new(200).set_delay(Duration::from_millis(500)),
    )
    .await;
    let mut config = fake.config();
    config.http.request_timeout = Duration::from_millis(100);
    let client = FhirClient::new(&config).unwrap();
    let err = client.capabilities().await.unwrap_err();
    assert!(
        matches!(err, FhirClientError::Timeout { attempts: 3, .. }),
        "{err:?}"
    );
    assert_eq!(err.retry_hint(), RetryHint::WithBackoff);
    assert!(
        err.to_string().starts_with(
            "read capability statement (metadata): no response within 100ms after 3 attempt(s)"
        ),
        "{err}"
    );
}

/// A server that accepts connections and closes them without answering.
async fn dropping_server() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let seen = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    (format!("http://{addr}/fhir"), accepted)
}

#[tokio::test]
async fn dropped_connections_are_retried_then_reported() {
    let (base, accepted) = dropping_server().await;
    let mut config = crate::config::FhirClientConfig::new(base);
    config.retry.initial_backoff = Duration::from_millis(1);
    config.retry.max_backoff = Duration::from_millis(2);
    let client = FhirClient::new(&config).unwrap();
    let err = client.capabilities().await.unwrap_err();
    match &err {
        FhirClientError::Connection {
            failure, attempts, ..
        } => {
            assert_eq!(*failure, ConnectFailure::Closed, "{err}");
            assert_eq!(*attempts, 5);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 5);
    assert_eq!(err.retry_hint(), RetryHint::WithBackoff);
}

#[tokio::test]
async fn connection_refused_is_named() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = crate::config::FhirClientConfig::new(format!("http://127.0.0.1:{port}"));
    config.retry.initial_backoff = Duration::from_millis(1);
    config.retry.max_backoff = Duration::from_millis(1);
    let err = FhirClient::new(&config)
        .unwrap()
        .capabilities()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            FhirClientError::Connection {
                failure: ConnectFailure::Refused,
                attempts: 5,
                ..
            }
        ),
        "{err:?}"
    );
    // The message has no URL (it could carry identifiers in a query).
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
}

#[tokio::test]
async fn searches_follow_next_links() {
    let fake = FakeFhir::start().await;
    for i in 0..5 {
        fake.insert(device(&format!("d{i}"), Some("urn:s"), "shared", None));
    }
    fake.state().page_size = 2;
    let client = FhirClient::new(&fake.config()).unwrap();
    let found = client
        .search("Device", &[("identifier", "urn:s|shared")])
        .await
        .unwrap();
    let ids: Vec<&str> = found.iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["d0", "d1", "d2", "d3", "d4"]);
    assert_eq!(fake.log().len(), 3);
}

#[tokio::test]
async fn a_next_link_to_another_origin_is_not_followed() {
    let fake = FakeFhir::start().await;
    for i in 0..3 {
        fake.insert(device(&format!("d{i}"), None, "shared", None));
    }
    fake.state().page_size = 2;
    fake.state().foreign_next = true;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client
        .search("Device", &[("identifier", "shared")])
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the next link points to another server"),
        "{err}"
    );
    assert_eq!(fake.log().len(), 1);
}

#[tokio::test]
async fn a_short_search_without_next_link_is_an_error() {
    let fake = FakeFhir::start().await;
    for i in 0..3 {
        fake.insert(device(&format!("d{i}"), None, "shared", None));
    }
    fake.state().page_size = 2;
    fake.state().omit_next = true;
    let client = FhirClient::new(&fake.config()).unwrap();
    let err = client
        .search("Device", &[("identifier", "shared")])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "search Device: unexpected response: the search reported 3 matches but returned 2 without a next link"
    );
}

#[tokio::test]
async fn search_values_are_escaped() {
    let fake = FakeFhir::start().await;
    fake.insert(device("d1", None, "a,b|c", Some("Patient/p")));
    fake.insert(device("d2", None, "a", Some("Patient/p")));
    let client = FhirClient::new(&fake.config()).unwrap();
    let token = crate::search::identifier_token(None, "a,b|c");
    let found = client
        .search("Device", &[("identifier", &token)])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["id"], "d1");
}

#[tokio::test]
async fn reads_map_404_to_none() {
    let fake = FakeFhir::start().await;
    fake.insert(device("d1", None, "x", None));
    let client = FhirClient::new(&fake.config()).unwrap();
    assert_eq!(
        client.read("Device", "d1").await.unwrap().unwrap()["id"],
        "d1"
    );
    assert_eq!(client.read("Device", "nope").await.unwrap(), None);
}
