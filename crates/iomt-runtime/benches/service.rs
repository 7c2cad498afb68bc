//! End-to-end benchmark of the service (not a timed test): HTTP ingest → durable log (fsync
//! on) → normalize → group → local FHIR store, in one process on loopback.
//!
//! Three figures, each printed as one line:
//! 1. **throughput**: messages per second from the first request to the pipeline's checkpoint
//!    passing the last message, with `devices` simulated wearables (default 10,000) sending
//!    `messages` messages (default 200,000) in NDJSON requests of 500, 16 requests in flight
//!    (the simulator writes the requests to a file before the clock starts; the run reads
//!    them back);
//! 2. **latency** at a steady 1,000 messages/s with the default 1 s flush interval: from a
//!    request's send to its last message being persisted (p50, p99), over 20 s;
//! 3. **memory**: the process's resident set (VmRSS) and peak (VmHWM) after (1), with every
//!    device active.
//!
//! `cargo bench -p iomt-runtime --bench service` (arguments: `-- --messages N --devices N
//! --max-batch N --store-workers N`).
//! Targets (issue 5): ≥ 100,000 messages/s, p99 < 2 s, < 200 MiB.

use std::sync::Arc;
use std::time::{Duration, Instant};

use iomt_runtime::PipelineConfig;
use iomt_simulate::Fleet;

mod common;
use common::{arg, fleet};

const API_KEY: &str = "bench-key-0123456789abcdef";

/// The `iomt` binary's allocator and its setting (`iomt_alloc::configure` in `main`), so memory
/// figures are the service's.
#[global_allocator]
static GLOBAL: iomt_alloc::MiMalloc = iomt_alloc::MiMalloc;

fn config(dir: &std::path::Path, flush: &str) -> PipelineConfig {
    // `--max-batch N` overrides pipeline.max_batch_messages (default: the service's default).
    let max_batch = match arg("--max-batch", 0) {
        0 => String::new(),
        n => format!("\n  max_batch_messages: {n}"),
    };
    // `--store-workers N` sets destination.local.workers (default: the service's default).
    let workers = match arg("--store-workers", 0) {
        0 => String::new(),
        n => format!("workers: {n}"),
    };
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/wearable");
    let text = format!(
        "
version: 1
data_dir: {data}
mappings:
  device: {device}
  fhir: {fhir}
  reload_interval: 0s
sources:
  http:
    listen: 127.0.0.1:0
    max_body: 16MiB
    auth:
      api_keys: [{{value: {API_KEY}}}]
pipeline:
  flush_interval: {flush}{max_batch}
destination:
  local: {{{workers}}}
admin:
  disabled: true
",
        data = dir.display(),
        device = examples.join("devicecontent.json").display(),
        fhir = examples.join("fhirmapping.json").display(),
    );
    let path = dir.join("pipeline.yaml");
    std::fs::write(&path, text).unwrap();
    let config = PipelineConfig::load(&path).unwrap();
    config.validate().unwrap();
    config
}

/// One NDJSON request body of `n` messages, `spacing` apart in device time.
fn body(
    fleet: &mut Fleet,
    n: usize,
    clock: &mut chrono::DateTime<chrono::Utc>,
    spacing: chrono::TimeDelta,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 160);
    for _ in 0..n {
        *clock += spacing;
        out.extend_from_slice(&fleet.next_message(*clock).body);
        out.push(b'\n');
    }
    out
}

async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> u64 {
    loop {
        let response = client
            .post(url)
            .bearer_auth(API_KEY)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .expect("request");
        if response.status().as_u16() == 429 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(response.status().as_u16(), 202);
        let answer: serde_json::Value = response.json().await.unwrap();
        return answer["last_offset"].as_u64().unwrap();
    }
}

/// CPU seconds the process has used (user + system), from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line (1-based): 11 and 12 after the name.
    // Clock ticks are 100 per second on Linux (USER_HZ).
    (ticks(11) + ticks(12)) / 100.0
}

/// Seconds spent in each pipeline stage and how many batches, from the service's metrics
/// (`iomt_stage_duration_seconds_sum` / `_count`): where the wall time of the run went.
fn stage_times(metrics: &iomt_runtime::metrics::Metrics) -> String {
    let text = metrics.render();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("iomt_stage_duration_seconds_sum{stage=\"") else {
            continue;
        };
        let Some((stage, value)) = rest.split_once("\"} ") else {
            continue;
        };
        let count = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "iomt_stage_duration_seconds_count{{stage=\"{stage}\"}} "
                ))
            })
            .unwrap_or("?");
        let seconds: f64 = value.trim().parse().unwrap_or(0.0);
        out.push(format!("{stage} {seconds:.2} s in {count} batches"));
    }
    out.join(", ")
}

/// VmRSS, VmHWM, RssAnon (heap and stacks) and RssFile (mapped files: the binary's code), MiB.
fn rss() -> (u64, u64, u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    };
    (
        field("VmRSS:"),
        field("VmHWM:"),
        field("RssAnon:"),
        field("RssFile:"),
    )
}

