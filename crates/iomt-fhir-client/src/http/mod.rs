//! The FHIR REST client: one pooled HTTPS client (rustls), per-request timeouts, bounded
//! concurrency, retries, and errors that say what went wrong.
//!
//! # Layers
//! * `Core` (internal) sends one logical request: it takes a concurrency permit per attempt, applies the
//!   timeout, retries what [`retry`] says is retryable, and returns any other response as it
//!   is. Both FHIR requests and token requests go through it, so the token endpoint gets the
//!   same retry policy.
//! * [`FhirClient`] adds the base URL, FHIR headers and authentication. A 401 makes it drop the
//!   token it used and try once more with a fresh one (a token revoked or expired early);
//!   a second 401 is an error. It maps the remaining statuses to [`FhirClientError`]s carrying
//!   the server's `OperationOutcome` text ([`outcome`]).
//!
//! # What must hold
//! * At most `http.max_concurrency` requests are on the wire at once, whoever sends them. A
//!   permit is held only while a request is in flight, never while backing off.
//! * URLs are built from the base URL by appending encoded path segments and query pairs;
//!   nothing a server or a message supplies can change the host a request (and its token) goes
//!   to. `next` links are checked against the base URL's origin before they are followed
//!   ([`crate::search`]).
//! * Nothing here logs URLs, bodies or headers: logs carry the operation (`update
//!   Observation`), status, attempt and delay.

pub mod outcome;
pub mod retry;
mod tls;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use reqwest::header::{
    ACCEPT, AUTHORIZATION, CONTENT_TYPE, ETAG, HeaderName, HeaderValue, IF_MATCH,
};
use serde_json::Value;
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use url::Url;

use crate::auth::Auth;
use crate::config::FhirClientConfig;
use crate::error::{FhirClientError, Interaction, Operation};
use crate::metrics::{Counters, CountersSnapshot};
use outcome::{classify_transport, outcome_text};
use retry::{RetryPolicy, is_retryable_status};

const FHIR_JSON: &str = "application/fhir+json";

// Header names and values built once: a `&str` would be parsed and copied on every request.
const FHIR_JSON_VALUE: HeaderValue = HeaderValue::from_static(FHIR_JSON);
const PREFER: HeaderName = HeaderName::from_static("prefer");

/// A response as received: status, the headers the client uses, body.
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    /// The `ETag` header.
    pub etag: Option<String>,
    /// The pause `Retry-After` asks for (read only on retryable statuses).
    pub retry_after: Option<Duration>,
    pub body: Bytes,
}

/// Sends requests with the retry policy and the concurrency bound (shared by FHIR and token
/// requests).
#[derive(Debug)]
pub(crate) struct Core {
    http: reqwest::Client,
    retry: RetryPolicy,
    timeout: Duration,
    permits: Semaphore,
    pub counters: Arc<Counters>,
}

