//! [`LogReader`]: reads durable records in offset order for one consumer.
//!
//! # What must hold
//! * A reader never returns a record at or past the durable end, and never reads bytes past the
//!   durable length of the active segment (see the `frame` module).
//! * Every frame is checked (CRC, offset, structure) before it becomes an [`Entry`]; damage is
//!   an error naming the segment and byte, never a silently skipped record.
//! * Reading does not move the consumer's checkpoint: only [`Log::commit`](crate::Log::commit)
//!   does, after the records were processed.
//!
//! Reads are plain `pread`s on the calling task. The records a pipeline reads were usually just
//! written and sit in the page cache, and a batch is bounded by `max_records`, so a read takes
//! microseconds; after a restart with a large backlog the first reads may wait on the disk.

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::LogError;
use crate::frame::{self, FrameError, FrameReader, SEGMENT_HEADER_LEN};
use crate::log::{Shared, check_offset, lock};
use crate::record::Entry;

/// Reads the log from a position onwards. Get one from [`Log::reader`](crate::Log::reader).
pub struct LogReader {
    shared: Arc<Shared>,
    consumer: String,
    /// The offset [`next_batch`](LogReader::next_batch) returns next.
    position: u64,
    cursor: Option<Cursor>,
    durable: watch::Receiver<u64>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("consumer", &self.consumer)
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

/// An open segment and where in it the reader is.
struct Cursor {
    base: u64,
    path: PathBuf,
    frames: FrameReader,
    /// Offset of the frame at `frames.position()`.
    next_offset: u64,
}

/// Where the segment holding an offset is, as of one look at the shared state.
struct SegmentView {
    base: u64,
    path: PathBuf,
    /// Bytes that may be read.
    limit: u64,
    /// Offset after its last readable record.
    end: u64,
}

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>, consumer: &str, position: u64) -> LogReader {
        let durable = shared.durable.subscribe();
        LogReader {
            shared,
            consumer: consumer.to_owned(),
            position,
            cursor: None,
            durable,
        }
    }

    /// The consumer this reader was opened for.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// The offset the next entry returned will have.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Moves the reader to `offset`, which must be retained and at most the durable end.
    pub fn seek(&mut self, offset: u64) -> Result<(), LogError> {
        check_offset(&lock(&self.shared.state), offset)?;
        self.position = offset;
        Ok(())
    }

    /// Returns durable records from the reader's position: as soon as at least one is
    /// available, up to `max_records` of them; or an empty batch once `max_wait` has passed
    /// without any.
    pub async fn next_batch(
        &mut self,
        max_records: usize,
        max_wait: Duration,
    ) -> Result<Vec<Entry>, LogError> {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            // Mark the current end as seen before reading, so an append that lands after the
            // read wakes the wait below.
            self.durable.borrow_and_update();
            let batch = self.read_available(max_records)?;
            if !batch.is_empty() || max_records == 0 {
                return Ok(batch);
            }
            match tokio::time::timeout_at(deadline, self.durable.changed()).await {
                Err(_elapsed) => return Ok(Vec::new()),
                Ok(Ok(())) => {}
                Ok(Err(_closed)) => {
                    // The sender lives as long as `shared`, which this reader holds; wait out
                    // the deadline rather than spin if that ever changes.
                    tokio::time::sleep_until(deadline).await;
                    return Ok(Vec::new());
                }
            }
        }
    }

    /// Reads up to `max` durable records without waiting.
    fn read_available(&mut self, max: usize) -> Result<Vec<Entry>, LogError> {
        let mut entries = Vec::new();
        while entries.len() < max {
            let Some(segment) = self.locate()? else {
                break;
            };
            let cursor = self.position_cursor(&segment)?;
            while entries.len() < max && cursor.next_offset < segment.end {
                let start = cursor.frames.position();
                let frame = next_frame(cursor, &segment, start)?;
                let record = frame::decode(frame, cursor.next_offset).map_err(|reason| {
                    LogError::CorruptSegment {
                        path: cursor.path.clone(),
                        position: start,
                        reason,
                    }
                })?;
                entries.push(Entry {
                    offset: cursor.next_offset,
                    record,
                });
                cursor.next_offset += 1;
            }
            self.position = cursor.next_offset;
        }
        Ok(entries)
    }

    /// The segment holding the reader's position, or `None` at the durable end.
    fn locate(&self) -> Result<Option<SegmentView>, LogError> {
        let state = lock(&self.shared.state);
        if self.position >= state.end_offset {
            return Ok(None);
        }
        check_offset(&state, self.position)?;
        let index = state
            .segments
            .partition_point(|segment| segment.base <= self.position)
            - 1;
        let segment = &state.segments[index];
        Ok(Some(SegmentView {
            base: segment.base,
            path: segment.path.clone(),
            limit: segment.len,
            end: segment.end.unwrap_or(state.end_offset),
        }))
    }

    /// Opens `segment` if needed and moves the cursor to the reader's position.
    fn position_cursor(&mut self, segment: &SegmentView) -> Result<&mut Cursor, LogError> {
        let reusable = self
            .cursor
            .as_ref()
            .is_some_and(|cursor| cursor.base == segment.base);
        if !reusable {
            self.cursor = Some(self.open_segment(segment)?);
        }
        let position = self.position;
        let cursor = self.cursor.as_mut().expect("just set");
        if cursor.frames.limit() < segment.limit {
            cursor.frames.set_limit(segment.limit);
        }
        if cursor.next_offset > position {
            cursor.frames.rewind();
            cursor.next_offset = segment.base;
        }
        while cursor.next_offset < position {
            let start = cursor.frames.position();
            next_frame(cursor, segment, start)?;
            cursor.next_offset += 1;
        }
        Ok(cursor)
    }

    fn open_segment(&self, segment: &SegmentView) -> Result<Cursor, LogError> {
        let file = match File::open(&segment.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                // Retention deleted it after `locate` looked: report what retention did.
                check_offset(&lock(&self.shared.state), self.position)?;
                return Err(LogError::io("opening segment", &segment.path, error));
            }
            Err(error) => return Err(LogError::io("opening segment", &segment.path, error)),
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, 0)
            .map_err(|e| LogError::io("reading segment", &segment.path, e))?;
        frame::check_segment_header(&header, segment.base).map_err(|reason| {
            LogError::CorruptSegment {
                path: segment.path.clone(),
                position: 0,
                reason,
            }
        })?;
        Ok(Cursor {
            base: segment.base,
            path: segment.path.clone(),
            frames: FrameReader::new(file, segment.limit),
            next_offset: segment.base,
        })
    }
}

/// The next whole frame of a segment that must still hold one.
fn next_frame(
    cursor: &mut Cursor,
    segment: &SegmentView,
    start: u64,
) -> Result<bytes::Bytes, LogError> {
    let corrupt = |reason| LogError::CorruptSegment {
        path: segment.path.clone(),
        position: start,
        reason,
    };
    match cursor.frames.next_frame() {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) => Err(corrupt(
            "the segment ends before the offset at which the next segment starts",
        )),
        Err(FrameError::Truncated) => Err(corrupt("a frame is cut short")),
        Err(FrameError::BadLength) => Err(corrupt("a frame length is impossible")),
        Err(FrameError::Io(error)) => Err(LogError::io("reading segment", &segment.path, error)),
    }
}
