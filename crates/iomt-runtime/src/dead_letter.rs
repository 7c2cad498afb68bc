//! Redriving dead letters: putting stored failures back into the pipeline after the mapping
//! or the server was fixed.
//!
//! A message that failed normalization goes back as the message it was (same body, same
//! properties); a group that failed grouping or persisting goes back as its measurements
//! (wire format), which skip normalization and are grouped again.
//!
//! What must hold: an entry leaves the store only after its record is durable in the log, so
//! a crash during a redrive can duplicate an entry (harmless: writes are idempotent) but never
//! lose one.

use bytes::Bytes;
use chrono::Utc;
use iomt_log::Log;
use iomt_store::{DeadLetter, DeadLetterFilter, DeadLetterStore};
use serde::Serialize;

use crate::error::RuntimeError;
use crate::event::DeviceEvent;

/// What a redrive did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RedriveReport {
    /// Entries put back into the log and removed from the store.
    pub redriven: u64,
}

/// The log record that replays `entry`: the message (or measurements) as stored, with the
/// headers it had, from the source `redrive`.
pub fn event_of(entry: &DeadLetter) -> DeviceEvent {
    let mut event = DeviceEvent::from_headers(
        Bytes::from(entry.payload.clone()),
        entry
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_bytes())),
    );
    event.source = "redrive".to_owned();
    event
}

/// Redrives every entry matching `filter` (its `limit` bounds the total), in pages.
///
/// # Errors
/// The store or the log failed; entries redriven before the failure are reported as such by
/// their absence from the store.
pub async fn redrive(
    store: &DeadLetterStore,
    log: &Log,
    filter: &DeadLetterFilter,
) -> Result<RedriveReport, RuntimeError> {
    const PAGE: usize = 500;
    let mut report = RedriveReport::default();
    let mut remaining = filter.limit.unwrap_or(usize::MAX);
    let mut after = filter.after_id;
    while remaining > 0 {
        let page = DeadLetterFilter {
            after_id: after,
            limit: Some(remaining.min(PAGE)),
            ..filter.clone()
        };
        let summaries = store.list(&page)?;
        if summaries.is_empty() {
            break;
        }
        after = summaries.last().map(|s| s.id);
        let mut ids = Vec::with_capacity(summaries.len());
        let mut records = Vec::with_capacity(summaries.len());
        let now = Utc::now().timestamp_millis();
        for summary in &summaries {
            if let Some(entry) = store.get(summary.id)? {
                records.push(event_of(&entry).into_record(now));
                ids.push(entry.id);
            }
        }
        if !records.is_empty() {
            log.append(records).await?;
            report.redriven += store.remove(&ids)?;
        }
        remaining = remaining.saturating_sub(summaries.len());
    }
    Ok(report)
}
