//! The admin listener: health, readiness, metrics, status, and the dead-letter API.
//!
//! # Routes
//! * `GET /healthz` — the process is alive (no authentication).
//! * `GET /readyz` — 200 when the pipeline runs, sources accept data, the log is under its
//!   limit, the destination is reachable and the mappings loaded; otherwise 503 with the
//!   reasons (no authentication; reasons carry no patient data).
//! * `GET /metrics` — Prometheus text format (no authentication; no identifiers in labels).
//! * `GET /v1/status` — log positions, lag, dead-letter counts by class, mapping state.
//! * `GET /v1/dead-letters?class=&stage=&since=&until=&after_id=&limit=` — summaries.
//! * `GET /v1/dead-letters/{id}` — one entry with its payload.
//! * `POST /v1/dead-letters/redrive` (JSON filter body) — put entries back into the pipeline.
//! * `POST /v1/dead-letters/purge` (JSON filter body) — delete entries.
//! * `/ui/` and `/v1/debugger/*` — the mapping debugger page and its API ([`crate::ui`]).
//!
//! What must hold: every `/v1` route is authenticated (it reveals or changes patient data);
//! the open routes reveal nothing about patients.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use iomt_log::Log;
use iomt_store::{DeadLetterFilter, DeadLetterStore, Stage};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthOutcome, Authenticator};
use crate::ingest::http::{error, unauthorized};
use crate::mappings::MappingsHandle;
use crate::metrics::Metrics;
use crate::status::Status;

/// What the admin listener needs.
pub struct Admin {
    /// Who may use `/v1`.
    pub auth: Authenticator,
    /// The durable log.
    pub log: Log,
    /// The dead-letter store.
    pub dead_letters: Arc<DeadLetterStore>,
    /// The mappings in force.
    pub mappings: Arc<MappingsHandle>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Service state.
    pub status: Arc<Status>,
    /// The mapping debugger page and API.
    pub ui: Arc<crate::ui::UiApi>,
}

/// The admin routes.
pub fn router(admin: Arc<Admin>) -> Router {
    let protected = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/dead-letters", get(list_dead_letters))
        .route("/v1/dead-letters/{id}", get(show_dead_letter))
        .route("/v1/dead-letters/redrive", post(redrive))
        .route("/v1/dead-letters/purge", post(purge))
        .route_layer(middleware::from_fn_with_state(admin.clone(), authenticate));
    let ui = crate::ui::router(admin.ui.clone());
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(protected)
        .with_state(admin)
        .merge(ui)
}

async fn authenticate(State(admin): State<Arc<Admin>>, request: Request, next: Next) -> Response {
    match admin.auth.check(request.headers()) {
        AuthOutcome::Allowed => next.run(request).await,
        outcome => unauthorized(outcome),
    }
}

async fn readyz(State(admin): State<Arc<Admin>>) -> Response {
    let readiness = admin
        .status
        .readiness(admin.log.is_full(), admin.mappings.last_error());
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(readiness)).into_response()
}

async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    let stats = admin.log.stats();
    admin
        .metrics
        .log_lag_records
        .set(stats.end_offset.saturating_sub(admin.status.checkpoint()) as i64);
    admin.metrics.log_bytes.set(stats.retained_bytes as i64);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.render(),
    )
        .into_response()
}

