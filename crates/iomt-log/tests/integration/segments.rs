//! Offsets across segment rolls and restarts.

use std::time::Duration;

use iomt_log::{Log, Record};

use crate::common::{numbered, numbered_range, read_to_end, segment_files, small_segments};

#[tokio::test]
async fn offsets_stay_dense_across_segment_rolls_and_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    let mut next = 0;
    for size in [1, 7, 30, 2, 20] {
        let range = log
            .append(numbered_range(next..next + size))
            .await
            .expect("append");
        assert_eq!(range, next..next + size);
        next += size;
    }
    let frame = numbered(0).encoded_len() as u64;
    let per_segment = (1024 - 16) / frame;
    let segments = log.stats().segments;
    assert!(
        segments as u64 >= next / per_segment,
        "{segments} segments for {next} records"
    );
    assert_eq!(segment_files(dir.path()).len(), segments);
    log.close().await.expect("close");

    // Restart: everything is recovered, and the next record continues the numbering.
    let (log, recovery) = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!(
        (recovery.first_offset, recovery.end_offset, recovery.records),
        (0, next, next)
    );
    assert_eq!(recovery.segments, segments);
    assert_eq!(recovery.torn_bytes_truncated, 0);
    assert_eq!(
        log.append(numbered_range(next..next + 25))
            .await
            .expect("append"),
        next..next + 25
    );
    next += 25;
    log.close().await.expect("close");

    let (log, recovery) = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!(recovery.end_offset, next);
    let entries = read_to_end(&log, "pipeline").await;
    assert_eq!(entries.len() as u64, next);
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry.offset, i as u64);
        assert_eq!(entry.record, numbered(i as u64));
    }
}

#[tokio::test]
async fn each_segment_is_named_after_its_first_offset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..100)).await.expect("append");
    let files = segment_files(dir.path());
    assert_eq!(
        files[0].file_name().and_then(|n| n.to_str()),
        Some("00000000000000000000.log")
    );
    // The second segment starts where the first one's records end.
    let frame = numbered(0).encoded_len() as u64;
    let first_holds = (std::fs::metadata(&files[0]).expect("meta").len() - 16) / frame;
    assert_eq!(
        files[1].file_name().and_then(|n| n.to_str()),
        Some(format!("{first_holds:020}.log").as_str())
    );
    // No segment is larger than segment_bytes (every record here is smaller than one).
    for file in &files {
        assert!(std::fs::metadata(file).expect("meta").len() <= 1024);
    }
}

#[tokio::test]
async fn a_record_larger_than_a_segment_gets_a_segment_of_its_own() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..3)).await.expect("append");
    let big = Record::new(7, vec![b'x'; 3000]);
    assert_eq!(
        log.append(vec![big.clone(), numbered(4)])
            .await
            .expect("append"),
        3..5
    );
    let files = segment_files(dir.path());
    assert_eq!(
        files.len(),
        3,
        "small records, the big one alone, then the next"
    );
    assert_eq!(
        files[1].file_name().and_then(|n| n.to_str()),
        Some("00000000000000000003.log")
    );

    let mut reader = log.reader("pipeline").expect("reader");
    let entries = reader.next_batch(10, Duration::ZERO).await.expect("read");
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[3].record, big);
    assert_eq!(entries[4].record, numbered(4));
}