impl Core {
    fn new(config: &FhirClientConfig, counters: Arc<Counters>) -> Result<Core, FhirClientError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(config.http.connect_timeout)
            .pool_max_idle_per_host(config.http.pool_max_idle_per_host)
            .pool_idle_timeout(config.http.pool_idle_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("iomt/", env!("CARGO_PKG_VERSION")));
        let http = tls::apply(builder, &config.http.tls)?
            .build()
            .map_err(|e| FhirClientError::HttpClient {
                reason: e.to_string(),
            })?;
        Ok(Core {
            http,
            retry: RetryPolicy::new(&config.retry),
            timeout: config.http.request_timeout,
            permits: Semaphore::new(config.http.max_concurrency.get()),
            counters,
        })
    }

    /// The underlying HTTP client (pooled; cheap to clone).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Sends the request `make` builds, retrying what is retryable. Returns the first response
    /// that is not retryable (any status), or the error once attempts are used up.
    pub async fn send(
        &self,
        operation: Operation,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<RawResponse, FhirClientError> {
        let max = self.retry.max_attempts;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let result = {
                let _permit = self.permits.acquire().await;
                Counters::inc(&self.counters.requests);
                let sent = make().timeout(self.timeout).send().await;
                match sent {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let headers = response.headers();
                        let etag = headers
                            .get(ETAG)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let retry_after = if is_retryable_status(status) {
                            retry::retry_after(headers, chrono::Utc::now())
                        } else {
                            None
                        };
                        response.bytes().await.map(|body| RawResponse {
                            status,
                            etag,
                            retry_after,
                            body,
                        })
                    }
                    Err(e) => Err(e),
                }
            };
            let delay = match result {
                Ok(response) if !is_retryable_status(response.status) => return Ok(response),
                Ok(response) => {
                    let status = response.status;
                    let retry_after = response.retry_after;
                    if status == 429 {
                        Counters::inc(&self.counters.throttled);
                    }
                    let too_long = retry_after.is_some_and(|d| d > self.retry.max_retry_after);
                    if attempt >= max || too_long {
                        return Err(if status == 429 {
                            FhirClientError::Throttled {
                                operation,
                                attempts: attempt,
                                retry_after,
                            }
                        } else {
                            FhirClientError::ServerError {
                                operation,
                                status,
                                attempts: attempt,
                                outcome: outcome_text(&response.body),
                            }
                        });
                    }
                    let delay = retry_after.unwrap_or_else(|| self.retry.backoff(attempt));
                    warn!(
                        operation = %operation,
                        status,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "fhir request failed; retrying"
                    );
                    delay
                }
                Err(e) => {
                    let error = if e.is_timeout() {
                        FhirClientError::Timeout {
                            operation,
                            attempts: attempt,
                            timeout: self.timeout,
                        }
                    } else {
                        let (failure, detail) = classify_transport(&e);
                        FhirClientError::Connection {
                            operation,
                            failure,
                            attempts: attempt,
                            detail,
                        }
                    };
                    if attempt >= max {
                        return Err(error);
                    }
                    let delay = self.retry.backoff(attempt);
                    warn!(
                        operation = %operation,
                        error = %error,
                        attempt,
                        delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        "fhir request failed; retrying"
                    );
                    delay
                }
            };
            Counters::inc(&self.counters.retries);
            tokio::time::sleep(delay).await;
        }
    }
}

/// The response to a successful write.
#[derive(Debug, Clone)]
pub struct WriteResponse {
    /// The status (`201` created, `200` updated).
    pub status: u16,
    /// The version the server gave the resource (from `ETag: W/"…"`), when it said.
    pub version: Option<String>,
    /// The body: the resource as stored, when the server returns it.
    pub body: Bytes,
}

/// The FHIR REST client. Cheap to clone: clones share the connection pool, the token cache,
/// the concurrency bound and the counters.
#[derive(Debug, Clone)]
pub struct FhirClient {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub core: Core,
    pub base: Url,
    pub auth: Auth,
}

/// One FHIR request.
pub(crate) struct FhirRequest<'a> {
    pub operation: Operation,
    pub method: Method,
    pub url: Url,
    /// The body's media type (when there is a body).
    pub content_type: HeaderValue,
    pub body: Option<Bytes>,
    pub if_match: Option<&'a str>,
    /// Statuses other than 2xx returned as responses rather than errors (404 for reads).
    pub accept: &'a [u16],
    /// The `Prefer` header of a write: `return=minimal` when the caller does not need the
    /// stored resource back (saves the server serializing it).
    pub prefer: Option<HeaderValue>,
}

impl FhirClient {
    /// Builds the client: validates the configuration, reads the secrets, parses the SMART key.
    /// Nothing is sent yet.
    ///
    /// # Errors
    /// [`FhirClientError::Config`], [`FhirClientError::Secret`],
    /// [`FhirClientError::PrivateKey`] or [`FhirClientError::HttpClient`].
    pub fn new(config: &FhirClientConfig) -> Result<FhirClient, FhirClientError> {
        FhirClient::with_counters(config, Arc::new(Counters::default()))
    }

