//! Consumers, checkpoints, retention and backpressure.

use std::time::Duration;

use iomt_log::{ConsumerCheckpoint, Log, LogConfig, LogError};

use crate::common::{numbered, numbered_range, segment_files, small_segments};

#[tokio::test]
async fn segments_are_deleted_only_once_both_consumers_are_past_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    let mut pipeline = log.reader("pipeline").expect("reader");
    let mut audit = log.reader("audit").expect("reader");
    log.append(numbered_range(0..200)).await.expect("append");
    let segments_before = log.stats().segments;
    assert!(segments_before > 4);

    // The pipeline reads and commits everything; the audit consumer has not moved.
    let batch = pipeline
        .next_batch(200, Duration::ZERO)
        .await
        .expect("read");
    assert_eq!(batch.len(), 200);
    log.commit("pipeline", pipeline.position()).expect("commit");
    assert_eq!(log.committed("pipeline"), Some(200));
    assert_eq!(
        log.stats().segments,
        segments_before,
        "audit still needs them all"
    );
    assert_eq!(log.stats().first_offset, 0);

    // The audit consumer moves to the middle: only segments wholly below 100 go.
    let batch = audit.next_batch(100, Duration::ZERO).await.expect("read");
    assert_eq!(batch.last().map(|e| e.offset), Some(99));
    log.commit("audit", audit.position()).expect("commit");
    let stats = log.stats();
    assert!(stats.segments < segments_before, "{stats:?}");
    assert!(
        stats.first_offset > 0 && stats.first_offset <= 100,
        "{stats:?}"
    );
    assert_eq!(segment_files(dir.path()).len(), stats.segments);
    assert_eq!(
        stats.consumers,
        vec![
            ConsumerCheckpoint {
                name: "audit".into(),
                next_offset: 100
            },
            ConsumerCheckpoint {
                name: "pipeline".into(),
                next_offset: 200
            },
        ]
    );

    // Both at the end: everything but the active segment goes.
    log.commit("audit", 200).expect("commit");
    assert_eq!(log.stats().segments, 1);
    assert_eq!(segment_files(dir.path()).len(), 1);
    // The audit reader is still at 100, which that commit let retention delete.
    let rest = audit.next_batch(500, Duration::ZERO).await;
    assert!(
        matches!(rest, Err(LogError::OffsetNotRetained { offset: 100, .. })),
        "{rest:?}"
    );
}

#[tokio::test]
async fn checkpoints_survive_a_restart_and_readers_resume_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..50)).await.expect("append");
    let mut reader = log.reader("pipeline").expect("reader");
    reader.next_batch(30, Duration::ZERO).await.expect("read");
    log.commit("pipeline", 30).expect("commit");
    log.close().await.expect("close");

    let (log, recovery) = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!(recovery.consumers, 1);
    assert_eq!(log.committed("pipeline"), Some(30));
    let mut reader = log.reader("pipeline").expect("reader");
    assert_eq!(reader.position(), 30);
    let batch = reader.next_batch(100, Duration::ZERO).await.expect("read");
    assert_eq!(batch.first().map(|e| e.offset), Some(30));
    assert_eq!(batch.first().map(|e| &e.record), Some(&numbered(30)));
    assert_eq!(batch.len(), 20);
}

#[tokio::test]
async fn a_new_consumer_starts_at_the_oldest_retained_record() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.reader("pipeline").expect("register");
    log.append(numbered_range(0..100)).await.expect("append");
    log.commit("pipeline", 100).expect("commit");
    let first = log.stats().first_offset;
    assert!(first > 0);

    let mut late = log.reader("late").expect("reader");
    assert_eq!(late.position(), first);
    assert_eq!(log.committed("late"), Some(first));
    let batch = late.next_batch(1, Duration::ZERO).await.expect("read");
    assert_eq!(batch[0].record, numbered(first));
}

#[tokio::test]
async fn removing_a_consumer_releases_what_it_held() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.reader("pipeline").expect("register");
    log.reader("forgotten").expect("register");
    log.append(numbered_range(0..100)).await.expect("append");
    log.commit("pipeline", 100).expect("commit");
    assert!(
        log.stats().segments > 1,
        "the forgotten consumer holds them"
    );

    log.remove_consumer("forgotten").expect("remove");
    assert_eq!(log.stats().segments, 1);
    assert_eq!(log.committed("forgotten"), None);
    assert!(!dir.path().join("consumers/forgotten.ckpt").exists());
    assert!(matches!(
        log.remove_consumer("forgotten"),
        Err(LogError::UnknownConsumer { .. })
    ));
}

#[tokio::test]
async fn without_consumers_nothing_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..100)).await.expect("append");
    let segments = log.stats().segments;
    log.close().await.expect("close");
    let (log, recovery) = Log::open(small_segments(dir.path())).expect("reopen");
    assert_eq!(recovery.segments, segments);
    assert_eq!(log.stats().first_offset, 0);
}

#[tokio::test]
async fn commits_are_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(small_segments(dir.path())).expect("open");
    log.append(numbered_range(0..10)).await.expect("append");
    assert!(matches!(
        log.commit("nobody", 5),
        Err(LogError::UnknownConsumer { name }) if name == "nobody"
    ));
    log.reader("pipeline").expect("register");
    assert!(matches!(
        log.commit("pipeline", 11),
        Err(LogError::OffsetBeyondEnd {
            offset: 11,
            end_offset: 10
        })
    ));
    assert!(matches!(
        log.reader("../escape"),
        Err(LogError::InvalidConsumerName { .. })
    ));
    // Moving back (to replay) is allowed while the records are retained.
    log.commit("pipeline", 8).expect("commit");
    log.commit("pipeline", 3).expect("commit back");
    assert_eq!(log.committed("pipeline"), Some(3));
}

#[tokio::test]
async fn is_full_follows_the_retained_bytes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        max_bytes: 4096,
        ..small_segments(dir.path())
    };
    let (log, _) = Log::open(config).expect("open");
    log.reader("pipeline").expect("register");
    let mut next = 0;
    while !log.is_full() {
        log.append(vec![numbered(next)]).await.expect("append");
        next += 1;
        assert!(next < 1000, "never became full");
    }
    let stats = log.stats();
    assert!(stats.retained_bytes > 4096, "{stats:?}");
    let on_disk: u64 = segment_files(dir.path())
        .iter()
        .map(|f| std::fs::metadata(f).expect("meta").len())
        .sum();
    assert_eq!(stats.retained_bytes, on_disk);

    // Appends are still accepted while full: the signal is for sources, not a hard limit.
    log.append(vec![numbered(next)])
        .await
        .expect("append while full");
    next += 1;

    // The consumer catches up: segments go and the log is no longer full.
    log.commit("pipeline", next).expect("commit");
    assert!(!log.is_full());
    assert!(log.stats().retained_bytes <= 1024);
}
