//! Throughput of the embedded stores, on files in a temporary directory on the build disk.
//!
//! Run with `cargo bench -p iomt-store --bench store` (criterion; `-- <filter>` for one case).
//!
//! * `local_fhir/create_instant_quantity`: batches of 1,000 one-instant SpO2 groups (one value
//!   each) from 1,000 devices, every group a new Observation. Devices and Patients exist
//!   (created in an untimed warm-up), as in a running service.
//! * `local_fhir/merge_hour_sampled_data`: batches of 1,000 heart-rate groups (10 one-second
//!   values each) from 1,000 devices, every group merged into its device's hour Observation
//!   (1-second SampledData, 3,600 slots) that earlier batches wrote. The Observation cache
//!   holds every hour Observation, as it would for 1,000 devices.
//! * `local_fhir/merge_hour_sampled_data_uncached`: the same with the Observation cache off,
//!   so each merge reads and parses the Observation from the file first.
//! * `dead_letter/put`: batches of 100 dead letters (500-byte payloads), each batch one durable
//!   commit (`synchronous=FULL`).
//!
//! Throughput is reported per group (or per dead letter). The local store cases are measured
//! twice: in wall-clock time (`local_fhir`) and in CPU time of the process, user plus system,
//! all threads (`local_fhir_cpu`). The development machine is shared: wall time moves with
//! other work on it, CPU time much less. `IOMT_BENCH_WORKERS=n` sets
//! `LocalStoreConfig::workers` (default 1: everything on the calling thread). Dead-letter puts wait for the disk (`fsync`), so
//! they are measured in wall time only.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use cpu_time::ProcessTime;
use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use iomt_store::{
    DeadLetterStore, LocalFhirStore, LocalStoreConfig, NewDeadLetter, Stage, StoreOutcome,
};
use iomt_transform::{
    FhirTemplates, ObservationGroup, PeriodInterval, PropertyValues, TimeValue, WindowSpec,
};

const FHIR_MAPPING: &str = include_str!("../../../examples/wearable/fhirmapping.json");
const DEVICES: usize = 1000;
const BATCH: usize = 1000;
const HR_VALUES_PER_GROUP: i64 = 10;

fn bench_dir() -> tempfile::TempDir {
    // The build disk rather than a RAM-backed /tmp, so commits pay for real writes.
    let base = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base).expect("bench directory");
    tempfile::tempdir_in(base).expect("bench directory")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn group(
    type_name: &str,
    device: usize,
    interval: PeriodInterval,
    values: Vec<TimeValue>,
) -> ObservationGroup {
    let window = WindowSpec::new(interval).window_for(values[0].time);
    ObservationGroup {
        type_name: type_name.into(),
        device_id: format!("wristband-{device:04}"),
        patient_id: Some(format!("patient-{device:04}")),
        encounter_id: None,
        correlation_id: None,
        window,
        properties: vec![PropertyValues {
            name: if type_name == "spo2" { "spo2" } else { "hr" }.into(),
            values,
        }],
    }
}

/// One SpO2 group per device at `t`.
fn spo2_batch(t: DateTime<Utc>) -> Vec<ObservationGroup> {
    (0..BATCH)
        .map(|i| {
            let device = i % DEVICES;
            let value = TimeValue {
                time: t,
                value: format!("{}", 90 + i % 10),
            };
            group("spo2", device, PeriodInterval::Single, vec![value])
        })
        .collect()
}

/// One heart-rate group per device: `HR_VALUES_PER_GROUP` one-second values from `t`.
fn hr_batch(t: DateTime<Utc>) -> Vec<ObservationGroup> {
    (0..BATCH)
        .map(|i| {
            let device = i % DEVICES;
            let values = (0..HR_VALUES_PER_GROUP)
                .map(|s| TimeValue {
                    time: t + TimeDelta::seconds(s),
                    value: format!("{}", 60 + (i as i64 + s) % 40),
                })
                .collect();
            group("heartrate", device, PeriodInterval::Hourly, values)
        })
        .collect()
}

