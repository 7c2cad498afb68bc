//! `iomt replay FILE|-`: device messages from a file sent again, through a target (the same
//! HTTP, MQTT and Kafka targets as `iomt simulate`) or straight into the service's durable log.
//!
//! Each line is one of (see `docs/replay.md`):
//! * a device message body (any JSON value on one line), sent as it is;
//! * an event envelope `{"Body": …, "Properties": {…}, "SystemProperties": {…}}` (what
//!   `iomt simulate --output` writes for IoT Hub), sent as its body with its properties;
//! * a dead letter as `iomt dead-letter show` and the admin API's `GET /v1/dead-letters/{id}`
//!   give it (compacted to one line): its original message with the properties it had.
//!
//! # What must hold
//! * **A bad line never stops the rest**: it is counted with its line number and why, and
//!   the exit status says so (1).
//! * **The summary counts what the target acknowledged**, not what was written to a socket.
//! * **`--into-log` never writes beside a running service**: the log's lock refuses a second
//!   writer, and the command then says to replay through the service's HTTP source.
//! * Message content never reaches the output; line numbers and reasons do.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use base64::Engine;
use bytes::Bytes;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use iomt_log::{Log, LogConfig, LogError};
use iomt_runtime::event::{DeviceEvent, EventKind};
use iomt_simulate::send::{self, Delivery, Ending, Rate, SendOptions, Summary, Target};
use iomt_simulate::{DEVICE_ID_SYSTEM_PROPERTY, SimMessage};
use serde_json::Value;

use super::simulate::TargetArgs;

/// Arguments of `iomt replay`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("destination").required(true).args(["target", "into_log"]))]
pub struct Args {
    /// NDJSON to replay (`-` for standard input).
    #[arg(value_name = "FILE")]
    input: PathBuf,
    /// Where to send: `http(s)://host:port` (the connector's HTTP source),
    /// `mqtt(s)://host:port/topic-prefix` or `kafka://host:port/topic`.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Append straight into the durable log of the service whose data directory this is
    /// (`<DATA_DIR>/log`); the service must not be running.
    #[arg(long, value_name = "DATA_DIR")]
    into_log: Option<PathBuf>,
    /// Most messages per second (`500` or `500/s`) [default: as fast as the target takes them].
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    rate: Option<f64>,
    #[command(flatten)]
    target_args: TargetArgs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    let rate: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a rate: give messages per second, such as 500/s"))?;
    Rate::per_second(rate).map_err(|e| e.to_string())?;
    Ok(rate)
}

/// A line that could not be replayed.
struct BadLine {
    number: usize,
    reason: String,
}

/// The input's lines as messages; bad lines are set aside with their numbers.
struct Lines {
    reader: Box<dyn BufRead>,
    number: usize,
    read: u64,
    bad: Vec<BadLine>,
    read_error: Option<String>,
    progress: ProgressBar,
}

impl Iterator for Lines {
    type Item = SimMessage;

    fn next(&mut self) -> Option<SimMessage> {
        let mut line = Vec::new();
        loop {
            line.clear();
            match self.reader.read_until(b'\n', &mut line) {
                Ok(0) => return None,
                Ok(n) => {
                    self.number += 1;
                    self.progress.inc(n as u64);
                }
                Err(e) => {
                    self.read_error = Some(e.to_string());
                    return None;
                }
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.read += 1;
            match parse_line(&line) {
                Ok(message) => return Some(message),
                Err(reason) => {
                    self.progress
                        .set_message(format!("{} bad", self.bad.len() + 1));
                    self.bad.push(BadLine {
                        number: self.number,
                        reason,
                    });
                }
            }
        }
    }
}

/// One line as the message to send, or why it cannot be sent.
fn parse_line(line: &[u8]) -> Result<SimMessage, String> {
    let text = trim_line(line);
    let value: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON ({e})"))?;
    if let Some(object) = value.as_object() {
        if object.contains_key("payload") && object.contains_key("stage") {
            return dead_letter(object);
        }
        if let Some(body) = object.get("Body") {
            let properties = string_pairs(object.get("Properties"), "Properties")?;
            let system_properties =
                string_pairs(object.get("SystemProperties"), "SystemProperties")?;
            let body = serde_json::to_vec(body).map_err(|e| e.to_string())?;
            return Ok(message(body, properties, system_properties));
        }
    }
    Ok(message(text.to_vec(), Vec::new(), Vec::new()))
}

fn trim_line(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &line[..end]
}

/// An envelope's `Properties` or `SystemProperties`: an object whose values become strings
/// (strings as they are, anything else as its JSON).
fn string_pairs(value: Option<&Value>, name: &str) -> Result<Vec<(String, String)>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect()),
        Some(_) => Err(format!("{name} of the envelope is not an object")),
    }
}

