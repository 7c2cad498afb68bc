//! [`LogConfig`]: where the log lives, how large segments and commits get, how much it may
//! retain before it asks sources to slow down, and whether it syncs.

use std::path::PathBuf;

use crate::error::LogError;
use crate::frame::SEGMENT_HEADER_LEN;

/// Whether appends wait for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// Every group commit ends with `fdatasync`, and checkpoints, segment creation and deletion
    /// sync their directory: an acknowledged record survives power loss. The only mode for
    /// production.
    #[default]
    Fsync,
    /// Nothing is synced. Records still survive a killed process (they are in the kernel's page
    /// cache) but not a power cut or kernel crash. For benchmarks and tests only.
    Never,
}

/// How to open a [`Log`](crate::Log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The directory holding segments, checkpoints and the lock file; created if missing. One
    /// process at a time may use it.
    pub dir: PathBuf,
    /// A segment is closed and a new one started once the next record would take it past this
    /// size (a single record larger than this gets a segment of its own). Retention deletes
    /// whole segments, so this is also the granularity of reclaiming space. Default 64 MiB.
    pub segment_bytes: u64,
    /// Retained bytes above which [`Log::is_full`](crate::Log::is_full) is true. Appends are
    /// still accepted: this is a signal for backpressure, not a hard limit. Default 1 GiB.
    pub max_bytes: u64,
    /// Whether to sync. Default [`SyncMode::Fsync`].
    pub sync: SyncMode,
    /// The most framed bytes one group commit writes (one `write` plus one `fdatasync`); appends
    /// beyond it wait for the next commit. A single append larger than this is written alone;
    /// a single record larger than this is refused. Default 4 MiB.
    pub max_commit_bytes: usize,
}

impl LogConfig {
    /// Defaults: 64 MiB segments, 1 GiB before backpressure, fsync on, 4 MiB per commit.
    pub fn new(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_bytes: 64 * 1024 * 1024,
            max_bytes: 1024 * 1024 * 1024,
            sync: SyncMode::Fsync,
            max_commit_bytes: 4 * 1024 * 1024,
        }
    }

    /// Rejects settings that cannot work.
    pub(crate) fn validate(&self) -> Result<(), LogError> {
        let invalid = |reason: String| Err(LogError::InvalidConfig { reason });
        if self.segment_bytes < 4 * SEGMENT_HEADER_LEN {
            return invalid(format!(
                "segment_bytes is {}; use at least {} (64 MiB is the default)",
                self.segment_bytes,
                4 * SEGMENT_HEADER_LEN
            ));
        }
        if self.max_commit_bytes < 1024 {
            return invalid(format!(
                "max_commit_bytes is {}; use at least 1024 (4 MiB is the default)",
                self.max_commit_bytes
            ));
        }
        if self.max_bytes == 0 {
            return invalid("max_bytes is 0; use a positive size (1 GiB is the default)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let config = LogConfig::new("/var/lib/iomt/log");
        assert_eq!(config.segment_bytes, 64 << 20);
        assert_eq!(config.max_bytes, 1 << 30);
        assert_eq!(config.max_commit_bytes, 4 << 20);
        assert_eq!(config.sync, SyncMode::Fsync);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_fix() {
        let tiny_segments = LogConfig {
            segment_bytes: 10,
            ..LogConfig::new("x")
        };
        let error = tiny_segments.validate().expect_err("too small");
        assert_eq!(
            error.to_string(),
            "invalid log configuration: segment_bytes is 10; use at least 64 (64 MiB is the default)"
        );
        let tiny_commits = LogConfig {
            max_commit_bytes: 10,
            ..LogConfig::new("x")
        };
        assert!(tiny_commits.validate().is_err());
        let no_room = LogConfig {
            max_bytes: 0,
            ..LogConfig::new("x")
        };
        assert!(no_room.validate().is_err());
    }
}
