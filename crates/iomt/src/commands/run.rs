//! `iomt run`: the connector service.
//!
//! With `--config`, runs the service that file describes. Without it, runs the demo on
//! embedded defaults: it writes a real configuration, the example mappings and a random API
//! key into the data folder (`iomt-data` unless `--data-dir` says otherwise; existing files
//! are kept, so edits survive), starts the service on loopback with the local FHIR store,
//! feeds it simulated wearables through its own HTTP source, and prints where the
//! Observations are and how to look at them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use iomt_runtime::PipelineConfig;
use iomt_runtime::metrics::Metrics;

use crate::defaults;

#[derive(clap::Args)]
pub struct Args {
    /// The service configuration (`pipeline.yaml`). Without it, the demo runs on embedded
    /// defaults.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Demo only: the data folder for the configuration, mappings, log and stores.
    #[arg(long, default_value = "iomt-data")]
    data_dir: PathBuf,
    /// Demo only: simulated devices feeding the service (0 for none).
    #[arg(long, default_value_t = 20)]
    devices: usize,
    /// Demo only: simulated messages per second, all devices together.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Stop by itself after this long (`30s`, `5m`), draining everything first; without it,
    /// runs until Ctrl-C or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    stop_after: Option<Duration>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        match &args.config {
            Some(path) => run_config(path, args.stop_after).await,
            None => run_demo(&args).await,
        }
    })
}

/// Loads and validates a configuration, printing every problem.
pub fn load_config(path: &Path) -> anyhow::Result<PipelineConfig> {
    let config = PipelineConfig::load(path)?;
    if let Err(problems) = config.validate() {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::bail!(
            "the configuration {} has {} problem(s):\n{}",
            path.display(),
            problems.len(),
            list.join("\n")
        );
    }
    Ok(config)
}

async fn run_config(path: &Path, stop_after: Option<Duration>) -> anyhow::Result<ExitCode> {
    let config = load_config(path)?;
    let service = iomt_runtime::start(&config).await?;
    match stop_after {
        Some(after) => {
            tokio::select! {
                _ = tokio::time::sleep(after) => service.shutdown().await?,
                _ = tokio::signal::ctrl_c() => service.shutdown().await?,
            }
        }
        None => service.run_until_signal().await?,
    }
    Ok(ExitCode::SUCCESS)
}

const DEMO_CONFIG: &str = "\
# Written by `iomt run` (the demo). Run it again with: iomt run --config <this file>
version: 1
data_dir: .
mappings:
  device: mappings/devicecontent.json
  fhir: mappings/fhirmapping.json
sources:
  http:
    listen: 127.0.0.1:8180
    auth:
      api_keys: [{file: api-key}]
destination:
  local: {}
admin:
  listen: 127.0.0.1:8181
  auth:
    api_keys: [{file: api-key}]
";

/// Writes `text` to `path` unless the file exists.
fn write_default(path: &Path, text: &str) -> anyhow::Result<()> {
    if !path.exists() {
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn prepare_demo(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("mappings"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    write_default(
        &dir.join("mappings/devicecontent.json"),
        defaults::DEVICE_MAPPING,
    )?;
    write_default(
        &dir.join("mappings/fhirmapping.json"),
        defaults::FHIR_MAPPING,
    )?;
    let key_path = dir.join("api-key");
    if !key_path.exists() {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| anyhow::anyhow!("cannot make a random api key: {e}"))?;
        let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&key_path, format!("{key}\n"))
            .with_context(|| format!("cannot write {}", key_path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600));
        }
    }
    let config_path = dir.join("pipeline.yaml");
    write_default(&config_path, DEMO_CONFIG)?;
    Ok(config_path)
}

async fn run_demo(args: &Args) -> anyhow::Result<ExitCode> {
    let config_path = prepare_demo(&args.data_dir)?;
    let config = load_config(&config_path)?;
    let api_key = std::fs::read_to_string(args.data_dir.join("api-key"))
        .context("cannot read the demo api key")?
        .trim()
        .to_owned();
    let service = iomt_runtime::start(&config).await?;
    let http = service
        .http_addr
        .context("the demo config has an http source")?;
    let admin = service.admin_addr;
    let dir = args.data_dir.display();
    let cfg = config_path.display();
    eprintln!("iomt demo: the connector is running on embedded defaults.");
    eprintln!(
        "  ingest:      POST http://{http}/v1/messages  (Authorization: Bearer $(cat {dir}/api-key))"
    );
    if let Some(admin) = admin {
        eprintln!("  metrics:     http://{admin}/metrics    readiness: http://{admin}/readyz");
    }
    eprintln!("  config:      {cfg}  (mappings in {dir}/mappings, edited files reload live)");
    eprintln!(
        "  observations: stored in {dir}/fhir.db; see them with `iomt export --config {cfg}`"
    );
    eprintln!("  failures:    `iomt dead-letter list --config {cfg}`");
    if args.devices > 0 {
        eprintln!(
            "  feeding {} simulated wearables at {}/s; Ctrl-C stops (everything received is written first)",
            args.devices, args.rate
        );
    }
    let feeder = (args.devices > 0).then(|| {
        tokio::spawn(demo_feed(
            format!("http://{http}"),
            api_key,
            args.devices,
            args.rate,
        ))
    });
    let progress = tokio::spawn(report_progress(service.metrics.clone()));
    match args.stop_after {
        Some(after) => {
            tokio::select! {
                _ = tokio::time::sleep(after) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    if let Some(feeder) = feeder {
        feeder.abort();
    }
    let metrics = service.metrics.clone();
    service.shutdown().await?;
    progress.abort();
    eprintln!("{}", summary(&metrics));
    eprintln!(
        "Observations are in {dir}/fhir.db: `iomt export --config {cfg}` prints them as FHIR NDJSON."
    );
    Ok(ExitCode::SUCCESS)
}

/// Feeds the demo service with simulated wearables (the simulator's HTTP target, so the
/// demo exercises the same ingest path as real devices).
async fn demo_feed(base: String, api_key: String, devices: usize, rate: f64) {
    use iomt_simulate::send::{self, HttpTarget, Rate, SendOptions};
    use iomt_simulate::{Fleet, FleetConfig, Shape};
    let fleet = Fleet::new(FleetConfig {
        devices,
        shape: Shape::Wearable,
        seed: 1,
        bad_message_rate: 0.01,
        device_prefix: "wristband".into(),
    });
    let (Ok(mut fleet), Ok(target), Ok(rate)) = (
        fleet,
        HttpTarget::new(&base, Some(&api_key)),
        Rate::per_second(rate),
    ) else {
        eprintln!("  the demo feed could not start: check --devices and --rate");
        return;
    };
    let mut options = SendOptions::new(rate);
    options.batch = std::num::NonZeroUsize::new(rate.get().ceil().clamp(1.0, 100.0) as usize)
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let _ = send::run(
        &mut fleet,
        Arc::new(target),
        options,
        std::future::pending(),
    )
    .await;
}

async fn report_progress(metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        eprintln!("{}", summary(&metrics));
    }
}

fn summary(metrics: &Metrics) -> String {
    let text = metrics.render();
    let sum = |name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    format!(
        "  received {} messages, {} measurements, {} observations saved, {} dead letters",
        sum("iomt_messages_received_total"),
        sum("iomt_measurements_total"),
        sum("iomt_observations_saved_total"),
        sum("iomt_dead_letters_stored_total"),
    )
}