    pub(crate) fn with_counters(
        config: &FhirClientConfig,
        counters: Arc<Counters>,
    ) -> Result<FhirClient, FhirClientError> {
        config
            .validate()
            .map_err(|errors| FhirClientError::Config { errors })?;
        let base = config.base().ok_or_else(|| FhirClientError::Config {
            errors: vec![crate::config::ConfigError {
                path: "base_url".into(),
                message: "must be an absolute http(s) url".into(),
            }],
        })?;
        let auth = Auth::from_config(&config.auth)?;
        let core = Core::new(config, counters)?;
        Ok(FhirClient {
            inner: Arc::new(Inner { core, base, auth }),
        })
    }

    /// The base URL, ending in `/`.
    pub fn base_url(&self) -> &Url {
        &self.inner.base
    }

    /// The counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.core.counters.snapshot()
    }

    pub(crate) fn counters_ref(&self) -> &Counters {
        &self.inner.core.counters
    }

    /// The URL of `{base}/{segments…}`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.inner.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// Obtains an access token (when the auth type uses one), without calling the FHIR server.
    ///
    /// # Errors
    /// The token endpoint's refusal or unreachability.
    pub async fn authenticate(&self) -> Result<(), FhirClientError> {
        self.inner.auth.header(&self.inner.core).await.map(|_| ())
    }

    /// Sends a FHIR request, with a fresh token once after a 401, and maps failures to errors.
    pub(crate) async fn execute(
        &self,
        request: FhirRequest<'_>,
    ) -> Result<RawResponse, FhirClientError> {
        let inner = &*self.inner;
        let mut refreshed = false;
        loop {
            let auth = inner.auth.header(&inner.core).await?;
            let response = inner
                .core
                .send(request.operation, || {
                    let mut builder = inner
                        .core
                        .http()
                        .request(request.method.clone(), request.url.clone())
                        .header(ACCEPT, FHIR_JSON_VALUE);
                    if let Some(value) = &auth {
                        builder = builder.header(AUTHORIZATION, value.clone());
                    }
                    if let Some(tag) = request.if_match {
                        builder = builder.header(IF_MATCH, tag);
                    }
                    if let Some(prefer) = &request.prefer {
                        builder = builder.header(PREFER, prefer.clone());
                    }
                    if let Some(body) = &request.body {
                        builder = builder
                            .header(CONTENT_TYPE, request.content_type.clone())
                            .body(body.clone());
                    }
                    builder
                })
                .await?;
            let status = response.status;
            if (200..300).contains(&status) || request.accept.contains(&status) {
                return Ok(response);
            }
            let operation = request.operation;
            return Err(match status {
                401 => {
                    if !refreshed
                        && let Some(used) = &auth
                        && inner.auth.rejected(used).await
                    {
                        debug!(operation = %operation, "fhir server rejected the token; retrying with a fresh one");
                        refreshed = true;
                        continue;
                    }
                    FhirClientError::Unauthorized {
                        operation,
                        outcome: outcome_text(&response.body),
                    }
                }
                403 => FhirClientError::Forbidden {
                    operation,
                    outcome: outcome_text(&response.body),
                },
                409 | 412 => FhirClientError::Conflict {
                    operation,
                    status,
                    attempts: 1,
                },
                _ => FhirClientError::Rejected {
                    operation,
                    status,
                    outcome: outcome_text(&response.body),
                },
            });
        }
    }

    /// Reads the capability statement (`GET [base]/metadata`).
    ///
    /// # Errors
    /// Any request failure, or a body that is not JSON.
    pub async fn capabilities(&self) -> Result<Value, FhirClientError> {
        let operation = Operation::new(Interaction::Capabilities, "CapabilityStatement");
        let response = self
            .execute(FhirRequest {
                operation,
                method: Method::GET,
                url: self.url(&["metadata"]),
                content_type: FHIR_JSON_VALUE,
                body: None,
                if_match: None,
                accept: &[],
                prefer: None,
            })
            .await?;
        parse_json(operation, &response.body)
    }

    /// Reads a resource by id; `None` when the server says 404 or 410.
    ///
    /// # Errors
    /// Any other request failure, or a body that is not JSON.
    pub async fn read(
        &self,
        resource_type: &'static str,
        id: &str,
    ) -> Result<Option<Value>, FhirClientError> {
        let operation = Operation::new(Interaction::Read, resource_type);
        let response = self
            .execute(FhirRequest {
                operation,
                method: Method::GET,
                url: self.url(&[resource_type, id]),
                content_type: FHIR_JSON_VALUE,
                body: None,
                if_match: None,
                accept: &[404, 410],
                prefer: None,
            })
            .await?;
        if matches!(response.status, 404 | 410) {
            return Ok(None);
        }
        parse_json(operation, &response.body).map(Some)
    }

    /// Writes a resource with `PUT [base]/{type}/{id}` (update, or create with a client id),
    /// with `If-Match: W/"{version}"` when a version is given, and `Prefer: return=minimal`:
    /// the version comes back in the `ETag`, and the body only if the server ignores the
    /// preference.
    ///
    /// # Errors
    /// [`FhirClientError::Conflict`] for 409/412, and any other request failure.
    pub async fn update(
        &self,
        resource_type: &'static str,
        id: &str,
        body: Bytes,
        if_match_version: Option<&str>,
    ) -> Result<WriteResponse, FhirClientError> {
        let tag = if_match_version.map(|v| format!("W/\"{v}\""));
        let response = self
            .execute(FhirRequest {
                operation: Operation::new(Interaction::Update, resource_type),
                method: Method::PUT,
                url: self.url(&[resource_type, id]),
                content_type: FHIR_JSON_VALUE,
                body: Some(body),
                if_match: tag.as_deref(),
                accept: &[],
                prefer: Some(HeaderValue::from_static("return=minimal")),
            })
            .await?;
        Ok(WriteResponse {
            status: response.status,
            version: response.etag.as_deref().and_then(version_from_etag),
            body: response.body,
        })
    }

    /// Sends a `batch` or `transaction` Bundle (`POST [base]`) and returns the response Bundle.
    ///
    /// # Errors
    /// A failure of the Bundle as a whole (entries fail inside the response Bundle).
    pub async fn batch(&self, bundle: Bytes) -> Result<Value, FhirClientError> {
        let operation = Operation::new(Interaction::Batch, "Bundle");
        let response = self
            .execute(FhirRequest {
                operation,
                method: Method::POST,
                url: self.inner.base.clone(),
                content_type: FHIR_JSON_VALUE,
                body: Some(bundle),
                if_match: None,
                accept: &[],
                prefer: None,
            })
            .await?;
        parse_json(operation, &response.body)
    }
}

