//! The mapping debugger web page (successor of the original's Data Mapper) and its JSON API.
//!
//! Writing a mapping is trial and error; the page lets a user edit a device mapping and a FHIR
//! mapping side by side and see, as they type, what the service would make of sample messages.
//! It is served twice: by `iomt run` on the admin listener (merged into [`crate::admin::router`])
//! and by `iomt ui` on its own, with no pipeline. Both serve the same [`router`].
//!
//! # Routes
//! * `GET /ui/`, `GET /ui/app.js`, `GET /ui/app.css` — the page (no authentication: the assets
//!   hold no data; every request that carries mappings or messages goes to `/v1`).
//! * `POST /v1/debugger/test` — [`TestRequest`] → the `iomt test-mapping` report.
//! * `POST /v1/debugger/validate` — [`ValidateRequest`] → the `iomt validate` report.
//! * `GET /v1/debugger/examples` — the bundled examples (`examples/*`).
//! * `GET /v1/debugger/mappings` — the running service's mappings in force (404 under `iomt ui`).
//!
//! # Design decisions
//! * **The CLI's code path.** The handlers call `iomt_debugger::test_mapping` and
//!   `iomt_debugger::validate`, the functions behind `iomt test-mapping` and `iomt validate`,
//!   so the page, the CLI and the service agree byte for byte (except `issued`, the clock).
//! * **Embedded assets, no build step, no CDN.** The page is three hand-written files included
//!   with `include_str!`; it works offline and nothing is installed beside the binary. The
//!   Content-Security-Policy allows only the page's own origin, so no injected script runs.
//! * **The admin API's authentication.** Mappings and sample messages may be health data, so
//!   every `/v1/debugger` route goes through the same [`Authenticator`] as the admin API. The
//!   page asks for the key once and keeps it in `sessionStorage` (gone when the tab closes).
//!
//! # What must hold
//! * Every `/v1` route here is authenticated; the open routes return only the static assets.
//! * Nothing here logs mappings or messages (they may carry identifiers).
//! * Test runs happen on the blocking pool: a large sample never stalls the listener.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use iomt_debugger::{IdentityMode, Message, TestOptions};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthOutcome, Authenticator};
use crate::ingest::http::{error, unauthorized};
use crate::mappings::MappingsHandle;

/// The largest request body the debugger API accepts (a day of one-second readings is ~10 MB).
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Only the page's own origin; no inline script, no external request.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     frame-ancestors 'none'";

/// What the debugger API needs from its host.
pub struct UiApi {
    auth: Authenticator,
    mappings: Option<Arc<MappingsHandle>>,
}

impl UiApi {
    /// The API of `iomt ui`: no running service, so no mappings in force.
    pub fn standalone(auth: Authenticator) -> UiApi {
        UiApi {
            auth,
            mappings: None,
        }
    }

    /// The API inside the service, which shows the mappings in force.
    pub fn in_service(auth: Authenticator, mappings: Arc<MappingsHandle>) -> UiApi {
        UiApi {
            auth,
            mappings: Some(mappings),
        }
    }
}

/// One bundled example: a mapping pair and sample messages.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Example {
    /// Short name (`wearable`).
    pub name: &'static str,
    /// What it shows.
    pub title: &'static str,
    /// The device mapping text.
    pub device_mapping: &'static str,
    /// The FHIR mapping text.
    pub fhir_mapping: &'static str,
    /// Sample messages, NDJSON.
    pub messages: &'static str,
    /// Whether each message line is already an event envelope.
    pub envelope: bool,
}

/// The examples shipped in `examples/`, embedded so the page needs no files.
pub const EXAMPLES: &[Example] = &[
    Example {
        name: "wearable",
        title: "Wearables: heart rate, SpO2, blood pressure with components, steps, temperature",
        device_mapping: include_str!("../../../../examples/wearable/devicecontent.json"),
        fhir_mapping: include_str!("../../../../examples/wearable/fhirmapping.json"),
        messages: include_str!("../../../../examples/wearable/messages.ndjson"),
        envelope: false,
    },
    Example {
        name: "iothub",
        title: "IoT Hub events: the device id from the envelope's system properties",
        device_mapping: include_str!("../../../../examples/iothub/devicecontent.json"),
        fhir_mapping: include_str!("../../../../examples/iothub/fhirmapping.json"),
        messages: include_str!("../../../../examples/iothub/events.ndjson"),
        envelope: true,
    },
    Example {
        name: "iotcentral",
        title: "IoT Central exports: the IotCentralJsonPathContent template",
        device_mapping: include_str!("../../../../examples/iotcentral/devicecontent.json"),
        fhir_mapping: include_str!("../../../../examples/iotcentral/fhirmapping.json"),
        messages: include_str!("../../../../examples/iotcentral/messages.ndjson"),
        envelope: false,
    },
];

/// The identity the test run's Observations get (as `iomt test-mapping --identity`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Identity {
    /// Subject `Patient/<PatientId>`, device `Device/<DeviceId>`.
    #[default]
    Create,
    /// Subject `Patient/<Patient-Reference-On-FHIR-Server>`.
    Lookup,
    /// No identity at all.
    None,
}

