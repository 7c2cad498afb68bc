//! Throughput of the durable log with 300-byte records (a typical device message).
//!
//! * `append_fsync/appenders/N`: N tasks each appending one record at a time and waiting for
//!   it to be durable (real `fdatasync`). Shows group commit: one sync serves every append that
//!   queued during the previous one, so records/s grows with N.
//! * `append_fsync_batch16/appenders/256`: the same with 16 records per append (a source that
//!   batches what arrived meanwhile, or 16× as many concurrent senders).
//! * `append_nosync/appenders/256`: without syncs, the CPU cost of framing and writing.
//! * `read_sequential`: a reader going through 200,000 durable records in batches of 1,000.
//!
//! Run with `cargo bench -p iomt-log --bench log`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput, criterion_main};
use iomt_log::{Log, LogConfig, Record, SyncMode};
use tokio::runtime::Runtime;

const PAYLOAD_BYTES: usize = 300;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn record(payload: &Bytes, i: u64) -> Record {
    Record::new(i as i64, payload.clone())
}

/// `appenders` tasks each make `appends_per_task` appends of `records_per_append` records;
/// returns the time until all are durable.
fn run_appenders(
    runtime: &Runtime,
    log: &Log,
    appenders: u64,
    appends_per_task: u64,
    records_per_append: u64,
) -> Duration {
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    runtime.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|_| {
                let log = log.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    for i in 0..appends_per_task {
                        let records = (0..records_per_append)
                            .map(|j| record(&payload, i + j))
                            .collect();
                        black_box(log.append(records).await.expect("append"));
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("task");
        }
        started.elapsed()
    })
}

fn bench_append(c: &mut Criterion, group_name: &str, sync: SyncMode, cases: &[(u64, u64, u64)]) {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        sync,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = Log::open(config).expect("open");
    let mut group = c.benchmark_group(group_name);
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for &(appenders, appends_per_task, records_per_append) in cases {
        group.throughput(Throughput::Elements(
            appenders * appends_per_task * records_per_append,
        ));
        group.bench_function(BenchmarkId::new("appenders", appenders), |b| {
            b.iter_custom(|iterations| {
                (0..iterations)
                    .map(|_| {
                        run_appenders(
                            &runtime,
                            &log,
                            appenders,
                            appends_per_task,
                            records_per_append,
                        )
                    })
                    .sum()
            });
        });
    }
    group.finish();
    let stats = log.stats();
    eprintln!(
        "{group_name}: {} records in {} commits ({:.0} records per commit)",
        stats.records_appended,
        stats.commits,
        stats.records_appended as f64 / stats.commits.max(1) as f64
    );
}

fn append_fsync(c: &mut Criterion) {
    bench_append(
        c,
        "append_fsync",
        SyncMode::Fsync,
        &[(1, 40, 1), (16, 20, 1), (256, 8, 1)],
    );
}

fn append_fsync_batch16(c: &mut Criterion) {
    bench_append(c, "append_fsync_batch16", SyncMode::Fsync, &[(256, 4, 16)]);
}

fn append_nosync(c: &mut Criterion) {
    bench_append(c, "append_nosync", SyncMode::Never, &[(256, 40, 1)]);
}

fn read_sequential(c: &mut Criterion) {
    const RECORDS: u64 = 200_000;
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let config = LogConfig {
        sync: SyncMode::Never,
        ..LogConfig::new(dir.path())
    };
    let (log, _) = Log::open(config).expect("open");
    let payload = Bytes::from(vec![b'x'; PAYLOAD_BYTES]);
    for chunk in 0..RECORDS / 1000 {
        let records = (0..1000)
            .map(|i| record(&payload, chunk * 1000 + i))
            .collect();
        log.append_blocking(records).expect("fill");
    }
    let mut reader = log.reader("bench").expect("reader");

    let mut group = c.benchmark_group("read_sequential");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(RECORDS));
    group.bench_function("batch_1000", |b| {
        b.iter(|| {
            reader.seek(0).expect("seek");
            runtime.block_on(async {
                let mut read = 0;
                while read < RECORDS {
                    let batch = reader.next_batch(1000, Duration::ZERO).await.expect("read");
                    read += batch.len() as u64;
                    black_box(batch);
                }
            });
        });
    });
    group.finish();
}

/// Criterion's generated entry points (undocumented by the macro).
mod suite {
    #![allow(missing_docs)]
    use super::{append_fsync, append_fsync_batch16, append_nosync, read_sequential};
    use criterion::criterion_group;

    criterion_group!(
        benches,
        append_fsync,
        append_fsync_batch16,
        append_nosync,
        read_sequential
    );
}
criterion_main!(suite::benches);
