use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use tower::ServiceExt;

use super::*;
use crate::mappings::Mappings;

const KEY: &str = "test-key";

fn standalone() -> Router {
    router(Arc::new(UiApi::standalone(Authenticator::with_api_keys(
        &[KEY],
    ))))
}

async fn call(app: Router, method: &str, uri: &str, key: Option<&str>, body: &str) -> Response {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header(header::AUTHORIZATION, format!("Bearer {key}"));
    }
    app.oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap()
}

async fn json(response: Response) -> serde_json::Value {
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn wearable() -> &'static Example {
    EXAMPLES.iter().find(|e| e.name == "wearable").unwrap()
}

#[tokio::test]
async fn page_and_assets_are_served_without_credentials_with_a_strict_policy() {
    for (uri, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let response = call(standalone(), "GET", uri, None, "").await;
        assert_eq!(response.status(), StatusCode::OK, "{uri}");
        let headers = response.headers();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind)
        );
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .starts_with("default-src 'self'")
        );
    }
    let response = call(standalone(), "GET", "/ui", None, "").await;
    assert_eq!(response.headers()[header::LOCATION], "/ui/");
}

#[tokio::test]
async fn every_api_route_requires_the_key() {
    for (method, uri) in [
        ("POST", "/v1/debugger/test"),
        ("POST", "/v1/debugger/validate"),
        ("GET", "/v1/debugger/examples"),
        ("GET", "/v1/debugger/mappings"),
    ] {
        let missing = call(standalone(), method, uri, None, "{}").await;
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED, "{uri}");
        let wrong = call(standalone(), method, uri, Some("nope"), "{}").await;
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{uri}");
    }
}

#[tokio::test]
async fn test_runs_the_wearable_example_into_observations() {
    let example = wearable();
    let body = serde_json::json!({
        "deviceMapping": example.device_mapping,
        "fhirMapping": example.fhir_mapping,
        "messages": example.messages,
        "identity": "lookup",
    });
    let response = call(
        standalone(),
        "POST",
        "/v1/debugger/test",
        Some(KEY),
        &body.to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let report = json(response).await;
    assert_eq!(
        report["summary"]["messages"],
        example
            .messages
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    );
    assert!(report["summary"]["observations"].as_u64().unwrap() > 0);
    assert_eq!(
        report["messages"][0]["templates"][0]["typeName"],
        "heartrate"
    );
    assert_eq!(
        report["observations"][0]["observation"]["subject"]["reference"],
        "Patient/<Patient-Reference-On-FHIR-Server>"
    );
}

#[tokio::test]
async fn validate_points_at_the_line_of_a_broken_template() {
    let broken = wearable()
        .device_mapping
        .replacen("\"typeName\"", "\"typeNam\"", 1);
    let line = broken
        .lines()
        .position(|l| l.contains("\"typeNam\""))
        .unwrap()
        + 1;
    let body = serde_json::json!({"deviceMapping": broken, "fhirMapping": wearable().fhir_mapping});
    let response = call(
        standalone(),
        "POST",
        "/v1/debugger/validate",
        Some(KEY),
        &body.to_string(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let report = json(response).await;
    let errors = report["errors"].as_array().unwrap();
    assert!(
        errors
            .iter()
            .any(|e| e["mapping"] == "device" && e["line"] == line && e["field"] == "typeNam"),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_malformed_request_is_a_400_naming_the_problem() {
    let response = call(
        standalone(),
        "POST",
        "/v1/debugger/test",
        Some(KEY),
        r#"{"deviceMapping": "{}"}"#,
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json(response).await;
    assert!(
        body["error"].as_str().unwrap().contains("fhirMapping"),
        "{body}"
    );
}

#[tokio::test]
async fn examples_are_the_bundled_files() {
    let response = call(standalone(), "GET", "/v1/debugger/examples", Some(KEY), "").await;
    let body = json(response).await;
    let names: Vec<_> = body["examples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["wearable", "iothub", "iotcentral"]);
    assert_eq!(body["examples"][1]["envelope"], true);
    assert_eq!(
        body["examples"][0]["deviceMapping"],
        wearable().device_mapping
    );
}

#[tokio::test]
async fn mappings_are_the_services_or_a_404_when_standalone() {
    let response = call(standalone(), "GET", "/v1/debugger/mappings", Some(KEY), "").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);

    let example = wearable();
    let mappings = Mappings::from_texts(
        example.device_mapping.to_owned(),
        example.fhir_mapping.to_owned(),
        Path::new("devicecontent.json"),
        Path::new("fhirmapping.json"),
    )
    .unwrap();
    let handle = Arc::new(MappingsHandle::new(
        mappings,
        "devicecontent.json".into(),
        "fhirmapping.json".into(),
    ));
    let app = router(Arc::new(UiApi::in_service(
        Authenticator::with_api_keys(&[KEY]),
        handle,
    )));
    let body = json(call(app, "GET", "/v1/debugger/mappings", Some(KEY), "").await).await;
    assert_eq!(body["deviceMapping"], example.device_mapping);
    assert_eq!(body["fhirMapping"], example.fhir_mapping);
}

fn lines_and_bytes(messages: &[Message]) -> Vec<(Option<usize>, String)> {
    messages
        .iter()
        .map(|m| (m.line, String::from_utf8(m.bytes.clone()).unwrap()))
        .collect()
}

#[test]
fn ndjson_keeps_line_numbers_and_broken_lines() {
    let messages = split_messages("{\"a\":1}\n\n{broken\n {\"b\":2}\n", false);
    assert_eq!(
        lines_and_bytes(&messages),
        [
            (Some(1), "{\"a\":1}".to_owned()),
            (Some(3), "{broken".to_owned()),
            (Some(4), "{\"b\":2}".to_owned()),
        ]
    );
}

#[test]
fn a_pretty_printed_message_is_one_message_at_its_first_line() {
    let messages = split_messages("\n{\n  \"a\": 1\n}\n", true);
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].line, Some(2));
    assert_eq!(messages[0].kind, iomt_debugger::MessageKind::Envelope);
}

#[test]
fn a_json_array_is_one_message_per_item() {
    let messages = split_messages("[{\"a\":1}, {\"b\":2}]", false);
    assert_eq!(
        lines_and_bytes(&messages),
        [
            (Some(1), "{\"a\":1}".to_owned()),
            (Some(1), "{\"b\":2}".to_owned()),
        ]
    );
    assert!(split_messages("  \n ", false).is_empty());
}