impl From<Identity> for IdentityMode {
    fn from(identity: Identity) -> IdentityMode {
        match identity {
            Identity::Create => IdentityMode::Create,
            Identity::Lookup => IdentityMode::Lookup,
            Identity::None => IdentityMode::None,
        }
    }
}

/// The body of `POST /v1/debugger/test`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestRequest {
    /// The device mapping text.
    pub device_mapping: String,
    /// The FHIR mapping text.
    pub fhir_mapping: String,
    /// The messages: one JSON value, a JSON array of messages, or NDJSON.
    #[serde(default)]
    pub messages: String,
    /// How Observations reference their Patient and Device.
    #[serde(default)]
    pub identity: Identity,
    /// Each message is already an event envelope `{Body, Properties, SystemProperties}`.
    #[serde(default)]
    pub envelope: bool,
    /// Count identical errors together instead of listing each.
    #[serde(default)]
    pub aggregate: bool,
}

/// The body of `POST /v1/debugger/validate`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValidateRequest {
    /// The device mapping text.
    pub device_mapping: String,
    /// The FHIR mapping text; without it only the device mapping is checked.
    #[serde(default)]
    pub fhir_mapping: Option<String>,
}

/// The page's routes and the debugger API.
pub fn router(api: Arc<UiApi>) -> Router {
    let protected = Router::new()
        .route("/v1/debugger/test", post(test))
        .route("/v1/debugger/validate", post(validate))
        .route("/v1/debugger/examples", get(examples))
        .route("/v1/debugger/mappings", get(mappings))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(api.clone(), authenticate));
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { asset(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }),
        )
        .merge(protected)
        .with_state(api)
}

/// [`router`] plus `GET /` redirecting to the page, for `iomt ui` (the admin listener keeps
/// `/` free).
pub fn standalone_router(api: Arc<UiApi>) -> Router {
    router(api).route("/", get(|| async { Redirect::temporary("/ui/") }))
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn authenticate(State(api): State<Arc<UiApi>>, request: Request, next: Next) -> Response {
    match api.auth.check(request.headers()) {
        AuthOutcome::Allowed => next.run(request).await,
        outcome => unauthorized(outcome),
    }
}

/// Parses a JSON body; the error is serde's reason (member and position), for a 400.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!(
            "the request body is not valid for this endpoint ({e}); see docs/mapping-debugger.md"
        )
    })
}

async fn test(body: Bytes) -> Response {
    let request: TestRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let run = tokio::task::spawn_blocking(move || {
        let messages = split_messages(&request.messages, request.envelope);
        // The only clock read: the Observations' `issued`, as the service stamps it.
        let options = TestOptions::new(chrono::Utc::now())
            .with_identity(request.identity.into())
            .with_aggregation(request.aggregate);
        iomt_debugger::test_mapping(
            &request.device_mapping,
            &request.fhir_mapping,
            &messages,
            &options,
        )
    });
    match run.await {
        Ok(report) => axum::Json(report).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the test run failed unexpectedly; please report it with the mappings that caused it",
        ),
    }
}

async fn validate(body: Bytes) -> Response {
    let request: ValidateRequest = match parse_body(&body) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let run = tokio::task::spawn_blocking(move || {
        iomt_debugger::validate(&request.device_mapping, request.fhir_mapping.as_deref())
    });
    match run.await {
        Ok(report) => axum::Json(report).into_response(),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "validation failed unexpectedly; please report it with the mappings that caused it",
        ),
    }
}

async fn examples() -> Response {
    axum::Json(serde_json::json!({ "examples": EXAMPLES })).into_response()
}

async fn mappings(State(api): State<Arc<UiApi>>) -> Response {
    let Some(handle) = &api.mappings else {
        return error(
            StatusCode::NOT_FOUND,
            "no service is running here (this is `iomt ui`): load the mappings from files or an example, or open the page on the admin listener of `iomt run`",
        );
    };
    let current = handle.current();
    axum::Json(serde_json::json!({
        "deviceMapping": current.device_text,
        "fhirMapping": current.fhir_text,
    }))
    .into_response()
}

/// Splits the messages text into messages, each remembering its 1-based line.
///
/// The text is one JSON value (a message, possibly pretty-printed), a JSON array of messages,
/// or NDJSON (one message per line; blank lines skipped but counted). A text that is not one
/// JSON value is read as NDJSON, so a broken line becomes that message's error in the report
/// rather than hiding the others.
pub fn split_messages(text: &str, envelope: bool) -> Vec<Message> {
    let make = |bytes: Vec<u8>| {
        if envelope {
            Message::envelope(bytes)
        } else {
            Message::body(bytes)
        }
    };
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Vec::new();
    }
    let first_line = text.len() - trimmed.len();
    let first_line = text[..first_line].matches('\n').count() + 1;
    let multi_line = text.trim().contains('\n');
    if multi_line || trimmed.starts_with('[') {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Array(items)) => {
                return items
                    .iter()
                    .map(|item| make(item.to_string().into_bytes()).at_line(first_line))
                    .collect();
            }
            Ok(_) if multi_line => {
                return vec![make(text.trim().as_bytes().to_vec()).at_line(first_line)];
            }
            _ => {}
        }
    }
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| make(line.trim().as_bytes().to_vec()).at_line(i + 1))
        .collect()
}

#[cfg(test)]
mod tests;
