//! Recovery from torn and damaged tails, and from damage elsewhere.
//!
//! Each test writes records, closes the log, damages the files the way a crash or a bad disk
//! would, reopens, and checks that exactly the intact prefix is kept, that the damage is
//! reported, and that appends continue from the right offset.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use iomt_log::{Entry, Log, LogError};

use crate::common::{
    fast_config, numbered, numbered_range, read_to_end, segment_files, small_segments,
};

const SEGMENT_HEADER: u64 = 16;

fn frame_len() -> u64 {
    numbered(0).encoded_len() as u64
}

/// Writes records `0..count` in one segment and closes the log.
async fn write_and_close(dir: &Path, count: u64) {
    let (log, _) = Log::open(fast_config(dir)).expect("open");
    log.append(numbered_range(0..count)).await.expect("append");
    log.close().await.expect("close");
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    segment_files(dir).pop().expect("a segment")
}

fn assert_numbered(entries: &[Entry], count: u64) {
    assert_eq!(entries.len() as u64, count);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            (entry.offset, &entry.record),
            (i as u64, &numbered(i as u64))
        );
    }
}

#[tokio::test]
async fn a_torn_last_record_is_cut_and_the_intact_prefix_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_and_close(dir.path(), 10).await;
    let segment = last_segment(dir.path());
    let len = fs::metadata(&segment).expect("meta").len();
    assert_eq!(len, SEGMENT_HEADER + 10 * frame_len());
    // The crash hit while the last frame was being written: 5 of its bytes never landed.
    OpenOptions::new()
        .write(true)
        .open(&segment)
        .and_then(|f| f.set_len(len - 5))
        .expect("truncate");

    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!((recovery.records, recovery.end_offset), (9, 9));
    assert_eq!(recovery.torn_bytes_truncated, frame_len() - 5);
    assert_eq!(recovery.torn_records_skipped, 1);
    assert_eq!(log.stats().torn_bytes_truncated, frame_len() - 5);
    assert_eq!(log.stats().torn_records_skipped, 1);
    assert_eq!(
        fs::metadata(&segment).expect("meta").len(),
        SEGMENT_HEADER + 9 * frame_len()
    );

    // The next append takes the torn record's offset, and everything reads back.
    assert_eq!(log.append(vec![numbered(9)]).await.expect("append"), 9..10);
    assert_numbered(&read_to_end(&log, "check").await, 10);
}

#[tokio::test]
async fn a_frame_header_cut_in_half_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_and_close(dir.path(), 4).await;
    let segment = last_segment(dir.path());
    // Only the first 3 bytes of a fifth frame's length field made it.
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    file.write_all(&[0x40, 0, 0]).expect("write");
    drop(file);

    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!((recovery.records, recovery.torn_bytes_truncated), (4, 3));
    assert_numbered(&read_to_end(&log, "check").await, 4);
}

#[tokio::test]
async fn zeroed_space_after_the_last_record_is_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_and_close(dir.path(), 6).await;
    let segment = last_segment(dir.path());
    // Some file systems leave the file extended with zeros when the data did not land.
    let mut file = OpenOptions::new()
        .append(true)
        .open(&segment)
        .expect("open");
    file.write_all(&[0u8; 4096]).expect("write");
    drop(file);

    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(recovery.records, 6);
    assert_eq!(recovery.torn_bytes_truncated, 4096);
    assert_numbered(&read_to_end(&log, "check").await, 6);
}

#[tokio::test]
async fn a_bad_checksum_in_the_middle_of_the_last_segment_keeps_the_prefix_before_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_and_close(dir.path(), 20).await;
    let segment = last_segment(dir.path());
    let mut bytes = fs::read(&segment).expect("read");
    // Flip one payload bit of record 7 (its last byte is payload).
    let end_of_record_7 = (SEGMENT_HEADER + 8 * frame_len()) as usize;
    bytes[end_of_record_7 - 1] ^= 0x01;
    fs::write(&segment, &bytes).expect("damage");

    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!((recovery.records, recovery.end_offset), (7, 7));
    assert_eq!(recovery.torn_bytes_truncated, 13 * frame_len());
    assert_eq!(
        recovery.torn_records_skipped, 13,
        "the damaged frame and the 12 after it"
    );
    assert_numbered(&read_to_end(&log, "check").await, 7);
}

#[tokio::test]
async fn damage_in_an_earlier_segment_is_reported_by_the_reader_that_reaches_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..60)).await.expect("append");
    log.close().await.expect("close");
    let first = segment_files(dir.path()).remove(0);
    let mut bytes = fs::read(&first).expect("read");
    let position = SEGMENT_HEADER + 2 * frame_len();
    bytes[position as usize + 20] ^= 0x10;
    fs::write(&first, &bytes).expect("damage");

    // Open does not scan sealed segments; nothing is cut.
    let (log, recovery) = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!((recovery.records, recovery.torn_bytes_truncated), (60, 0));
    let mut reader = log.reader("check").expect("reader");
    let error = reader
        .next_batch(100, std::time::Duration::ZERO)
        .await
        .expect_err("corrupt");
    match &error {
        LogError::CorruptSegment {
            path,
            position: at,
            reason,
        } => {
            assert_eq!(path, &first);
            assert_eq!(*at, position);
            assert_eq!(*reason, "checksum mismatch");
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(error.to_string().contains("restore the log directory"));
}

#[tokio::test]
async fn a_checkpoint_past_the_recovered_end_is_pulled_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    log.reader("pipeline").expect("register");
    log.append(numbered_range(0..10)).await.expect("append");
    log.commit("pipeline", 10).expect("commit");
    log.close().await.expect("close");
    // The disk damaged record 7 after the pipeline had processed it.
    let segment = last_segment(dir.path());
    let mut bytes = fs::read(&segment).expect("read");
    bytes[(SEGMENT_HEADER + 7 * frame_len()) as usize + 12] ^= 0xff;
    fs::write(&segment, &bytes).expect("damage");

    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(recovery.end_offset, 7);
    // Offsets 7.. will be reused by new records: the consumer must not skip them.
    assert_eq!(log.committed("pipeline"), Some(7));
    log.append(vec![numbered(7)]).await.expect("append");
    let entries = read_to_end(&log, "pipeline").await;
    assert_eq!(
        entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![7]
    );
}

#[tokio::test]
async fn a_corrupt_checkpoint_stops_open_and_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    log.reader("pipeline").expect("register");
    log.close().await.expect("close");
    let checkpoint = dir.path().join("consumers/pipeline.ckpt");
    fs::write(&checkpoint, b"garbage").expect("damage");

    let error = Log::open(fast_config(dir.path())).expect_err("corrupt");
    assert!(matches!(&error, LogError::CorruptCheckpoint { path, .. } if path == &checkpoint));
    assert!(error.to_string().contains("delete it"), "{error}");

    fs::remove_file(&checkpoint).expect("operator deletes it");
    let (log, recovery) = Log::open(fast_config(dir.path())).expect("reopen");
    assert_eq!(recovery.consumers, 0);
    assert_eq!(log.committed("pipeline"), None);
}

#[tokio::test]
async fn a_file_that_is_not_a_segment_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(
        dir.path().join("00000000000000000000.log"),
        b"an application log that happens to have this name",
    )
    .expect("write");
    let error = Log::open(fast_config(dir.path())).expect_err("not a segment");
    assert!(
        matches!(
            error,
            LogError::CorruptSegment {
                reason: "not an iomt-log segment (bad magic)",
                ..
            }
        ),
        "{error}"
    );
}
