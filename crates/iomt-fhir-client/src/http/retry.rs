//! Which failed attempts are tried again, and after how long.
//!
//! | outcome of an attempt | retried? | pause |
//! |---|---|---|
//! | 429 Too Many Requests | yes | `Retry-After` (seconds or HTTP date) when given and at most `retry.max_retry_after`; otherwise backoff. A longer `Retry-After` ends the request as throttled, so no worker sleeps for minutes |
//! | 408, 500, 502, 503, 504 (any 5xx but 501 and 505) | yes | `Retry-After` when given, otherwise backoff |
//! | timeout, connection refused or reset, DNS or TLS failure | yes | backoff |
//! | 401 | once, with a fresh token (in [`super`], not here) | none |
//! | 409, 412 | no: returned as a conflict for the caller to re-read and merge | |
//! | any other 4xx, 501, 505 | no | |
//!
//! Backoff is exponential with "equal jitter": attempt *n* waits a random time in
//! `[d/2, d]` where `d = min(max_backoff, initial_backoff · 2ⁿ⁻¹)`, so synchronized clients
//! spread out while the pause never drops below half the nominal one.
//!
//! Retrying is safe because every request the connector sends is idempotent: reads, searches,
//! PUTs with a client-assigned id, and `batch` Bundles made only of such PUTs. An update whose
//! first attempt reached the server but whose response was lost comes back as 412 on the retry
//! (its `If-Match` version is gone), which the persist stage resolves by re-reading: the
//! merge then finds nothing to change.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::config::RetryConfig;

/// The retry settings, validated.
#[derive(Debug, Clone)]
pub(crate) struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
}

impl RetryPolicy {
    pub fn new(config: &RetryConfig) -> RetryPolicy {
        RetryPolicy {
            max_attempts: config.max_attempts.get(),
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            max_retry_after: config.max_retry_after,
        }
    }

    /// The nominal backoff before attempt `attempt + 1` (`attempt` ≥ 1), before jitter.
    pub fn nominal_backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }

    /// The jittered backoff before attempt `attempt + 1`: uniform in `[d/2, d]`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let d = self.nominal_backoff(attempt);
        let half = d / 2;
        let spread = u64::try_from((d - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(if spread == 0 {
            0
        } else {
            fastrand::u64(0..=spread)
        })
    }
}

/// Whether a response status is worth another attempt.
pub(crate) fn is_retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || (500..600).contains(&status) && status != 501 && status != 505
}

/// The pause a `Retry-After` header asks for: delay-seconds or an HTTP date (relative to
/// `now`; a date in the past means no pause).
pub(crate) fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(text).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use reqwest::header::HeaderValue;

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::new(&RetryConfig {
            max_attempts: NonZeroU32::new(6).unwrap(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(30),
        })
    }

    #[test]
    fn backoff_doubles_up_to_the_bound_with_jitter() {
        let p = policy();
        let nominal: Vec<u128> = (1..=6).map(|a| p.nominal_backoff(a).as_millis()).collect();
        assert_eq!(nominal, [100, 200, 400, 800, 1000, 1000]);
        for attempt in 1..=6 {
            for _ in 0..100 {
                let d = p.backoff(attempt);
                let n = p.nominal_backoff(attempt);
                assert!(d >= n / 2 && d <= n, "{d:?} for {n:?}");
            }
        }
        // Huge attempt numbers neither overflow nor exceed the bound.
        assert_eq!(p.nominal_backoff(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504, 599] {
            assert!(is_retryable_status(s), "{s}");
        }
        for s in [200, 400, 401, 403, 404, 409, 412, 422, 501, 505] {
            assert!(!is_retryable_status(s), "{s}");
        }
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h, now), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:30 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:00:00 GMT"),
        );
        assert_eq!(retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&h, now), None);
    }
}
