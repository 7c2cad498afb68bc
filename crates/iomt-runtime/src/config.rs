//! The service's configuration file (`pipeline.yaml`), version 1.
//!
//! One file says where device messages come from, which mappings apply, how measurements are
//! grouped and flushed, where Observations go (a FHIR server, or the embedded local store),
//! where failures are kept, and which listeners run with which authentication.
//!
//! # What must hold
//! * Unknown keys are errors (a misspelt `flush_intervall` must not silently fall back to a
//!   default), and every error names its path (`sources.http.auth.api_keys[0]`) and line.
//! * Secrets are never in the parsed values' `Debug` output: they are [`SecretSource`]s (an
//!   environment variable, a file, or — for local runs only — the value itself).
//! * Relative paths are relative to the configuration file's folder, so a config and its
//!   mappings can be moved together.
//! * [`PipelineConfig::validate`] does no network I/O: it checks the mapping files (every
//!   template error with its line), listener addresses, TLS files and that secrets resolve,
//!   and reports every problem at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use iomt_fhir_client::{FhirClientConfig, SecretSource};
use serde::{Deserialize, Deserializer};

/// The configuration file format this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// The file format version; must be 1.
    pub version: u32,
    /// What this instance does: `all` (default), `normalize` or `transform` (see
    /// `docs/scale-out.md`).
    #[serde(default)]
    pub role: Role,
    /// Where the durable log, the dead-letter store and the local FHIR store live
    /// (default `iomt-data` next to the configuration file).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// The device and FHIR mappings.
    pub mappings: MappingsConfig,
    /// Where device messages come from.
    #[serde(default)]
    pub sources: SourcesConfig,
    /// The embedded durable log.
    #[serde(default)]
    pub log: LogSettings,
    /// Batching, flushing and failure handling.
    #[serde(default)]
    pub pipeline: PipelineSettings,
    /// Where Observations are written (required by roles `all` and `transform`; role
    /// `normalize` writes measurements to `scale_out` instead and ignores it).
    #[serde(default)]
    pub destination: Option<DestinationConfig>,
    /// Where failed messages and groups are kept.
    #[serde(default)]
    pub dead_letter: DeadLetterSettings,
    /// The admin listener: health, readiness, metrics, dead-letter and mapping APIs.
    #[serde(default)]
    pub admin: AdminConfig,
    /// The normalized topic shared by `normalize` and `transform` instances.
    #[serde(default)]
    pub scale_out: Option<crate::kafka::ScaleOutConfig>,
}

/// What an instance does (`role:`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything in one process: sources → normalize → group → persist.
    #[default]
    All,
    /// Sources → normalize → measurements to `scale_out.normalized_topic`.
    Normalize,
    /// `scale_out.normalized_topic` → group → persist.
    Transform,
}

impl Role {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Normalize => "normalize",
            Role::Transform => "transform",
        }
    }
}

/// The mapping files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingsConfig {
    /// The device mapping (`devicecontent.json`).
    pub device: PathBuf,
    /// The FHIR mapping (`fhirmapping.json`).
    pub fhir: PathBuf,
    /// How often the files are checked for changes (default `2s`; `0s` turns reloading off).
    #[serde(default = "default_reload", deserialize_with = "duration")]
    pub reload_interval: Duration,
}

fn default_reload() -> Duration {
    Duration::from_secs(2)
}

/// The sources; at least one must be configured.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcesConfig {
    /// HTTP ingest (`POST /v1/messages`).
    #[serde(default)]
    pub http: Option<HttpSourceConfig>,
    /// MQTT subscription (see [`crate::ingest::mqtt`] and `docs/sources.md`).
    #[serde(default)]
    pub mqtt: Option<crate::ingest::mqtt::MqttSourceConfig>,
    /// Kafka topics, or Azure Event Hubs through its Kafka endpoint (see [`crate::kafka`] and
    /// `docs/sources.md`).
    #[serde(default)]
    pub kafka: Option<crate::kafka::KafkaSourceConfig>,
}

/// HTTP ingest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// The address to listen on (default `127.0.0.1:8180`).
    #[serde(default = "default_http_listen")]
    pub listen: SocketAddr,
    /// The largest request body accepted (default `4MiB`).
    #[serde(default = "default_max_body", deserialize_with = "byte_size")]
    pub max_body: u64,
    /// Who may send data.
    #[serde(default)]
    pub auth: ListenerAuth,
    /// TLS; without it the listener speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

