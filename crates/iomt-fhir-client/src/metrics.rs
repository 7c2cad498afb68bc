//! Counters for the persist stage, as plain atomics.
//!
//! There is no metrics crate in the workspace yet; the service reads a
//! [`CountersSnapshot`] and exports it however it exports metrics. The names follow the
//! original's telemetry where it had one (`ObservationCreated`, `ObservationUpdated`,
//! `ObservationNoOperation`, `FHIRResourceContention`). Counters only grow; relaxed ordering is
//! enough because each counter is read on its own.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters, shared by the client and the persister.
        #[derive(Debug, Default)]
        pub struct Counters {
            $($(#[$doc])* pub $name: AtomicU64,)*
        }

        /// The counters' values at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct CountersSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl Counters {
            /// Reads every counter.
            pub fn snapshot(&self) -> CountersSnapshot {
                CountersSnapshot { $($name: self.$name.load(Ordering::Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Observations created (`ObservationCreated`).
    observations_created,
    /// Observations merged and written (`ObservationUpdated`).
    observations_updated,
    /// Groups that changed nothing, so no write was made (`ObservationNoOperation`).
    observations_unchanged,
    /// Groups that failed (any class).
    groups_failed,
    /// Write conflicts (409/412) that led to a re-read.
    conflicts,
    /// Creates that found the resource already there (`FHIRResourceContention`): another
    /// writer created it between the search and the write.
    contention,
    /// HTTP requests sent to the FHIR server (every attempt).
    requests,
    /// Attempts retried after a 429, 5xx, timeout or connection failure.
    retries,
    /// 429 responses received.
    throttled,
    /// Tokens obtained from the token endpoint.
    tokens_issued,
    /// `batch` Bundles sent.
    bundles_sent,
    /// Identity lookups answered from the cache.
    identity_cache_hits,
    /// Identity lookups that went to the server.
    identity_cache_misses,
    /// Observation lookups answered from the cache.
    observation_cache_hits,
    /// Observation lookups that went to the server (by prefetch or one by one).
    observation_cache_misses,
    /// Devices and Patients created (identity mode create).
    resources_created,
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
