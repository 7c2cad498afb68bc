//! Starting and stopping the whole service: stores, log, destination, listeners, pipeline.
//!
//! # Start order
//! Mappings are loaded first (an invalid mapping stops the start with every error), then the
//! log (recovering from a crash), the dead-letter store, the destination (role `normalize`:
//! the normalized-topic producer instead), the pipelines and the mapping watcher, the admin
//! listener, and last the sources — so nothing is accepted before everything that handles it
//! is up.
//!
//! # Roles
//! One pipeline always runs over the durable log (HTTP, MQTT, redrives). A second one runs
//! over Kafka when the role has a Kafka input: `sources.kafka` (roles all and normalize) or
//! `scale_out.normalized_topic` (role transform). Roles all and transform persist; role
//! normalize produces measurements to the normalized topic. The first pipeline failure stops
//! the other.
//!
//! # Shutdown (SIGINT/SIGTERM, or [`RunningService::shutdown`])
//! Sources stop accepting (HTTP answers 503; MQTT stops reading, acknowledges what is durable
//! and disconnects) and finish what is in flight; then the
//! pipeline drains the log to its end, writes everything, checkpoints and stops (a Kafka
//! pipeline finishes the batch in hand, commits it and leaves the group); then the
//! admin listener stops and the log closes. During a destination outage the pipeline stops
//! without checkpointing the batch it holds: those messages stay in the log for the next
//! start, so nothing acknowledged is lost.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use iomt_log::{Log, LogConfig, SyncMode};
use iomt_store::{DeadLetterStore, LocalFhirStore, LocalStoreConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::admin::{self, Admin};
use crate::auth::Authenticator;
use crate::config::{ConfigError, ConfigProblem, DestinationConfig, PipelineConfig, Role};
use crate::error::RuntimeError;
use crate::event::EventKind;
use crate::ingest::http::{self, HttpIngest};
use crate::ingest::mqtt;
use crate::kafka::{KafkaInput, NormalizedProducer};
use crate::listener;
use crate::mappings::{Mappings, MappingsHandle};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineInput, PipelineOutput};
use crate::sink::{FhirSink, Sink, local_identity_mode};
use crate::status::Status;

/// A started service.
pub struct RunningService {
    /// Where the HTTP source listens, if configured.
    pub http_addr: Option<SocketAddr>,
    /// Where the admin listener listens, if enabled.
    pub admin_addr: Option<SocketAddr>,
    /// The durable log.
    pub log: Log,
    /// The dead-letter store.
    pub dead_letters: Arc<DeadLetterStore>,
    /// The local FHIR store, when it is the destination.
    pub local_store: Option<Arc<LocalFhirStore>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Service state.
    pub status: Arc<Status>,
    stop_sources: watch::Sender<bool>,
    drain: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    sources: Vec<JoinHandle<()>>,
    admin: Option<JoinHandle<()>>,
    pipeline: JoinHandle<Result<(), RuntimeError>>,
}

