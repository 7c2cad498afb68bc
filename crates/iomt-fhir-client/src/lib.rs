//! The persist stage's FHIR side: a FHIR R4 REST client with authentication and retries,
//! identity resolution (Device, Patient, Encounter), and create-or-merge of Observations — the
//! I/O edge around the pure [`iomt_transform`] core.
//!
//! # Using it (the service, per batch of observation groups)
//! ```no_run
//! # async fn run(groups: Vec<iomt_transform::ObservationGroup>, mapping: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use iomt_fhir_client::{FhirClientConfig, Persister, PersistOutcome};
//!
//! let config: FhirClientConfig = serde_json::from_str(r#"{"base_url": "http://127.0.0.1:8080/fhir"}"#)?;
//! let templates = Arc::new(iomt_transform::FhirTemplates::from_json_str(mapping)?);
//! let persister = Persister::new(&config, templates)?;   // no network yet
//! persister.healthcheck().await?;                        // GET metadata, R4?
//! for outcome in persister.persist(groups).await {       // one per group, in order
//!     match outcome {
//!         PersistOutcome::Created { .. } | PersistOutcome::Updated { .. }
//!         | PersistOutcome::Unchanged { .. } => {}
//!         PersistOutcome::Failed(f) => {
//!             // dead-letter f.group with f.error.class() and f.error.to_string();
//!             // f.error.retry_hint() says whether replaying it later may succeed
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
//! `iomt check` calls [`run_checks`] and prints the [`CheckReport`].
//!
//! # Layout (in the order a group flows through)
//! * [`config`]: the settings ([`FhirClientConfig`]), strict serde, durations with units,
//!   secrets by reference ([`secret`]).
//! * [`auth`]: the `Authorization` header: none, static bearer, OAuth2 client
//!   credentials, SMART backend services (`private_key_jwt`, RS384/ES384).
//! * [`http`]: [`FhirClient`], pooled rustls HTTPS (extra CAs and mutual TLS from
//!   [`TlsConfig`]), timeouts, bounded concurrency, retries with backoff and `Retry-After`,
//!   `OperationOutcome` text in errors.
//! * [`search`]: every page of a search, exact identifier matching.
//! * [`identity`]: [`IdentityResolver`], the three modes of SPEC §9 with their caches.
//! * [`persist`]: [`Persister`], create or merge per SPEC §8, conflict retry, Observation
//!   cache, batched lookups, `batch` Bundles, per-device ordering.
//! * [`check`]: [`run_checks`], connectivity and credentials in plain words.
//! * [`error`]: [`FhirClientError`] with [`class`](FhirClientError::class) (the original's
//!   catalogue), [`RetryHint`] and [`ErrorDomain`]; [`metrics`]: [`Counters`].
//!
//! # Design decisions
//! * **One HTTP client, hand-rolled OAuth.** reqwest (rustls, aws-lc-rs) is the only HTTP
//!   stack; the `oauth2` crate would bring a second reqwest, and the client-credentials
//!   exchange is one form POST. JWT assertions are signed with `jsonwebtoken` on the same
//!   aws-lc-rs, so there is one crypto library and constant-time RSA.
//! * **Caches are moka** (bounded, time-to-live, lock-free reads): identity per device
//!   identifier and per encounter identifier, Observations per identifier. Caches are hints:
//!   a stale entry costs a conflict and a re-read, never a wrong write.
//! * **Batched lookups.** The original searched once per group before writing; a new
//!   Observation thus cost two requests. Here the uncached identifiers of a whole batch are
//!   searched `observations.prefetch_batch` at a time (`identifier=a,b,c`, filtered exactly),
//!   so a create costs little more than its PUT. `prefetch_batch: 1` restores the original's
//!   one-search-per-group behaviour.
//! * **Lookups search by identifier value.** The original searched `system|value`; the
//!   connector's values are unique on their own, so by default it sends the value alone (60%
//!   fewer search bytes, less token parsing on the server) and checks the system on the
//!   results, as it checks the value. [`LookupToken`] explains the choice;
//!   `lookup_token: system_and_value` restores the original's tokens.
//! * **Retries inside, classification outside.** The original retried nothing per request and
//!   retried whole batches forever (SPEC §8, §16.6). Here a request is retried a bounded number
//!   of times; what still fails returns to the caller with its class and [`RetryHint`], and
//!   the pipeline dead-letters it and moves on.
//!
//! # Invariants
//! * [`Persister::persist`] returns exactly one outcome per input group, in input order;
//!   failures carry the group. Panics in its tasks are re-raised, never swallowed.
//! * No log line or error message contains a secret, a token, or an identifier value; ids
//!   appear only in `debug` events.
//! * Requests go only to the configured base URL's origin and the token URL.

pub mod auth;
pub mod check;
pub mod config;
pub mod error;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod persist;
pub mod search;
pub mod secret;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use check::{CheckReport, Finding, ServerInfo, Status, run_checks};
pub use config::{
    AuthConfig, BundleConfig, CacheConfig, ClientAuthMethod, ConfigError, FhirClientConfig,
    HttpConfig, IdentityConfig, IdentityMode, JwtAlgorithm, LookupToken, ObservationConfig,
    RetryConfig, TlsConfig,
};
pub use error::{ConnectFailure, ErrorDomain, FhirClientError, Interaction, Operation, RetryHint};
pub use http::{FhirClient, WriteResponse};
pub use identity::{DeviceLink, IdentityResolver};
pub use metrics::{Counters, CountersSnapshot};
pub use persist::{PersistFailure, PersistOutcome, Persister};
pub use secret::{Secret, SecretError, SecretSource};
