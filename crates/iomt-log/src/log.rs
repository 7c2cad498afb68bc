//! [`Log`]: opening and recovery, appends, consumer registration and checkpoints, retention,
//! statistics and shutdown.
//!
//! # What must hold
//! * One process per directory: `open` takes an exclusive lock on `LOCK` and keeps it until
//!   the log is closed or its last handle is dropped.
//! * The shared [`State`] changes only under its mutex, and the writer publishes a commit's
//!   segment length and durable end together, so a reader never sees an end offset whose bytes
//!   are not yet in the segment length it is allowed to read.
//! * Checkpoint writes, consumer registration, removal and retention are serialized by one
//!   mutex (`checkpoint_io`), so retention always sees every consumer's latest checkpoint.
//! * Retention deletes only sealed segments whose every record is below every consumer's
//!   checkpoint, oldest first, and stops at the first failure, so the retained segments always
//!   form one gap-free range of offsets. With no consumer registered nothing is deleted.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::checkpoint::{self, sync_dir};
use crate::config::{LogConfig, SyncMode};
use crate::error::LogError;
use crate::frame::{self, SEGMENT_HEADER_LEN};
use crate::reader::LogReader;
use crate::record::Record;
use crate::segment;
use crate::writer::{Active, Completion, PendingAppend, Queue, Writer};

/// Name of the lock file in the log directory.
pub(crate) const LOCK_FILE: &str = "LOCK";
/// Name of the checkpoint directory in the log directory.
pub(crate) const CONSUMERS_DIR: &str = "consumers";

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent
/// before it can panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One segment as readers and retention see it.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Durable length in bytes: readers may read up to here.
    pub(crate) len: u64,
    /// The base of the next segment once this one is sealed; `None` for the active segment.
    pub(crate) end: Option<u64>,
}

/// What readers, retention and statistics share with the writer.
pub(crate) struct State {
    /// Oldest first; the last one is the active segment. Never empty.
    pub(crate) segments: VecDeque<SegmentMeta>,
    /// The offset the next record gets; everything below it is durable.
    pub(crate) end_offset: u64,
    /// Registered consumers and the offset each will read next.
    pub(crate) consumers: BTreeMap<String, u64>,
    pub(crate) records_appended: u64,
    pub(crate) commits: u64,
    pub(crate) torn_records_skipped: u64,
    pub(crate) torn_bytes_truncated: u64,
}

impl State {
    pub(crate) fn first_offset(&self) -> u64 {
        self.segments.front().expect("never empty").base
    }
}

/// Everything a [`Log`], its readers and its writer thread share.
pub(crate) struct Shared {
    pub(crate) config: LogConfig,
    pub(crate) consumers_dir: PathBuf,
    pub(crate) state: Mutex<State>,
    pub(crate) queue: Mutex<Queue>,
    pub(crate) queue_ready: Condvar,
    /// The durable end offset, for readers waiting for new records.
    pub(crate) durable: watch::Sender<u64>,
    pub(crate) retained_bytes: AtomicU64,
    poisoned: AtomicBool,
    poison: Mutex<Option<LogError>>,
    closed: AtomicBool,
    checkpoint_io: Mutex<()>,
}

impl Shared {
    fn sync(&self) -> bool {
        self.config.sync == SyncMode::Fsync
    }

    /// Stops all further appends with `error`.
    pub(crate) fn poison(&self, error: LogError) {
        let mut poison = lock(&self.poison);
        if poison.is_none() {
            *poison = Some(error);
        }
        self.poisoned.store(true, Ordering::Release);
    }

    pub(crate) fn poison_error(&self) -> Option<LogError> {
        if self.poisoned.load(Ordering::Acquire) {
            lock(&self.poison).clone()
        } else {
            None
        }
    }

