//! `iomt simulate`: simulated device traffic to a running connector, or to NDJSON.
//!
//! With `--target`, messages are paced to `--rate` per second across `--devices` devices and
//! posted to the connector's HTTP ingest endpoint (see `docs/simulator.md`); a summary goes to
//! stdout at the end, and the exit status is 1 when the target refused the key or never
//! answered. With `--output`, the messages are written as NDJSON instead (event envelopes for
//! the IoT Hub shape), as fast as they can be made, stamped `1 / rate` seconds apart from
//! `--start`: the same seed and start give the same file, ready for `iomt normalize` and
//! `iomt test-mapping`.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, TimeDelta, Utc};
use iomt_simulate::send::{self, Ending, HttpTarget, Limit, Rate, SendOptions};
use iomt_simulate::{Fleet, FleetConfig, Shape};

/// The message shape, as the example mappings read it.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ShapeArg {
    /// Plain JSON bodies (`examples/wearable`): heart rate, SpO2, blood pressure, steps, body
    /// temperature.
    Wearable,
    /// IoT Hub events (`examples/iothub`): heart rate and blood pressure, device id and times
    /// in (system) properties.
    #[value(alias = "iothub")]
    IotHub,
    /// IoT Central exports (`examples/iotcentral`): heart rate.
    #[value(alias = "iotcentral")]
    IotCentral,
}

impl From<ShapeArg> for Shape {
    fn from(shape: ShapeArg) -> Shape {
        match shape {
            ShapeArg::Wearable => Shape::Wearable,
            ShapeArg::IotHub => Shape::IotHub,
            ShapeArg::IotCentral => Shape::IotCentral,
        }
    }
}

/// Arguments of `iomt simulate`.
#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("destination").required(true).args(["target", "output"]))]
pub struct Args {
    /// The connector's base URL; messages go to `<URL>/v1/messages`.
    #[arg(long, value_name = "URL")]
    target: Option<String>,
    /// Write NDJSON to FILE (`-` for stdout) instead of sending.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// How many devices, each with its own patient.
    #[arg(long, default_value_t = 10)]
    devices: usize,
    /// Messages per second over all devices.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// The message shape.
    #[arg(long, value_enum, default_value = "wearable")]
    shape: ShapeArg,
    /// Stop after this long (`60s`, `5m`, `1h30m`).
    #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "count")]
    duration: Option<Duration>,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// The fraction of messages that are bad on purpose (malformed JSON, a missing field, a
    /// wrong type, a null value), for the dead-letter path.
    #[arg(long, default_value_t = 0.0)]
    bad_rate: f64,
    /// The seed: the same seed gives the same devices, patients and readings.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The start of every device id (`<PREFIX>-0001`, …) and patient id
    /// (`<PREFIX>-patient-0001`, …).
    #[arg(long, default_value = "sim")]
    device_prefix: String,
    /// The environment variable holding the API key [default: IOMT_API_KEY, when set].
    #[arg(long, value_name = "NAME", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// A file holding the API key.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// Send each message as its event envelope (`?envelope=true`) instead of the body with
    /// its properties as headers: IoT Hub messages then travel in batches, not one per request.
    #[arg(long)]
    envelope: bool,
    /// Most messages per request.
    #[arg(long, default_value = "100")]
    batch: NonZeroUsize,
    /// Most requests in flight.
    #[arg(long, default_value = "4")]
    concurrency: NonZeroUsize,
    /// With --output: the first message's time (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME", requires = "output")]
    start: Option<DateTime<Utc>>,
}

/// Runs the command.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rate = Rate::per_second(args.rate)?;
    let fleet = Fleet::new(FleetConfig {
        devices: args.devices,
        shape: args.shape.into(),
        seed: args.seed,
        bad_message_rate: args.bad_rate,
        device_prefix: args.device_prefix.clone(),
    })?;
    let limit = match (args.count, args.duration) {
        (Some(count), _) => Limit::Count(count),
        (None, Some(duration)) => Limit::Duration(duration),
        (None, None) => Limit::Unbounded,
    };
    match (&args.output, &args.target) {
        (Some(path), _) => write_ndjson(fleet, rate, limit, args.start, path),
        (None, Some(base)) => send_http(fleet, rate, limit, base, &args),
        (None, None) => bail!("give --target URL to send or --output FILE to write"),
    }
}

fn write_ndjson(
    mut fleet: Fleet,
    rate: Rate,
    limit: Limit,
    start: Option<DateTime<Utc>>,
    path: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let count = match limit {
        Limit::Count(count) => count,
        Limit::Duration(duration) => (duration.as_secs_f64() * rate.get()).round() as u64,
        Limit::Unbounded => bail!("give --count or --duration with --output, so the file ends"),
    };
    let envelope = fleet.shape().needs_envelope();
    let to_stdout = path.as_os_str() == "-";
    let sink: Box<dyn Write> = if to_stdout {
        Box::new(io::stdout().lock())
    } else {
        Box::new(
            File::create(path)
                .with_context(|| format!("cannot create {}; check the path", path.display()))?,
        )
    };
    let mut out = BufWriter::new(sink);
    let start = start.unwrap_or_else(Utc::now);
    let step_ns = 1e9 / rate.get();
    let mut bad = 0u64;
    for i in 0..count {
        let at = start + TimeDelta::nanoseconds((i as f64 * step_ns) as i64);
        let message = fleet.next_message(at);
        bad += u64::from(message.is_bad());
        if envelope {
            out.write_all(&message.envelope_json())?;
        } else {
            out.write_all(&message.body)?;
        }
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let name = if to_stdout {
        "stdout".to_owned()
    } else {
        path.display().to_string()
    };
    eprintln!(
        "wrote {count} {} messages ({bad} bad on purpose) to {name}",
        fleet.shape()
    );
    Ok(ExitCode::SUCCESS)
}

fn api_key(args: &Args) -> anyhow::Result<Option<String>> {
    if let Some(path) = &args.api_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the API key file {}", path.display()))?;
        let key = text.trim();
        if key.is_empty() {
            bail!(
                "the API key file {} is empty: put the key in it",
                path.display()
            );
        }
        return Ok(Some(key.to_owned()));
    }
    match &args.api_key_env {
        Some(name) => match std::env::var(name) {
            Ok(key) if !key.trim().is_empty() => Ok(Some(key.trim().to_owned())),
            _ => bail!(
                "the environment variable {name} holds no API key: set it or drop --api-key-env"
            ),
        },
        None => Ok(std::env::var("IOMT_API_KEY")
            .ok()
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty())),
    }
}

fn send_http(
    mut fleet: Fleet,
    rate: Rate,
    limit: Limit,
    base: &str,
    args: &Args,
) -> anyhow::Result<ExitCode> {
    let mut target = HttpTarget::new(base, api_key(args)?.as_deref())?;
    if args.envelope {
        target = target.with_envelopes();
    }
    let target = Arc::new(target);
    let options = SendOptions {
        batch: args.batch,
        concurrency: args.concurrency,
        limit,
        ..SendOptions::new(rate)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    eprintln!(
        "sending {} messages from {} devices at {} messages/s to {}; Ctrl-C stops",
        fleet.shape(),
        fleet.device_count(),
        rate.get(),
        target.url()
    );
    let summary = runtime.block_on(async {
        let shutdown = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        send::run(&mut fleet, target, options, shutdown).await
    });
    println!("{summary}");
    Ok(match summary.ending {
        Ending::Refused { .. } | Ending::Unreachable { .. } => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