fn default_http_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8180))
}

fn default_max_body() -> u64 {
    4 << 20
}

/// Authentication of a listener. Requests are accepted when they carry one of the API keys or
/// a valid JWT (`Authorization: Bearer …`). With neither configured, the listener refuses to
/// start unless `allow_unauthenticated` is set *and* it listens on a loopback address.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerAuth {
    /// Accepted API keys, each from an environment variable or a file.
    #[serde(default)]
    pub api_keys: Vec<SecretSource>,
    /// Accepted JWTs.
    #[serde(default)]
    pub jwt: Option<JwtAuthConfig>,
    /// Accept unauthenticated requests (loopback listeners only).
    #[serde(default)]
    pub allow_unauthenticated: bool,
}

/// JWT bearer tokens: signature, issuer, audience and expiry are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuthConfig {
    /// The signing algorithm: `HS256`, `RS256`, `RS384`, `ES256`, `ES384`.
    pub algorithm: String,
    /// The HMAC secret, or the PEM public key, for verifying signatures.
    pub key: SecretSource,
    /// The required `iss`, if any.
    #[serde(default)]
    pub issuer: Option<String>,
    /// The required `aud`, if any.
    #[serde(default)]
    pub audience: Option<String>,
}

/// A certificate chain and private key, PEM files.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// The embedded durable log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// Segment file size (default `64MiB`).
    #[serde(default = "default_segment", deserialize_with = "byte_size")]
    pub segment_size: u64,
    /// Retained bytes above which sources push back (HTTP 429) (default `1GiB`).
    #[serde(default = "default_log_max", deserialize_with = "byte_size")]
    pub max_size: u64,
    /// `fsync` every group commit (default true). Turning it off loses acknowledged messages
    /// on a power cut; it exists for benchmarks.
    #[serde(default = "yes")]
    pub fsync: bool,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            segment_size: default_segment(),
            max_size: default_log_max(),
            fsync: true,
        }
    }
}

fn default_segment() -> u64 {
    64 << 20
}

fn default_log_max() -> u64 {
    1 << 30
}

fn yes() -> bool {
    true
}

/// Batching, flushing and failure handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSettings {
    /// How long messages are gathered before a batch is grouped and written (default `1s`).
    #[serde(default = "default_flush", deserialize_with = "duration")]
    pub flush_interval: Duration,
    /// The most messages in one batch (default 40000). Each batch merges a device's open
    /// hour and day Observations once, so larger batches merge less per message; two batches
    /// are in memory at a time (one prepared while the other is persisted).
    #[serde(default = "default_max_batch")]
    pub max_batch_messages: usize,
    /// Dead-letter messages that no device template matched (default false: the original
    /// dropped them silently; they are counted either way).
    #[serde(default)]
    pub keep_unmatched: bool,
    /// How many times a group that fails with a retryable error is tried while other writes
    /// succeed, before it is dead-lettered (default 5). While every write fails (an outage)
    /// the pipeline waits and retries without limit and nothing is dead-lettered.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        PipelineSettings {
            flush_interval: default_flush(),
            max_batch_messages: default_max_batch(),
            keep_unmatched: false,
            max_attempts: default_attempts(),
        }
    }
}

fn default_flush() -> Duration {
    Duration::from_secs(1)
}

fn default_max_batch() -> usize {
    40_000
}

fn default_attempts() -> u32 {
    5
}

/// Where Observations are written: `fhir: {…}` or `local: {…}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DestinationConfig {
    /// A FHIR R4 server (see the `iomt-fhir-client` README for every setting).
    Fhir(Box<FhirClientConfig>),
    /// The embedded local store (evaluation, gateways); not a FHIR server.
    Local(LocalDestination),
}

/// The embedded local FHIR store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalDestination {
    /// The database file (default `<data_dir>/fhir.db`).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `create` (default), `lookup` or `lookup_with_encounter`, as for a FHIR server.
    #[serde(default)]
    pub identity: Option<String>,
    /// Threads that build and merge Observations beside the store's one writer (default: 2
    /// when the machine has two cores or more, else 1). With 2 or more, the next slice of
    /// Observations is built while the writer writes this one.
    #[serde(default)]
    pub workers: Option<usize>,
}

impl LocalDestination {
    /// The `workers` in force: the configured number, or 2 when the machine has two cores or
    /// more.
    pub fn workers(&self) -> usize {
        self.workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(2)))
    }
}

