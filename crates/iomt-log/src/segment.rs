//! Segment files: naming, creation, and recovery of the last segment after a crash.
//!
//! # What must hold
//! * A segment is named after its base offset (the offset of its first record), zero-padded to
//!   20 digits so that name order is offset order: `00000000000000001234.log`.
//! * Only the last segment can have a torn tail. The writer syncs a segment before it creates the
//!   next one, so every earlier segment was complete and durable when its successor appeared.
//!   Recovery therefore scans only the last segment, truncates it at the first frame that does
//!   not check out, and treats damage anywhere else as corruption that needs an operator.
//! * A new segment is durable (header synced, directory synced) before any record goes into it.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::checkpoint::sync_dir;
use crate::error::LogError;
use crate::frame::{
    self, FrameError, FrameReader, SEGMENT_HEADER_LEN, check_segment_header, segment_header,
};

const EXTENSION: &str = ".log";

/// The file name of the segment starting at `base`.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}{EXTENSION}")
}

/// The base offset named by a segment file name, if it is one.
fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(EXTENSION)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every segment in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, LogError> {
    let mut segments = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| LogError::io("listing segments", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io("listing segments", dir, e))?;
        if let Some(base) = entry.file_name().to_str().and_then(parse_file_name) {
            segments.push((base, entry.path()));
        }
    }
    segments.sort_unstable_by_key(|(base, _)| *base);
    Ok(segments)
}

/// Creates the segment starting at `base` and makes it durable.
pub(crate) fn create(dir: &Path, base: u64, sync: bool) -> Result<(PathBuf, File), LogError> {
    let path = dir.join(file_name(base));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| LogError::io("creating segment", &path, e))?;
    let initialize = || -> io::Result<()> {
        file.write_all_at(&segment_header(base), 0)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    };
    if let Err(e) = initialize() {
        // Best effort: a half-made segment would be recovered as empty anyway.
        let _ = fs::remove_file(&path);
        return Err(LogError::io("initializing segment", &path, e));
    }
    if sync {
        sync_dir(dir)?;
    }
    Ok((path, file))
}