    fn ensure_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    /// Deletes sealed segments every consumer has moved past. Call with `checkpoint_io` held.
    fn apply_retention(&self) {
        let doomed: Vec<SegmentMeta> = {
            let mut state = lock(&self.state);
            let Some(&low) = state.consumers.values().min() else {
                return;
            };
            let mut doomed = Vec::new();
            while let Some(front) = state.segments.front()
                && front.end.is_some_and(|end| end <= low)
            {
                doomed.push(state.segments.pop_front().expect("front exists"));
            }
            doomed
        };
        if doomed.is_empty() {
            return;
        }
        let mut deleted = 0;
        let mut freed = 0;
        for segment in &doomed {
            if let Err(error) = fs::remove_file(&segment.path)
                && error.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(
                    segment = %segment.path.display(),
                    error = %error,
                    "could not delete a consumed log segment; retrying after the next commit"
                );
                break;
            }
            deleted += 1;
            freed += segment.len;
        }
        if deleted < doomed.len() {
            // Put the survivors back in front, oldest first, so the retained range stays whole.
            let mut state = lock(&self.state);
            for segment in doomed[deleted..].iter().rev() {
                state.segments.push_front(segment.clone());
            }
        }
        self.retained_bytes.fetch_sub(freed, Ordering::Relaxed);
        tracing::debug!(
            segments = deleted,
            bytes = freed,
            "consumed log segments deleted"
        );
        if self.sync()
            && let Err(error) = sync_dir(&self.config.dir)
        {
            tracing::warn!(error = %error, "could not sync the log directory after deleting segments");
        }
    }
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recovery {
    /// The oldest retained offset.
    pub first_offset: u64,
    /// The offset the next record gets.
    pub end_offset: u64,
    /// Intact records retained: `end_offset - first_offset`.
    pub records: u64,
    /// Segment files retained.
    pub segments: usize,
    /// Bytes cut off the end of the last segment (a torn write, or damage at the tail).
    pub torn_bytes_truncated: u64,
    /// Frames, whole or partial, in those bytes. A torn write is one; damage in the middle of
    /// the last segment also drops the intact frames after it.
    pub torn_records_skipped: u64,
    /// Registered consumers.
    pub consumers: usize,
}

/// A consumer and its checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerCheckpoint {
    /// The consumer's name.
    pub name: String,
    /// The offset it reads next after a restart.
    pub next_offset: u64,
}

/// A snapshot of the log for metrics and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogStats {
    /// The oldest retained offset.
    pub first_offset: u64,
    /// The offset the next record gets; every record below it is durable.
    pub end_offset: u64,
    /// Segment files retained.
    pub segments: usize,
    /// Bytes in those segments.
    pub retained_bytes: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Group commits (each one write and, with [`SyncMode::Fsync`], one `fdatasync`) since open.
    pub commits: u64,
    /// Frames cut off by recovery at open.
    pub torn_records_skipped: u64,
    /// Bytes cut off by recovery at open.
    pub torn_bytes_truncated: u64,
    /// Registered consumers, by name.
    pub consumers: Vec<ConsumerCheckpoint>,
}

/// Owns the writer thread and the directory lock; dropped with the last [`Log`] clone.
struct Handle {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
    lock_file: Mutex<Option<File>>,
}

impl Handle {
    /// Stops accepting appends and tells the writer to finish the queue.
    fn begin_close(&self) -> Option<JoinHandle<()>> {
        self.shared.closed.store(true, Ordering::Release);
        lock(&self.shared.queue).closing = true;
        self.shared.queue_ready.notify_all();
        lock(&self.writer).take()
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(writer) = self.begin_close() {
            // Drains at most what is queued: one or a few group commits.
            let _ = writer.join();
        }
    }
}

/// The embedded durable log. Cheap to clone; every clone is the same log.
#[derive(Clone)]
pub struct Log {
    handle: Arc<Handle>,
}

// Sources share one log across tasks and threads; readers move into pipeline tasks.
const _: () = {
    const fn shareable<T: Send + Sync>() {}
    const fn movable<T: Send>() {}
    shareable::<Log>();
    movable::<LogReader>();
};

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.handle.shared.config.dir)
            .finish_non_exhaustive()
    }
}

impl Log {
    /// Opens (or creates) the log in `config.dir`: takes the directory lock, recovers the last
    /// segment (cutting off a torn tail), loads the checkpoints and starts the writer thread.
    pub fn open(config: LogConfig) -> Result<(Log, Recovery), LogError> {
        config.validate()?;
        let sync = config.sync == SyncMode::Fsync;
        let dir = config.dir.clone();
        let created = !dir.exists();
        fs::create_dir_all(&dir).map_err(|e| LogError::io("creating log directory", &dir, e))?;
        if created
            && sync
            && let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty())
        {
            // The directory's own entry must survive a power cut too.
            sync_dir(parent)?;
        }
        let lock_file = take_lock(&dir)?;
        let consumers_dir = dir.join(CONSUMERS_DIR);
        fs::create_dir_all(&consumers_dir)
            .map_err(|e| LogError::io("creating checkpoint directory", &consumers_dir, e))?;
        if sync {
            sync_dir(&dir)?;
        }

