//! [`FhirClientError`]: every way persisting a group can fail, classified.
//!
//! # What must hold
//! * Every failure reaches the caller as a value: nothing is logged-and-dropped. Each error
//!   answers [`class`](FhirClientError::class) (the original's catalogue name, which users
//!   search dashboards for and the dead-letter store records), [`retry_hint`](FhirClientError::retry_hint)
//!   (whether the same group may succeed later unchanged) and [`domain`](FhirClientError::domain)
//!   (whose problem it is).
//! * Messages are lowercase, say what to do, and carry no patient data and no secrets: no
//!   identifier values, no resource ids, no query strings, no tokens. The dead-letter record
//!   holds the group, which is where those belong. A server's `OperationOutcome` text is
//!   included as the server wrote it, because it is what explains a rejection.

use std::fmt;
use std::time::Duration;

use iomt_model::ErrorClass;
use iomt_transform::TransformError;
use thiserror::Error;

use crate::config::ConfigError;
use crate::secret::SecretError;

/// Whether a failed group may succeed if it is tried again later, unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryHint {
    /// Trying again cannot help until the data, the mapping, the configuration or the server's
    /// content changes: dead-letter the group.
    NoRetry,
    /// The server or the network was in trouble (throttling, 5xx, timeouts, connection
    /// failures, write conflicts) and in-request retries are used up: try the group again after
    /// a pause, or dead-letter it for a later replay.
    WithBackoff,
    /// The server asked for a pause longer than `retry.max_retry_after`: try again after it.
    After(Duration),
}

/// Whose problem an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The device data, the mappings or the FHIR server's content (a missing Device, a group
    /// the server rejects): fix the data, not the connector.
    User,
    /// The FHIR server, the identity provider, the network or the credentials.
    External,
    /// A bug in iomt.
    Internal,
}

/// The kind of interaction a request was, for messages (never with ids or queries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interaction {
    /// `GET [base]/metadata`.
    Capabilities,
    /// `GET [base]/{Type}/{id}`.
    Read,
    /// `GET [base]/{Type}?…`, including following `next` links.
    Search,
    /// `PUT [base]/{Type}/{id}`.
    Update,
    /// `POST [base]` with a `batch` Bundle.
    Batch,
    /// `POST {token_url}`.
    Token,
}

/// What a request was doing: an interaction on a resource type, e.g. `search Device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Operation {
    /// The interaction.
    pub interaction: Interaction,
    /// The resource type (`Observation`, `Device`, …; `Bundle` for batches).
    pub resource_type: &'static str,
}

impl Operation {
    pub(crate) const fn new(interaction: Interaction, resource_type: &'static str) -> Operation {
        Operation {
            interaction,
            resource_type,
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.interaction {
            Interaction::Capabilities => f.write_str("read capability statement (metadata)"),
            Interaction::Read => write!(f, "read {}", self.resource_type),
            Interaction::Search => write!(f, "search {}", self.resource_type),
            Interaction::Update => write!(f, "update {}", self.resource_type),
            Interaction::Batch => f.write_str("batch bundle"),
            Interaction::Token => f.write_str("token request"),
        }
    }
}

/// Why a connection could not be used, in plain words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFailure {
    /// The host name does not resolve.
    Dns,
    /// Nothing listens on the port.
    Refused,
    /// The TLS handshake failed (certificate not trusted, wrong host name, protocol mismatch).
    Tls,
    /// The server closed or reset the connection.
    Closed,
    /// Any other transport failure.
    Other,
}

impl fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectFailure::Dns => "cannot resolve the host name",
            ConnectFailure::Refused => "connection refused",
            ConnectFailure::Tls => "tls handshake failed",
            ConnectFailure::Closed => "the server closed the connection",
            ConnectFailure::Other => "connection failed",
        })
    }
}

struct Outcome<'a>(&'a Option<String>);

impl fmt::Display for Outcome<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(text) => write!(f, ": {text}"),
            None => Ok(()),
        }
    }
}