async fn throughput(messages: usize, devices: usize) {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), "1s"))
        .await
        .unwrap();
    let url = format!("http://{}/v1/messages", service.http_addr.unwrap());
    let client = reqwest::Client::new();
    const PER_REQUEST: usize = 500;
    const IN_FLIGHT: usize = 16;
    let requests = messages.div_ceil(PER_REQUEST);
    // The simulator writes every request body to a file before the clock starts, as a load
    // generator replaying captured traffic would have them: its work is not the service's,
    // and the file (in the operating system's cache) is not in the process's memory. During
    // the run a producer reads them back as requests go out, so memory holds only those in
    // flight.
    let traffic = tempfile::tempfile().unwrap();
    let mut lengths = Vec::with_capacity(requests);
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(&traffic);
        let mut fleet = fleet(devices, 7);
        let mut clock = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
            .unwrap()
            .to_utc();
        for _ in 0..requests {
            let b = body(
                &mut fleet,
                PER_REQUEST,
                &mut clock,
                chrono::TimeDelta::milliseconds(2),
            );
            lengths.push(b.len());
            out.write_all(&b).unwrap();
        }
        out.flush().unwrap();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(IN_FLIGHT * 2);
    let producer = std::thread::spawn(move || {
        use std::io::{Read, Seek};
        let mut traffic = std::io::BufReader::new(traffic);
        traffic.rewind().unwrap();
        for len in lengths {
            let mut b = vec![0; len];
            traffic.read_exact(&mut b).unwrap();
            if tx.blocking_send(b).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..IN_FLIGHT {
        let (client, url, rx) = (client.clone(), url.clone(), rx.clone());
        tasks.spawn(async move {
            let mut last = 0;
            loop {
                let Some(b) = rx.lock().await.recv().await else {
                    return last;
                };
                last = last.max(send(&client, &url, b).await);
            }
        });
    }
    let mut last = 0;
    while let Some(r) = tasks.join_next().await {
        last = last.max(r.unwrap());
    }
    let ingested = started.elapsed();
    while service.status.checkpoint() <= last {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    producer.join().unwrap();
    let counts = service.local_store.clone().unwrap().counts().unwrap();
    let (rss, hwm, anon, file) = rss();
    println!(
        "throughput: {messages} messages from {devices} devices in {:.2} s = {:.0} messages/s end to end (ingest alone {:.0}/s); {} observations, {} devices in the store",
        elapsed.as_secs_f64(),
        messages as f64 / elapsed.as_secs_f64(),
        messages as f64 / ingested.as_secs_f64(),
        counts.observations,
        counts.devices,
    );
    println!(
        "cpu: {cpu:.1} CPU-seconds for the run ({:.0}% of one core; {:.1} µs per message, the client included; messages were generated before the clock started)",
        cpu / elapsed.as_secs_f64() * 100.0,
        cpu / messages as f64 * 1e6,
    );
    println!("stages: {}", stage_times(&service.metrics));
    println!(
        "memory: VmRSS {rss} MiB (RssAnon {anon} MiB, RssFile {file} MiB), VmHWM {hwm} MiB after the throughput run ({devices} active devices)"
    );
    service.shutdown().await.unwrap();
}

async fn latency(devices: usize) {
    let dir = tempfile::tempdir().unwrap();
    let service = iomt_runtime::start(&config(dir.path(), "1s"))
        .await
        .unwrap();
    let url = format!("http://{}/v1/messages", service.http_addr.unwrap());
    let client = reqwest::Client::new();
    let mut fleet = fleet(devices, 11);
    let mut clock = chrono::DateTime::parse_from_rfc3339("2026-11-26T00:00:00Z")
        .unwrap()
        .to_utc();
    // 1,000 messages/s as 50 requests of 20 per second, for 20 s.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, u64)>();
    let status = service.status.clone();
    let watcher = tokio::spawn(async move {
        let mut pending: std::collections::VecDeque<(Instant, u64)> = Default::default();
        let mut latencies = Vec::new();
        let mut closed = false;
        loop {
            while let Ok(item) = rx.try_recv() {
                pending.push_back(item);
            }
            if rx.is_closed() && rx.is_empty() {
                closed = true;
            }
            let checkpoint = status.checkpoint();
            while pending.front().is_some_and(|(_, last)| *last < checkpoint) {
                let (sent, _) = pending.pop_front().unwrap();
                latencies.push(sent.elapsed());
            }
            if closed && pending.is_empty() {
                return latencies;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for _ in 0..1000 {
        tick.tick().await;
        let b = body(
            &mut fleet,
            20,
            &mut clock,
            chrono::TimeDelta::milliseconds(1),
        );
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let sent = Instant::now();
            let last = send(&client, &url, b).await;
            let _ = tx.send((sent, last));
        });
    }
    drop(tx);
    let mut latencies = watcher.await.unwrap();
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "latency at 1000 messages/s, flush interval 1 s: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} requests)",
        q(0.50).as_secs_f64() * 1000.0,
        q(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
        latencies.len()
    );
    service.shutdown().await.unwrap();
}

fn main() {
    iomt_alloc::configure();
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a smoke test.
    let quick = !std::env::args().any(|a| a == "--bench");
    let messages = arg("--messages", if quick { 5_000 } else { 200_000 });
    let devices = arg("--devices", if quick { 500 } else { 10_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(throughput(messages, devices));
    if !quick {
        runtime.block_on(latency(devices));
    }
}
