//! Authentication of the service's listeners (HTTP ingest, admin API).
//!
//! Device data is health data, and the admin API can purge and redrive it: every listener
//! that accepts data or changes state authenticates each request, by API key or by JWT, in
//! the `Authorization: Bearer …` header (`X-Api-Key` is accepted for API keys too).
//!
//! # What must hold
//! * API keys are compared in constant time, against every configured key.
//! * A JWT is accepted only with a valid signature under the configured algorithm (never
//!   `none`, never an algorithm the token names but the config does not), unexpired, and with
//!   the configured issuer and audience.
//! * Unauthenticated access exists only when configured *and* on a loopback listener (checked
//!   by [`crate::config::PipelineConfig::validate`] and again at start).
//! * Nothing here logs a key or token.

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use subtle::ConstantTimeEq;

use crate::config::{JwtAuthConfig, ListenerAuth};

/// Why a listener's authentication could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// A secret could not be read.
    #[error("cannot read a key: {0}")]
    Secret(#[from] iomt_fhir_client::SecretError),
    /// The JWT algorithm is unknown.
    #[error("unknown jwt algorithm {0:?}: use HS256, RS256, RS384, ES256 or ES384")]
    Algorithm(String),
    /// The JWT key does not parse for the algorithm.
    #[error(
        "the jwt key is not a valid {algorithm} key ({reason}): give a PEM public key for RS/ES algorithms, a secret for HS256"
    )]
    Key {
        /// The algorithm.
        algorithm: String,
        /// The parser's reason.
        reason: String,
    },
    /// No authentication and not allowed.
    #[error("no authentication is configured for a listener on {0}: configure api_keys or jwt")]
    Missing(std::net::SocketAddr),
}

/// The JWT algorithms accepted in configuration.
pub(crate) fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name.to_ascii_uppercase().as_str() {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        _ => return None,
    })
}

/// Verifies JWTs for one listener.
pub(crate) struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl JwtVerifier {
    pub(crate) fn new(config: &JwtAuthConfig) -> Result<JwtVerifier, AuthSetupError> {
        let algorithm = parse_algorithm(&config.algorithm)
            .ok_or_else(|| AuthSetupError::Algorithm(config.algorithm.clone()))?;
        let secret = config.key.resolve()?;
        let bytes = secret.expose().as_bytes();
        let key = match algorithm {
            Algorithm::HS256 => Ok(DecodingKey::from_secret(bytes)),
            Algorithm::RS256 | Algorithm::RS384 => DecodingKey::from_rsa_pem(bytes),
            _ => DecodingKey::from_ec_pem(bytes),
        }
        .map_err(|e| AuthSetupError::Key {
            algorithm: config.algorithm.clone(),
            reason: e.to_string(),
        })?;
        let mut validation = Validation::new(algorithm);
        validation.leeway = 30;
        match &config.issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match &config.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(JwtVerifier { key, validation })
    }

    fn verify(&self, token: &str) -> bool {
        jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation).is_ok()
    }
}

/// The authentication of one listener, ready to check requests.
pub struct Authenticator {
    api_keys: Vec<Vec<u8>>,
    jwt: Option<JwtVerifier>,
    open: bool,
}

/// The outcome of checking one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The request may proceed.
    Allowed,
    /// No credentials were presented (401).
    Missing,
    /// Credentials were presented and rejected (401).
    Rejected,
}

impl Authenticator {
    /// Resolves the keys of `auth` for a listener on `listen`.
    ///
    /// # Errors
    /// A key that cannot be read or parsed, or no authentication where it is required.
    pub fn new(
        auth: &ListenerAuth,
        listen: std::net::SocketAddr,
    ) -> Result<Authenticator, AuthSetupError> {
        let api_keys = auth
            .api_keys
            .iter()
            .map(|k| k.resolve().map(|s| s.expose().trim().as_bytes().to_vec()))
            .collect::<Result<Vec<_>, _>>()?;
        let jwt = auth.jwt.as_ref().map(JwtVerifier::new).transpose()?;
        let open = api_keys.is_empty() && jwt.is_none();
        if open && !(auth.allow_unauthenticated && listen.ip().is_loopback()) {
            return Err(AuthSetupError::Missing(listen));
        }
        Ok(Authenticator {
            api_keys,
            jwt,
            open,
        })
    }

