//! What `/readyz` and `/v1/status` report: whether each part of the service can do its job
//! right now, and how far the pipeline has got.
//!
//! What must hold: readiness answers from memory (no I/O on the request path), and each
//! not-ready reason says what to look at.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use serde::Serialize;

/// Shared, cheaply updated service state.
#[derive(Debug, Default)]
pub struct Status {
    pipeline_running: AtomicBool,
    checkpoint: AtomicU64,
    last_handled_ms: AtomicI64,
    destination_error: Mutex<Option<String>>,
    sources_accepting: AtomicBool,
    source_problems: Mutex<BTreeMap<&'static str, String>>,
}

/// A readiness report.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Whether everything is ready.
    pub ready: bool,
    /// What is not ready, in words.
    pub problems: Vec<String>,
}

impl Status {
    pub(crate) fn set_pipeline_running(&self, running: bool) {
        self.pipeline_running.store(running, Ordering::Relaxed);
    }

    pub(crate) fn set_checkpoint(&self, offset: u64) {
        self.checkpoint.store(offset, Ordering::Relaxed);
    }

    pub(crate) fn set_last_handled(&self, ingest_ms: i64) {
        self.last_handled_ms.store(ingest_ms, Ordering::Relaxed);
    }

    pub(crate) fn set_destination_error(&self, error: Option<String>) {
        *self
            .destination_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = error;
    }

    pub(crate) fn set_sources_accepting(&self, accepting: bool) {
        self.sources_accepting.store(accepting, Ordering::Relaxed);
    }

    /// Sets or clears what keeps a source (`mqtt`, …) from receiving (a refused login, a lost
    /// connection, backpressure); shown by readiness.
    pub(crate) fn set_source_problem(&self, source: &'static str, problem: Option<String>) {
        let mut problems = self
            .source_problems
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(p) => problems.insert(source, p),
            None => problems.remove(source),
        };
    }

    /// What keeps each source from receiving, by source name.
    pub fn source_problems(&self) -> Vec<(String, String)> {
        self.source_problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    /// Whether sources accept data (false while starting and shutting down).
    pub fn sources_accepting(&self) -> bool {
        self.sources_accepting.load(Ordering::Relaxed)
    }

    /// The pipeline's committed log position.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint.load(Ordering::Relaxed)
    }

    /// Ingest time (ms since the epoch) of the newest fully handled message, 0 if none.
    pub fn last_handled_ms(&self) -> i64 {
        self.last_handled_ms.load(Ordering::Relaxed)
    }

    /// The destination's last outage error, while it lasts.
    pub fn destination_error(&self) -> Option<String> {
        self.destination_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Readiness, adding the log's fullness and the mappings' reload error.
    pub fn readiness(&self, log_full: bool, mapping_error: Option<String>) -> Readiness {
        let mut problems = Vec::new();
        if !self.pipeline_running.load(Ordering::Relaxed) {
            problems.push("the pipeline is not running".to_owned());
        }
        if !self.sources_accepting() {
            problems.push("sources are not accepting data (starting or shutting down)".to_owned());
        }
        for (source, problem) in self.source_problems() {
            problems.push(format!("source {source}: {problem}"));
        }
        if log_full {
            problems.push(
                "the durable log is over log.max_size: sources answer 429 until the pipeline catches up; check the destination"
                    .to_owned(),
            );
        }
        if let Some(e) = self.destination_error() {
            problems.push(format!(
                "the destination is unavailable, writes are being retried: {e}"
            ));
        }
        if let Some(e) = mapping_error {
            problems.push(format!(
                "the last mapping reload failed, the previous mappings stay in force: {e}"
            ));
        }
        Readiness {
            ready: problems.is_empty(),
            problems,
        }
    }
}
