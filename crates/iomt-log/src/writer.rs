//! The writer thread: group commit.
//!
//! Appends are queued by any number of callers. One dedicated thread takes everything queued
//! (up to `max_commit_bytes`), frames it into one buffer, writes it with one positioned write,
//! calls `fdatasync` once, publishes the new durable end, and only then completes every append
//! in the group. While it waits for the disk, new appends queue up and form the next group, so
//! the number of syncs per second stays near the disk's sync rate while the records per sync
//! grow with the number of concurrent appenders. Under load the writer lingers briefly so that
//! appenders acknowledged by the previous commit can join the next one (see
//! `Writer::next_group`); a lone appender never waits.
//!
//! # What must hold
//! * An append completes with `Ok` only after the bytes of all its records were written and
//!   synced (in [`SyncMode::Fsync`](crate::SyncMode::Fsync)) and the durable end was published.
//! * Offsets are assigned here, in queue order, from the durable end: a failed write gives
//!   back the offsets of the records it did not make durable, and the bytes it wrote are
//!   truncated away before anything else is written.
//! * A failed `fdatasync` poisons the log: the kernel may have dropped the dirty pages and
//!   marked them clean, so neither the file nor a retry can be trusted until recovery re-reads
//!   the file after a restart.
//! * Before a new segment is created, the current one is synced; so only the last segment can
//!   ever have a torn tail (see the `segment` module).

use std::collections::VecDeque;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::error::LogError;
use crate::frame::{self, SEGMENT_HEADER_LEN};
use crate::log::{SegmentMeta, Shared, lock};
use crate::record::Record;
use crate::segment;

/// What an append resolves to.
pub(crate) type AppendResult = Result<Range<u64>, LogError>;

/// How the writer tells an appender its outcome.
pub(crate) enum Completion {
    /// [`Log::append`](crate::Log::append).
    Async(oneshot::Sender<AppendResult>),
    /// [`Log::append_blocking`](crate::Log::append_blocking).
    Blocking(mpsc::SyncSender<AppendResult>),
}

impl Completion {
    fn complete(self, result: AppendResult) {
        // An appender that stopped waiting (a dropped future) is not an error: its records are
        // durable or not exactly as for anyone else.
        match self {
            Completion::Async(sender) => {
                let _ = sender.send(result);
            }
            Completion::Blocking(sender) => {
                let _ = sender.send(result);
            }
        }
    }
}

/// One queued append.
pub(crate) struct PendingAppend {
    pub(crate) records: Vec<Record>,
    /// Their framed size, for the commit cap.
    pub(crate) frame_bytes: usize,
    pub(crate) done: Completion,
}

/// Appends waiting for the writer.
#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) appends: VecDeque<PendingAppend>,
    /// Set by close: drain what is queued, then stop.
    pub(crate) closing: bool,
    /// The writer is asleep on `queue_ready` and must be woken once the queue holds more than
    /// `wake_at` appends. While it is busy it looks at the queue again before sleeping, so
    /// appenders skip the wake-up (a futex call each).
    pub(crate) writer_waiting: bool,
    /// See `writer_waiting`: 0 normally, the number of appends the writer lingers for otherwise.
    pub(crate) wake_at: usize,
}

impl Queue {
    /// Called by an appender after queueing: whether it must wake the writer.
    pub(crate) fn take_wake_up(&mut self) -> bool {
        let wake = self.writer_waiting && self.appends.len() >= self.wake_at;
        if wake {
            self.writer_waiting = false;
        }
        wake
    }
}

/// The segment being appended to.
pub(crate) struct Active {
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// Durable length: everything before it is synced, intact frames.
    pub(crate) len: u64,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    active: Active,
    /// Offset of the next record; everything before it is durable.
    end_offset: u64,
    /// Frames of the commit being built.
    buffer: Vec<u8>,
    /// Records framed into `buffer`.
    buffered_records: u64,
    /// Appends in the previous group, and how long its sync took: the linger heuristic.
    last_group_appends: usize,
    last_sync: Duration,
}