        let (mut state, active) = recover_segments(&dir, sync)?;
        state.consumers = checkpoint::load_all(&consumers_dir)?;
        clamp_checkpoints(&mut state, &consumers_dir, sync)?;

        let retained = state.segments.iter().map(|s| s.len).sum();
        let recovery = Recovery {
            first_offset: state.first_offset(),
            end_offset: state.end_offset,
            records: state.end_offset - state.first_offset(),
            segments: state.segments.len(),
            torn_bytes_truncated: state.torn_bytes_truncated,
            torn_records_skipped: state.torn_records_skipped,
            consumers: state.consumers.len(),
        };
        let end_offset = state.end_offset;
        let shared = Arc::new(Shared {
            config,
            consumers_dir,
            state: Mutex::new(state),
            queue: Mutex::new(Queue::default()),
            queue_ready: Condvar::new(),
            durable: watch::Sender::new(end_offset),
            retained_bytes: AtomicU64::new(retained),
            poisoned: AtomicBool::new(false),
            poison: Mutex::new(None),
            closed: AtomicBool::new(false),
            checkpoint_io: Mutex::new(()),
        });
        {
            // Segments left behind by a crash between a checkpoint and its deletions.
            let _io = lock(&shared.checkpoint_io);
            shared.apply_retention();
        }
        let writer = Writer::new(Arc::clone(&shared), active, end_offset);
        let writer = std::thread::Builder::new()
            .name("iomt-log-writer".into())
            .spawn(move || writer.run())
            .map_err(|e| LogError::io("starting the writer thread for", &dir, e))?;
        tracing::info!(
            dir = %dir.display(),
            first_offset = recovery.first_offset,
            end_offset = recovery.end_offset,
            segments = recovery.segments,
            torn_bytes = recovery.torn_bytes_truncated,
            consumers = recovery.consumers,
            "log opened"
        );
        let log = Log {
            handle: Arc::new(Handle {
                shared,
                writer: Mutex::new(Some(writer)),
                lock_file: Mutex::new(Some(lock_file)),
            }),
        };
        Ok((log, recovery))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.shared().config.dir
    }

    /// Appends `records` and resolves with their offsets once they are durable: written and
    /// `fdatasync`ed, together with every other append that was waiting (group commit).
    ///
    /// The records of one append get consecutive offsets. An empty append resolves at once
    /// with an empty range at the current end. Dropping the future does not withdraw the
    /// records: they may still be written. If it fails, some of the records may still have
    /// been made durable (at-least-once: the sender retries, and the pipeline's writes are
    /// idempotent).
    pub async fn append(&self, records: Vec<Record>) -> Result<Range<u64>, LogError> {
        let (sender, receiver) = oneshot::channel();
        if let Some(empty) = self.submit(records, Completion::Async(sender))? {
            return Ok(empty);
        }
        receiver.await.unwrap_or(Err(LogError::WriterStopped))
    }

    /// [`append`](Log::append) for threads outside the async runtime: blocks the calling
    /// thread until the records are durable.
    pub fn append_blocking(&self, records: Vec<Record>) -> Result<Range<u64>, LogError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        if let Some(empty) = self.submit(records, Completion::Blocking(sender))? {
            return Ok(empty);
        }
        receiver.recv().unwrap_or(Err(LogError::WriterStopped))
    }

    /// Checks and queues an append; returns the range at once for an empty one.
    fn submit(
        &self,
        records: Vec<Record>,
        done: Completion,
    ) -> Result<Option<Range<u64>>, LogError> {
        let shared = self.shared();
        if records.is_empty() {
            shared.ensure_open()?;
            let end = lock(&shared.state).end_offset;
            return Ok(Some(end..end));
        }
        let limit = shared.config.max_commit_bytes;
        let mut frame_bytes = 0;
        for (index, record) in records.iter().enumerate() {
            let bytes = frame::check_record(record)
                .map_err(|reason| LogError::InvalidRecord { index, reason })?;
            if bytes > limit {
                return Err(LogError::RecordTooLarge {
                    index,
                    bytes,
                    limit,
                });
            }
            frame_bytes += bytes;
        }
        if let Some(error) = shared.poison_error() {
            return Err(error);
        }
        let wake_writer = {
            let mut queue = lock(&shared.queue);
            if queue.closing {
                return Err(LogError::Closed);
            }
            queue.appends.push_back(PendingAppend {
                records,
                frame_bytes,
                done,
            });
            queue.take_wake_up()
        };
        if wake_writer {
            shared.queue_ready.notify_one();
        }
        Ok(None)
    }

    /// A reader for `consumer`, starting at its checkpoint. A consumer seen for the first time
    /// is registered (its checkpoint file is written and synced) at the oldest retained
    /// offset; from then on retention keeps every record it has not committed past, until
    /// [`remove_consumer`](Log::remove_consumer). Several readers may exist for one consumer;
    /// each has its own position, and the checkpoint is whatever was last committed.
    pub fn reader(&self, consumer: &str) -> Result<LogReader, LogError> {
        let shared = self.shared();
        shared.ensure_open()?;
        checkpoint::validate_name(consumer)?;
        let _io = lock(&shared.checkpoint_io);
        let (known, first) = {
            let state = lock(&shared.state);
            (state.consumers.get(consumer).copied(), state.first_offset())
        };
        let position = match known {
            Some(position) => position,
            None => {
                checkpoint::write(&shared.consumers_dir, consumer, first, shared.sync())?;
                lock(&shared.state)
                    .consumers
                    .insert(consumer.to_owned(), first);
                tracing::info!(consumer, next_offset = first, "log consumer registered");
                first
            }
        };
        Ok(LogReader::new(Arc::clone(shared), consumer, position))
    }

    /// Durably records that `consumer` has finished every record below `next_offset`, then
    /// deletes the segments every consumer has moved past.
    ///
    /// The checkpoint may move backwards (to replay), but not below the oldest retained offset
    /// nor past the durable end.
    ///
    /// This blocks the calling thread for two syncs (the file and its directory, a few
    /// milliseconds). Commit once per processed batch, not per record, and from async code
    /// prefer `tokio::task::spawn_blocking` (the log is cheap to clone into it).
    pub fn commit(&self, consumer: &str, next_offset: u64) -> Result<(), LogError> {
        let shared = self.shared();
        shared.ensure_open()?;
        checkpoint::validate_name(consumer)?;
        let _io = lock(&shared.checkpoint_io);
        {
            let state = lock(&shared.state);
            if !state.consumers.contains_key(consumer) {
                return Err(LogError::UnknownConsumer {
                    name: consumer.to_owned(),
                });
            }
            check_offset(&state, next_offset)?;
        }
        checkpoint::write(&shared.consumers_dir, consumer, next_offset, shared.sync())?;
        lock(&shared.state)
            .consumers
            .insert(consumer.to_owned(), next_offset);
        shared.apply_retention();
        Ok(())
    }

    /// The checkpoint of `consumer`, if it is registered.
    pub fn committed(&self, consumer: &str) -> Option<u64> {
        lock(&self.shared().state).consumers.get(consumer).copied()
    }

    /// Unregisters `consumer` (deletes its checkpoint) so it no longer holds back retention.
    pub fn remove_consumer(&self, consumer: &str) -> Result<(), LogError> {
        let shared = self.shared();
        shared.ensure_open()?;
        checkpoint::validate_name(consumer)?;
        let _io = lock(&shared.checkpoint_io);
        if !lock(&shared.state).consumers.contains_key(consumer) {
            return Err(LogError::UnknownConsumer {
                name: consumer.to_owned(),
            });
        }
        checkpoint::remove(&shared.consumers_dir, consumer, shared.sync())?;
        lock(&shared.state).consumers.remove(consumer);
        tracing::info!(consumer, "log consumer removed");
        shared.apply_retention();
        Ok(())
    }

    /// Whether the log retains more than `max_bytes`: sources should refuse new messages
    /// (HTTP 429, withheld MQTT acknowledgements) until consumers catch up.
    pub fn is_full(&self) -> bool {
        self.shared().retained_bytes.load(Ordering::Relaxed) > self.shared().config.max_bytes
    }

    /// A snapshot of offsets, sizes, counters and checkpoints.
    pub fn stats(&self) -> LogStats {
        let shared = self.shared();
        let state = lock(&shared.state);
        LogStats {
            first_offset: state.first_offset(),
            end_offset: state.end_offset,
            segments: state.segments.len(),
            retained_bytes: shared.retained_bytes.load(Ordering::Relaxed),
            records_appended: state.records_appended,
            commits: state.commits,
            torn_records_skipped: state.torn_records_skipped,
            torn_bytes_truncated: state.torn_bytes_truncated,
            consumers: state
                .consumers
                .iter()
                .map(|(name, &next_offset)| ConsumerCheckpoint {
                    name: name.clone(),
                    next_offset,
                })
                .collect(),
        }
    }

    /// Stops accepting appends (on every clone), waits until every queued append is durable
    /// and acknowledged, and releases the directory lock. Readers already open keep reading
    /// what is durable.
    pub async fn close(self) -> Result<(), LogError> {
        let writer = self.handle.begin_close();
        let result = match writer {
            Some(writer) => match tokio::task::spawn_blocking(move || writer.join()).await {
                Ok(Ok(())) => Ok(()),
                _ => Err(LogError::WriterStopped),
            },
            None => Ok(()),
        };
        lock(&self.handle.lock_file).take();
        result
    }
}

