//! Test support for iomt: real peers started from tests, on loopback only.
//!
//! # What is here
//! [`FhirServer`] starts the project's FHIR R4 test server (`test-peers/fhir-server`: Medplum's
//! FHIR router on an in-memory repository behind a small Node wrapper) as a child process, waits
//! until it listens, and gives tests its base URL, credentials and the test-only admin API:
//! fault injection ([`Faults`]), [`FhirServer::reset`] and request [`Stats`].
//!
//! [`Mosquitto`] starts Debian's MQTT broker the same way (generated configuration, free
//! 127.0.0.1 port, optional password file and TLS), for the MQTT source's tests.
//!
//! [`Tansu`] starts the Kafka-protocol broker `tansu` (in-memory storage, free 127.0.0.1 port)
//! for the Kafka source, the scale-out roles and the simulator's Kafka target.
//!
//! # Why a real server rather than a mock
//! A wiremock double answers what the test author expects; the real router validates every
//! resource against the R4 StructureDefinitions, enforces `If-Match`, pages search results and
//! issues (and expires) OAuth2 tokens. Integration tests and benchmarks of the FHIR client and
//! the connector run against it so that a wrong Observation or a broken retry loop fails here,
//! not in production.
//!
//! # Skipping, never silently
//! The server needs Node 20+ and `npm ci` in `test-peers/fhir-server`. When `node_modules` is
//! missing, [`FhirServer::start`] fails with a message saying to run `npm ci`; tests fail with it.
//! Only the explicit environment variable [`SKIP_ENV`] (`IOMT_SKIP_FHIR_SERVER=1`) makes
//! [`FhirServer::start_unless_skipped`] return `None`, and it says so on stderr.
//!
//! # Process hygiene
//! The child is killed when the [`FhirServer`] is dropped. It is also started with
//! `--exit-with-stdin`, so it exits when the test process ends even if the value is never dropped
//! (a `static` shared by several tests) or the test process is killed.
//!
//! # Example
//! ```no_run
//! use iomt_testkit::{FhirServer, FhirServerOptions};
//!
//! let Some(server) = FhirServer::start_unless_skipped(FhirServerOptions::default().page_size(2))
//! else {
//!     return;
//! };
//! let token = server.fetch_token().expect("token");
//! let url = format!("{}/Patient?identifier=abc", server.base_url());
//! # let _ = (token, url);
//! ```

mod fhir_server;
mod mosquitto;
mod tansu;

pub use fhir_server::{
    ClientCredentials, Faults, FhirServer, FhirServerError, FhirServerOptions, IdentifierMatch,
    JwtClient, SKIP_ENV, ScriptedFault, Stats, TokenStats,
};
pub use mosquitto::{Mosquitto, MosquittoError, MosquittoOptions, MosquittoTls, SKIP_MQTT_ENV};
pub use tansu::{
    SKIP_KAFKA_ENV, TANSU_BIN_ENV, Tansu, TansuError, binary_path as tansu_binary_path,
};
/// The HTTP client the harness uses, re-exported so tests can build requests with the same
/// version (see [`FhirServer::agent`]).
pub use ureq;
