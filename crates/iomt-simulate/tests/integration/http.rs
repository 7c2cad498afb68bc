//! The sender against a recording HTTP server on 127.0.0.1 (real time, real sockets).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use iomt_simulate::send::{self, Ending, HttpTarget, Limit, Rate, SendOptions, Summary};
use iomt_simulate::{Fleet, FleetConfig, Shape};

/// One request the server received.
#[derive(Debug, Clone)]
struct Recorded {
    query: Option<String>,
    headers: HeaderMap,
    lines: Vec<String>,
    /// When it arrived.
    at: Instant,
}

/// What the server answers to its `n`-th request (from 0): status, extra headers.
type Answer = Arc<dyn Fn(usize) -> (StatusCode, Vec<(&'static str, &'static str)>) + Send + Sync>;

#[derive(Clone)]
struct Server {
    requests: Arc<Mutex<Vec<Recorded>>>,
    answer: Answer,
    delay: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

async fn ingest(
    State(server): State<Server>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now_in_flight = server.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    server
        .max_in_flight
        .fetch_max(now_in_flight, Ordering::SeqCst);
    let lines: Vec<String> = String::from_utf8_lossy(&body)
        .lines()
        .map(str::to_owned)
        .collect();
    let accepted = lines.len();
    let index = {
        let mut requests = server.requests.lock().unwrap();
        requests.push(Recorded {
            query: uri.query().map(str::to_owned),
            headers,
            lines,
            at: Instant::now(),
        });
        requests.len() - 1
    };
    tokio::time::sleep(server.delay).await;
    server.in_flight.fetch_sub(1, Ordering::SeqCst);
    let (status, headers) = (server.answer)(index);
    let mut response = if status.is_success() {
        (status, format!("{{\"accepted\":{accepted}}}")).into_response()
    } else {
        (status, "{}").into_response()
    };
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

/// Starts a recording server on 127.0.0.1:0; returns its base URL.
async fn serve(server: Server) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/messages", post(ingest))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

fn server(answer: Answer, delay: Duration) -> Server {
    Server {
        requests: Arc::default(),
        answer,
        delay,
        in_flight: Arc::default(),
        max_in_flight: Arc::default(),
    }
}

fn accept_all() -> Answer {
    Arc::new(|_| (StatusCode::ACCEPTED, Vec::new()))
}

fn options(rate: f64, batch: usize, concurrency: usize, limit: Limit) -> SendOptions {
    let mut options = SendOptions::new(Rate::per_second(rate).unwrap());
    options.batch = NonZeroUsize::new(batch).unwrap();
    options.concurrency = NonZeroUsize::new(concurrency).unwrap();
    options.limit = limit;
    options
}

async fn send_to(
    base: &str,
    api_key: Option<&str>,
    config: FleetConfig,
    options: SendOptions,
) -> Summary {
    let mut fleet = Fleet::new(config).unwrap();
    let target = Arc::new(HttpTarget::new(base, api_key).unwrap());
    send::run(&mut fleet, target, options, std::future::pending()).await
}

fn header<'a>(request: &'a Recorded, name: &str) -> Option<&'a str> {
    request.headers.get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn wearable_batches_are_ndjson_with_the_bearer_key() {
    let server = server(accept_all(), Duration::ZERO);
    let base = serve(server.clone()).await;
    let config = FleetConfig {
        bad_message_rate: 0.1,
        ..FleetConfig::default()
    };
    let started = Instant::now();
    let summary = send_to(
        &base,
        Some("secret-key"),
        config,
        options(400.0, 40, 4, Limit::Count(400)),
    )
    .await;
    let took = started.elapsed();

    let requests = server.requests.lock().unwrap().clone();
    let lines: usize = requests.iter().map(|r| r.lines.len()).sum();
    assert_eq!(lines, 400);
    assert!(requests.iter().all(|r| r.lines.len() <= 40));
    for request in &requests {
        assert_eq!(request.query, None);
        assert_eq!(header(request, "authorization"), Some("Bearer secret-key"));
        assert_eq!(
            header(request, "content-type"),
            Some("application/x-ndjson")
        );
        assert!(
            !request
                .headers
                .keys()
                .any(|k| k.as_str().starts_with("iomt-")),
            "wearable messages have no properties"
        );
    }
    let bad_lines = requests
        .iter()
        .flat_map(|r| &r.lines)
        .filter(|line| serde_json::from_str::<serde_json::Value>(line).is_err())
        .count();
    assert!(bad_lines > 0 && bad_lines as u64 <= summary.bad_sent);

    assert_eq!(summary.sent, 400);
    assert_eq!(summary.accepted, 400);
    assert_eq!(summary.requests, requests.len() as u64);
    assert!(summary.bad_sent > 10, "{}", summary.bad_sent);
    assert_eq!(summary.rejected, BTreeMap::new());
    assert_eq!(summary.ending, Ending::Completed);
    // Paced: 400 messages at 400/s take about a second, not a burst.
    assert!(took >= Duration::from_millis(800), "took {took:?}");
}

#[tokio::test]
async fn iot_hub_messages_travel_alone_with_their_properties_as_headers() {
    let server = server(accept_all(), Duration::ZERO);
    let base = serve(server.clone()).await;
    let config = FleetConfig {
        devices: 3,
        shape: Shape::IotHub,
        ..FleetConfig::default()
    };
    let summary = send_to(
        &base,
        None,
        config,
        options(200.0, 100, 4, Limit::Count(30)),
    )
    .await;
    assert_eq!(summary.accepted, 30);

    let mut requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 30, "one message per request");
    requests.sort_by_key(|r| {
        header(r, "iomt-property-iothub-creation-time-utc")
            .unwrap()
            .to_owned()
    });
    let mut devices = Vec::new();
    for request in &requests {
        assert_eq!(request.lines.len(), 1);
        assert!(
            header(request, "authorization").is_none(),
            "no key, no header"
        );
        let created = header(request, "iomt-property-iothub-creation-time-utc").unwrap();
        let enqueued = header(request, "iomt-system-property-iothub-enqueuedtime").unwrap();
        let created = chrono::DateTime::parse_from_rfc3339(created).unwrap();
        let enqueued = chrono::DateTime::parse_from_rfc3339(enqueued).unwrap();
        assert!(
            enqueued > created,
            "the hub enqueues after the device sends"
        );
        let body: serde_json::Value = serde_json::from_str(&request.lines[0]).unwrap();
        let device = header(request, "iomt-system-property-iothub-connection-device-id").unwrap();
        assert_eq!(
            body["patientId"].as_str().unwrap(),
            device.replace("sim-", "sim-patient-"),
            "the device id header belongs to the body's patient"
        );
        devices.push(device.to_owned());
    }
    devices.sort();
    devices.dedup();
    assert_eq!(devices, ["sim-0001", "sim-0002", "sim-0003"]);
}