async fn status(State(admin): State<Arc<Admin>>) -> Response {
    let stats = admin.log.stats();
    let store = admin.dead_letters.clone();
    let counts = tokio::task::spawn_blocking(move || store.counts())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let last = admin.status.last_handled_ms();
    axum::Json(json!({
        "log": {
            "first_offset": stats.first_offset,
            "end_offset": stats.end_offset,
            "checkpoint": admin.status.checkpoint(),
            "lag": stats.end_offset.saturating_sub(admin.status.checkpoint()),
            "bytes": stats.retained_bytes,
            "full": admin.log.is_full(),
        },
        "last_handled_ingest_time": DateTime::<Utc>::from_timestamp_millis(last).filter(|_| last > 0),
        "destination_error": admin.status.destination_error(),
        "mapping_reload_error": admin.mappings.last_error(),
        "dead_letters": counts.iter().map(|(class, stage, count)| json!({"class": class, "stage": stage.to_string(), "count": count})).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// A dead-letter filter as query parameters or a JSON body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterParams {
    /// Error class.
    pub class: Option<String>,
    /// Stage name.
    pub stage: Option<String>,
    /// From this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Until this time (RFC 3339).
    pub until: Option<DateTime<Utc>>,
    /// Entries after this id (paging).
    pub after_id: Option<i64>,
    /// At most this many.
    pub limit: Option<usize>,
}

impl FilterParams {
    /// The store filter.
    ///
    /// # Errors
    /// An unknown stage name.
    pub fn to_filter(&self) -> Result<DeadLetterFilter, String> {
        let stage = match &self.stage {
            Some(s) => Some(s.parse::<Stage>().map_err(|_| {
                format!("unknown stage {s:?}: use ingest, normalize, group, transform or persist")
            })?),
            None => None,
        };
        Ok(DeadLetterFilter {
            class: self.class.clone(),
            stage,
            since: self.since,
            until: self.until,
            after_id: self.after_id,
            limit: self.limit,
        })
    }
}

async fn list_dead_letters(
    State(admin): State<Arc<Admin>>,
    Query(params): Query<FilterParams>,
) -> Response {
    let mut filter = match params.to_filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    filter.limit = Some(filter.limit.unwrap_or(100).min(1000));
    let store = admin.dead_letters.clone();
    match tokio::task::spawn_blocking(move || store.list(&filter)).await {
        Ok(Ok(entries)) => {
            let entries: Vec<_> = entries.iter().map(summary_json).collect();
            axum::Json(json!({ "entries": entries })).into_response()
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the dead-letter store",
        ),
    }
}

async fn show_dead_letter(State(admin): State<Arc<Admin>>, Path(id): Path<i64>) -> Response {
    let store = admin.dead_letters.clone();
    match tokio::task::spawn_blocking(move || store.get(id)).await {
        Ok(Ok(Some(entry))) => axum::Json(entry_json(&entry)).into_response(),
        Ok(Ok(None)) => error(StatusCode::NOT_FOUND, "no dead letter has this id"),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot read the dead-letter store",
        ),
    }
}

async fn redrive(
    State(admin): State<Arc<Admin>>,
    body: Option<axum::Json<FilterParams>>,
) -> Response {
    let params = body.map(|b| b.0).unwrap_or_default();
    let filter = match params.to_filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    match crate::dead_letter::redrive(&admin.dead_letters, &admin.log, &filter).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn purge(
    State(admin): State<Arc<Admin>>,
    body: Option<axum::Json<FilterParams>>,
) -> Response {
    let params = body.map(|b| b.0).unwrap_or_default();
    let filter = match params.to_filter() {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e),
    };
    let store = admin.dead_letters.clone();
    match tokio::task::spawn_blocking(move || store.purge(&filter)).await {
        Ok(Ok(purged)) => axum::Json(json!({ "purged": purged })).into_response(),
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot write the dead-letter store",
        ),
    }
}

/// A dead letter's summary as JSON (no payload).
pub fn summary_json(e: &iomt_store::DeadLetterSummary) -> serde_json::Value {
    json!({
        "id": e.id, "occurred_at": e.occurred_at, "stage": e.stage.to_string(), "class": e.class,
        "reason": e.reason, "retryable": e.retryable, "payload_bytes": e.payload_bytes,
    })
}

/// A dead letter as JSON, with its payload as text when it is UTF-8, else as base64.
pub fn entry_json(e: &iomt_store::DeadLetter) -> serde_json::Value {
    let payload = match std::str::from_utf8(&e.payload) {
        Ok(text) => json!({ "text": text }),
        Err(_) => json!({ "base64": base64_encode(&e.payload) }),
    };
    json!({
        "id": e.id, "occurred_at": e.occurred_at, "stage": e.stage.to_string(), "class": e.class,
        "reason": e.reason, "retryable": e.retryable, "source": e.source,
        "log_offset": e.log_offset, "headers": e.headers, "redrive_count": e.redrive_count,
        "payload": payload,
    })
}

fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64_encode(input.as_bytes()), expected);
        }
    }
}
