//! Many appenders at once: disjoint offsets, nothing lost, group commit, and readers that see
//! only durable records while appends go on.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use iomt_log::{Log, LogConfig, Record};

const TASKS: u64 = 64;
const APPENDS_PER_TASK: u64 = 15;

/// Record `seq` of appender `task`: its content says who wrote it.
fn record(task: u64, seq: u64) -> Record {
    Record::new(seq as i64, format!("task {task} record {seq}"))
        .with_header("task", Bytes::from(task.to_le_bytes().to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appenders_get_disjoint_ranges_and_every_record_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Real fdatasync, small segments: group commit and rolls under contention.
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = Log::open(config).expect("open");

    let mut reader = log.reader("pipeline").expect("reader");
    let total_expected: u64 = (0..TASKS)
        .map(|task| {
            (0..APPENDS_PER_TASK)
                .map(|i| 1 + (task + i) % 4)
                .sum::<u64>()
        })
        .sum();
    let watcher = log.clone();
    let reading = tokio::spawn(async move {
        let mut entries = Vec::new();
        while (entries.len() as u64) < total_expected {
            let batch = reader
                .next_batch(1000, Duration::from_secs(10))
                .await
                .expect("read");
            assert!(!batch.is_empty(), "appends stalled");
            // Only durable records are visible.
            let durable_end = watcher.stats().end_offset;
            assert!(batch.iter().all(|e| e.offset < durable_end));
            entries.extend(batch);
        }
        entries
    });

    let appenders: Vec<_> = (0..TASKS)
        .map(|task| {
            let log = log.clone();
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut seq = 0;
                for i in 0..APPENDS_PER_TASK {
                    let count = 1 + (task + i) % 4;
                    let records: Vec<Record> =
                        (seq..seq + count).map(|s| record(task, s)).collect();
                    let range = log.append(records).await.expect("append");
                    assert_eq!(range.end - range.start, count);
                    acknowledged.push((range, seq));
                    seq += count;
                }
                acknowledged
            })
        })
        .collect();

    // offset → (task, seq) as acknowledged.
    let mut owner = BTreeMap::new();
    for (task, appender) in appenders.into_iter().enumerate() {
        for (range, first_seq) in appender.await.expect("task") {
            for (i, offset) in range.enumerate() {
                let previous = owner.insert(offset, (task as u64, first_seq + i as u64));
                assert!(previous.is_none(), "offset {offset} acknowledged twice");
            }
        }
    }
    assert_eq!(owner.len() as u64, total_expected);
    assert_eq!(
        owner.keys().copied().collect::<Vec<_>>(),
        (0..total_expected).collect::<Vec<_>>()
    );

    let entries = reading.await.expect("reader task");
    for (entry, (offset, (task, seq))) in entries.iter().zip(&owner) {
        assert_eq!(entry.offset, *offset);
        assert_eq!(entry.record, record(*task, *seq));
    }

    let stats = log.stats();
    let appends = TASKS * APPENDS_PER_TASK;
    assert!(
        stats.commits < appends,
        "{} commits for {appends} appends: no grouping happened",
        stats.commits
    );
    assert!(stats.segments > 1);
    log.close().await.expect("close");
}