/// Checks the header of a segment that is not the last one; returns its length.
pub(crate) fn check_sealed(path: &Path, base: u64) -> Result<u64, LogError> {
    let file = File::open(path).map_err(|e| LogError::io("opening segment", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| LogError::io("reading segment metadata", path, e))?
        .len();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    let read = if len >= SEGMENT_HEADER_LEN {
        file.read_exact_at(&mut header, 0)
            .map_err(|e| LogError::io("reading segment", path, e))?;
        &header[..]
    } else {
        &header[..0]
    };
    check_segment_header(read, base).map_err(|reason| LogError::CorruptSegment {
        path: path.to_owned(),
        position: 0,
        reason,
    })?;
    Ok(len)
}

/// The last segment after recovery, open for appending.
pub(crate) struct RecoveredTail {
    /// The segment, open for reading and writing.
    pub(crate) file: File,
    /// Its length after truncation: every byte up to here is intact frames.
    pub(crate) len: u64,
    /// The offset the next record gets.
    pub(crate) end_offset: u64,
    /// Bytes cut off the end.
    pub(crate) torn_bytes: u64,
    /// Frames (whole or partial) in the bytes cut off.
    pub(crate) torn_records: u64,
}

/// Scans the last segment, cuts it at the first frame that does not check out, and syncs the cut.
pub(crate) fn recover_tail(path: &Path, base: u64, sync: bool) -> Result<RecoveredTail, LogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("opening segment", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| LogError::io("reading segment metadata", path, e))?
        .len();

    if file_len < SEGMENT_HEADER_LEN {
        // The crash hit while the segment was being created: no record can be in it yet.
        let rewrite = || -> io::Result<()> {
            file.set_len(0)?;
            file.write_all_at(&segment_header(base), 0)?;
            if sync {
                file.sync_data()?;
            }
            Ok(())
        };
        rewrite().map_err(|e| LogError::io("rewriting torn segment header", path, e))?;
        return Ok(RecoveredTail {
            file,
            len: SEGMENT_HEADER_LEN,
            end_offset: base,
            torn_bytes: file_len,
            torn_records: 0,
        });
    }
    check_sealed(path, base)?;

    let reader_file = file
        .try_clone()
        .map_err(|e| LogError::io("opening segment", path, e))?;
    let mut frames = FrameReader::new(reader_file, file_len);
    let mut end_offset = base;
    let torn_at = loop {
        let start = frames.position();
        match frames.next_frame() {
            Ok(None) => break None,
            Ok(Some(bytes)) => match frame::decode(bytes, end_offset) {
                Ok(_) => end_offset += 1,
                // The frame's length held, so the frames after it can still be counted.
                Err(reason) => break Some((start, reason, true)),
            },
            Err(FrameError::Truncated) => {
                break Some((start, "the last frame is incomplete", false));
            }
            Err(FrameError::BadLength) => {
                break Some((start, "a frame length is impossible", false));
            }
            Err(FrameError::Io(e)) => return Err(LogError::io("reading segment", path, e)),
        }
    };

    let Some((torn_at, reason, walkable)) = torn_at else {
        return Ok(RecoveredTail {
            file,
            len: file_len,
            end_offset,
            torn_bytes: 0,
            torn_records: 0,
        });
    };
    // Count what is cut off: the bad frame, and every frame its length field lets us walk to.
    let mut torn_records = 1;
    if walkable {
        loop {
            match frames.next_frame() {
                Ok(Some(_)) => torn_records += 1,
                Ok(None) | Err(FrameError::Io(_)) => break,
                Err(FrameError::Truncated | FrameError::BadLength) => {
                    torn_records += 1;
                    break;
                }
            }
        }
    }
    let torn_bytes = file_len - torn_at;
    tracing::warn!(
        segment = %path.display(),
        position = torn_at,
        torn_bytes,
        torn_records,
        reason,
        "truncating a torn or damaged tail left by a crash; records after the cut were never acknowledged unless the disk damaged them"
    );
    let truncate = || -> io::Result<()> {
        file.set_len(torn_at)?;
        if sync {
            file.sync_data()?;
        }
        Ok(())
    };
    truncate().map_err(|e| LogError::io("truncating torn segment tail", path, e))?;
    Ok(RecoveredTail {
        file,
        len: torn_at,
        end_offset,
        torn_bytes,
        torn_records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_in_offset_order_and_parse_back() {
        assert_eq!(file_name(1234), "00000000000000001234.log");
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_file_name("1234.log"), None);
        assert_eq!(parse_file_name("0000000000000000123x.log"), None);
        assert_eq!(parse_file_name("00000000000000001234.ckpt"), None);
        let mut names = vec![file_name(10_000), file_name(9), file_name(100)];
        names.sort();
        assert_eq!(names, vec![file_name(9), file_name(100), file_name(10_000)]);
    }

    #[test]
    fn a_segment_with_a_torn_header_recovers_as_empty() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(file_name(500));
        fs::write(&path, &segment_header(500)[..5]).expect("write");
        let tail = recover_tail(&path, 500, false).expect("recover");
        assert_eq!(
            (tail.len, tail.end_offset, tail.torn_bytes),
            (SEGMENT_HEADER_LEN, 500, 5)
        );
        assert_eq!(fs::read(&path).expect("read"), segment_header(500));
    }

    #[test]
    fn a_segment_from_elsewhere_is_corrupt_not_torn() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(file_name(0));
        fs::write(&path, b"this is not a segment file at all").expect("write");
        let error = recover_tail(&path, 0, false).err().expect("corrupt");
        assert!(
            matches!(error, LogError::CorruptSegment { position: 0, .. }),
            "{error}"
        );
    }
}
