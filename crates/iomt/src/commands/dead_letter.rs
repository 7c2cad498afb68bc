//! `iomt dead-letter list | show | redrive | purge`: what did not arrive, why, and putting it
//! back once the cause is fixed.
//!
//! `list`, `show` and `purge` open the dead-letter store file directly (it allows readers and
//! writers from several processes). `redrive` appends to the durable log: when the service is
//! running it holds the log, so the redrive goes through its admin API instead.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use iomt_runtime::PipelineConfig;
use iomt_runtime::admin::FilterParams;
use iomt_store::DeadLetterStore;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Lists dead letters (newest last): id, time, stage, class, reason.
    List {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: Filter,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter with its original message.
    Show {
        #[command(flatten)]
        target: Target,
        /// The dead letter's id.
        id: i64,
    },
    /// Puts dead letters back into the pipeline (after fixing the mapping or the server).
    Redrive {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: Filter,
    },
    /// Deletes dead letters.
    Purge {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        filter: Filter,
        /// Confirms the deletion.
        #[arg(long)]
        yes: bool,
    },
    /// Counts dead letters by stage and class.
    Counts {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Args)]
struct Target {
    /// The service configuration (says where the store and log are).
    #[arg(long, default_value = "iomt-data/pipeline.yaml")]
    config: PathBuf,
}

#[derive(clap::Args)]
struct Filter {
    /// Only this error class (e.g. FhirResourceNotFoundException).
    #[arg(long)]
    class: Option<String>,
    /// Only this stage (ingest, normalize, group, transform, persist).
    #[arg(long)]
    stage: Option<String>,
    /// Only entries from this time on (RFC 3339).
    #[arg(long)]
    since: Option<DateTime<Utc>>,
    /// Only entries before this time (RFC 3339).
    #[arg(long)]
    until: Option<DateTime<Utc>>,
    /// At most this many.
    #[arg(long)]
    limit: Option<usize>,
}

impl Filter {
    fn params(&self) -> FilterParams {
        FilterParams {
            class: self.class.clone(),
            stage: self.stage.clone(),
            since: self.since,
            until: self.until,
            after_id: None,
            limit: self.limit,
        }
    }
}

fn open(target: &Target) -> anyhow::Result<(PipelineConfig, DeadLetterStore)> {
    let config = PipelineConfig::load(&target.config)?;
    let path = config.dead_letter_path();
    if !path.exists() {
        anyhow::bail!(
            "no dead-letter store at {}: has the service run with this configuration?",
            path.display()
        );
    }
    let store = DeadLetterStore::open(&path)
        .with_context(|| format!("cannot open the dead-letter store {}", path.display()))?;
    Ok((config, store))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.action {
        Action::List {
            target,
            filter,
            json,
        } => {
            let (_, store) = open(&target)?;
            let filter = filter.params().to_filter().map_err(anyhow::Error::msg)?;
            let entries = store.list(&filter)?;
            let mut out = std::io::stdout().lock();
            for e in &entries {
                if json {
                    writeln!(out, "{}", iomt_runtime::admin::summary_json(e))?;
                } else {
                    writeln!(
                        out,
                        "{:>6}  {}  {:<9}  {:<36}  {}",
                        e.id,
                        e.occurred_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        e.stage.to_string(),
                        e.class,
                        e.reason
                    )?;
                }
            }
            if !json {
                eprintln!("{} dead letter(s)", entries.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Show { target, id } => {
            let (_, store) = open(&target)?;
            match store.get(id)? {
                Some(entry) => {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&iomt_runtime::admin::entry_json(&entry))?
                    );
                    Ok(ExitCode::SUCCESS)
                }
                None => {
                    eprintln!("no dead letter has id {id}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Action::Counts { target } => {
            let (_, store) = open(&target)?;
            for (class, stage, count) in store.counts()? {
                println!("{count:>8}  {:<9}  {class}", stage.to_string());
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Purge {
            target,
            filter,
            yes,
        } => {
            if !yes {
                anyhow::bail!("purge deletes dead letters for good: add --yes to confirm");
            }
            let (_, store) = open(&target)?;
            let filter = filter.params().to_filter().map_err(anyhow::Error::msg)?;
            let purged = store.purge(&filter)?;
            eprintln!("purged {purged} dead letter(s)");
            Ok(ExitCode::SUCCESS)
        }
        Action::Redrive { target, filter } => redrive(&target, &filter),
    }
}

fn redrive(target: &Target, filter: &Filter) -> anyhow::Result<ExitCode> {
    let (config, store) = open(target)?;
    let params = filter.params();
    let store_filter = params.to_filter().map_err(anyhow::Error::msg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut log_config = iomt_log::LogConfig::new(config.log_dir());
    log_config.segment_bytes = config.log.segment_size;
    log_config.max_bytes = config.log.max_size;
    match iomt_log::Log::open(log_config) {
        Ok((log, _)) => {
            let report = runtime.block_on(async {
                let report = iomt_runtime::dead_letter::redrive(&store, &log, &store_filter).await;
                let _ = log.close().await;
                report
            })?;
            eprintln!(
                "redrove {} dead letter(s) into the log; the service picks them up when it runs",
                report.redriven
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(iomt_log::LogError::Locked { .. }) => redrive_through_admin(&config, &params),
        Err(e) => Err(e).context("cannot open the durable log"),
    }
}

fn redrive_through_admin(
    config: &PipelineConfig,
    params: &FilterParams,
) -> anyhow::Result<ExitCode> {
    if config.admin.disabled {
        anyhow::bail!(
            "the service is running (it holds the log) and its admin listener is disabled: stop the service to redrive, or enable admin"
        );
    }
    let key = config
        .admin
        .auth
        .api_keys
        .first()
        .map(|k| k.resolve())
        .transpose()
        .context("cannot read the admin api key")?;
    let scheme = if config.admin.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let url = format!("{scheme}://{}/v1/dead-letters/redrive", config.admin.listen);
    let body = serde_json::json!({
        "class": params.class, "stage": params.stage, "since": params.since,
        "until": params.until, "limit": params.limit,
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer: serde_json::Value = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut request = client.post(&url).json(&body);
        if let Some(key) = &key {
            request = request.bearer_auth(key.expose());
        }
        let response = request.send().await.with_context(|| {
            format!("the service holds the log, and its admin api at {url} cannot be reached")
        })?;
        let status = response.status();
        let value: serde_json::Value = response.json().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("the admin api answered {status}: {value}");
        }
        Ok(value)
    })?;
    eprintln!(
        "redrove {} dead letter(s) through the running service",
        answer["redriven"]
    );
    Ok(ExitCode::SUCCESS)
}
