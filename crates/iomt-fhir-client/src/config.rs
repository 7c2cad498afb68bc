//! Configuration of the FHIR side of the persist stage: the server, authentication, timeouts,
//! retries, identity resolution, caches and bundles.
//!
//! # What must hold
//! * Every struct denies unknown fields, so a misspelt key is an error with its path rather
//!   than a silently ignored setting.
//! * Durations are strings with a unit (`500ms`, `30s`, `2h`; humantime syntax), counts are
//!   `NonZero*` where zero would make no sense, and secrets are [`SecretSource`]s: the file
//!   names where a secret is, not the secret.
//! * [`FhirClientConfig::validate`] is pure (no network, no file or environment access) and
//!   reports *every* problem with its path, e.g. `auth.token_url: must be an absolute http(s)
//!   url`. Building the client ([`crate::Persister::new`], [`crate::FhirClient::new`]) validates
//!   again, then resolves secrets.
//!
//! # Example (YAML; JSON and TOML have the same shape)
//! ```yaml
//! base_url: https://example.fhir.azurehealthcareapis.com
//! auth:
//!   type: client_credentials
//!   token_url: https://login.microsoftonline.com/<tenant>/oauth2/v2.0/token
//!   client_id: 7f1c…
//!   client_secret: { env: IOMT_FHIR_CLIENT_SECRET }
//!   scope: https://example.fhir.azurehealthcareapis.com/.default
//! http:
//!   connect_timeout: 10s
//!   request_timeout: 30s
//!   max_concurrency: 16
//!   tls:                        # hospital-internal PKI and mutual TLS (all optional)
//!     ca_files: [/etc/iomt/hospital-root-ca.pem]
//!     client_certificate: /etc/iomt/iomt-client.pem
//!     client_key: { file: /etc/iomt/iomt-client-key.pem }
//! retry: { max_attempts: 5, initial_backoff: 200ms, max_backoff: 10s, max_retry_after: 60s }
//! identity:
//!   mode: lookup                # create | lookup_with_encounter
//!   default_device_identifier_system: urn:oid:1.2.3
//!   cache: { capacity: 5000, time_to_live: 2h }
//! observations:
//!   id_precision: seconds
//!   cache: { capacity: 5000, time_to_live: 1h }
//!   conflict_retries: 2
//!   prefetch_batch: 50
//!   lookup_token: value         # or system_and_value, as the original
//! bundles: { enabled: false, max_entries: 50 }
//! ```

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use iomt_transform::IdPrecision;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::secret::SecretSource;

/// Everything the FHIR client and the persist stage need.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FhirClientConfig {
    /// The FHIR service base URL (`https://host/fhir`, `https://host/R4`); requests go to
    /// `{base_url}/{Type}/{id}`, `{base_url}/metadata`.
    pub base_url: String,
    /// How requests are authenticated (default: none).
    #[serde(default)]
    pub auth: AuthConfig,
    /// Connections, timeouts and concurrency.
    #[serde(default)]
    pub http: HttpConfig,
    /// Retries of throttled and failed requests.
    #[serde(default)]
    pub retry: RetryConfig,
    /// How groups are linked to a Device, Patient and Encounter.
    #[serde(default)]
    pub identity: IdentityConfig,
    /// How Observations are found, created and merged.
    #[serde(default)]
    pub observations: ObservationConfig,
    /// Writing creates and updates as FHIR `batch` Bundles.
    #[serde(default)]
    pub bundles: BundleConfig,
}

impl FhirClientConfig {
    /// A configuration for `base_url` with every other setting at its default.
    pub fn new(base_url: impl Into<String>) -> FhirClientConfig {
        FhirClientConfig {
            base_url: base_url.into(),
            auth: AuthConfig::default(),
            http: HttpConfig::default(),
            retry: RetryConfig::default(),
            identity: IdentityConfig::default(),
            observations: ObservationConfig::default(),
            bundles: BundleConfig::default(),
        }
    }

