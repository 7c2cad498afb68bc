//! `iomt simulate`: simulated device traffic to a running connector, or to NDJSON.
//!
//! With `--target`, messages are paced to `--rate` per second across `--devices` devices and
//! sent to the target the URL names (see `docs/simulator.md`): the connector's HTTP ingest
//! endpoint (`http(s)://`), an MQTT broker (`mqtt(s)://host:port/topic-prefix`, QoS 1, one
//! topic per device) or a Kafka topic (`kafka://host:port/topic`, keyed by device id). A
//! summary of what the target acknowledged goes to stdout at the end, and the exit status is 1
//! when the target refused the credentials or never answered. The target flags
//! ([`TargetArgs`]) are shared with `iomt replay`. With `--output`, the messages are written as NDJSON instead (event envelopes for
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
use iomt_simulate::send::{
    self, AnyTarget, Ending, HttpTarget, KafkaSasl, KafkaTarget, KafkaTargetConfig, Limit,
    MqttTarget, MqttTargetConfig, Rate, SendOptions,
};
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
    /// Where to send: the connector's base URL (`http(s)://host:port`, messages go to
    /// `<URL>/v1/messages`), an MQTT broker (`mqtt(s)://host:port/topic-prefix`, each device
    /// publishes to `<topic-prefix>/<device-id>`) or a Kafka topic (`kafka://host:port/topic`).
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
    #[command(flatten)]
    target_args: TargetArgs,
    /// With --output: the first message's time (RFC 3339) [default: now].
    #[arg(long, value_name = "TIME", requires = "output")]
    start: Option<DateTime<Utc>>,
}

/// How to reach a target: credentials, TLS, batching (shared by `simulate` and `replay`).
#[derive(clap::Args)]
pub struct TargetArgs {
    /// HTTP: the environment variable holding the API key [default: IOMT_API_KEY, when set].
    #[arg(long, value_name = "NAME", conflicts_with = "api_key_file")]
    api_key_env: Option<String>,
    /// HTTP: a file holding the API key.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,
    /// HTTP: send each message as its event envelope (`?envelope=true`) instead of the body
    /// with its properties as headers: IoT Hub messages then travel in batches, not one per
    /// request.
    #[arg(long)]
    envelope: bool,
    /// MQTT: the user name.
    #[arg(long, value_name = "NAME")]
    mqtt_username: Option<String>,
    /// MQTT: the environment variable holding the password.
    #[arg(long, value_name = "NAME", requires = "mqtt_username")]
    mqtt_password_env: Option<String>,
    /// MQTT over TLS (`mqtts://`): the PEM file of the CA that signed the broker's certificate.
    #[arg(long, value_name = "FILE")]
    mqtt_ca_file: Option<PathBuf>,
    /// MQTT: the client id (default: `iomt-simulate-` followed by the process id).
    #[arg(long, value_name = "ID")]
    mqtt_client_id: Option<String>,
    /// Kafka: SASL PLAIN (over TLS) user name.
    #[arg(long, value_name = "NAME", requires = "kafka_sasl_password_env")]
    kafka_sasl_username: Option<String>,
    /// Kafka: the environment variable holding the SASL password.
    #[arg(long, value_name = "NAME", requires = "kafka_sasl_username")]
    kafka_sasl_password_env: Option<String>,
    /// Kafka (Azure Event Hubs): the environment variable holding the namespace or event hub
    /// connection string (SASL PLAIN over TLS, user `$ConnectionString`).
    #[arg(long, value_name = "NAME", conflicts_with = "kafka_sasl_username")]
    event_hubs_connection_string_env: Option<String>,
    /// Kafka with SASL: a PEM CA file instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    kafka_ca_file: Option<PathBuf>,
    /// Most messages per request (HTTP) or per wait for acknowledgements (MQTT, Kafka).
    #[arg(long, default_value = "100")]
    pub batch: NonZeroUsize,
    /// Most requests in flight.
    #[arg(long, default_value = "4")]
    pub concurrency: NonZeroUsize,
}

/// The value of the environment variable `name`, which must be set and not blank.
fn secret_env(name: &str, flag: &str) -> anyhow::Result<String> {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => Ok(value.trim().to_owned()),
        _ => bail!("the environment variable {name} is not set or empty: set it or drop {flag}"),
    }
}

impl TargetArgs {
    /// The target `url` names, built with these settings. Must be called within a tokio
    /// runtime (MQTT and Kafka connect in the background).
    pub fn build(&self, url: &str) -> anyhow::Result<AnyTarget> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
        let target = match scheme {
            "http" | "https" => {
                let mut target = HttpTarget::new(url, api_key(self)?.as_deref())?;
                if self.envelope {
                    target = target.with_envelopes();
                }
                AnyTarget::Http(target)
            }
            "mqtt" | "mqtts" => {
                let password = self
                    .mqtt_password_env
                    .as_deref()
                    .map(|name| secret_env(name, "--mqtt-password-env"))
                    .transpose()?;
                AnyTarget::Mqtt(MqttTarget::new(&MqttTargetConfig {
                    url: url.to_owned(),
                    username: self.mqtt_username.clone(),
                    password,
                    ca_file: self.mqtt_ca_file.clone(),
                    client_id: self.mqtt_client_id.clone(),
                })?)
            }
            "kafka" => {
                let sasl = match (
                    &self.kafka_sasl_username,
                    &self.kafka_sasl_password_env,
                    &self.event_hubs_connection_string_env,
                ) {
                    (Some(username), Some(password), _) => Some(KafkaSasl {
                        username: username.clone(),
                        password: secret_env(password, "--kafka-sasl-password-env")?,
                    }),
                    (_, _, Some(name)) => Some(KafkaSasl::event_hubs(&secret_env(
                        name,
                        "--event-hubs-connection-string-env",
                    )?)?),
                    _ => None,
                };
                AnyTarget::Kafka(KafkaTarget::new(&KafkaTargetConfig {
                    url: url.to_owned(),
                    sasl,
                    ca_file: self.kafka_ca_file.clone(),
                    extra: Vec::new(),
                })?)
            }
            _ => bail!(
                "target '{url}' has no known scheme: give http(s)://host:port, mqtt(s)://host:port/topic-prefix or kafka://host:port/topic"
            ),
        };
        Ok(target)
    }
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
        (None, Some(url)) => send(fleet, rate, limit, url, &args.target_args),
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

fn api_key(args: &TargetArgs) -> anyhow::Result<Option<String>> {
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

fn send(
    mut fleet: Fleet,
    rate: Rate,
    limit: Limit,
    url: &str,
    args: &TargetArgs,
) -> anyhow::Result<ExitCode> {
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
    let target = Arc::new(runtime.block_on(async { args.build(url) })?);
    eprintln!(
        "sending {} messages from {} devices at {} messages/s to {}; Ctrl-C stops",
        fleet.shape(),
        fleet.device_count(),
        rate.get(),
        target.describe()
    );
    let summary = runtime.block_on(async {
        let shutdown = async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let summary = send::run(&mut fleet, Arc::clone(&target), options, shutdown).await;
        // MQTT and Kafka clients stop inside the runtime.
        drop(target);
        summary
    });
    println!("{summary}");
    Ok(match summary.ending {
        Ending::Refused { .. } | Ending::Unreachable { .. } => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    })
}