/// The default configuration; `IOMT_BENCH_WORKERS` sets the build threads.
fn config() -> LocalStoreConfig {
    let mut config = LocalStoreConfig::default();
    if let Some(workers) = std::env::var("IOMT_BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
    {
        config.workers = workers;
    }
    config
}

fn check(outcomes: &[StoreOutcome]) {
    if let Some(error) = outcomes.iter().find_map(StoreOutcome::error) {
        panic!("a group failed: {error}");
    }
}

fn local_fhir_wall(c: &mut Criterion) {
    local_fhir(c, "local_fhir");
}

fn local_fhir_cpu(c: &mut Criterion<ProcessCpu>) {
    local_fhir(c, "local_fhir_cpu");
}

fn local_fhir<M: Measurement>(c: &mut Criterion<M>, name: &str) {
    let templates = Arc::new(FhirTemplates::from_json_str(FHIR_MAPPING).unwrap());
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(BATCH as u64));
    group.sample_size(20);

    {
        let dir = bench_dir();
        let store = LocalFhirStore::open(&dir.path().join("fhir.db"), config()).unwrap();
        let start = at("2026-01-01T00:00:00Z");
        // Warm-up: Patients and Devices.
        check(&store.persist(spo2_batch(start), &templates));
        let mut next = 1i64;
        group.bench_function("create_instant_quantity", |b| {
            b.iter_batched(
                || {
                    next += 1;
                    spo2_batch(start + TimeDelta::seconds(next))
                },
                |groups| {
                    let outcomes = store.persist(groups, &templates);
                    debug_assert!(matches!(outcomes[0], StoreOutcome::Created { .. }));
                    black_box(outcomes)
                },
                BatchSize::PerIteration,
            );
        });
    }

    for (name, cache_bytes) in [
        (
            "merge_hour_sampled_data",
            LocalStoreConfig::default().observation_cache_bytes,
        ),
        ("merge_hour_sampled_data_uncached", 0),
    ] {
        let dir = bench_dir();
        let config = LocalStoreConfig {
            observation_cache_bytes: cache_bytes,
            ..config()
        };
        let store = LocalFhirStore::open(&dir.path().join("fhir.db"), config).unwrap();
        let hour = at("2026-01-01T00:00:00Z");
        // Warm-up: every device's hour Observation exists.
        check(&store.persist(hr_batch(hour), &templates));
        let mut step = 0i64;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    // New seconds of the same hours, so every group changes its Observation;
                    // after an hour's 360 batches the next hour begins (one batch of creates).
                    step += 1;
                    let hours = step / 360;
                    let offset = (step % 360) * HR_VALUES_PER_GROUP;
                    hr_batch(hour + TimeDelta::hours(hours) + TimeDelta::seconds(offset))
                },
                |groups| {
                    let outcomes = store.persist(groups, &templates);
                    debug_assert!(outcomes.iter().all(|o| o.error().is_none()));
                    black_box(outcomes)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

fn dead_letters(c: &mut Criterion) {
    const PUT_BATCH: usize = 100;
    let dir = bench_dir();
    let store = DeadLetterStore::open(&dir.path().join("dead-letters.db")).unwrap();
    let payload = vec![b'x'; 500];
    let entries: Vec<NewDeadLetter> = (0..PUT_BATCH)
        .map(|i| NewDeadLetter {
            class: "FhirResourceNotFoundException".into(),
            stage: Stage::Persist,
            reason: "Device not found: no Device has the measurement's device id as identifier"
                .into(),
            occurred_at: Utc::now(),
            device_id: Some(format!("wristband-{i:04}")),
            retryable: false,
            source: "mqtt:devices/telemetry".into(),
            log_offset: Some(i as u64),
            headers: vec![("content-type".into(), "application/json".into())],
            payload: payload.clone(),
        })
        .collect();
    let mut group = c.benchmark_group("dead_letter");
    group.throughput(Throughput::Elements(PUT_BATCH as u64));
    group.sample_size(20);
    group.bench_function("put", |b| {
        b.iter(|| black_box(store.put(&entries).unwrap()))
    });
    group.finish();
}

/// CPU time of the process (user + system, every thread), in nanoseconds.
struct ProcessCpu;

impl Measurement for ProcessCpu {
    type Intermediate = ProcessTime;
    type Value = u64;

    fn start(&self) -> ProcessTime {
        ProcessTime::now()
    }

    fn end(&self, start: ProcessTime) -> u64 {
        u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn add(&self, a: &u64, b: &u64) -> u64 {
        a + b
    }

    fn zero(&self) -> u64 {
        0
    }

    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds shown as CPU time; throughput as elements per CPU second.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = if typical < 1e3 {
            (1.0, "ns cpu")
        } else if typical < 1e6 {
            (1e-3, "µs cpu")
        } else if typical < 1e9 {
            (1e-6, "ms cpu")
        } else {
            (1e-9, "s cpu")
        };
        for v in values {
            *v *= factor;
        }
        unit
    }

    fn scale_throughputs(
        &self,
        _typical: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per = match throughput {
            Throughput::Elements(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                *n as f64
            }
        };
        for v in values {
            *v = per * 1e9 / *v / 1e3;
        }
        "Kelem/cpu-s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

criterion_group!(benches, local_fhir_wall, dead_letters);
criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ProcessCpu);
    targets = local_fhir_cpu
}
criterion_main!(benches, cpu);