    /// Checks the configuration without touching the network, files or environment.
    ///
    /// # Errors
    /// Every problem found, each with its path.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |path: &str, message: &str| {
            errors.push(ConfigError {
                path: path.to_owned(),
                message: message.to_owned(),
            })
        };
        match Url::parse(&self.base_url) {
            Ok(url) if !matches!(url.scheme(), "http" | "https") || url.host().is_none() => {
                err("base_url", "must be an absolute http(s) url")
            }
            Ok(url) if url.query().is_some() || url.fragment().is_some() => err(
                "base_url",
                "must not have a query or fragment: give the fhir base only",
            ),
            Ok(_) => {}
            Err(_) => err(
                "base_url",
                "must be an absolute http(s) url, e.g. https://host/fhir",
            ),
        }
        match &self.auth {
            AuthConfig::None | AuthConfig::Bearer { .. } => {}
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                scope,
                resource,
                ..
            } => {
                check_url(&mut err, "auth.token_url", token_url);
                if client_id.trim().is_empty() {
                    err("auth.client_id", "must not be empty");
                }
                if scope.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    err("auth.scope", "must not be empty when given");
                }
                if resource.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    err("auth.resource", "must not be empty when given");
                }
            }
            AuthConfig::SmartBackend {
                token_url,
                client_id,
                key_id,
                scope,
                ..
            } => {
                check_url(&mut err, "auth.token_url", token_url);
                if client_id.trim().is_empty() {
                    err("auth.client_id", "must not be empty");
                }
                if key_id.trim().is_empty() {
                    err(
                        "auth.key_id",
                        "must not be empty: the kid of the key registered with the server",
                    );
                }
                if scope.trim().is_empty() {
                    err(
                        "auth.scope",
                        "must not be empty, e.g. system/Observation.write system/Device.read",
                    );
                }
            }
        }
        if self.http.request_timeout.is_zero() {
            err("http.request_timeout", "must be greater than zero");
        }
        if self.http.connect_timeout.is_zero() {
            err("http.connect_timeout", "must be greater than zero");
        }
        self.http.tls.validate(&mut err);
        if self.retry.initial_backoff.is_zero() {
            err("retry.initial_backoff", "must be greater than zero");
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            err(
                "retry.max_backoff",
                "must not be less than retry.initial_backoff",
            );
        }
        if self.observations.prefetch_batch.get() > 100 {
            err(
                "observations.prefetch_batch",
                "must be at most 100 (identifiers per search request)",
            );
        }
        if self.bundles.max_entries.get() > 1000 {
            err("bundles.max_entries", "must be at most 1000");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    /// The base URL, parsed, always ending in `/` so that relative paths append to it.
    pub(crate) fn base(&self) -> Option<Url> {
        let mut url = Url::parse(&self.base_url).ok()?;
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Some(url)
    }
}

fn check_url(err: &mut impl FnMut(&str, &str), path: &str, text: &str) {
    match Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
        _ => err(path, "must be an absolute http(s) url"),
    }
}