/// The longest the writer waits for stragglers before a commit.
const MAX_LINGER: Duration = Duration::from_millis(1);

impl Writer {
    pub(crate) fn new(shared: Arc<Shared>, active: Active, end_offset: u64) -> Writer {
        Writer {
            shared,
            active,
            end_offset,
            buffer: Vec::new(),
            buffered_records: 0,
            last_group_appends: 0,
            last_sync: Duration::ZERO,
        }
    }

    /// Commits groups until the log closes and the queue is empty.
    pub(crate) fn run(mut self) {
        while let Some(group) = self.next_group() {
            self.commit(group);
        }
        tracing::debug!(end_offset = self.end_offset, "log writer stopped");
    }

    /// Waits for appends and takes as many as fit in one commit (always at least one).
    ///
    /// Under load it lingers briefly first. Appenders that wait for each acknowledgement
    /// (HTTP requests, the benchmark's tasks) come back a few hundred microseconds after their
    /// group completes; without a pause the writer would commit the first few alone and the
    /// rest one sync later, halving the records per sync. So when the previous group held
    /// several appends and fewer are queued now, the writer waits until as many are queued,
    /// for at most a quarter of the last sync's duration (and never more than 1 ms). A lone
    /// appender never waits: its previous group held one append.
    fn next_group(&mut self) -> Option<Vec<PendingAppend>> {
        let limit = self.shared.config.max_commit_bytes;
        let ready = &self.shared.queue_ready;
        let mut queue = lock(&self.shared.queue);
        while queue.appends.is_empty() {
            if queue.closing {
                return None;
            }
            queue.writer_waiting = true;
            queue = ready.wait(queue).unwrap_or_else(PoisonError::into_inner);
            queue.writer_waiting = false;
        }
        let target = self.last_group_appends;
        let linger = (self.last_sync / 4).min(MAX_LINGER);
        if target > 1 && queue.appends.len() < target && !linger.is_zero() {
            let deadline = Instant::now() + linger;
            queue.wake_at = target;
            while queue.appends.len() < target && !queue.closing {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                    break;
                };
                queue.writer_waiting = true;
                queue = ready
                    .wait_timeout(queue, left)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                queue.writer_waiting = false;
            }
            queue.wake_at = 0;
        }
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queue.appends.front() {
            if !group.is_empty() && bytes + next.frame_bytes > limit {
                break;
            }
            bytes += next.frame_bytes;
            group.push(queue.appends.pop_front().expect("front exists"));
        }
        self.last_group_appends = group.len();
        Some(group)
    }

    fn commit(&mut self, group: Vec<PendingAppend>) {
        if let Some(error) = self.shared.poison_error() {
            for append in group {
                append.done.complete(Err(error.clone()));
            }
            return;
        }
        let segment_bytes = self.shared.config.segment_bytes;
        let mut next = self.end_offset;
        let mut ranges = Vec::with_capacity(group.len());
        let mut failure = None;
        'group: for append in &group {
            let start = next;
            for record in &append.records {
                let used = self.active.len + self.buffer.len() as u64;
                let full = used > SEGMENT_HEADER_LEN
                    && used + frame::frame_len(record) as u64 > segment_bytes;
                if full && let Err(error) = self.flush().and_then(|()| self.roll()) {
                    failure = Some(error);
                    break 'group;
                }
                frame::encode(record, next, &mut self.buffer);
                self.buffered_records += 1;
                next += 1;
            }
            ranges.push(start..next);
        }
        if failure.is_none() {
            failure = self.flush().err();
        }
        self.buffer.clear();
        self.buffered_records = 0;

        for (index, append) in group.into_iter().enumerate() {
            let result = match ranges.get(index) {
                Some(range) if range.end <= self.end_offset => Ok(range.clone()),
                _ => Err(failure.clone().unwrap_or(LogError::WriterStopped)),
            };
            append.done.complete(result);
        }
    }

    /// Writes and syncs the buffer, then publishes the new durable end.
    fn flush(&mut self) -> Result<(), LogError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let active = &self.active;
        if let Err(error) = active.file.write_all_at(&self.buffer, active.len) {
            let error = LogError::io("writing segment", &active.path, error);
            self.buffer.clear();
            self.buffered_records = 0;
            // Cut off whatever part of the write landed, so the next commit starts at a frame
            // boundary with the offsets this one gives back.
            if let Err(truncate) = active.file.set_len(active.len) {
                self.shared.poison(LogError::io(
                    "truncating segment after a failed write",
                    &active.path,
                    truncate,
                ));
            }
            return Err(error);
        }
        let sync_started = Instant::now();
        if self.shared.config.sync == crate::SyncMode::Fsync
            && let Err(error) = active.file.sync_data()
        {
            let error = LogError::SyncFailed {
                path: active.path.clone(),
                source: Arc::new(error),
            };
            tracing::error!(error = %error, "log poisoned");
            self.shared.poison(error.clone());
            self.buffer.clear();
            self.buffered_records = 0;
            return Err(error);
        }
        self.last_sync = sync_started.elapsed();
        let written = self.buffer.len() as u64;
        self.active.len += written;
        self.end_offset += self.buffered_records;
        {
            let mut state = lock(&self.shared.state);
            let segment = state
                .segments
                .back_mut()
                .expect("the active segment is listed");
            debug_assert_eq!(segment.base, self.active.base);
            segment.len = self.active.len;
            state.end_offset = self.end_offset;
            state.records_appended += self.buffered_records;
            state.commits += 1;
        }
        self.shared
            .retained_bytes
            .fetch_add(written, Ordering::Relaxed);
        self.shared.durable.send_replace(self.end_offset);
        self.buffer.clear();
        self.buffered_records = 0;
        Ok(())
    }

    /// Starts a new segment at the durable end. The current one was just flushed.
    fn roll(&mut self) -> Result<(), LogError> {
        debug_assert!(self.buffer.is_empty());
        let base = self.end_offset;
        let sync = self.shared.config.sync == crate::SyncMode::Fsync;
        let (path, file) = segment::create(&self.shared.config.dir, base, sync)?;
        tracing::debug!(segment = %path.display(), "log segment started");
        {
            let mut state = lock(&self.shared.state);
            let sealed = state
                .segments
                .back_mut()
                .expect("the active segment is listed");
            sealed.end = Some(base);
            state.segments.push_back(SegmentMeta {
                base,
                path: path.clone(),
                len: SEGMENT_HEADER_LEN,
                end: None,
            });
        }
        self.shared
            .retained_bytes
            .fetch_add(SEGMENT_HEADER_LEN, Ordering::Relaxed);
        self.active = Active {
            base,
            path,
            file,
            len: SEGMENT_HEADER_LEN,
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending() -> PendingAppend {
        let (sender, _receiver) = mpsc::sync_channel(1);
        PendingAppend {
            records: Vec::new(),
            frame_bytes: 0,
            done: Completion::Blocking(sender),
        }
    }

    #[test]
    fn appenders_wake_the_writer_only_when_it_sleeps_and_has_enough() {
        let mut queue = Queue::default();
        queue.appends.push_back(pending());
        assert!(!queue.take_wake_up(), "a busy writer needs no wake-up");

        queue.writer_waiting = true;
        assert!(
            queue.take_wake_up(),
            "a sleeping writer is woken by any append"
        );
        assert!(!queue.take_wake_up(), "once");

        // Lingering for three appends: the third wakes it.
        queue.writer_waiting = true;
        queue.wake_at = 3;
        queue.appends.push_back(pending());
        assert!(!queue.take_wake_up());
        queue.appends.push_back(pending());
        assert!(queue.take_wake_up());
    }
}