pub(crate) fn parse_json(operation: Operation, body: &[u8]) -> Result<Value, FhirClientError> {
    serde_json::from_slice(body).map_err(|e| FhirClientError::InvalidResponse {
        operation,
        reason: format!("the body is not json ({e})"),
    })
}

/// The version in an ETag: `W/"3"` → `3`, `"3"` → `3`.
pub(crate) fn version_from_etag(tag: &str) -> Option<String> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let tag = tag.trim_matches('"');
    (!tag.is_empty()).then(|| tag.to_owned())
}

/// `Authorization: Bearer …`, marked sensitive so that it is never printed.
pub(crate) fn bearer(token: &str) -> Option<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags() {
        assert_eq!(version_from_etag("W/\"3\"").as_deref(), Some("3"));
        assert_eq!(version_from_etag("\"abc\"").as_deref(), Some("abc"));
        assert_eq!(version_from_etag("W/\"\""), None);
    }

    #[test]
    fn urls_append_encoded_segments() {
        let client = FhirClient::new(&FhirClientConfig::new("http://h:1/fhir/R4")).unwrap();
        assert_eq!(
            client.url(&["Observation", "a/b?c"]).as_str(),
            "http://h:1/fhir/R4/Observation/a%2Fb%3Fc"
        );
        assert_eq!(
            client.url(&["metadata"]).as_str(),
            "http://h:1/fhir/R4/metadata"
        );
        let root = FhirClient::new(&FhirClientConfig::new("http://h:1")).unwrap();
        assert_eq!(root.url(&["Device"]).as_str(), "http://h:1/Device");
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let v = bearer("abc").unwrap();
        assert!(v.is_sensitive());
        assert_eq!(format!("{v:?}"), "Sensitive");
    }
}
