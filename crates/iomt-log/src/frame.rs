//! The on-disk format: segment header and record frames (layout in the crate docs), and
//! [`FrameReader`], the one sequential frame reader used by recovery and by log readers.
//!
//! # What must hold
//! * A frame is accepted only if its length fits in the bytes that are known to be written, its
//!   CRC-32C matches, its offset is the one expected at that position and its fields parse. A
//!   torn or overwritten frame therefore never decodes into a record.
//! * The CRC covers the length field as well as the body, so a damaged length cannot make a
//!   shorter or longer span look valid.
//! * [`FrameReader`] never reads past the limit it is given. Readers pass the durable length of
//!   the active segment, so bytes the writer has written but not yet synced (and might still
//!   truncate after a failed sync) are never seen.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Buf, Bytes, BytesMut};

use crate::record::Record;

/// First eight bytes of every segment file: format name and version.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"IOMTSEG1";
/// Segment header: magic, then the segment's base offset (u64 LE).
pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;
/// Frame header: body length (u32 LE), then CRC-32C (u32 LE).
pub(crate) const FRAME_HEADER_LEN: usize = 8;
/// Fixed part of a body: offset (u64), timestamp (i64), header count (u16).
pub(crate) const BODY_FIXED_LEN: usize = 8 + 8 + 2;
/// Bytes read from a segment at a time.
const CHUNK_LEN: usize = 256 * 1024;

/// The segment header for a segment starting at `base`.
pub(crate) fn segment_header(base: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&base.to_le_bytes());
    header
}

/// Checks a segment header; returns what is wrong with it.
pub(crate) fn check_segment_header(bytes: &[u8], base: u64) -> Result<(), &'static str> {
    if bytes.len() < SEGMENT_HEADER_LEN as usize {
        return Err("the segment header is incomplete");
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err("not an iomt-log segment (bad magic)");
    }
    if bytes[8..16] != base.to_le_bytes() {
        return Err("the base offset in the header differs from the file name");
    }
    Ok(())
}

fn body_len(record: &Record) -> usize {
    BODY_FIXED_LEN
        + record
            .headers
            .iter()
            .map(|(name, value)| 2 + name.len() + 4 + value.len())
            .sum::<usize>()
        + record.payload.len()
}

/// Bytes the record takes on disk, frame header included.
pub(crate) fn frame_len(record: &Record) -> usize {
    FRAME_HEADER_LEN + body_len(record)
}

/// Checks that `record` can be framed; returns its frame length.
pub(crate) fn check_record(record: &Record) -> Result<usize, &'static str> {
    if record.headers.len() > usize::from(u16::MAX) {
        return Err("it has more than 65535 headers");
    }
    for (name, value) in &record.headers {
        if name.len() > usize::from(u16::MAX) {
            return Err("a header name is longer than 65535 bytes");
        }
        if u32::try_from(value.len()).is_err() {
            return Err("a header value is 4 GiB or longer");
        }
    }
    let body = body_len(record);
    if u32::try_from(body).is_err() {
        return Err("it is 4 GiB or longer");
    }
    Ok(FRAME_HEADER_LEN + body)
}