/// Starts the service described by `config` (already validated).
///
/// # Errors
/// Anything that prevents a correct start: mappings, log, stores, destination client,
/// listener addresses, keys, certificates.
pub async fn start(config: &PipelineConfig) -> Result<RunningService, RuntimeError> {
    let data_dir = config.data_dir();
    std::fs::create_dir_all(&data_dir).map_err(|source| RuntimeError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let metrics = Arc::new(Metrics::new());
    let status = Arc::new(Status::default());

    let mappings = Mappings::load(&config.mappings.device, &config.mappings.fhir)?;
    let templates = mappings.fhir.clone();
    let mappings = Arc::new(MappingsHandle::new(
        mappings,
        config.mappings.device.clone(),
        config.mappings.fhir.clone(),
    ));

    let mut log_config = LogConfig::new(config.log_dir());
    log_config.segment_bytes = config.log.segment_size;
    log_config.max_bytes = config.log.max_size;
    log_config.sync = if config.log.fsync {
        SyncMode::Fsync
    } else {
        SyncMode::Never
    };
    let (log, recovery) = Log::open(log_config)?;
    info!(?recovery, "durable log opened");

    let dead_path = config.dead_letter_path();
    let dead_letters = Arc::new(
        tokio::task::spawn_blocking(move || DeadLetterStore::open(&dead_path))
            .await
            .map_err(|_| RuntimeError::Interrupted)??,
    );

    let role = config.role;
    let mut local_store = None;
    let sink = match (&config.destination, role) {
        (_, Role::Normalize) => None,
        // `validate` refuses a missing destination for the other roles.
        (None, _) => {
            return Err(RuntimeError::Config(ConfigError::Invalid {
                file: PathBuf::from("pipeline.yaml"),
                problems: vec![ConfigProblem {
                    path: "destination".into(),
                    line: None,
                    message: format!("missing: role {} writes Observations there", role.as_str()),
                }],
            }));
        }
        (Some(destination), _) => Some(match destination {
            DestinationConfig::Fhir(fhir) => {
                let sink = FhirSink::new((**fhir).clone(), templates.clone())?;
                Sink::Fhir(Arc::new(sink))
            }
            DestinationConfig::Local(local) => {
                let identity = local
                    .identity
                    .as_deref()
                    .and_then(local_identity_mode)
                    .unwrap_or_default();
                let store_config = LocalStoreConfig {
                    identity,
                    workers: std::num::NonZeroUsize::new(local.workers())
                        .unwrap_or(std::num::NonZeroUsize::MIN),
                    ..LocalStoreConfig::default()
                };
                let path = config
                    .local_store_path()
                    .unwrap_or_else(|| data_dir.join("fhir.db"));
                let store = Arc::new(
                    tokio::task::spawn_blocking(move || LocalFhirStore::open(&path, store_config))
                        .await
                        .map_err(|_| RuntimeError::Interrupted)??,
                );
                local_store = Some(store.clone());
                Sink::Local(store)
            }
        }),
    };

    let (output, kafka_input) = kafka_parts(config, sink, &metrics, &status)?;
    let (drain, drain_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let pipeline_for = |input, output| Pipeline {
        input,
        output,
        mappings: mappings.clone(),
        dead_letters: dead_letters.clone(),
        metrics: metrics.clone(),
        settings: config.pipeline.clone(),
        status: status.clone(),
    };
    let log_pipeline = pipeline_for(PipelineInput::Log(log.clone()), output.clone());
    let kafka_pipeline = kafka_input.map(|(input, output)| {
        tokio::spawn(probe_kafka(input.clone(), stop_admin_rx.clone()));
        pipeline_for(PipelineInput::Kafka(input), output)
    });
    let pipeline = tokio::spawn(run_pipelines(log_pipeline, kafka_pipeline, drain_rx));
    info!(role = role.as_str(), "pipelines started");

    if !config.mappings.reload_interval.is_zero() {
        tokio::spawn(mappings.clone().watch(
            config.mappings.reload_interval,
            metrics.clone(),
            stop_admin_rx.clone(),
        ));
    }

    let mut admin_addr = None;
    let mut admin_task = None;
    if !config.admin.disabled {
        let auth =
            Authenticator::new(&config.admin.auth, config.admin.listen).map_err(|source| {
                RuntimeError::Auth {
                    listener: "admin",
                    source,
                }
            })?;
        let tls = config
            .admin
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
            .map_err(|source| RuntimeError::Tls {
                listener: "admin",
                source,
            })?;
        let listener = listener::bind(config.admin.listen)
            .await
            .map_err(RuntimeError::Bind)?;
        admin_addr = listener.local_addr().ok();
        let router = admin::router(Arc::new(Admin {
            auth,
            log: log.clone(),
            dead_letters: dead_letters.clone(),
            mappings: mappings.clone(),
            metrics: metrics.clone(),
            status: status.clone(),
            ui: Arc::new(crate::ui::UiApi::in_service(
                Authenticator::new(&config.admin.auth, config.admin.listen).map_err(|source| {
                    RuntimeError::Auth {
                        listener: "admin",
                        source,
                    }
                })?,
                mappings.clone(),
            )),
        }));
        admin_task = Some(tokio::spawn(listener::serve(
            listener,
            router,
            tls,
            stop_admin_rx.clone(),
        )));
    }

    let (stop_sources, stop_sources_rx) = watch::channel(false);
    let mut sources = Vec::new();
    let mut http_addr = None;
    if let Some(http_config) = &config.sources.http {
        let auth = Authenticator::new(&http_config.auth, http_config.listen).map_err(|source| {
            RuntimeError::Auth {
                listener: "http",
                source,
            }
        })?;
        let tls = http_config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()
            .map_err(|source| RuntimeError::Tls {
                listener: "http",
                source,
            })?;
        let listener = listener::bind(http_config.listen)
            .await
            .map_err(RuntimeError::Bind)?;
        http_addr = listener.local_addr().ok();
        let router = http::router(Arc::new(HttpIngest {
            log: log.clone(),
            auth,
            metrics: metrics.clone(),
            status: status.clone(),
            max_body: usize::try_from(http_config.max_body).unwrap_or(usize::MAX),
        }));
        sources.push(tokio::spawn(listener::serve(
            listener,
            router,
            tls,
            stop_sources_rx.clone(),
        )));
    }
    if let Some(mqtt_config) = &config.sources.mqtt {
        sources.push(mqtt::spawn(
            mqtt_config,
            log.clone(),
            metrics.clone(),
            status.clone(),
            stop_sources_rx.clone(),
        )?);
    }
    status.set_sources_accepting(true);
    info!(http = ?http_addr, admin = ?admin_addr, "iomt is running");
    Ok(RunningService {
        http_addr,
        admin_addr,
        log,
        dead_letters,
        local_store,
        metrics,
        status,
        stop_sources,
        drain,
        stop_admin,
        sources,
        admin: admin_task,
        pipeline,
    })
}

impl RunningService {
    /// Stops gracefully (see the module docs).
    ///
    /// # Errors
    /// The pipeline had failed, or the log could not be closed cleanly.
    pub async fn shutdown(self) -> Result<(), RuntimeError> {
        info!("shutting down: sources stop, the pipeline drains the log");
        self.status.set_sources_accepting(false);
        let _ = self.stop_sources.send(true);
        for source in self.sources {
            let _ = source.await;
        }
        let _ = self.drain.send(true);
        let result = match self.pipeline.await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        };
        let _ = self.stop_admin.send(true);
        if let Some(admin) = self.admin {
            let _ = admin.await;
        }
        self.log.close().await?;
        info!("stopped");
        result
    }

    /// Runs until SIGINT or SIGTERM (then shuts down gracefully) or until the pipeline fails.
    ///
    /// # Errors
    /// The pipeline failed, or shutdown did.
    pub async fn run_until_signal(mut self) -> Result<(), RuntimeError> {
        tokio::select! {
            _ = shutdown_signal() => {}
            result = &mut self.pipeline => {
                let result = match result {
                    Ok(r) => r,
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => Ok(()),
                };
                warn!("the pipeline stopped; shutting down");
                self.status.set_sources_accepting(false);
                let _ = self.stop_sources.send(true);
                let _ = self.stop_admin.send(true);
                return result;
            }
        }
        self.shutdown().await
    }
}

/// The log pipeline's output, and the Kafka input (with its output) if the role has one.
#[allow(clippy::type_complexity)]
fn kafka_parts(
    config: &PipelineConfig,
    sink: Option<Sink>,
    metrics: &Arc<Metrics>,
    status: &Arc<Status>,
) -> Result<(PipelineOutput, Option<(Arc<KafkaInput>, PipelineOutput)>), RuntimeError> {
    use crate::kafka::config::{consumer_config, producer_config};
    let scale_out = config.scale_out.as_ref();
    let output = match (config.role, sink, scale_out) {
        (Role::Normalize, _, Some(scale_out)) => {
            let properties = producer_config(&scale_out.connection(), scale_out.delivery_timeout)?;
            PipelineOutput::Produce(Arc::new(NormalizedProducer::new(
                &properties,
                &scale_out.normalized_topic,
                metrics.clone(),
                status.clone(),
            )?))
        }
        (_, Some(sink), _) => PipelineOutput::Persist(sink),
        _ => {
            return Err(RuntimeError::Config(crate::config::ConfigError::Invalid {
                file: "pipeline.yaml".into(),
                problems: vec![crate::config::ConfigProblem {
                    path: "scale_out".into(),
                    line: None,
                    message: "role normalize needs scale_out: run `iomt validate`".into(),
                }],
            }));
        }
    };
    let input = match (config.role, &config.sources.kafka, scale_out) {
        (Role::Transform, _, Some(scale_out)) => {
            let properties = consumer_config(
                &scale_out.connection(),
                &scale_out.group_id,
                scale_out.session_timeout,
                crate::kafka::OffsetReset::Earliest,
            )?;
            Some(KafkaInput::new(
                &properties,
                std::slice::from_ref(&scale_out.normalized_topic),
                EventKind::Measurements,
                "scale_out",
                metrics.clone(),
                status.clone(),
            )?)
        }
        (Role::All | Role::Normalize, Some(kafka), _) => {
            let properties = consumer_config(
                &kafka.connection(),
                &kafka.group_id,
                kafka.session_timeout,
                kafka.auto_offset_reset,
            )?;
            Some(KafkaInput::new(
                &properties,
                &kafka.topics,
                EventKind::Message,
                crate::kafka::headers::SOURCE,
                metrics.clone(),
                status.clone(),
            )?)
        }
        _ => None,
    };
    let input = input.map(|i| {
        let output = output.clone();
        (Arc::new(i), output)
    });
    Ok((output, input))
}

/// Runs the log pipeline and, if any, the Kafka one; the first failure stops both.
async fn run_pipelines(
    log_pipeline: Pipeline,
    kafka_pipeline: Option<Pipeline>,
    drain: watch::Receiver<bool>,
) -> Result<(), RuntimeError> {
    let flatten = |r: Result<Result<(), RuntimeError>, tokio::task::JoinError>| match r {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(RuntimeError::Interrupted),
    };
    let mut log_task = tokio::spawn(log_pipeline.run(drain.clone()));
    let Some(kafka_pipeline) = kafka_pipeline else {
        return flatten(log_task.await);
    };
    let mut kafka_task = tokio::spawn(kafka_pipeline.run(drain));
    tokio::select! {
        r = &mut kafka_task => {
            let r = flatten(r);
            if r.is_err() {
                log_task.abort();
                return r;
            }
            flatten(log_task.await)
        }
        r = &mut log_task => {
            let r = flatten(r);
            if r.is_err() {
                kafka_task.abort();
                return r;
            }
            flatten(kafka_task.await)
        }
    }
}

/// Checks every 10 s that the Kafka brokers answer, for readiness.
async fn probe_kafka(input: Arc<KafkaInput>, mut stop: watch::Receiver<bool>) {
    loop {
        input.probe().await;
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