fn render_config(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_retry_after(after: &Option<Duration>) -> String {
    match after {
        Some(d) => format!(
            " (the server asked to wait {})",
            humantime::format_duration(*d)
        ),
        None => String::new(),
    }
}

fn render_token_error(error: &Option<String>, description: &Option<String>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(" ({e}: {d})"),
        (Some(e), None) => format!(" ({e})"),
        (None, Some(d)) => format!(" ({d})"),
        (None, None) => String::new(),
    }
}

/// Why a FHIR request, an identity resolution or a persist failed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum FhirClientError {
    /// The configuration is invalid.
    #[error("invalid fhir client configuration; fix each setting:\n{}", render_config(.errors))]
    Config {
        /// Every problem, with its path.
        errors: Vec<ConfigError>,
    },
    /// A secret could not be read.
    #[error("cannot read {setting}: {source}")]
    Secret {
        /// The setting (`auth.client_secret`).
        setting: &'static str,
        /// Why.
        source: SecretError,
    },
    /// The SMART private key cannot sign with the configured algorithm.
    #[error(
        "auth.private_key cannot sign {algorithm}: {reason}; give a PEM private key (PKCS#8, or PKCS#1 for RSA) of the algorithm's kind (RSA for RS384, P-384 for ES384)"
    )]
    PrivateKey {
        /// `RS384` or `ES384`.
        algorithm: &'static str,
        /// The parser's or signer's complaint.
        reason: String,
    },
    /// A TLS file (a CA certificate, the client certificate or its key) cannot be used.
    #[error("cannot use {setting}: {reason}")]
    Tls {
        /// The setting and its file, e.g. `http.tls.ca_files[0] (/etc/iomt/ca.pem)`.
        setting: String,
        /// What is wrong and what to give instead.
        reason: String,
    },
    /// The HTTP client could not be built (TLS roots, …).
    #[error("cannot build the http client: {reason}")]
    HttpClient {
        /// Why.
        reason: String,
    },
    /// The server could not be reached.
    #[error(
        "{operation}: {failure} after {attempts} attempt(s) ({detail}): check base_url / token_url, the network path and, for tls, the server certificate"
    )]
    Connection {
        /// What was being done.
        operation: Operation,
        /// The failure, in plain words.
        failure: ConnectFailure,
        /// Attempts made.
        attempts: u32,
        /// The transport's own description (no URL).
        detail: String,
    },
    /// The server did not answer in time.
    #[error(
        "{operation}: no response within {} after {attempts} attempt(s): the server is overloaded or unreachable; raise http.request_timeout if it is merely slow", humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// What was being done.
        operation: Operation,
        /// Attempts made.
        attempts: u32,
        /// The per-request timeout.
        timeout: Duration,
    },
    /// The server kept answering 429.
    #[error(
        "{operation}: the server is throttling requests (429) after {attempts} attempt(s){}: lower http.max_concurrency or raise the server's request limits", render_retry_after(.retry_after)
    )]
    Throttled {
        /// What was being done.
        operation: Operation,
        /// Attempts made.
        attempts: u32,
        /// The last `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// The server kept failing with 5xx (or 408).
    #[error("{operation}: the server failed with http {status} after {attempts} attempt(s){}", Outcome(.outcome))]
    ServerError {
        /// What was being done.
        operation: Operation,
        /// The last status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// The server's `OperationOutcome` text.
        outcome: Option<String>,
    },
    /// The server rejected the request (400, 404, 405, 422, …); retrying cannot help.
    #[error("{operation}: the server rejected the request with http {status}{}", Outcome(.outcome))]
    Rejected {
        /// What was being done.
        operation: Operation,
        /// The status.
        status: u16,
        /// The server's `OperationOutcome` text (or the start of a non-FHIR body).
        outcome: Option<String>,
    },
    /// The FHIR server rejected the credentials (401), also after a fresh token.
    #[error(
        "{operation}: the fhir server rejected the access token (401){}: check that the token is issued for this server (scope / resource / audience) and not expired", Outcome(.outcome)
    )]
    Unauthorized {
        /// What was being done.
        operation: Operation,
        /// The server's `OperationOutcome` text.
        outcome: Option<String>,
    },
    /// The FHIR server refused the operation (403).
    #[error(
        "{operation}: access denied (403){}: grant the client the role or scopes for this operation", Outcome(.outcome)
    )]
    Forbidden {
        /// What was being done.
        operation: Operation,
        /// The server's `OperationOutcome` text.
        outcome: Option<String>,
    },
    /// The resource changed on the server between read and write (409 or 412), also after
    /// re-reading it.
    #[error(
        "{operation}: write conflict (http {status}) after {attempts} attempt(s): another writer keeps changing the resource; retry the group later"
    )]
    Conflict {
        /// What was being done.
        operation: Operation,
        /// The last status (409 or 412).
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// The token endpoint refused to issue a token.
    #[error(
        "the token endpoint refused a token with http {status}{}: check auth.client_id, the secret or key, and auth.scope / auth.resource", render_token_error(.error, .description)
    )]
    TokenRejected {
        /// The status.
        status: u16,
        /// The OAuth2 `error` code (`invalid_client`, `invalid_scope`, …).
        error: Option<String>,
        /// The OAuth2 `error_description`.
        description: Option<String>,
    },
    /// A response could not be understood.
    #[error("{operation}: unexpected response: {reason}")]
    InvalidResponse {
        /// What was being done.
        operation: Operation,
        /// What was wrong with it.
        reason: String,
    },
    /// A Device, Patient or Encounter the group needs does not exist.
    #[error("{resource_type} not found: {hint}")]
    NotFound {
        /// `Device`, `Patient` or `Encounter`.
        resource_type: &'static str,
        /// What was searched and what to do.
        hint: &'static str,
    },
    /// More than one resource matched an identifier.
    #[error(
        "multiple resources {count} of type {resource_type} found, expected one: give the identifier to one {resource_type} only"
    )]
    MultipleFound {
        /// The resource type.
        resource_type: &'static str,
        /// How many matched.
        count: usize,
    },
    /// The Device is linked to another Patient than the group names.
    #[error(
        "the device is linked to a different patient than the message names: correct the device's patient reference or the message's patient id"
    )]
    PatientDeviceMismatch,
    /// The group lacks an identifier the identity mode needs.
    #[error(
        "the measurement has no {resource_type} id, but identity mode {mode} needs one: extract it in the device mapping ({field})"
    )]
    IdentityNotDefined {
        /// `Patient` or `Encounter`.
        resource_type: &'static str,
        /// The identity mode.
        mode: &'static str,
        /// The device mapping field that provides it.
        field: &'static str,
    },
    /// The group could not be turned into (or merged into) an Observation.
    #[error(transparent)]
    Transform(#[from] TransformError),
}

