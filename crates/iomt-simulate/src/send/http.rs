//! The HTTP target: the connector's ingest endpoint.
//!
//! `POST {base}/v1/messages` with `Content-Type: application/x-ndjson`, one message body per
//! line. A message's properties travel as headers of the whole request —
//! `iomt-property-<name>` and `iomt-system-property-<name>` — so only messages with identical
//! properties share a request (IoT Hub messages carry their own times, so each goes alone).
//! `Authorization: Bearer <key>` when a key is given.
//!
//! In envelope mode ([`HttpTarget::with_envelopes`]) each line is the message's event envelope
//! and the URL carries `?envelope=true`: the connector takes the properties from each line,
//! so messages with different properties share requests (IoT Hub traffic in batches).
//!
//! Answers: 2xx is accepted (the count from `{"accepted": n}`, else the batch size); 429, and
//! 503 with `Retry-After`, are throttling (`Retry-After` in seconds or as an HTTP date;
//! one second when absent); 401 and 403 are a refused key; anything else is a rejection.

use std::error::Error as _;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER,
};

use super::{Delivery, Target};
use crate::error::TargetError;
use crate::message::SimMessage;

/// The ingest path under the base URL.
pub const MESSAGES_PATH: &str = "/v1/messages";
/// The header prefix of a message property.
pub const PROPERTY_HEADER_PREFIX: &str = "iomt-property-";
/// The header prefix of a message system property.
pub const SYSTEM_PROPERTY_HEADER_PREFIX: &str = "iomt-system-property-";
/// How long one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The wait when a throttling answer has no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Sends batches to the connector's HTTP ingest endpoint.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    client: reqwest::Client,
    url: reqwest::Url,
    authorization: Option<HeaderValue>,
    envelopes: bool,
}

impl HttpTarget {
    /// A target posting to `{base}/v1/messages`, with `api_key` as bearer token when given.
    ///
    /// # Errors
    /// [`TargetError::InvalidUrl`] unless `base` is an `http`/`https` URL;
    /// [`TargetError::InvalidApiKey`] when the key cannot be a header value;
    /// [`TargetError::Client`] when the client cannot be built.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<HttpTarget, TargetError> {
        let invalid = || TargetError::InvalidUrl {
            url: base.to_owned(),
        };
        let mut url = reqwest::Url::parse(base).map_err(|_| invalid())?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(invalid());
        }
        let path = format!("{}{MESSAGES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
        let authorization = api_key
            .map(|key| {
                let mut value = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| TargetError::InvalidApiKey)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .tcp_nodelay(true)
            .user_agent(concat!("iomt-simulate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| TargetError::Client {
                reason: e.to_string(),
            })?;
        Ok(HttpTarget {
            client,
            url,
            authorization,
            envelopes: false,
        })
    }

    /// The same target sending each message as its event envelope, with `?envelope=true`,
    /// instead of the body with the properties as headers.
    pub fn with_envelopes(mut self) -> HttpTarget {
        self.envelopes = true;
        self.url.set_query(Some("envelope=true"));
        self
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    fn headers(&self, first: &SimMessage) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if let Some(authorization) = &self.authorization {
            headers.insert(AUTHORIZATION, authorization.clone());
        }
        if self.envelopes {
            return Ok(headers);
        }
        let properties = first
            .properties
            .iter()
            .map(|p| (PROPERTY_HEADER_PREFIX, p))
            .chain(
                first
                    .system_properties
                    .iter()
                    .map(|p| (SYSTEM_PROPERTY_HEADER_PREFIX, p)),
            );
        for (prefix, (name, value)) in properties {
            let header = HeaderName::from_bytes(format!("{prefix}{name}").as_bytes())
                .map_err(|_| format!("property '{name}' cannot be an HTTP header name"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("property '{name}' has a value no HTTP header can carry"))?;
            headers.append(header, value);
        }
        Ok(headers)
    }
}

impl Target for HttpTarget {
    fn batchable(&self, first: &SimMessage, next: &SimMessage) -> bool {
        self.envelopes
            || (first.properties == next.properties
                && first.system_properties == next.system_properties)
    }

    async fn deliver(&self, batch: &[SimMessage]) -> Delivery {
        let Some(first) = batch.first() else {
            return Delivery::Accepted { messages: 0 };
        };
        let headers = match self.headers(first) {
            Ok(headers) => headers,
            Err(reason) => return Delivery::Failed { reason },
        };
        let mut body = Vec::with_capacity(batch.iter().map(|m| m.body.len() + 1).sum());
        for message in batch {
            if self.envelopes {
                body.extend_from_slice(&message.envelope_json());
            } else {
                body.extend_from_slice(&message.body);
            }
            body.push(b'\n');
        }
        let response = match self
            .client
            .post(self.url.clone())
            .headers(headers)
            .body(body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(e) => {
                return Delivery::Failed {
                    reason: describe(&e),
                };
            }
        };
        let status = response.status();
        let retry_after = retry_after(response.headers(), SystemTime::now());
        match status {
            s if s.is_success() => {
                let reported = response
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .and_then(|v| v.get("accepted").and_then(serde_json::Value::as_u64));
                Delivery::Accepted {
                    messages: reported.unwrap_or(batch.len() as u64),
                }
            }
            StatusCode::TOO_MANY_REQUESTS => Delivery::Throttled {
                status: status.as_u16(),
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            },
            StatusCode::SERVICE_UNAVAILABLE if retry_after.is_some() => Delivery::Throttled {
                status: status.as_u16(),
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            },
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Delivery::Refused {
                status: status.as_u16(),
            },
            _ => Delivery::Rejected {
                status: status.as_u16(),
            },
        }
    }
}

/// The error and its causes, without the URL.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else {
        "no answer".to_owned()
    };
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as delay-seconds or an HTTP date (relative to `now`; a past date is zero).
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_retry_after(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Thu, 26 Nov 2026 08:00:00 GMT").unwrap();
        assert_eq!(
            retry_after(&with_retry_after("3"), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            retry_after(&with_retry_after("Thu, 26 Nov 2026 08:00:05 GMT"), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            retry_after(&with_retry_after("Thu, 26 Nov 2026 07:00:00 GMT"), now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(&with_retry_after("soon"), now), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn the_url_must_be_http() {
        assert_eq!(
            HttpTarget::new("http://127.0.0.1:8180/", None)
                .unwrap()
                .url(),
            "http://127.0.0.1:8180/v1/messages"
        );
        assert_eq!(
            HttpTarget::new("https://example.test/ingest", None)
                .unwrap()
                .url(),
            "https://example.test/ingest/v1/messages"
        );
        assert_eq!(
            HttpTarget::new("http://h:1", None)
                .unwrap()
                .with_envelopes()
                .url(),
            "http://h:1/v1/messages?envelope=true"
        );
        for bad in ["127.0.0.1:8180", "ftp://host", "not a url", "http://"] {
            assert!(
                matches!(
                    HttpTarget::new(bad, None),
                    Err(TargetError::InvalidUrl { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            HttpTarget::new("http://h", Some("bad\nkey")).unwrap_err(),
            TargetError::InvalidApiKey
        );
    }
}