/// Checks that `offset` is a position a consumer may be at.
pub(crate) fn check_offset(state: &State, offset: u64) -> Result<(), LogError> {
    let first_offset = state.first_offset();
    if offset < first_offset {
        return Err(LogError::OffsetNotRetained {
            offset,
            first_offset,
        });
    }
    if offset > state.end_offset {
        return Err(LogError::OffsetBeyondEnd {
            offset,
            end_offset: state.end_offset,
        });
    }
    Ok(())
}

fn take_lock(dir: &Path) -> Result<File, LogError> {
    let lock = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(|e| LogError::io("opening lock file", &lock, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(LogError::Locked {
            dir: dir.to_owned(),
            lock,
        }),
        Err(TryLockError::Error(e)) => Err(LogError::io("locking", &lock, e)),
    }
}

/// Lists the segments, checks the sealed ones' headers and recovers the last one.
fn recover_segments(dir: &Path, sync: bool) -> Result<(State, Active), LogError> {
    let listed = segment::list(dir)?;
    let mut segments = VecDeque::with_capacity(listed.len().max(1));
    for pair in listed.windows(2) {
        let ((base, path), (next_base, _)) = (&pair[0], &pair[1]);
        let len = segment::check_sealed(path, *base)?;
        segments.push_back(SegmentMeta {
            base: *base,
            path: path.clone(),
            len,
            end: Some(*next_base),
        });
    }
    let (active, end_offset, torn_bytes, torn_records) = match listed.last() {
        Some((base, path)) => {
            let tail = segment::recover_tail(path, *base, sync)?;
            let active = Active {
                base: *base,
                path: path.clone(),
                file: tail.file,
                len: tail.len,
            };
            (active, tail.end_offset, tail.torn_bytes, tail.torn_records)
        }
        None => {
            let (path, file) = segment::create(dir, 0, sync)?;
            let active = Active {
                base: 0,
                path,
                file,
                len: SEGMENT_HEADER_LEN,
            };
            (active, 0, 0, 0)
        }
    };
    segments.push_back(SegmentMeta {
        base: active.base,
        path: active.path.clone(),
        len: active.len,
        end: None,
    });
    let state = State {
        segments,
        end_offset,
        consumers: BTreeMap::new(),
        records_appended: 0,
        commits: 0,
        torn_records_skipped: torn_records,
        torn_bytes_truncated: torn_bytes,
    };
    Ok((state, active))
}

/// Pulls checkpoints back inside the retained range. A checkpoint past the end means recovery
/// cut records the consumer had already read (damage at the tail): new records will reuse those
/// offsets and must not be skipped. One before the start means segments were removed by hand.
fn clamp_checkpoints(state: &mut State, consumers_dir: &Path, sync: bool) -> Result<(), LogError> {
    let (first, end) = (state.first_offset(), state.end_offset);
    for (name, next_offset) in state.consumers.iter_mut() {
        let clamped = (*next_offset).clamp(first, end);
        if clamped != *next_offset {
            tracing::warn!(
                consumer = %name,
                checkpoint = *next_offset,
                first_offset = first,
                end_offset = end,
                moved_to = clamped,
                "log consumer checkpoint is outside the retained records; moving it inside"
            );
            checkpoint::write(consumers_dir, name, clamped, sync)?;
            *next_offset = clamped;
        }
    }
    Ok(())
}