/// One configuration problem: where, and what to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting, e.g. `auth.token_url`.
    pub path: String,
    /// What is wrong, lowercase.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// How requests to the FHIR server are authenticated (`type:` selects the variant).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No `Authorization` header (a server on a private network, a local test server).
    #[default]
    None,
    /// A fixed bearer token, e.g. one a sidecar writes to a file. On a 401 a file token is read
    /// again once, so rotation needs no restart.
    Bearer {
        /// The token.
        token: SecretSource,
    },
    /// OAuth2 client credentials (Azure Health Data Services, Google, most IdPs): a token is
    /// requested from `token_url`, cached, and refreshed before it expires.
    ClientCredentials {
        /// The token endpoint.
        token_url: String,
        /// The client (application) id.
        client_id: String,
        /// The client secret.
        client_secret: SecretSource,
        /// The `scope` parameter (Entra ID v2: `https://<fhir-host>/.default`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
        /// The `resource` parameter (Entra ID v1 endpoints).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
        /// How the client authenticates to the token endpoint (default: form parameters).
        #[serde(default)]
        client_auth: ClientAuthMethod,
        /// Refresh this long before the token expires (default 60s; at most half the token's
        /// lifetime is used).
        #[serde(default = "default_refresh_before", with = "duration")]
        refresh_before_expiry: Duration,
    },
    /// SMART Backend Services (`private_key_jwt`): a signed JWT client assertion is exchanged
    /// for a token, as Epic, Cerner/Oracle Health and other EHR vendors' FHIR servers require.
    SmartBackend {
        /// The token endpoint (also the assertion's `aud`).
        token_url: String,
        /// The client id registered with the server (`iss` and `sub`).
        client_id: String,
        /// The private key, PEM (PKCS#8 `BEGIN PRIVATE KEY`; RSA keys may be PKCS#1).
        private_key: SecretSource,
        /// The signing algorithm: `RS384` (RSA key) or `ES384` (P-384 key).
        algorithm: JwtAlgorithm,
        /// The `kid` of the registered public key.
        key_id: String,
        /// The scopes asked for, e.g. `system/Observation.write system/Device.read`.
        scope: String,
        /// The `jku` header: where the server can fetch the JWK set (optional).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        jku: Option<String>,
        /// Refresh this long before the token expires (default 60s; at most half the token's
        /// lifetime is used).
        #[serde(default = "default_refresh_before", with = "duration")]
        refresh_before_expiry: Duration,
    },
}

impl AuthConfig {
    /// The auth type's name as written in the configuration.
    pub fn type_name(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::ClientCredentials { .. } => "client_credentials",
            AuthConfig::SmartBackend { .. } => "smart_backend",
        }
    }
}

fn default_refresh_before() -> Duration {
    Duration::from_secs(60)
}

/// How a client-credentials client proves its identity to the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    /// `client_id` and `client_secret` as form parameters (what MSAL sends; the default).
    #[default]
    ClientSecretPost,
    /// HTTP Basic authentication with the URL-encoded id and secret.
    ClientSecretBasic,
}

/// A JWS algorithm for SMART client assertions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// ECDSA on P-384 with SHA-384.
    ES384,
}

/// Connections, timeouts and concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Time allowed to open a connection (TCP and TLS).
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Time allowed for one request, from sending to the end of the response body.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Requests in flight at once, and devices worked on at once.
    pub max_concurrency: NonZeroUsize,
    /// Idle connections kept per host for reuse.
    pub pool_max_idle_per_host: usize,
    /// Idle connections are closed after this long.
    #[serde(with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Which certificates are trusted, and the client certificate for mutual TLS.
    #[serde(skip_serializing_if = "TlsConfig::is_default")]
    pub tls: TlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_concurrency: NonZeroUsize::new(16).unwrap_or(NonZeroUsize::MIN),
            pool_max_idle_per_host: 64,
            pool_idle_timeout: Duration::from_secs(90),
            tls: TlsConfig::default(),
        }
    }
}

/// TLS trust and client certificates, for servers behind a hospital-internal certificate
/// authority and for servers that require mutual TLS. Applies to every `https` connection the
/// client opens: the FHIR server and the token endpoint.
///
/// Files are read when the client is built ([`crate::FhirClient::new`]), never during
/// validation; an unreadable or malformed file is [`crate::FhirClientError::Tls`], naming the
/// setting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM files of CA certificates to trust (each may hold several `CERTIFICATE` blocks), in
    /// addition to the system's trusted CAs unless `system_roots` is false.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ca_files: Vec<PathBuf>,
    /// Whether the system's trusted CAs are trusted too (default true); false trusts only
    /// `ca_files`, e.g. to pin a hospital's private root.
    pub system_roots: bool,
    /// The client certificate for mutual TLS: a PEM file with the certificate, then any
    /// intermediate certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 RSA or SEC1 EC), where it is
    /// kept like any other secret (`{file: …}`, `{env: …}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_key: Option<SecretSource>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_files: Vec::new(),
            system_roots: true,
            client_certificate: None,
            client_key: None,
        }
    }
}

impl TlsConfig {
    fn is_default(&self) -> bool {
        *self == TlsConfig::default()
    }