/// Appends the frame of `record` at `offset` to `out`. The record must have passed
/// [`check_record`].
pub(crate) fn encode(record: &Record, offset: u64, out: &mut Vec<u8>) {
    let start = out.len();
    let body = body_len(record);
    out.reserve(FRAME_HEADER_LEN + body);
    out.extend_from_slice(&(body as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&record.timestamp_ms.to_le_bytes());
    out.extend_from_slice(&(record.headers.len() as u16).to_le_bytes());
    for (name, value) in &record.headers {
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&record.payload);
    let crc = frame_crc(&out[start..start + 4], &out[start + FRAME_HEADER_LEN..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(out.len() - start, FRAME_HEADER_LEN + body);
}

fn frame_crc(length_field: &[u8], body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(length_field), body)
}

/// Decodes a whole frame (as returned by [`FrameReader::next_frame`]) that must hold the record
/// at `expected_offset`. Payload and header values share `frame`'s allocation.
pub(crate) fn decode(frame: Bytes, expected_offset: u64) -> Result<Record, &'static str> {
    debug_assert!(frame.len() >= FRAME_HEADER_LEN + BODY_FIXED_LEN);
    let stored_crc = u32::from_le_bytes(frame[4..8].try_into().expect("4 bytes"));
    if frame_crc(&frame[..4], &frame[FRAME_HEADER_LEN..]) != stored_crc {
        return Err("checksum mismatch");
    }
    let mut body = frame.slice(FRAME_HEADER_LEN..);
    if body.get_u64_le() != expected_offset {
        return Err("the frame holds a different offset than its position implies");
    }
    let timestamp_ms = body.get_i64_le();
    let header_count = body.get_u16_le();
    let mut headers = Vec::with_capacity(usize::from(header_count));
    for _ in 0..header_count {
        if body.remaining() < 2 {
            return Err("a header runs past the end of the frame");
        }
        let name_len = usize::from(body.get_u16_le());
        if body.remaining() < name_len + 4 {
            return Err("a header runs past the end of the frame");
        }
        let name = String::from_utf8(body.split_to(name_len).to_vec())
            .map_err(|_| "a header name is not UTF-8")?;
        let value_len = body.get_u32_le() as usize;
        if body.remaining() < value_len {
            return Err("a header runs past the end of the frame");
        }
        headers.push((name, body.split_to(value_len)));
    }
    Ok(Record {
        timestamp_ms,
        headers,
        payload: body,
    })
}

/// Why [`FrameReader::next_frame`] found no whole frame.
#[derive(Debug)]
pub(crate) enum FrameError {
    /// The frame is cut short by the limit.
    Truncated,
    /// The length field cannot be right.
    BadLength,
    /// Reading the file failed.
    Io(io::Error),
}

/// Reads whole frames sequentially from a segment file, never past `limit`.
pub(crate) struct FrameReader {
    file: File,
    /// Bytes of the file that may be read.
    limit: u64,
    /// File position of the next frame.
    position: u64,
    /// Bytes read ahead, starting at file position `chunk_start`.
    chunk: Bytes,
    chunk_start: u64,
}

impl FrameReader {
    /// A reader positioned at the first frame (just after the segment header).
    pub(crate) fn new(file: File, limit: u64) -> FrameReader {
        FrameReader {
            file,
            limit,
            position: SEGMENT_HEADER_LEN,
            chunk: Bytes::new(),
            chunk_start: SEGMENT_HEADER_LEN,
        }
    }

    /// File position of the next frame.
    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Moves back to the first frame.
    pub(crate) fn rewind(&mut self) {
        self.position = SEGMENT_HEADER_LEN;
    }

    /// Raises the readable limit (the active segment grew durably).
    pub(crate) fn set_limit(&mut self, limit: u64) {
        debug_assert!(limit >= self.position);
        self.limit = limit;
    }

    /// The readable limit.
    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    /// The next whole frame, or `None` exactly at the limit.
    pub(crate) fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        let available = self.limit - self.position;
        if available == 0 {
            return Ok(None);
        }
        if available < FRAME_HEADER_LEN as u64 {
            return Err(FrameError::Truncated);
        }
        let header = self.window(FRAME_HEADER_LEN)?;
        let body = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        if body < BODY_FIXED_LEN {
            return Err(FrameError::BadLength);
        }
        let frame_len = FRAME_HEADER_LEN + body;
        if available < frame_len as u64 {
            return Err(FrameError::Truncated);
        }
        let frame = self.window(frame_len)?;
        self.position += frame_len as u64;
        Ok(Some(frame))
    }

    /// `len` bytes at the current position (which the caller checked are below the limit).
    fn window(&mut self, len: usize) -> Result<Bytes, FrameError> {
        let chunk_end = self.chunk_start + self.chunk.len() as u64;
        if self.position < self.chunk_start || self.position + len as u64 > chunk_end {
            let read_len = (self.limit - self.position).min(len.max(CHUNK_LEN) as u64) as usize;
            let mut buffer = BytesMut::zeroed(read_len);
            self.file
                .read_exact_at(&mut buffer, self.position)
                .map_err(FrameError::Io)?;
            self.chunk = buffer.freeze();
            self.chunk_start = self.position;
        }
        let from = (self.position - self.chunk_start) as usize;
        Ok(self.chunk.slice(from..from + len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Record {
        Record::new(1_700_000_000_123, &b"{\"heartRate\":72}"[..])
            .with_header("content-type", &b"application/json"[..])
            .with_header("mqtt-topic", &b"devices/abc/telemetry"[..])
    }

    #[test]
    fn a_frame_decodes_to_the_record_it_encoded() {
        let record = sample();
        let mut out = Vec::new();
        encode(&record, 42, &mut out);
        assert_eq!(out.len(), frame_len(&record));
        assert_eq!(check_record(&record), Ok(out.len()));
        assert_eq!(decode(Bytes::from(out), 42), Ok(record));
    }

    #[test]
    fn an_empty_record_round_trips() {
        let record = Record::new(-5, Bytes::new());
        let mut out = Vec::new();
        encode(&record, 0, &mut out);
        assert_eq!(out.len(), FRAME_HEADER_LEN + BODY_FIXED_LEN);
        assert_eq!(decode(Bytes::from(out), 0), Ok(record));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let mut out = Vec::new();
        encode(&sample(), 7, &mut out);
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut damaged = out.clone();
                damaged[byte] ^= 1 << bit;
                assert!(
                    decode(Bytes::from(damaged), 7).is_err(),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn a_frame_at_the_wrong_position_is_rejected() {
        let mut out = Vec::new();
        encode(&sample(), 7, &mut out);
        assert_eq!(
            decode(Bytes::from(out), 8),
            Err("the frame holds a different offset than its position implies")
        );
    }

    #[test]
    fn oversized_header_names_are_refused_before_framing() {
        let record = Record::new(0, Bytes::new()).with_header("n".repeat(70_000), Bytes::new());
        assert_eq!(
            check_record(&record),
            Err("a header name is longer than 65535 bytes")
        );
    }

    #[test]
    fn segment_headers_are_checked() {
        let header = segment_header(1234);
        assert_eq!(check_segment_header(&header, 1234), Ok(()));
        assert!(check_segment_header(&header, 1235).is_err());
        assert!(check_segment_header(&header[..10], 1234).is_err());
        let mut bad = header;
        bad[0] = b'X';
        assert_eq!(
            check_segment_header(&bad, 1234),
            Err("not an iomt-log segment (bad magic)")
        );
    }

    #[test]
    fn the_frame_reader_stops_at_its_limit_and_reports_torn_frames() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg");
        let mut bytes = segment_header(0).to_vec();
        let mut ends = Vec::new();
        for offset in 0..3 {
            encode(&sample(), offset, &mut bytes);
            ends.push(bytes.len() as u64);
        }
        std::fs::write(&path, &bytes).expect("write");

        let open = || File::open(&path).expect("open");
        // Limit at the end of the second frame: two frames, then a clean end.
        let mut reader = FrameReader::new(open(), ends[1]);
        for offset in 0..2 {
            let frame = reader.next_frame().expect("read").expect("a frame");
            assert_eq!(decode(frame, offset), Ok(sample()));
        }
        assert!(reader.next_frame().expect("read").is_none());
        // Raising the limit makes the third frame visible.
        reader.set_limit(ends[2]);
        assert!(reader.next_frame().expect("read").is_some());
        assert_eq!(reader.position(), ends[2]);

        // A limit inside the third frame: torn.
        let mut reader = FrameReader::new(open(), ends[2] - 1);
        reader.next_frame().expect("read");
        reader.next_frame().expect("read");
        assert!(matches!(reader.next_frame(), Err(FrameError::Truncated)));
    }
}
