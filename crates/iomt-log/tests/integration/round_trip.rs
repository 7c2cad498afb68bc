//! What goes in comes out: records, headers, offsets; waiting readers; refusals.

use std::time::{Duration, Instant};

use bytes::Bytes;
use iomt_log::{Log, LogConfig, LogError, Record};

use crate::common::{fast_config, numbered, numbered_range, read_to_end};

#[tokio::test]
async fn records_round_trip_with_headers_and_dense_offsets_from_zero() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The default configuration: real fdatasync.
    let (log, recovery) = Log::open(LogConfig::new(dir.path())).expect("open");
    assert_eq!((recovery.records, recovery.end_offset), (0, 0));

    let records = vec![
        Record::new(1_700_000_000_123, r#"{"heartRate":72}"#)
            .with_header("content-type", "application/json")
            .with_header("mqtt-topic", "devices/abc/telemetry"),
        Record::new(-1, Bytes::new()),
        Record::new(42, Bytes::from(vec![0u8, 255, 7, 0]))
            .with_header("ünïcode", Bytes::from(vec![0u8, 1, 2]))
            .with_header("", Bytes::new()),
    ];
    assert_eq!(
        log.append(records[..2].to_vec()).await.expect("append"),
        0..2
    );
    assert_eq!(
        log.append(records[2..].to_vec()).await.expect("append"),
        2..3
    );

    let entries = read_to_end(&log, "pipeline").await;
    let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, vec![0, 1, 2]);
    let read: Vec<Record> = entries.into_iter().map(|e| e.record).collect();
    assert_eq!(read, records);

    let stats = log.stats();
    assert_eq!((stats.end_offset, stats.records_appended), (3, 3));
    assert!(stats.commits >= 1 && stats.commits <= 2, "{stats:?}");
    log.close().await.expect("close");
}

#[test]
fn append_blocking_works_from_a_plain_thread() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    let other = log.clone();
    let range = std::thread::spawn(move || other.append_blocking(numbered_range(0..5)))
        .join()
        .expect("thread")
        .expect("append");
    assert_eq!(range, 0..5);
    assert_eq!(
        log.append_blocking(vec![numbered(5)]).expect("append"),
        5..6
    );
    assert_eq!(log.stats().end_offset, 6);
}

#[tokio::test]
async fn an_empty_append_returns_an_empty_range_at_the_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    log.append(numbered_range(0..3)).await.expect("append");
    assert_eq!(log.append(Vec::new()).await.expect("empty"), 3..3);
    assert_eq!(log.stats().commits, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_reader_wakes_on_the_next_append_and_times_out_when_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    let mut reader = log.reader("pipeline").expect("reader");

    let started = Instant::now();
    let idle = reader
        .next_batch(10, Duration::from_millis(50))
        .await
        .expect("read");
    assert!(idle.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(50));

    let appender = log.clone();
    let append = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(30)).await;
        appender.append(numbered_range(0..3)).await
    });
    let started = Instant::now();
    let batch = reader
        .next_batch(10, Duration::from_secs(10))
        .await
        .expect("read");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "woke on the append, not the timeout"
    );
    assert_eq!(append.await.expect("task").expect("append"), 0..3);
    // The batch holds whatever was durable when the reader woke: all three (one commit).
    assert_eq!(
        batch.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    assert_eq!(reader.position(), 3);
}

#[tokio::test]
async fn next_batch_returns_at_most_max_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    log.append(numbered_range(0..10)).await.expect("append");
    let mut reader = log.reader("pipeline").expect("reader");
    let first = reader.next_batch(4, Duration::ZERO).await.expect("read");
    assert_eq!(
        first.iter().map(|e| e.offset).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    let rest = reader.next_batch(100, Duration::ZERO).await.expect("read");
    assert_eq!(rest.len(), 6);
    assert_eq!(rest[5].record, numbered(9));
}

#[tokio::test]
async fn seek_moves_the_reader_and_refuses_offsets_past_the_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    log.append(numbered_range(0..10)).await.expect("append");
    let mut reader = log.reader("pipeline").expect("reader");

    reader.seek(7).expect("seek forward");
    let batch = reader.next_batch(1, Duration::ZERO).await.expect("read");
    assert_eq!((batch[0].offset, &batch[0].record), (7, &numbered(7)));
    reader.seek(2).expect("seek back");
    let batch = reader.next_batch(1, Duration::ZERO).await.expect("read");
    assert_eq!((batch[0].offset, &batch[0].record), (2, &numbered(2)));
    reader.seek(10).expect("the end itself is a valid position");
    assert!(matches!(
        reader.seek(11),
        Err(LogError::OffsetBeyondEnd {
            offset: 11,
            end_offset: 10
        })
    ));
}

#[tokio::test]
async fn a_record_larger_than_a_commit_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        max_commit_bytes: 4096,
        ..fast_config(dir.path())
    };
    let (log, _) = Log::open(config).expect("open");
    let big = Record::new(0, vec![0u8; 5000]);
    let error = log
        .append(vec![numbered(0), big])
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            LogError::RecordTooLarge {
                index: 1,
                limit: 4096,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("raise max_commit_bytes"));
    // Nothing of the refused append was written.
    assert_eq!(log.stats().end_offset, 0);
}

#[tokio::test]
async fn a_second_open_of_the_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    let error = Log::open(fast_config(dir.path())).expect_err("locked");
    assert!(
        matches!(&error, LogError::Locked { dir: d, .. } if d == dir.path()),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&dir.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("is locked by another process"),
        "{message}"
    );

    log.close().await.expect("close");
    Log::open(fast_config(dir.path())).expect("open after close");
}

#[tokio::test]
async fn close_drains_pending_appends_and_then_refuses_new_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (log, _) = Log::open(fast_config(dir.path())).expect("open");
    let pending: Vec<_> = (0..20)
        .map(|i| {
            let log = log.clone();
            tokio::spawn(async move { log.append(vec![numbered(i)]).await })
        })
        .collect();
    // Let every task queue its append before closing.
    tokio::task::yield_now().await;
    let survivor = log.clone();
    log.close().await.expect("close");
    let mut acknowledged = 0;
    for task in pending {
        match task.await.expect("task") {
            Ok(_) => acknowledged += 1,
            Err(LogError::Closed) => {}
            Err(other) => panic!("unexpected error {other}"),
        }
    }
    // Whatever was acknowledged is durable, and nothing else is.
    assert_eq!(survivor.stats().end_offset, acknowledged);
    assert!(matches!(
        survivor.append(vec![numbered(99)]).await,
        Err(LogError::Closed)
    ));
    assert!(matches!(survivor.commit("x", 0), Err(LogError::Closed)));
}