    fn validate(&self, err: &mut impl FnMut(&str, &str)) {
        for (i, path) in self.ca_files.iter().enumerate() {
            if path.as_os_str().is_empty() {
                err(
                    &format!("http.tls.ca_files[{i}]"),
                    "must not be empty: give the path of a PEM file",
                );
            }
        }
        if !self.system_roots && self.ca_files.is_empty() {
            err(
                "http.tls.system_roots",
                "false needs http.tls.ca_files: with neither, no server certificate is trusted",
            );
        }
        match (&self.client_certificate, &self.client_key) {
            (Some(path), _) if path.as_os_str().is_empty() => err(
                "http.tls.client_certificate",
                "must not be empty: give the path of a PEM file",
            ),
            (Some(_), None) => err(
                "http.tls.client_key",
                "is needed with http.tls.client_certificate: give the certificate's private key",
            ),
            (None, Some(_)) => err(
                "http.tls.client_certificate",
                "is needed with http.tls.client_key: give the certificate (PEM) the key belongs to",
            ),
            _ => {}
        }
    }
}

/// Retries of requests that may succeed later: 429, 408, 5xx (but 501, 505), timeouts and
/// connection failures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per request, the first included (1 = never retry).
    pub max_attempts: NonZeroU32,
    /// The first backoff; each retry doubles it, with jitter.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// The longest backoff between two attempts.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a server asking for a longer pause gets none: the
    /// request fails as throttled (retryable later) instead of holding a worker.
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// How an observation group's Device, Patient and Encounter are found (SPEC §9).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// The resolution mode.
    pub mode: IdentityMode,
    /// The system of device identifiers (`Device?identifier={system}|{deviceId}`); none
    /// searches by value only. Blank means none, as in the original.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_device_identifier_system: Option<String>,
    /// The cache of resolved identities (per device identifier, and per encounter identifier).
    pub cache: CacheConfig,
}

impl IdentityConfig {
    /// The default device identifier system, `None` when unset or blank.
    pub fn device_system(&self) -> Option<&str> {
        self.default_device_identifier_system
            .as_deref()
            .filter(|s| !s.trim().is_empty())
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            mode: IdentityMode::Lookup,
            default_device_identifier_system: None,
            cache: CacheConfig {
                capacity: NonZeroU64::new(5000).unwrap_or(NonZeroU64::MIN),
                time_to_live: Duration::from_secs(2 * 3600),
            },
        }
    }
}

/// The identity resolution mode (SPEC §9).
///
/// Written in snake case (`lookup`, `create`, `lookup_with_encounter`); the original's names
/// (`Lookup`, `Create`, `LookupWithEncounter`, `R4DeviceAndPatientLookupIdentityService`, …)
/// are accepted case-insensitively, so settings copied from a MedTech deployment work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentityMode {
    /// The Device must exist (found by identifier); its `patient` gives the Patient; an
    /// encounter identifier in the group must name an existing Encounter.
    #[default]
    Lookup,
    /// As [`Lookup`](Self::Lookup), but a missing Device or Patient is created from the
    /// group's device and patient identifiers.
    Create,
    /// As [`Lookup`](Self::Lookup), and every group must carry an encounter identifier.
    LookupWithEncounter,
}

impl IdentityMode {
    /// Parses a mode name (ours or the original's), case-insensitively.
    pub fn from_name(name: &str) -> Option<IdentityMode> {
        let folded: String = name
            .trim()
            .chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect();
        match folded.as_str() {
            "lookup" | "r4deviceandpatientlookupidentityservice" => Some(IdentityMode::Lookup),
            "create" | "r4deviceandpatientcreateidentityservice" => Some(IdentityMode::Create),
            "lookupwithencounter" | "r4deviceandpatientwithencounterlookupidentityservice" => {
                Some(IdentityMode::LookupWithEncounter)
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for IdentityMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        IdentityMode::from_name(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown identity mode '{text}': expected lookup, create or lookup_with_encounter"
            ))
        })
    }
}