/// The dead-letter store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSettings {
    /// The database file (default `<data_dir>/dead-letter.db`).
    #[serde(default)]
    pub path: Option<PathBuf>,
}

/// The admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The address (default `127.0.0.1:8181`); `/healthz`, `/readyz` and `/metrics` answer
    /// without authentication, everything else needs it.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Who may use the admin API.
    #[serde(default)]
    pub auth: ListenerAuth,
    /// TLS; without it the listener speaks plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Turn the admin listener off.
    #[serde(default)]
    pub disabled: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            auth: ListenerAuth::default(),
            tls: None,
            disabled: false,
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8181))
}

/// One problem in the configuration: where and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The path of the setting (`pipeline.flush_interval`), empty for the whole file.
    pub path: String,
    /// The line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// The configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read the configuration file {path}: {source}; check the path and its permissions"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file has problems; every one is listed.
    #[error("the configuration {file} has {} problem(s):\n{}", problems.len(), list(problems))]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Every problem found.
        problems: Vec<ConfigProblem>,
    },
}

fn list(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl PipelineConfig {
    /// Reads and parses a configuration file, resolving relative paths against its folder.
    /// Only the structure is checked here; [`PipelineConfig::validate`] checks the rest.
    ///
    /// # Errors
    /// [`ConfigError::Read`] when the file cannot be read; [`ConfigError::Invalid`] with the
    /// path and line of the first structural error.
    pub fn load(path: &Path) -> Result<PipelineConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config =
            PipelineConfig::from_yaml_str(&text).map_err(|problem| ConfigError::Invalid {
                file: path.to_owned(),
                problems: vec![problem],
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses configuration text (YAML; JSON is YAML too). Paths stay as written.
    ///
    /// # Errors
    /// The first structural problem, with its path and line.
    pub fn from_yaml_str(text: &str) -> Result<PipelineConfig, ConfigProblem> {
        let mut path_seen = String::new();
        let result: Result<PipelineConfig, serde_saphyr::Error> =
            serde_saphyr::with_deserializer_from_str(text, |de| {
                serde_path_to_error::deserialize::<_, PipelineConfig>(de).map_err(|e| {
                    path_seen = e.path().to_string();
                    e.into_inner()
                })
            });
        let config = result.map_err(|e| yaml_problem(&path_seen, &e))?;
        if config.version != CONFIG_VERSION {
            return Err(ConfigProblem {
                path: "version".into(),
                line: None,
                message: format!(
                    "this build reads configuration version {CONFIG_VERSION}, the file says {}",
                    config.version
                ),
            });
        }
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.as_os_str() == "." {
                *p = base.to_owned();
            } else if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.mappings.device);
        if let Some(mqtt) = self.sources.mqtt.as_mut() {
            mqtt.resolve_paths(resolve);
        }
        if let Some(kafka) = self.sources.kafka.as_mut() {
            kafka.resolve_paths(resolve);
        }
        if let Some(scale_out) = self.scale_out.as_mut() {
            scale_out.resolve_paths(resolve);
        }
        resolve(&mut self.mappings.fhir);
        let data_dir = self
            .data_dir
            .get_or_insert_with(|| PathBuf::from("iomt-data"));
        resolve(data_dir);
        if let Some(p) = self.dead_letter.path.as_mut() {
            resolve(p);
        }
        if let Some(DestinationConfig::Local(local)) = &mut self.destination
            && let Some(p) = local.path.as_mut()
        {
            resolve(p);
        }
        if let Some(DestinationConfig::Fhir(fhir)) = &mut self.destination {
            resolve_fhir_paths(fhir, resolve);
        }
        for tls in [
            self.sources.http.as_mut().and_then(|h| h.tls.as_mut()),
            self.admin.tls.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            resolve(&mut tls.cert_file);
            resolve(&mut tls.key_file);
        }
        for auth in [
            self.sources.http.as_mut().map(|h| &mut h.auth),
            Some(&mut self.admin.auth),
        ]
        .into_iter()
        .flatten()
        {
            for key in &mut auth.api_keys {
                if let SecretSource::File(p) = key {
                    resolve(p);
                }
            }
            if let Some(jwt) = auth.jwt.as_mut()
                && let SecretSource::File(p) = &mut jwt.key
            {
                resolve(p);
            }
        }
    }

    /// The data folder (after [`PipelineConfig::load`], always set).
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("iomt-data"))
    }

    /// The durable log's folder.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir().join("log")
    }

    /// The dead-letter database.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.dead_letter
            .path
            .clone()
            .unwrap_or_else(|| self.data_dir().join("dead-letter.db"))
    }

    /// The local FHIR store's database, when the destination is local.
    pub fn local_store_path(&self) -> Option<PathBuf> {
        match &self.destination {
            Some(DestinationConfig::Local(local)) => Some(
                local
                    .path
                    .clone()
                    .unwrap_or_else(|| self.data_dir().join("fhir.db")),
            ),
            Some(DestinationConfig::Fhir(_)) | None => None,
        }
    }

    /// Checks everything that can be checked without the network: mapping files, listeners,
    /// TLS files, secrets, the FHIR destination's settings.
    ///
    /// # Errors
    /// Every problem found, each with its path.
    pub fn validate(&self) -> Result<(), Vec<ConfigProblem>> {
        let mut problems = Vec::new();
        let mut problem = |path: &str, message: String| {
            problems.push(ConfigProblem {
                path: path.to_owned(),
                line: None,
                message,
            })
        };
        check_mappings(self, &mut problem);
        let has_source = self.sources.http.is_some()
            || self.sources.mqtt.is_some()
            || self.sources.kafka.is_some();
        if !has_source && self.role != Role::Transform {
            problem(
                "sources",
                "no source is configured: add `http: {}`, `mqtt: {…}` or `kafka: {…}` under `sources`".into(),
            );
        }
        check_role(self, &mut problem);
        if let Some(kafka) = &self.sources.kafka {
            check_kafka_source(kafka, self.scale_out.as_ref(), &mut problem);
        }
        if let Some(scale_out) = &self.scale_out {
            check_scale_out(scale_out, &mut problem);
        }
        if let Some(mqtt) = &self.sources.mqtt {
            mqtt.check("sources.mqtt", &mut problem);
        }
        if let Some(http) = &self.sources.http {
            check_listener(
                "sources.http",
                http.listen,
                &http.auth,
                http.tls.as_ref(),
                &mut problem,
            );
            if http.max_body == 0 {
                problem("sources.http.max_body", "must be greater than zero".into());
            }
        }
        if !self.admin.disabled {
            check_listener(
                "admin",
                self.admin.listen,
                &self.admin.auth,
                self.admin.tls.as_ref(),
                &mut problem,
            );
        }
        if let (Some(http), false) = (&self.sources.http, self.admin.disabled)
            && http.listen == self.admin.listen
            && http.listen.port() != 0
        {
            problem(
                "admin.listen",
                format!(
                    "{} is also sources.http.listen: give the admin listener its own port",
                    http.listen
                ),
            );
        }
        if self.pipeline.flush_interval.is_zero() {
            problem(
                "pipeline.flush_interval",
                "must be greater than zero, e.g. 1s".into(),
            );
        }
        if self.pipeline.max_batch_messages == 0 {
            problem(
                "pipeline.max_batch_messages",
                "must be greater than zero".into(),
            );
        }
        if self.log.segment_size < 1 << 20 {
            problem("log.segment_size", "must be at least 1MiB".into());
        }
        if self.log.max_size < self.log.segment_size.saturating_mul(2) {
            problem(
                "log.max_size",
                "must be at least twice log.segment_size".into(),
            );
        }
        match &self.destination {
            None if self.role != Role::Normalize => problem(
                "destination",
                format!(
                    "missing: role {} writes Observations there: add `destination: {{local: {{}}}}` \
                     or `destination: {{fhir: {{base_url: …}}}}`",
                    self.role.as_str()
                ),
            ),
            None => {}
            Some(DestinationConfig::Fhir(fhir)) => {
                if let Err(errors) = fhir.validate() {
                    for e in errors {
                        problem(&format!("destination.fhir.{}", e.path), e.message);
                    }
                }
            }
            Some(DestinationConfig::Local(local)) => {
                if local.workers.is_some_and(|w| !(1..=64).contains(&w)) {
                    problem(
                        "destination.local.workers",
                        "must be between 1 and 64".to_owned(),
                    );
                }
                if let Some(mode) = &local.identity
                    && crate::sink::local_identity_mode(mode).is_none()
                {
                    problem(
                        "destination.local.identity",
                        format!(
                            "unknown identity mode {mode:?}: use create, lookup or lookup_with_encounter"
                        ),
                    );
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Makes the FHIR destination's file paths (CA files, client certificate, secrets kept in
/// files) relative to the configuration file, like every other path in it.
fn resolve_fhir_paths(fhir: &mut FhirClientConfig, resolve: impl Fn(&mut PathBuf)) {
    let resolve_secret = |s: &mut SecretSource| {
        if let SecretSource::File(p) = s {
            resolve(p);
        }
    };
    let tls = &mut fhir.http.tls;
    tls.ca_files.iter_mut().for_each(&resolve);
    if let Some(p) = tls.client_certificate.as_mut() {
        resolve(p);
    }
    if let Some(key) = tls.client_key.as_mut() {
        resolve_secret(key);
    }
    match &mut fhir.auth {
        iomt_fhir_client::AuthConfig::None => {}
        iomt_fhir_client::AuthConfig::Bearer { token } => resolve_secret(token),
        iomt_fhir_client::AuthConfig::ClientCredentials { client_secret, .. } => {
            resolve_secret(client_secret)
        }
        iomt_fhir_client::AuthConfig::SmartBackend { private_key, .. } => {
            resolve_secret(private_key)
        }
    }
}

fn check_mappings(config: &PipelineConfig, problem: &mut impl FnMut(&str, String)) {
    match std::fs::read_to_string(&config.mappings.device) {
        Ok(text) => {
            if let Err(e) = iomt_normalize::DeviceMapping::from_json_str(&text) {
                for line in e.to_string().lines().filter(|l| !l.trim().is_empty()) {
                    problem("mappings.device", line.trim().to_owned());
                }
            }
        }
        Err(e) => problem(
            "mappings.device",
            format!(
                "cannot read {}: {e}",
                config.mappings.device.to_string_lossy()
            ),
        ),
    }
    match std::fs::read_to_string(&config.mappings.fhir) {
        Ok(text) => {
            if let Err(e) = iomt_transform::FhirTemplates::from_json_str(&text) {
                for line in e.to_string().lines().filter(|l| !l.trim().is_empty()) {
                    problem("mappings.fhir", line.trim().to_owned());
                }
            }
        }
        Err(e) => problem(
            "mappings.fhir",
            format!(
                "cannot read {}: {e}",
                config.mappings.fhir.to_string_lossy()
            ),
        ),
    }
}

fn check_role(config: &PipelineConfig, problem: &mut impl FnMut(&str, String)) {
    match config.role {
        Role::All => {
            if config.scale_out.is_some() {
                problem(
                    "scale_out",
                    "is only used by role normalize (writes it) and role transform (reads it): \
                     set `role:` or remove scale_out"
                        .into(),
                );
            }
        }
        Role::Normalize => {
            if config.scale_out.is_none() {
                problem(
                    "scale_out",
                    "role normalize writes measurements to scale_out.normalized_topic: add \
                     scale_out with bootstrap_servers and normalized_topic"
                        .into(),
                );
            }
        }
        Role::Transform => {
            if config.scale_out.is_none() {
                problem(
                    "scale_out",
                    "role transform reads measurements from scale_out.normalized_topic: add \
                     scale_out with bootstrap_servers and normalized_topic"
                        .into(),
                );
            }
            for (name, set) in [
                ("http", config.sources.http.is_some()),
                ("mqtt", config.sources.mqtt.is_some()),
                ("kafka", config.sources.kafka.is_some()),
            ] {
                if set {
                    problem(
                        &format!("sources.{name}"),
                        "role transform reads only scale_out.normalized_topic: configure \
                         sources on the normalize instances, or use role all"
                            .into(),
                    );
                }
            }
        }
    }
}

fn check_kafka_source(
    kafka: &crate::kafka::KafkaSourceConfig,
    scale_out: Option<&crate::kafka::ScaleOutConfig>,
    problem: &mut impl FnMut(&str, String),
) {
    crate::kafka::config::check_connection("sources.kafka", &kafka.connection(), problem);
    if kafka.topics.is_empty() {
        problem(
            "sources.kafka.topics",
            "must name at least one topic (event hub)".into(),
        );
    }
    for (i, topic) in kafka.topics.iter().enumerate() {
        if topic.trim().is_empty() {
            problem(
                &format!("sources.kafka.topics[{i}]"),
                "must not be empty".into(),
            );
        }
        if let Some(s) = scale_out
            && s.normalized_topic == *topic
        {
            problem(
                &format!("sources.kafka.topics[{i}]"),
                "is scale_out.normalized_topic: the raw device topic and the normalized topic \
                 must differ"
                    .into(),
            );
        }
    }
    if kafka.group_id.trim().is_empty() {
        problem(
            "sources.kafka.group_id",
            "must not be empty: every instance sharing the topics uses the same group".into(),
        );
    }
    if kafka.session_timeout.is_zero() {
        problem(
            "sources.kafka.session_timeout",
            "must be greater than zero, e.g. 6s".into(),
        );
    }
}

fn check_scale_out(
    scale_out: &crate::kafka::ScaleOutConfig,
    problem: &mut impl FnMut(&str, String),
) {
    crate::kafka::config::check_connection("scale_out", &scale_out.connection(), problem);
    if scale_out.normalized_topic.trim().is_empty() {
        problem(
            "scale_out.normalized_topic",
            "must name the topic of normalized measurements".into(),
        );
    }
    if scale_out.group_id.trim().is_empty() {
        problem("scale_out.group_id", "must not be empty".into());
    }
    if scale_out.session_timeout.is_zero() {
        problem(
            "scale_out.session_timeout",
            "must be greater than zero, e.g. 6s".into(),
        );
    }
    if scale_out.delivery_timeout.is_zero() {
        problem(
            "scale_out.delivery_timeout",
            "must be greater than zero, e.g. 30s".into(),
        );
    }
}

fn check_listener(
    path: &str,
    listen: SocketAddr,
    auth: &ListenerAuth,
    tls: Option<&TlsConfig>,
    problem: &mut impl FnMut(&str, String),
) {
    let has_auth = !auth.api_keys.is_empty() || auth.jwt.is_some();
    if !has_auth && !auth.allow_unauthenticated {
        problem(
            &format!("{path}.auth"),
            "no authentication is configured: add api_keys (from env or file) or jwt, \
             or, for a loopback listener only, set allow_unauthenticated: true"
                .into(),
        );
    }
    if auth.allow_unauthenticated && !listen.ip().is_loopback() {
        problem(
            &format!("{path}.auth.allow_unauthenticated"),
            format!(
                "is only allowed on a loopback address, and {path}.listen is {listen}: \
                 configure api_keys or jwt"
            ),
        );
    }
    for (i, key) in auth.api_keys.iter().enumerate() {
        match key.resolve() {
            Ok(secret) if secret.expose().trim().len() < 16 => problem(
                &format!("{path}.auth.api_keys[{i}]"),
                "is shorter than 16 characters: use a long random key".into(),
            ),
            Ok(_) => {}
            Err(e) => problem(&format!("{path}.auth.api_keys[{i}]"), e.to_string()),
        }
    }
    if let Some(jwt) = &auth.jwt {
        if crate::auth::parse_algorithm(&jwt.algorithm).is_none() {
            problem(
                &format!("{path}.auth.jwt.algorithm"),
                format!(
                    "unknown algorithm {:?}: use HS256, RS256, RS384, ES256 or ES384",
                    jwt.algorithm
                ),
            );
        } else if let Err(e) = crate::auth::JwtVerifier::new(jwt) {
            problem(&format!("{path}.auth.jwt.key"), e.to_string());
        }
    }
    if let Some(tls) = tls
        && let Err(e) = crate::tls::server_config(tls)
    {
        problem(&format!("{path}.tls"), e.to_string());
    }
}

fn yaml_problem(path: &str, e: &serde_saphyr::Error) -> ConfigProblem {
    let text = e.to_string();
    let line = e.location().map(|l| l.line() as usize);
    // serde-saphyr renders a source snippet after the message; keep the first line.
    let first = text.lines().next().unwrap_or_default().trim();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    // "line 11 column 3: unknown field …": the line is reported on its own.
    let message = match first.strip_prefix("line ") {
        Some(rest) => rest.split_once(": ").map_or(first, |(_, m)| m),
        None => first,
    }
    .to_owned();
    ConfigProblem {
        path: if path == "." {
            String::new()
        } else {
            path.to_owned()
        },
        line,
        message,
    }
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim()).map_err(|e| {
        serde::de::Error::custom(format!(
            "{text:?} is not a duration ({e}): write a number with a unit, e.g. 500ms, 1s, 5m"
        ))
    })
}

pub(crate) fn byte_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(d)? {
        Size::Number(n) => Ok(n),
        Size::Text(t) => parse_byte_size(&t).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{t:?} is not a size: write bytes or a number with KiB, MiB or GiB, e.g. 64MiB"
            ))
        }),
    }
}