#[tokio::test]
async fn iot_hub_messages_travel_in_batches_as_envelopes() {
    let server = server(accept_all(), Duration::ZERO);
    let base = serve(server.clone()).await;
    let config = FleetConfig {
        devices: 3,
        shape: Shape::IotHub,
        ..FleetConfig::default()
    };
    let mut fleet = Fleet::new(config).unwrap();
    let target = Arc::new(HttpTarget::new(&base, None).unwrap().with_envelopes());
    let options = options(400.0, 25, 2, Limit::Count(100));
    let summary = send::run(&mut fleet, target, options, std::future::pending()).await;
    assert_eq!(summary.accepted, 100);

    let requests = server.requests.lock().unwrap().clone();
    assert!(requests.len() < 20, "batched: {} requests", requests.len());
    for request in &requests {
        assert_eq!(request.query.as_deref(), Some("envelope=true"));
        assert!(request.lines.len() <= 25);
        assert!(
            !request
                .headers
                .keys()
                .any(|k| k.as_str().starts_with("iomt-"))
        );
        for line in &request.lines {
            let envelope: serde_json::Value = serde_json::from_str(line).unwrap();
            assert!(envelope["Body"]["patientId"].is_string());
            assert!(envelope["SystemProperties"]["iothub-connection-device-id"].is_string());
            assert!(envelope["Properties"]["iothub-creation-time-utc"].is_string());
        }
    }
}

