//! Authentication: where the `Authorization` header of every FHIR request comes from.
//!
//! | `auth.type` | header | on a 401 from the FHIR server |
//! |---|---|---|
//! | `none` | none | the request fails (`Unauthorized`) |
//! | `bearer` | the configured token | a token *file* is read again; if it changed, one retry |
//! | `client_credentials` | a token from the token endpoint (client id + secret) | the token is dropped, a new one requested, one retry |
//! | `smart_backend` | a token obtained with a signed JWT client assertion (RS384/ES384) | as above |
//!
//! # What must hold
//! * One token is shared by all requests and refreshed by one task at a time: requests check
//!   a read-locked cache (no await, no contention) and only a token that is within its refresh
//!   margin of expiry takes the refresh lock. The margin is `refresh_before_expiry`, but at
//!   most half the token's lifetime, so short-lived tokens are still used.
//! * If a refresh fails while the old token is still valid, the old token is used (and the
//!   failure logged); a refresh failure after expiry is the request's error.
//! * A 401 drops the token only if it is still the one that was rejected, so a burst of 401s
//!   from concurrent requests causes one refresh, not one per request.
//! * Tokens, secrets and assertions never reach a log or an error message: headers are built
//!   sensitive ([`crate::http`]), and only the token endpoint's `error` and
//!   `error_description` are reported.
//! * Building the auth checks what can be checked offline: secrets are read and the SMART key is
//!   parsed and used once to sign, so a wrong key is a startup error, not a runtime one.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;
use tracing::{debug, warn};
use url::Url;
use url::form_urlencoded;

use crate::config::{AuthConfig, ClientAuthMethod, JwtAlgorithm};
use crate::error::{FhirClientError, Interaction, Operation};
use crate::http::{Core, bearer};
use crate::metrics::Counters;
use crate::secret::{Secret, SecretSource};

/// Used when a token response has no `expires_in`.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Lifetime of a SMART client assertion (the specification allows at most 5 minutes).
const ASSERTION_LIFETIME_SECS: u64 = 300;

const TOKEN: Operation = Operation::new(Interaction::Token, "token");

/// The configured authentication, ready to produce headers.
#[derive(Debug)]
pub(crate) enum Auth {
    None,
    Static(StaticToken),
    Token(Box<OAuth>),
}

#[derive(Debug)]
pub(crate) struct StaticToken {
    source: SecretSource,
    current: RwLock<HeaderValue>,
    reload: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
pub(crate) struct OAuth {
    token_url: Url,
    grant: Grant,
    scope: Option<String>,
    resource: Option<String>,
    refresh_before: Duration,
    current: RwLock<Option<Arc<Token>>>,
    refresh: tokio::sync::Mutex<()>,
}

#[derive(Debug)]
enum Grant {
    Secret {
        client_id: String,
        secret: Secret,
        method: ClientAuthMethod,
    },
    Assertion(Box<Assertion>),
}

struct Assertion {
    client_id: String,
    audience: String,
    key: EncodingKey,
    header: Header,
}

impl std::fmt::Debug for Assertion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Assertion")
            .field("client_id", &self.client_id)
            .field("alg", &self.header.alg)
            .field("key", &"***")
            .finish()
    }
}

#[derive(Debug)]
struct Token {
    header: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: u64,
    iat: u64,
    jti: String,
}

impl Assertion {
    fn sign(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            iss: &self.client_id,
            sub: &self.client_id,
            aud: &self.audience,
            exp: now + ASSERTION_LIFETIME_SECS,
            iat: now,
            jti: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
    }
}

fn secret(setting: &'static str, source: &SecretSource) -> Result<Secret, FhirClientError> {
    source
        .resolve()
        .map_err(|source| FhirClientError::Secret { setting, source })
}

fn parse_url(path: &str, text: &str) -> Result<Url, FhirClientError> {
    Url::parse(text).map_err(|_| FhirClientError::Config {
        errors: vec![crate::config::ConfigError {
            path: path.into(),
            message: "must be an absolute http(s) url".into(),
        }],
    })
}