/// A dead letter (`entry_json`): its payload and the headers it had.
fn dead_letter(entry: &serde_json::Map<String, Value>) -> Result<SimMessage, String> {
    let payload = entry.get("payload").and_then(Value::as_object);
    let body = match (
        payload.and_then(|p| p.get("text")).and_then(Value::as_str),
        payload
            .and_then(|p| p.get("base64"))
            .and_then(Value::as_str),
    ) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("the dead letter's payload is not base64 ({e})"))?,
        _ => {
            return Err(
                "the dead letter has no payload.text or payload.base64: export it with iomt dead-letter show"
                    .into(),
            );
        }
    };
    let headers: Vec<(String, String)> = match entry.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(h) => serde_json::from_value(h.clone())
            .map_err(|_| "the dead letter's headers are not [[name, value], …]".to_owned())?,
    };
    let event = DeviceEvent::from_headers(
        Bytes::from(body),
        headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    if event.kind == EventKind::Measurements {
        let stage = entry.get("stage").and_then(Value::as_str).unwrap_or("?");
        return Err(format!(
            "the dead letter (stage {stage}) holds measurements, not a device message: put it back with iomt dead-letter redrive"
        ));
    }
    Ok(message(
        event.body.to_vec(),
        event.properties,
        event.system_properties,
    ))
}

/// The message, with its device id from the IoT Hub system property or the body's
/// `deviceId`-like field (for MQTT topics and Kafka keys).
fn message(
    body: Vec<u8>,
    properties: Vec<(String, String)>,
    system_properties: Vec<(String, String)>,
) -> SimMessage {
    let from_properties = system_properties
        .iter()
        .find(|(name, _)| name == DEVICE_ID_SYSTEM_PROPERTY)
        .map(|(_, value)| value.clone());
    let device_id = from_properties.unwrap_or_else(|| device_id_of(&body).unwrap_or_default());
    SimMessage::replayed(device_id, body, properties, system_properties)
}

fn device_id_of(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    ["deviceId", "DeviceId", "deviceid", "device_id", "deviceID"]
        .iter()
        .find_map(|key| object.get(*key)?.as_str().map(str::to_owned))
}

/// Appends each request's messages to the durable log as records from source `replay`.
struct LogTarget {
    log: Log,
}

impl Target for LogTarget {
    fn batchable(&self, _: &SimMessage, _: &SimMessage) -> bool {
        true
    }

    async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
        let now = chrono::Utc::now().timestamp_millis();
        let records = batch
            .iter()
            .map(|m| {
                DeviceEvent {
                    body: Bytes::from(m.body.clone()),
                    properties: m.properties.clone(),
                    system_properties: m.system_properties.clone(),
                    source: "replay".to_owned(),
                    kind: EventKind::Message,
                }
                .into_record(now)
            })
            .collect();
        match self.log.append(records).await {
            Ok(_) => Delivery::Accepted {
                messages: batch.len() as u64,
            },
            Err(e) => Delivery::Failed {
                reason: format!("cannot append to the log: {e}"),
            },
        }
    }
}