/// An in-memory cache's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The most entries kept.
    pub capacity: NonZeroU64,
    /// How long an entry is trusted after it was stored.
    #[serde(with = "duration")]
    pub time_to_live: Duration,
}

/// How Observations are found, created and merged (SPEC §8).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ObservationConfig {
    /// The precision of time segments in Observation identifiers (`seconds`, as the original,
    /// or `milliseconds`; changing it changes every identifier).
    #[serde(with = "precision")]
    pub id_precision: IdPrecision,
    /// The cache of Observations last read or written.
    pub cache: CacheConfig,
    /// Re-reads and retries after a 409 or 412 on write, per group.
    pub conflict_retries: u32,
    /// Identifiers looked up per search request when finding the existing Observations of a
    /// batch of groups (`POST Observation/_search` with `identifier=a,b,c`); 1 searches one
    /// by one with `GET`, as the original.
    pub prefetch_batch: NonZeroUsize,
    /// The token form those searches use; the system is matched exactly either way.
    pub lookup_token: LookupToken,
}

/// The form of the identifier token with which existing Observations are searched for
/// (`lookup_token`: `value` or `system_and_value`).
///
/// Both are standard FHIR token searches and find the same Observation: every result is
/// checked again for an identifier with exactly the connector's system *and* value (SPEC §8),
/// so an Observation with the same value in another system is never taken for the
/// connector's, whichever form the server was asked with.
///
/// `value` is the default because the connector's identifier values are unique on their own
/// (`{patient id}.{device id}.{type}.{time}`), so dropping the 63-character system loses no
/// selectivity, while it cuts a 50-identifier search from ~7 KB to ~2.5 KB and spares the
/// server half its token parsing. HAPI (a hash of the value alone next to the
/// system-and-value hash) and Microsoft's FHIR server behind Azure Health Data Services (an
/// index on the token code, the system included) answer a value-only search from an index
/// too. `system_and_value` sends exactly the original's `system|value` tokens, for a server
/// whose index or access policy needs the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LookupToken {
    /// `identifier=value` (the system is checked on the results).
    #[default]
    Value,
    /// `identifier=system|value`, as the original.
    SystemAndValue,
}

impl Default for ObservationConfig {
    fn default() -> Self {
        ObservationConfig {
            id_precision: IdPrecision::Seconds,
            cache: CacheConfig {
                capacity: NonZeroU64::new(5000).unwrap_or(NonZeroU64::MIN),
                time_to_live: Duration::from_secs(3600),
            },
            conflict_retries: 2,
            prefetch_batch: NonZeroUsize::new(50).unwrap_or(NonZeroUsize::MIN),
            lookup_token: LookupToken::Value,
        }
    }
}

/// Writing creates and updates as FHIR `batch` Bundles (an iomt extension; off by default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleConfig {
    /// Whether writes are sent as `batch` Bundles.
    pub enabled: bool,
    /// The most entries in one Bundle.
    pub max_entries: NonZeroUsize,
}

impl Default for BundleConfig {
    fn default() -> Self {
        BundleConfig {
            enabled: false,
            max_entries: NonZeroUsize::new(50).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// Durations as humantime strings (`250ms`, `30s`, `2h`).
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration '{text}' ({e}): write a number with a unit, e.g. 500ms, 30s, 2h"
            ))
        })
    }
}