impl FhirClientError {
    /// The original's error class, recorded with the dead-lettered group.
    pub fn class(&self) -> ErrorClass {
        match self {
            FhirClientError::NotFound { .. } => ErrorClass::FhirResourceNotFoundException,
            FhirClientError::MultipleFound { .. } => ErrorClass::MultipleResourceFoundException,
            FhirClientError::PatientDeviceMismatch => ErrorClass::PatientDeviceMismatchException,
            FhirClientError::IdentityNotDefined { .. } => {
                ErrorClass::ResourceIdentityNotDefinedException
            }
            FhirClientError::Transform(e) => e.class(),
            _ => ErrorClass::FhirClientException,
        }
    }

    /// Whether the same group may succeed later.
    pub fn retry_hint(&self) -> RetryHint {
        match self {
            FhirClientError::Throttled {
                retry_after: Some(after),
                ..
            } if !after.is_zero() => RetryHint::After(*after),
            FhirClientError::Throttled { .. }
            | FhirClientError::Connection { .. }
            | FhirClientError::Timeout { .. }
            | FhirClientError::ServerError { .. }
            | FhirClientError::Conflict { .. } => RetryHint::WithBackoff,
            FhirClientError::TokenRejected { status, .. } if *status >= 500 || *status == 429 => {
                RetryHint::WithBackoff
            }
            _ => RetryHint::NoRetry,
        }
    }