fn progress_bar(input: &Path) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let size = (input.as_os_str() != "-")
        .then(|| std::fs::metadata(input).ok().map(|m| m.len()))
        .flatten();
    let bar = match size {
        Some(len) => ProgressBar::new(len).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} read {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    bar
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // No --rate: as fast as the target acknowledges (the pacer still batches).
    let rate = Rate::per_second(args.rate.unwrap_or(1e9))?;
    let options = SendOptions {
        batch: args.target_args.batch,
        concurrency: args.target_args.concurrency,
        ..SendOptions::new(rate)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let reader = super::open_input(Some(&args.input))?;
    let progress = progress_bar(&args.input);
    let mut lines = Lines {
        reader,
        number: 0,
        read: 0,
        bad: Vec::new(),
        read_error: None,
        progress: progress.clone(),
    };
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let summary = match (&args.target, &args.into_log) {
        (Some(url), _) => runtime.block_on(async {
            let target = Arc::new(args.target_args.build(url)?);
            let summary = send::replay(&mut lines, Arc::clone(&target), options, shutdown).await;
            drop(target);
            anyhow::Ok(summary)
        })?,
        (None, Some(data_dir)) => runtime.block_on(async {
            let log = open_log(data_dir)?;
            let target = Arc::new(LogTarget { log });
            let summary = send::replay(&mut lines, Arc::clone(&target), options, shutdown).await;
            if let Ok(target) = Arc::try_unwrap(target) {
                target.log.close().await.context("cannot close the log")?;
            }
            anyhow::Ok(summary)
        })?,
        (None, None) => bail!("give --target URL or --into-log DATA_DIR"),
    };
    progress.finish_and_clear();
    print_summary(&lines, &summary);
    if let Some(error) = &lines.read_error {
        bail!(
            "cannot read {} after line {}: {error}",
            args.input.display(),
            lines.number
        );
    }
    let clean = lines.bad.is_empty()
        && summary.rejected.is_empty()
        && summary.failed == 0
        && matches!(summary.ending, Ending::Completed);
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn open_log(data_dir: &Path) -> anyhow::Result<Log> {
    let dir = data_dir.join("log");
    match Log::open(LogConfig::new(&dir)) {
        Ok((log, _)) => Ok(log),
        Err(LogError::Locked { .. }) => bail!(
            "the log in {} is locked: the service is running with this data directory; replay through its HTTP source instead (--target http://<sources.http.listen>) or stop the service",
            data_dir.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot open the log in {}", dir.display())),
    }
}

/// How many bad lines are listed one by one.
const BAD_LINES_SHOWN: usize = 20;

fn print_summary(lines: &Lines, summary: &Summary) {
    println!("lines     {} read, {} bad", lines.read, lines.bad.len());
    for bad in lines.bad.iter().take(BAD_LINES_SHOWN) {
        println!("  line {}: {}", bad.number, bad.reason);
    }
    if lines.bad.len() > BAD_LINES_SHOWN {
        println!("  … and {} more", lines.bad.len() - BAD_LINES_SHOWN);
    }
    println!("{summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_bodies_envelopes_or_dead_letters() {
        let plain = parse_line(br#"{"deviceId":"d1","hr":70}"#).unwrap();
        assert_eq!(plain.device_id, "d1");
        assert_eq!(plain.body, br#"{"deviceId":"d1","hr":70}"#);
        assert!(plain.properties.is_empty());

        let envelope = parse_line(
            br#"{"Body":{"hr":70},"Properties":{"iothub-creation-time-utc":"2026-11-26T08:00:00Z"},"SystemProperties":{"iothub-connection-device-id":"d2"}}"#,
        )
        .unwrap();
        assert_eq!(envelope.device_id, "d2");
        assert_eq!(envelope.body, br#"{"hr":70}"#);
        assert_eq!(
            envelope.properties,
            [(
                "iothub-creation-time-utc".to_owned(),
                "2026-11-26T08:00:00Z".to_owned()
            )]
        );

        let dead = parse_line(
            br#"{"id":3,"stage":"normalize","payload":{"text":"{\"x\":1}"},"headers":[["src","http"],["p:a","1"],["s:iothub-connection-device-id","d3"]]}"#,
        )
        .unwrap();
        assert_eq!(dead.body, br#"{"x":1}"#);
        assert_eq!(dead.device_id, "d3");
        assert_eq!(dead.properties, [("a".to_owned(), "1".to_owned())]);

        let binary =
            parse_line(br#"{"stage":"normalize","payload":{"base64":"e30="},"headers":[]}"#)
                .unwrap();
        assert_eq!(binary.body, b"{}");
    }

    #[test]
    fn bad_lines_say_why() {
        assert!(parse_line(b"{\"x\":").unwrap_err().starts_with("not JSON"));
        assert!(
            parse_line(
                br#"{"stage":"group","payload":{"text":"{}"},"headers":[["kind","measurements"]]}"#
            )
            .unwrap_err()
            .contains("iomt dead-letter redrive")
        );
        assert!(
            parse_line(br#"{"Body":{},"Properties":[1]}"#)
                .unwrap_err()
                .contains("Properties")
        );
    }

    #[test]
    fn rates_take_a_per_second_suffix() {
        assert_eq!(parse_rate("500/s"), Ok(500.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("fast").is_err());
    }
}