impl Auth {
    pub fn from_config(config: &AuthConfig) -> Result<Auth, FhirClientError> {
        Ok(match config {
            AuthConfig::None => Auth::None,
            AuthConfig::Bearer { token } => {
                let value = secret("auth.token", token)?;
                let header = bearer(value.expose()).ok_or_else(|| FhirClientError::Secret {
                    setting: "auth.token",
                    source: crate::secret::SecretError::Empty {
                        source_desc: format!("{token} (it has characters a header cannot carry)"),
                    },
                })?;
                Auth::Static(StaticToken {
                    source: token.clone(),
                    current: RwLock::new(header),
                    reload: tokio::sync::Mutex::new(()),
                })
            }
            AuthConfig::ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
                resource,
                client_auth,
                refresh_before_expiry,
            } => Auth::Token(Box::new(OAuth {
                token_url: parse_url("auth.token_url", token_url)?,
                grant: Grant::Secret {
                    client_id: client_id.clone(),
                    secret: secret("auth.client_secret", client_secret)?,
                    method: *client_auth,
                },
                scope: scope.clone(),
                resource: resource.clone(),
                refresh_before: *refresh_before_expiry,
                current: RwLock::new(None),
                refresh: tokio::sync::Mutex::new(()),
            })),
            AuthConfig::SmartBackend {
                token_url,
                client_id,
                private_key,
                algorithm,
                key_id,
                scope,
                jku,
                refresh_before_expiry,
            } => {
                let pem = secret("auth.private_key", private_key)?;
                let (alg, name) = match algorithm {
                    JwtAlgorithm::RS384 => (Algorithm::RS384, "RS384"),
                    JwtAlgorithm::ES384 => (Algorithm::ES384, "ES384"),
                };
                let key_error = |e: jsonwebtoken::errors::Error| FhirClientError::PrivateKey {
                    algorithm: name,
                    reason: e.to_string(),
                };
                let key = match algorithm {
                    JwtAlgorithm::RS384 => EncodingKey::from_rsa_pem(pem.expose().as_bytes()),
                    JwtAlgorithm::ES384 => EncodingKey::from_ec_pem(pem.expose().as_bytes()),
                }
                .map_err(key_error)?;
                let mut header = Header::new(alg);
                header.kid = Some(key_id.clone());
                header.jku = jku.clone();
                let assertion = Assertion {
                    client_id: client_id.clone(),
                    audience: token_url.clone(),
                    key,
                    header,
                };
                // Sign once now: a key of the wrong kind (or an EC key on another curve)
                // only fails when used.
                assertion.sign().map_err(key_error)?;
                Auth::Token(Box::new(OAuth {
                    token_url: parse_url("auth.token_url", token_url)?,
                    grant: Grant::Assertion(Box::new(assertion)),
                    scope: Some(scope.clone()),
                    resource: None,
                    refresh_before: *refresh_before_expiry,
                    current: RwLock::new(None),
                    refresh: tokio::sync::Mutex::new(()),
                }))
            }
        })
    }

    /// The `Authorization` header for the next request, refreshing the token if needed.
    pub async fn header(&self, core: &Core) -> Result<Option<HeaderValue>, FhirClientError> {
        match self {
            Auth::None => Ok(None),
            Auth::Static(s) => Ok(Some(read_lock(&s.current).clone())),
            Auth::Token(o) => o.header(core).await.map(Some),
        }
    }

    /// Called after a 401 for a request sent with `used`; whether a retry with another token
    /// may help.
    pub async fn rejected(&self, used: &HeaderValue) -> bool {
        match self {
            Auth::None => false,
            Auth::Static(s) => s.reload(used).await,
            Auth::Token(o) => {
                let mut current = write_lock(&o.current);
                if current.as_ref().is_some_and(|t| t.header == *used) {
                    *current = None;
                }
                true
            }
        }
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl StaticToken {
    async fn reload(&self, used: &HeaderValue) -> bool {
        if !matches!(self.source, SecretSource::File(_)) {
            return false;
        }
        let _guard = self.reload.lock().await;
        if *read_lock(&self.current) != *used {
            return true; // another request already reloaded it
        }
        match self.source.resolve().ok().and_then(|s| bearer(s.expose())) {
            Some(fresh) if fresh != *used => {
                debug!("token file changed; using the new token");
                *write_lock(&self.current) = fresh;
                true
            }
            _ => false,
        }
    }
}

impl OAuth {
    fn cached(&self, now: Instant) -> Option<Arc<Token>> {
        read_lock(&self.current)
            .as_ref()
            .filter(|t| now < t.refresh_at)
            .cloned()
    }

    async fn header(&self, core: &Core) -> Result<HeaderValue, FhirClientError> {
        if let Some(token) = self.cached(Instant::now()) {
            return Ok(token.header.clone());
        }
        let _guard = self.refresh.lock().await;
        let now = Instant::now();
        if let Some(token) = self.cached(now) {
            return Ok(token.header.clone());
        }
        let stale = read_lock(&self.current).clone();
        match self.request_token(core).await {
            Ok(token) => {
                let header = token.header.clone();
                *write_lock(&self.current) = Some(Arc::new(token));
                Ok(header)
            }
            Err(error) => match stale {
                Some(old) if now < old.expires_at => {
                    warn!(error = %error, "token refresh failed; using the current token until it expires");
                    Ok(old.header.clone())
                }
                _ => Err(error),
            },
        }
    }

    /// The token request's form body, and Basic credentials when the client uses them.
    #[allow(clippy::type_complexity)]
    fn token_form(&self) -> Result<(String, Option<(String, String)>), FhirClientError> {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("grant_type", "client_credentials");
        if let Some(scope) = &self.scope {
            form.append_pair("scope", scope);
        }
        if let Some(resource) = &self.resource {
            form.append_pair("resource", resource);
        }
        let mut basic = None;
        match &self.grant {
            Grant::Secret {
                client_id,
                secret,
                method: ClientAuthMethod::ClientSecretPost,
            } => {
                form.append_pair("client_id", client_id);
                form.append_pair("client_secret", secret.expose());
            }
            Grant::Secret {
                client_id,
                secret,
                method: ClientAuthMethod::ClientSecretBasic,
            } => {
                // RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
                let enc =
                    |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
                basic = Some((enc(client_id), enc(secret.expose())));
            }
            Grant::Assertion(assertion) => {
                let jwt = assertion.sign().map_err(|e| FhirClientError::PrivateKey {
                    algorithm: match assertion.header.alg {
                        Algorithm::ES384 => "ES384",
                        _ => "RS384",
                    },
                    reason: e.to_string(),
                })?;
                form.append_pair(
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                );
                form.append_pair("client_assertion", &jwt);
            }
        }
        Ok((form.finish(), basic))
    }

    async fn request_token(&self, core: &Core) -> Result<Token, FhirClientError> {
        let (body, basic) = self.token_form()?;
        let response = core
            .send(TOKEN, || {
                let mut builder = core
                    .http()
                    .post(self.token_url.clone())
                    .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .header(ACCEPT, "application/json")
                    .body(body.clone());
                if let Some((id, secret)) = &basic {
                    builder = builder.basic_auth(id, Some(secret));
                }
                builder
            })
            .await?;
        let json: Option<Value> = serde_json::from_slice(&response.body).ok();
        let field = |k: &str| {
            json.as_ref()
                .and_then(|j| j.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        if !(200..300).contains(&response.status) {
            return Err(FhirClientError::TokenRejected {
                status: response.status,
                error: field("error"),
                description: field("error_description"),
            });
        }
        let access_token =
            field("access_token").ok_or_else(|| FhirClientError::InvalidResponse {
                operation: TOKEN,
                reason: "the token response has no access_token".into(),
            })?;
        let header = bearer(&access_token).ok_or_else(|| FhirClientError::InvalidResponse {
            operation: TOKEN,
            reason: "the access token has characters a header cannot carry".into(),
        })?;
        // expires_in is a number by RFC 6749, a string at Entra ID v1 endpoints.
        let lifetime = json
            .as_ref()
            .and_then(|j| j.get("expires_in"))
            .and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_f64().map(|f| f.max(0.0) as u64))
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            })
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_LIFETIME);
        let now = Instant::now();
        let margin = self.refresh_before.min(lifetime / 2);
        Counters::inc(&core.counters.tokens_issued);
        debug!(lifetime_s = lifetime.as_secs(), "obtained an access token");
        Ok(Token {
            header,
            refresh_at: now + (lifetime - margin),
            expires_at: now + lifetime,
        })
    }
}