    /// Whose problem it is.
    pub fn domain(&self) -> ErrorDomain {
        match self {
            FhirClientError::NotFound { .. }
            | FhirClientError::MultipleFound { .. }
            | FhirClientError::PatientDeviceMismatch
            | FhirClientError::IdentityNotDefined { .. }
            | FhirClientError::Rejected { .. }
            | FhirClientError::Config { .. }
            | FhirClientError::Secret { .. }
            | FhirClientError::PrivateKey { .. }
            | FhirClientError::Tls { .. }
            | FhirClientError::Transform(_) => ErrorDomain::User,
            FhirClientError::HttpClient { .. } => ErrorDomain::Internal,
            _ => ErrorDomain::External,
        }
    }

    /// Whether the error concerns every group rather than this one: credentials, permissions
    /// or configuration. A service seeing one should alert (and may pause) rather than
    /// dead-letter group after group.
    pub fn is_systemic(&self) -> bool {
        matches!(
            self,
            FhirClientError::Config { .. }
                | FhirClientError::Secret { .. }
                | FhirClientError::PrivateKey { .. }
                | FhirClientError::Tls { .. }
                | FhirClientError::HttpClient { .. }
                | FhirClientError::Unauthorized { .. }
                | FhirClientError::Forbidden { .. }
                | FhirClientError::TokenRejected { .. }
        ) || matches!(self, FhirClientError::Transform(e) if e.class().severity() == iomt_model::Severity::Blocking)
    }

    /// The HTTP status behind the error, when a server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            FhirClientError::ServerError { status, .. }
            | FhirClientError::Rejected { status, .. }
            | FhirClientError::Conflict { status, .. }
            | FhirClientError::TokenRejected { status, .. } => Some(*status),
            FhirClientError::Unauthorized { .. } => Some(401),
            FhirClientError::Forbidden { .. } => Some(403),
            FhirClientError::Throttled { .. } => Some(429),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_hints_and_messages() {
        let op = Operation::new(Interaction::Update, "Observation");
        let e = FhirClientError::Rejected {
            operation: op,
            status: 422,
            outcome: Some("error invalid: Observation.code is required".into()),
        };
        assert_eq!(e.class(), ErrorClass::FhirClientException);
        assert_eq!(e.retry_hint(), RetryHint::NoRetry);
        assert_eq!(
            e.to_string(),
            "update Observation: the server rejected the request with http 422: error invalid: Observation.code is required"
        );
        let e = FhirClientError::Throttled {
            operation: op,
            attempts: 5,
            retry_after: Some(Duration::from_secs(120)),
        };
        assert_eq!(e.retry_hint(), RetryHint::After(Duration::from_secs(120)));
        assert!(e.to_string().contains("(the server asked to wait 2m)"));
        let e = FhirClientError::MultipleFound {
            resource_type: "Device",
            count: 2,
        };
        assert_eq!(e.class(), ErrorClass::MultipleResourceFoundException);
        assert_eq!(
            e.to_string(),
            "multiple resources 2 of type Device found, expected one: give the identifier to one Device only"
        );
        assert_eq!(
            FhirClientError::PatientDeviceMismatch.class(),
            ErrorClass::PatientDeviceMismatchException
        );
        let e = FhirClientError::Transform(TransformError::TemplateNotFound {
            type_name: "hr".into(),
        });
        assert_eq!(e.class(), ErrorClass::TemplateNotFoundException);
        assert!(e.is_systemic());
        assert!(
            FhirClientError::TokenRejected {
                status: 401,
                error: Some("invalid_client".into()),
                description: None
            }
            .is_systemic()
        );
    }
}