/// Parses `123`, `4KiB`, `64MiB`, `1GiB` (also `KB`/`MB`/`GB`, taken as powers of 1024).
fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => return None,
    };
    number.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "
version: 1
mappings:
  device: devicecontent.json
  fhir: fhirmapping.json
sources:
  http:
    auth:
      allow_unauthenticated: true
destination:
  local: {}
";

    #[test]
    fn minimal_file_takes_defaults() {
        let c = PipelineConfig::from_yaml_str(MINIMAL).unwrap();
        assert_eq!(c.pipeline.flush_interval, Duration::from_secs(1));
        assert_eq!(c.log.max_size, 1 << 30);
        assert_eq!(c.sources.http.as_ref().unwrap().listen.port(), 8180);
        assert!(matches!(c.destination, Some(DestinationConfig::Local(_))));
    }

    #[test]
    fn unknown_key_is_reported_with_its_path_and_line() {
        let text = MINIMAL.replace(
            "destination:",
            "pipeline:\n  flush_intervall: 2s\ndestination:",
        );
        let p = PipelineConfig::from_yaml_str(&text).unwrap_err();
        assert!(p.message.contains("flush_intervall"), "{p}");
        assert_eq!(p.path, "pipeline.flush_intervall");
        assert_eq!(p.line, Some(11), "{p}");
        assert!(p.message.starts_with("unknown field"), "{p}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let text = MINIMAL.replace(
            "destination:",
            "pipeline:\n  flush_interval: soon\ndestination:",
        );
        let p = PipelineConfig::from_yaml_str(&text).unwrap_err();
        assert_eq!(p.path, "pipeline.flush_interval");
        assert!(p.message.contains("500ms"), "{p}");
    }

    #[test]
    fn wrong_version_is_rejected() {
        let p = PipelineConfig::from_yaml_str(&MINIMAL.replace("version: 1", "version: 2"))
            .unwrap_err();
        assert_eq!(p.path, "version");
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_byte_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_byte_size("1 GiB"), Some(1 << 30));
        assert_eq!(parse_byte_size("512"), Some(512));
        assert_eq!(parse_byte_size("1 TB"), None);
    }

    #[test]
    fn fhir_destination_reads_the_client_settings() {
        let text = MINIMAL.replace(
            "  local: {}",
            "  fhir:\n    base_url: https://fhir.example.org/R4\n    identity:\n      mode: create",
        );
        let c = PipelineConfig::from_yaml_str(&text).unwrap();
        let Some(DestinationConfig::Fhir(fhir)) = c.destination else {
            panic!("expected fhir");
        };
        assert_eq!(fhir.base_url, "https://fhir.example.org/R4");
    }

    #[test]
    fn fhir_destination_files_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = MINIMAL.replace(
            "  local: {}",
            "  fhir:\n    base_url: https://fhir.example.org/R4\n    auth: {type: bearer, token: {file: secrets/token}}\n    http:\n      tls: {ca_files: [ca.pem, /etc/abs.pem]}",
        );
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, text).unwrap();
        let c = PipelineConfig::load(&path).unwrap();
        let Some(DestinationConfig::Fhir(fhir)) = c.destination else {
            panic!("expected fhir");
        };
        assert_eq!(
            fhir.http.tls.ca_files,
            [dir.path().join("ca.pem"), PathBuf::from("/etc/abs.pem")]
        );
        let iomt_fhir_client::AuthConfig::Bearer {
            token: SecretSource::File(token),
        } = &fhir.auth
        else {
            panic!("expected a bearer token file");
        };
        assert_eq!(token, &dir.path().join("secrets/token"));
    }

    #[test]
    fn kafka_source_and_scale_out_parse() {
        let text = MINIMAL
            .replace("version: 1", "version: 1\nrole: normalize")
            .replace(
                "destination:",
                "scale_out:\n  bootstrap_servers: 127.0.0.1:9092\n  normalized_topic: normalizeddata\ndestination:",
            )
            .replace(
                "sources:",
                "sources:\n  kafka:\n    bootstrap_servers: 127.0.0.1:9092\n    topics: [devicedata]\n    group_id: iomt-normalize\n    security:\n      sasl_ssl: {mechanism: SCRAM-SHA-512, username: u, password: {env: KAFKA_PASSWORD}}\n    extra: {fetch.min.bytes: '1'}",
            );
        let c = PipelineConfig::from_yaml_str(&text).unwrap();
        assert_eq!(c.role, Role::Normalize);
        let kafka = c.sources.kafka.as_ref().unwrap();
        assert_eq!(kafka.topics, ["devicedata"]);
        assert_eq!(kafka.session_timeout, Duration::from_secs(6));
        assert!(matches!(
            kafka.security,
            crate::kafka::KafkaSecurity::SaslSsl {
                mechanism: crate::kafka::SaslMechanism::ScramSha512,
                ..
            }
        ));
        let scale_out = c.scale_out.as_ref().unwrap();
        assert_eq!(scale_out.normalized_topic, "normalizeddata");
        assert_eq!(scale_out.group_id, "iomt-transform");
    }

    #[test]
    fn event_hubs_connection_strings_stay_out_of_debug_output() {
        let text = MINIMAL.replace(
            "sources:",
            "sources:\n  kafka:\n    topics: [devicedata]\n    group_id: '$Default'\n    security:\n      event_hubs:\n        connection_string: {value: 'Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=l;SharedAccessKey=S3CRETKEY'}",
        );
        let c = PipelineConfig::from_yaml_str(&text).unwrap();
        let debug = format!("{c:?}");
        assert!(debug.contains("EventHubs"), "{debug}");
        assert!(!debug.contains("S3CRETKEY"), "{debug}");
        // No bootstrap_servers needed: it comes from the connection string's endpoint.
        let problems = c.validate().unwrap_err(); // the mapping files do not exist here
        assert!(
            problems
                .iter()
                .all(|p| !p.path.starts_with("sources.kafka")),
            "{problems:?}"
        );
    }

    #[test]
    fn roles_without_scale_out_or_with_contradictions_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let check = |text: &str| -> Vec<String> {
            let path = dir.path().join("pipeline.yaml");
            std::fs::write(&path, text).unwrap();
            let c = PipelineConfig::load(&path).unwrap();
            c.validate()
                .unwrap_err()
                .into_iter()
                .map(|p| p.path)
                .collect()
        };
        let transform = check(&MINIMAL.replace("version: 1", "version: 1\nrole: transform"));
        assert!(transform.contains(&"scale_out".to_owned()), "{transform:?}");
        assert!(
            transform.contains(&"sources.http".to_owned()),
            "{transform:?}"
        );
        let normalize = check(&MINIMAL.replace("version: 1", "version: 1\nrole: normalize"));
        assert!(normalize.contains(&"scale_out".to_owned()), "{normalize:?}");
        // Only role normalize may leave the destination out.
        let without_destination = MINIMAL.replace("destination:\n  local: {}\n", "");
        let all = check(&without_destination);
        assert!(all.contains(&"destination".to_owned()), "{all:?}");
        let normalize =
            check(&without_destination.replace("version: 1", "version: 1\nrole: normalize"));
        assert!(
            !normalize.contains(&"destination".to_owned()),
            "{normalize:?}"
        );
        let all = check(&MINIMAL.replace(
            "destination:",
            "scale_out: {bootstrap_servers: 'b:1', normalized_topic: t, group_id: ''}\nsources:\n  kafka: {topics: [t], group_id: g}\ndestination:",
        ).replace("sources:\n  http:\n    auth:\n      allow_unauthenticated: true\n", ""));
        for expected in [
            "scale_out",
            "scale_out.group_id",
            "sources.kafka.bootstrap_servers",
            "sources.kafka.topics[0]",
        ] {
            assert!(all.contains(&expected.to_owned()), "{expected} in {all:?}");
        }
    }

    #[test]
    fn validation_lists_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let text = "
version: 1
mappings: {device: missing.json, fhir: missing-too.json}
sources:
  http:
    listen: 0.0.0.0:8180
    auth: {allow_unauthenticated: true}
admin:
  listen: 0.0.0.0:8180
destination:
  local: {identity: guess, workers: 0}
";
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(&path, text).unwrap();
        let c = PipelineConfig::load(&path).unwrap();
        let problems = c.validate().unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in [
            "mappings.device",
            "mappings.fhir",
            "sources.http.auth.allow_unauthenticated",
            "admin.auth",
            "admin.listen",
            "destination.local.identity",
            "destination.local.workers",
        ] {
            assert!(paths.contains(&expected), "{expected} missing in {paths:?}");
        }
    }

    #[test]
    fn local_store_workers_default_to_two_cores_at_most() {
        let local = |workers: Option<usize>| LocalDestination {
            path: None,
            identity: None,
            workers,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(local(None).workers(), cores.min(2));
        assert_eq!(local(Some(5)).workers(), 5);
    }
}
