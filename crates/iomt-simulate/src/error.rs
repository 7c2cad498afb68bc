//! The crate's errors: configuration that cannot run, and targets that cannot be built.
//!
//! Failures while sending are not errors of the run: each request's outcome is counted in the
//! run's summary, and a target that refuses the key or cannot be reached ends the run with a
//! reason the summary carries.

use std::fmt;

/// A shape name that is not one of the known shapes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown shape '{given}': use wearable, iot-hub or iot-central")]
pub struct ParseShapeError {
    /// What was given.
    pub given: String,
}

/// One thing wrong with a fleet or send configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// A fleet of no devices sends nothing.
    NoDevices,
    /// The bad-message rate is not a fraction in `0.0..=1.0`.
    BadMessageRate {
        /// The rate given.
        rate: f64,
    },
    /// The device prefix is empty or has characters that device ids (and HTTP headers) cannot
    /// carry.
    DevicePrefix {
        /// The prefix given.
        prefix: String,
    },
    /// The message rate is not a finite number above zero.
    Rate {
        /// The rate given.
        rate: f64,
    },
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigProblem::NoDevices => f.write_str("devices is 0: simulate at least one device"),
            ConfigProblem::BadMessageRate { rate } => write!(
                f,
                "bad message rate {rate} is not a fraction: give a number from 0.0 to 1.0, such as 0.01"
            ),
            ConfigProblem::DevicePrefix { prefix } => write!(
                f,
                "device prefix '{prefix}' cannot start device ids: use letters, digits, '-', '_', '.' or ':' (at least one)"
            ),
            ConfigProblem::Rate { rate } => write!(
                f,
                "rate {rate} messages/s cannot be paced: give a number above 0"
            ),
        }
    }
}

/// A configuration that cannot run, with every problem found.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid simulator configuration: {}", join(.problems))]
pub struct ConfigError {
    /// Every problem, in field order; never empty.
    pub problems: Vec<ConfigProblem>,
}

fn join(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A target that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The URL does not parse, or is not one of the target URLs.
    #[error(
        "target '{url}' is not a target URL: give http(s)://host:port, mqtt(s)://host:port/topic-prefix or kafka://host:port/topic"
    )]
    InvalidUrl {
        /// The URL given.
        url: String,
    },
    /// The API key cannot be sent in an HTTP header.
    #[error(
        "the API key has characters an HTTP header cannot carry: check the key's file or variable"
    )]
    InvalidApiKey,
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot build the HTTP client: {reason}")]
    Client {
        /// Why.
        reason: String,
    },
    /// The TLS settings cannot be used (a CA file that is missing or holds no certificate).
    #[error("cannot set up tls: {reason}")]
    Tls {
        /// Why.
        reason: String,
    },
    /// An Azure Event Hubs connection string that cannot be used.
    #[error("the event hubs connection string is not usable: {reason}")]
    InvalidConnectionString {
        /// Why (never the string itself).
        reason: String,
    },
}
