//! [`LogError`]: every way opening, appending to, reading or checkpointing the log can fail.
//!
//! # What must hold
//! * Messages are lowercase, name the file or directory involved and say what to do. They never
//!   carry record contents (device payloads are health data); consumer names and paths are
//!   configuration, not data, and may appear.
//! * Operating-system errors are classified once, in [`LogError::io`]: a full disk, a missing
//!   permission and a read-only file system each get their own variant, because each has its own
//!   remedy; anything else is [`LogError::Io`] with the action that failed.
//! * Errors are [`Clone`] (I/O causes are shared through [`Arc`]): one failed group commit fails
//!   every append in it with the same cause.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

/// Why a log operation failed.
#[derive(Debug, Clone, Error)]
#[non_exhaustive]
pub enum LogError {
    /// Another process (or another [`Log`](crate::Log) in this process) holds the directory.
    #[error(
        "log directory {dir} is locked by another process (lock file {lock}): stop the other iomt \
         instance, or give this one its own log directory"
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
        /// The lock file inside it.
        lock: PathBuf,
    },

    /// The file system is full (`ENOSPC`, `EDQUOT`).
    #[error(
        "disk full while {action} {path}: free space on that file system or lower the log's \
         max_bytes so backpressure starts earlier, then retry"
    )]
    DiskFull {
        /// What the log was doing, e.g. `writing segment`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The service user may not read or write a file of the log.
    #[error(
        "permission denied while {action} {path}: give the user running iomt read and write access \
         to the log directory and everything in it"
    )]
    PermissionDenied {
        /// What the log was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The log directory is on a read-only file system.
    #[error(
        "read-only file system while {action} {path}: put the log directory on a writable volume"
    )]
    ReadOnly {
        /// What the log was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// Any other operating-system error.
    #[error("i/o error while {action} {path}: {source}")]
    Io {
        /// What the log was doing.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// `fdatasync` failed. After a failed sync the kernel may have dropped the dirty pages, so
    /// nothing written since the last good sync can be trusted: the log refuses further appends
    /// until the process restarts and recovery re-reads the files.
    #[error(
        "fsync of {path} failed ({source}): the log stopped accepting appends because the disk may \
         have lost unsynced data; check the disk, then restart the service (unacknowledged messages \
         are resent by their senders)"
    )]
    SyncFailed {
        /// The segment whose sync failed.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: Arc<io::Error>,
    },

    /// A checkpoint file does not hold a valid checkpoint.
    #[error(
        "checkpoint file {path} of consumer {consumer} is corrupt ({reason}): delete it to make \
         that consumer start again from the oldest retained record"
    )]
    CorruptCheckpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// The consumer it belongs to.
        consumer: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A segment that was complete before the last restart is damaged (not a torn tail, which
    /// recovery repairs): the disk or something other than iomt changed it.
    #[error(
        "segment {path} is corrupt at byte {position} ({reason}): the disk or another program \
         damaged it; restore the log directory from a backup, or move the segment and every later \
         one away to drop the records they hold"
    )]
    CorruptSegment {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the damaged frame in the file.
        position: u64,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The configuration cannot work.
    #[error("invalid log configuration: {reason}")]
    InvalidConfig {
        /// What is wrong and what to change.
        reason: String,
    },

    /// A record cannot be framed (a header name longer than 65,535 bytes, more than 65,535
    /// headers).
    #[error("record {index} of the append cannot be stored: {reason}")]
    InvalidRecord {
        /// Position of the record in the appended batch.
        index: usize,
        /// What is wrong and what to change.
        reason: &'static str,
    },

    /// A record is larger than one group commit may be.
    #[error(
        "record {index} of the append takes {bytes} bytes on disk, more than the log's \
         max_commit_bytes ({limit}): raise max_commit_bytes or split the message"
    )]
    RecordTooLarge {
        /// Position of the record in the appended batch.
        index: usize,
        /// Its framed size.
        bytes: usize,
        /// The configured `max_commit_bytes`.
        limit: usize,
    },

    /// A consumer name that cannot be a file name.
    #[error(
        "invalid consumer name {name:?}: use 1 to 64 ASCII letters, digits, '-', '_' or '.', not \
         starting with '.'"
    )]
    InvalidConsumerName {
        /// The rejected name.
        name: String,
    },

    /// [`Log::commit`](crate::Log::commit) for a consumer that never opened a reader (or was
    /// removed).
    #[error("consumer {name} is not registered: open a reader for it first")]
    UnknownConsumer {
        /// The consumer.
        name: String,
    },

    /// The offset was deleted by retention.
    #[error(
        "offset {offset} is no longer retained (the log starts at {first_offset}): seek to \
         {first_offset} or later"
    )]
    OffsetNotRetained {
        /// The requested offset.
        offset: u64,
        /// The oldest retained offset.
        first_offset: u64,
    },

    /// The offset is past the last durable record.
    #[error(
        "offset {offset} is past the end of the log ({end_offset}): use an offset up to the end"
    )]
    OffsetBeyondEnd {
        /// The requested offset.
        offset: u64,
        /// The offset the next record will get.
        end_offset: u64,
    },

    /// [`Log::close`](crate::Log::close) was called (or the last handle was dropped).
    #[error("the log is closed: open it again to append or commit")]
    Closed,

    /// The writer thread died (a bug): the append's outcome is unknown.
    #[error(
        "the log writer thread stopped unexpectedly (a bug in iomt-log): restart the service; \
         unacknowledged messages are resent by their senders"
    )]
    WriterStopped,
}

impl LogError {
    /// Classifies an operating-system error from `action` on `path`.
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        let source = Arc::new(source);
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => LogError::DiskFull {
                action,
                path,
                source,
            },
            io::ErrorKind::PermissionDenied => LogError::PermissionDenied {
                action,
                path,
                source,
            },
            io::ErrorKind::ReadOnlyFilesystem => LogError::ReadOnly {
                action,
                path,
                source,
            },
            _ => LogError::Io {
                action,
                path,
                source,
            },
        }
    }

    /// Whether the same call may succeed later without a restart: a full disk can be freed and
    /// an I/O hiccup may pass, so the sender should be told to retry (HTTP 503 rather than 500).
    /// Everything else needs a change of data, configuration or process first.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::DiskFull { .. } | LogError::Io { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_are_classified_by_remedy() {
        let full = LogError::io(
            "writing segment",
            "/x",
            io::Error::from(io::ErrorKind::StorageFull),
        );
        assert!(matches!(full, LogError::DiskFull { .. }));
        assert!(full.is_transient());
        assert!(
            full.to_string()
                .starts_with("disk full while writing segment /x")
        );

        let denied = LogError::io(
            "creating",
            "/x",
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(matches!(denied, LogError::PermissionDenied { .. }));
        assert!(!denied.is_transient());

        let read_only = LogError::io(
            "creating",
            "/x",
            io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
        );
        assert!(matches!(read_only, LogError::ReadOnly { .. }));

        let other = LogError::io("reading", "/x", io::Error::other("boom"));
        assert!(matches!(other, LogError::Io { .. }));
        assert_eq!(other.to_string(), "i/o error while reading /x: boom");
    }
}
