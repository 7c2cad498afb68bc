//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use iomt_log::{Entry, Log, LogConfig, Record, SyncMode};

/// A configuration for tests that do not need real syncs (a killed process keeps page-cache
/// data; only power loss needs fsync).
pub fn fast_config(dir: &Path) -> LogConfig {
    LogConfig {
        sync: SyncMode::Never,
        ..LogConfig::new(dir)
    }
}

/// Small segments, so a few dozen records span several of them.
pub fn small_segments(dir: &Path) -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        ..fast_config(dir)
    }
}

/// Record `i` of a test: its payload and header say which it is; all have the same size.
pub fn numbered(i: u64) -> Record {
    Record::new(
        1_700_000_000_000 + i as i64,
        format!("payload number {i:06}"),
    )
    .with_header("seq", format!("{i:06}"))
}

/// Records `range` of [`numbered`].
pub fn numbered_range(range: std::ops::Range<u64>) -> Vec<Record> {
    range.map(numbered).collect()
}

/// Every durable record from `consumer`'s checkpoint on.
pub async fn read_to_end(log: &Log, consumer: &str) -> Vec<Entry> {
    let mut reader = log.reader(consumer).expect("reader");
    let end = log.stats().end_offset;
    let mut entries = Vec::new();
    while reader.position() < end {
        let batch = reader
            .next_batch(500, Duration::from_secs(5))
            .await
            .expect("read");
        assert!(
            !batch.is_empty(),
            "durable records must be readable at once"
        );
        entries.extend(batch);
    }
    entries
}

/// The segment files in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}