    /// An authenticator that accepts exactly these API keys (tests, the demo).
    pub fn with_api_keys(keys: &[&str]) -> Authenticator {
        Authenticator {
            api_keys: keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
            jwt: None,
            open: keys.is_empty(),
        }
    }

    /// Whether requests need no credentials.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Checks one request's headers.
    pub fn check(&self, headers: &HeaderMap) -> AuthOutcome {
        if self.open {
            return AuthOutcome::Allowed;
        }
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let api_key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim);
        let Some(presented) = bearer.or(api_key) else {
            return AuthOutcome::Missing;
        };
        let mut matched = 0u8;
        for key in &self.api_keys {
            matched |= key.as_slice().ct_eq(presented.as_bytes()).unwrap_u8();
        }
        if matched == 1 {
            return AuthOutcome::Allowed;
        }
        if bearer.is_some()
            && let Some(jwt) = &self.jwt
            && jwt.verify(presented)
        {
            return AuthOutcome::Allowed;
        }
        AuthOutcome::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iomt_fhir_client::{Secret, SecretSource};

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    #[test]
    fn api_keys_by_bearer_or_header() {
        let auth = Authenticator::with_api_keys(&["k1-0123456789abcdef", "k2-0123456789abcdef"]);
        assert_eq!(
            auth.check(&headers("authorization", "Bearer k2-0123456789abcdef")),
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(&headers("x-api-key", "k1-0123456789abcdef")),
            AuthOutcome::Allowed
        );
        assert_eq!(
            auth.check(&headers("authorization", "Bearer k3")),
            AuthOutcome::Rejected
        );
        assert_eq!(auth.check(&HeaderMap::new()), AuthOutcome::Missing);
    }

    #[test]
    fn jwt_signature_issuer_and_expiry_are_checked() {
        let secret = "a-long-shared-hmac-secret-for-tests";
        let config = ListenerAuth {
            api_keys: vec![],
            jwt: Some(JwtAuthConfig {
                algorithm: "HS256".into(),
                key: SecretSource::Value(Secret::new(secret)),
                issuer: Some("https://idp.example".into()),
                audience: None,
            }),
            allow_unauthenticated: false,
        };
        let auth = Authenticator::new(&config, "0.0.0.0:1".parse().unwrap()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let token = |iss: &str, exp: i64, key: &str| {
            jsonwebtoken::encode(
                &jsonwebtoken::Header::new(Algorithm::HS256),
                &serde_json::json!({"iss": iss, "exp": exp, "sub": "gateway-1"}),
                &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
            )
            .unwrap()
        };
        let check = |t: String| auth.check(&headers("authorization", &format!("Bearer {t}")));
        assert_eq!(
            check(token("https://idp.example", now + 600, secret)),
            AuthOutcome::Allowed
        );
        assert_eq!(
            check(token("https://other.example", now + 600, secret)),
            AuthOutcome::Rejected
        );
        assert_eq!(
            check(token("https://idp.example", now - 600, secret)),
            AuthOutcome::Rejected
        );
        assert_eq!(
            check(token(
                "https://idp.example",
                now + 600,
                "wrong-secret-wrong-secret"
            )),
            AuthOutcome::Rejected
        );
    }

    #[test]
    fn open_listener_only_on_loopback() {
        let open = ListenerAuth {
            allow_unauthenticated: true,
            ..ListenerAuth::default()
        };
        assert!(Authenticator::new(&open, "127.0.0.1:1".parse().unwrap()).is_ok());
        assert!(Authenticator::new(&open, "0.0.0.0:1".parse().unwrap()).is_err());
        assert!(
            Authenticator::new(&ListenerAuth::default(), "127.0.0.1:1".parse().unwrap()).is_err()
        );
    }
}