#[tokio::test]
async fn a_429_pauses_sending_for_its_retry_after() {
    let server = server(
        Arc::new(|n| {
            if n == 1 {
                (StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "1")])
            } else {
                (StatusCode::ACCEPTED, Vec::new())
            }
        }),
        Duration::ZERO,
    );
    let base = serve(server.clone()).await;
    let summary = send_to(
        &base,
        None,
        FleetConfig::default(),
        options(200.0, 10, 1, Limit::Count(40)),
    )
    .await;
    assert_eq!(summary.sent, 40);
    assert_eq!(summary.accepted, 40, "the throttled batch was retried");
    assert_eq!(summary.throttled, 1);
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(summary.requests, requests.len() as u64);
    let lines: usize = requests.iter().map(|r| r.lines.len()).sum();
    assert_eq!(
        lines,
        40 + requests[1].lines.len(),
        "one batch twice, the rest once"
    );
    assert_eq!(requests[1].lines, requests[2].lines, "the same batch again");
    let pause = requests[2].at - requests[1].at;
    assert!(pause >= Duration::from_secs(1), "retried after {pause:?}");
    assert!(summary.duration >= Duration::from_secs(1));
}

#[tokio::test]
async fn a_refused_key_ends_the_run() {
    let server = server(
        Arc::new(|_| (StatusCode::UNAUTHORIZED, Vec::new())),
        Duration::ZERO,
    );
    let base = serve(server.clone()).await;
    let started = Instant::now();
    let summary = send_to(
        &base,
        Some("wrong"),
        FleetConfig::default(),
        options(1_000.0, 10, 2, Limit::Count(10_000)),
    )
    .await;
    assert_eq!(summary.ending, Ending::Refused { status: 401 });
    assert!(summary.sent < 2_000, "stopped early: {}", summary.sent);
    assert_eq!(summary.rejected.get(&401), Some(&summary.sent));
    assert_eq!(summary.accepted, 0);
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        summary.to_string().contains("refused the API key (401)"),
        "{summary}"
    );
}

#[tokio::test]
async fn an_unreachable_target_ends_the_run() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let summary = send_to(
        &format!("http://{address}"),
        None,
        FleetConfig::default(),
        options(100.0, 10, 1, Limit::Count(1_000)),
    )
    .await;
    assert!(
        matches!(summary.ending, Ending::Unreachable { .. }),
        "{:?}",
        summary.ending
    );
    assert_eq!(summary.failed, summary.sent);
    assert!(summary.sent <= 20, "{}", summary.sent);
}

#[tokio::test]
async fn rejections_are_counted_by_status() {
    let server = server(
        Arc::new(|n| match n % 4 {
            1 => (StatusCode::BAD_REQUEST, Vec::new()),
            3 => (StatusCode::INTERNAL_SERVER_ERROR, Vec::new()),
            _ => (StatusCode::ACCEPTED, Vec::new()),
        }),
        Duration::ZERO,
    );
    let base = serve(server.clone()).await;
    let summary = send_to(
        &base,
        None,
        FleetConfig::default(),
        options(1_000.0, 10, 1, Limit::Count(200)),
    )
    .await;
    let requests = server.requests.lock().unwrap().clone();
    let lines_where = |rest: usize| -> u64 {
        requests
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == rest)
            .map(|(_, r)| r.lines.len() as u64)
            .sum()
    };
    assert_eq!(summary.rejected.get(&400).copied(), Some(lines_where(1)));
    assert_eq!(summary.rejected.get(&500).copied(), Some(lines_where(3)));
    assert_eq!(summary.accepted, lines_where(0) + lines_where(2));
    assert_eq!(summary.accepted + summary.rejected_total(), summary.sent);
    assert_eq!(summary.ending, Ending::Completed);
}

#[tokio::test]
async fn concurrency_bounds_the_requests_in_flight() {
    let server = server(accept_all(), Duration::from_millis(150));
    let base = serve(server.clone()).await;
    let summary = send_to(
        &base,
        None,
        FleetConfig::default(),
        options(2_000.0, 10, 3, Limit::Count(300)),
    )
    .await;
    assert_eq!(summary.accepted, 300);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 3);
    // The slow server holds the rate down: 30 requests, 3 at a time, 150 ms each.
    assert!(
        summary.duration >= Duration::from_millis(1_400),
        "{:?}",
        summary.duration
    );
    assert!(
        summary.achieved_rate() < 250.0,
        "{}",
        summary.achieved_rate()
    );
}