mod precision {
    use iomt_transform::IdPrecision;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &IdPrecision, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match p {
            IdPrecision::Milliseconds => "milliseconds",
            _ => "seconds",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<IdPrecision, D::Error> {
        match String::deserialize(d)?.as_str() {
            "seconds" => Ok(IdPrecision::Seconds),
            "milliseconds" => Ok(IdPrecision::Milliseconds),
            other => Err(serde::de::Error::custom(format!(
                "unknown id precision '{other}': expected seconds or milliseconds"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
        "base_url": "https://fhir.example.org/R4",
        "auth": {
            "type": "client_credentials",
            "token_url": "https://login.example.org/token",
            "client_id": "iomt",
            "client_secret": {"env": "IOMT_SECRET"},
            "scope": "https://fhir.example.org/.default",
            "client_auth": "client_secret_basic",
            "refresh_before_expiry": "2m"
        },
        "http": {"connect_timeout": "5s", "request_timeout": "20s", "max_concurrency": 8,
                 "pool_max_idle_per_host": 8, "pool_idle_timeout": "30s"},
        "retry": {"max_attempts": 3, "initial_backoff": "100ms", "max_backoff": "2s",
                  "max_retry_after": "30s"},
        "identity": {"mode": "R4DeviceAndPatientCreateIdentityService",
                     "default_device_identifier_system": "urn:sys",
                     "cache": {"capacity": 10, "time_to_live": "1h"}},
        "observations": {"id_precision": "milliseconds",
                         "cache": {"capacity": 10, "time_to_live": "10m"},
                         "conflict_retries": 1, "prefetch_batch": 5,
                         "lookup_token": "system_and_value"},
        "bundles": {"enabled": true, "max_entries": 20}
    }"#;

    #[test]
    fn reads_every_setting() {
        let c: FhirClientConfig = serde_json::from_str(FULL).unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.identity.mode, IdentityMode::Create);
        assert_eq!(c.identity.device_system(), Some("urn:sys"));
        assert_eq!(c.observations.id_precision, IdPrecision::Milliseconds);
        assert_eq!(c.observations.lookup_token, LookupToken::SystemAndValue);
        assert_eq!(c.http.request_timeout, Duration::from_secs(20));
        assert_eq!(c.retry.initial_backoff, Duration::from_millis(100));
        let AuthConfig::ClientCredentials {
            refresh_before_expiry,
            client_auth,
            ..
        } = &c.auth
        else {
            panic!("{:?}", c.auth)
        };
        assert_eq!(*refresh_before_expiry, Duration::from_secs(120));
        assert_eq!(*client_auth, ClientAuthMethod::ClientSecretBasic);
        // Round trip, and the same shape in TOML.
        let back: FhirClientConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let toml_text = toml::to_string(&c).unwrap();
        let from_toml: FhirClientConfig = toml::from_str(&toml_text).unwrap();
        assert_eq!(from_toml, c);
    }

    #[test]
    fn defaults_follow_the_original() {
        let c: FhirClientConfig = serde_json::from_str(r#"{"base_url":"http://x/fhir"}"#).unwrap();
        assert_eq!(c, FhirClientConfig::new("http://x/fhir"));
        assert_eq!(c.auth, AuthConfig::None);
        assert_eq!(c.identity.mode, IdentityMode::Lookup);
        assert_eq!(c.identity.cache.capacity.get(), 5000);
        assert_eq!(c.observations.cache.time_to_live, Duration::from_secs(3600));
        assert_eq!(c.observations.conflict_retries, 2);
        // Not the original's `system|value`: see `LookupToken`.
        assert_eq!(c.observations.lookup_token, LookupToken::Value);
        assert!(!c.bundles.enabled);
        assert_eq!(c.base().unwrap().as_str(), "http://x/fhir/");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = serde_json::from_str::<FhirClientConfig>(
            r#"{"base_url":"http://x","retry":{"max_atempts":3}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `max_atempts`"), "{e}");
        let e = serde_json::from_str::<FhirClientConfig>(
            r#"{"base_url":"http://x","auth":{"type":"bearer","token":{"env":"T"},"tokn":1}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `tokn`"), "{e}");
        let e = serde_json::from_str::<FhirClientConfig>(
            r#"{"base_url":"http://x","auth":{"type":"kerberos"}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `kerberos`"), "{e}");
    }

    #[test]
    fn durations_need_units() {
        let e = serde_json::from_str::<FhirClientConfig>(
            r#"{"base_url":"http://x","http":{"request_timeout":"30"}}"#,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("invalid duration '30' (time unit needed, for example 30sec or 30ms): write a number with a unit"),
            "{e}"
        );
    }

    #[test]
    fn identity_mode_names() {
        for (name, mode) in [
            ("lookup", IdentityMode::Lookup),
            ("LOOKUP", IdentityMode::Lookup),
            ("LookupWithEncounter", IdentityMode::LookupWithEncounter),
            ("lookup_with_encounter", IdentityMode::LookupWithEncounter),
            (
                "R4DeviceAndPatientWithEncounterLookupIdentityService",
                IdentityMode::LookupWithEncounter,
            ),
            ("create", IdentityMode::Create),
        ] {
            assert_eq!(IdentityMode::from_name(name), Some(mode), "{name}");
        }
        let e = serde_json::from_str::<IdentityConfig>(r#"{"mode":"guess"}"#).unwrap_err();
        assert!(e.to_string().starts_with("unknown identity mode 'guess'"));
    }

    #[test]
    fn validation_reports_every_problem_with_its_path() {
        let mut c = FhirClientConfig::new("ftp://x");
        c.auth = AuthConfig::SmartBackend {
            token_url: "not a url".into(),
            client_id: " ".into(),
            private_key: SecretSource::Env("K".into()),
            algorithm: JwtAlgorithm::RS384,
            key_id: String::new(),
            scope: "system/*.write".into(),
            jku: None,
            refresh_before_expiry: Duration::from_secs(60),
        };
        c.retry.max_backoff = Duration::from_millis(1);
        c.bundles.max_entries = NonZeroUsize::new(5000).unwrap();
        let errors: Vec<String> = c
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| e.to_string())
            .collect();
        assert_eq!(
            errors,
            [
                "base_url: must be an absolute http(s) url",
                "auth.token_url: must be an absolute http(s) url",
                "auth.client_id: must not be empty",
                "auth.key_id: must not be empty: the kid of the key registered with the server",
                "retry.max_backoff: must not be less than retry.initial_backoff",
                "bundles.max_entries: must be at most 1000",
            ]
        );
        assert!(
            FhirClientConfig::new("https://x/fhir?a=b")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn tls_settings_read_and_validated() {
        let c: FhirClientConfig = serde_json::from_str(
            r#"{"base_url": "https://fhir.hospital.internal/R4", "http": {"tls": {
                "ca_files": ["/etc/iomt/root-ca.pem", "/etc/iomt/issuing-ca.pem"],
                "client_certificate": "/etc/iomt/client.pem",
                "client_key": {"file": "/etc/iomt/client-key.pem"}}}}"#,
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        assert!(
            c.http.tls.system_roots,
            "system roots stay trusted by default"
        );
        assert_eq!(c.http.tls.ca_files.len(), 2);
        let back: FhirClientConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        // The default is left out when written back.
        let plain = serde_json::to_value(FhirClientConfig::new("https://x")).unwrap();
        assert!(plain["http"].get("tls").is_none(), "{plain}");

        let mut bad = FhirClientConfig::new("https://x");
        bad.http.tls.system_roots = false;
        bad.http.tls.client_key = Some(SecretSource::Env("KEY".into()));
        bad.http.tls.ca_files = vec![PathBuf::new()];
        let errors: Vec<String> = bad
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "http.tls.ca_files[0]: must not be empty: give the path of a PEM file",
                "http.tls.client_certificate: is needed with http.tls.client_key: give the certificate (PEM) the key belongs to",
            ]
        );
        bad.http.tls.ca_files.clear();
        bad.http.tls.client_key = None;
        bad.http.tls.client_certificate = Some("/etc/iomt/client.pem".into());
        let errors: Vec<String> = bad
            .validate()
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            errors,
            [
                "http.tls.system_roots: false needs http.tls.ca_files: with neither, no server certificate is trusted",
                "http.tls.client_key: is needed with http.tls.client_certificate: give the certificate's private key",
            ]
        );
        let e = serde_json::from_str::<FhirClientConfig>(
            r#"{"base_url":"https://x","http":{"tls":{"ca_file":"/x"}}}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `ca_file`"), "{e}");
    }

    #[test]
    fn blank_default_system_means_none() {
        let c: IdentityConfig =
            serde_json::from_str(r#"{"default_device_identifier_system":"  "}"#).unwrap();
        assert_eq!(c.device_system(), None);
    }
}
