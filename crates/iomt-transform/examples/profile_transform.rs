//! The `instant_quantity` and `merge` workloads of `benches/transform.rs` as a plain program,
//! for instruction counts (valgrind callgrind) and on-CPU time: on the shared development
//! machines wall-clock figures move with other people's builds, these do not (much).
//!
//! ```text
//! cargo build -p iomt-transform --profile bench --example profile_transform
//! B=$CARGO_TARGET_DIR/release/examples/profile_transform
//! $B build 100                   # prints measurements/s wall-clock and on-CPU
//! valgrind --tool=callgrind --toggle-collect='*profile_transform*run_batch*' $B build 1
//! valgrind --tool=callgrind --toggle-collect='*profile_transform*run_batch*' $B build 11
//! callgrind_annotate --inclusive=yes callgrind.out.<pid>
//! ```
//!
//! Modes:
//! * `build`: window + identity + build, the bench's `group_build` case;
//! * `serialize`: the same plus `to_json_string`, `group_build_serialize`;
//! * `merge`: `full_hour_sampled_data` (collect `*run_merge*` instead);
//! * `dump`: prints one batch's Observations as JSON lines (ids in both precisions, varied
//!   `issued` fractions), to compare the output byte for byte before and after a change.
//!
//! The second argument is how many batches of 10,000 measurements run after one warm-up batch
//! (default 10); the warm-up is collected too, so instructions per measurement are the
//! difference between an 11-batch and a 1-batch run divided by 100,000. Valgrind hides the
//! CPU's SHA extensions, so SHA-256 runs in software under callgrind (about 3,300 instructions
//! per block; natively about 50 ns per block): count it separately
//! (`sha2::sha256::compress256`).

use std::collections::HashMap;
use std::hint::black_box;

use chrono::{DateTime, Duration, Utc};
use iomt_model::Measurement;
use iomt_transform::fhir_template::SampledDataValueType;
use iomt_transform::group::{PeriodInterval, WindowSpec, group_batch};
use iomt_transform::{
    CodeValueFhirTemplate, FhirTemplate, FhirValueType, IdPrecision, ObservationGroup,
    ObservationIdentity, ResolvedIds, Windower,
};

#[path = "../benches/workload/mod.rs"]
mod workload;
use workload::{base, measurements, quantity_template};

/// Measurements per batch, as in the bench.
const N: usize = 10_000;

struct Workload {
    template: CodeValueFhirTemplate,
    windower: Windower<WindowSpec>,
    resolved: HashMap<String, ResolvedIds>,
    issued: DateTime<Utc>,
}

/// One bench iteration: window, identify, build (and serialize). Returns the JSON bytes.
#[inline(never)]
fn run_batch(w: &mut Workload, ms: Vec<Measurement>, serialize: bool) -> usize {
    for m in ms {
        let _ = w.windower.push(m);
    }
    let mut bytes = 0usize;
    for g in w.windower.flush_all() {
        let Some(ids) = w.resolved.get(&g.device_id) else {
            continue;
        };
        let Ok(identity) = ObservationIdentity::new(&g, ids, IdPrecision::Seconds) else {
            continue;
        };
        let Ok(obs) = w.template.create_observation(&g, w.issued) else {
            continue;
        };
        let obs = obs.with_identity(identity);
        if serialize {
            bytes += obs.to_json_string().len();
        } else {
            black_box(&obs);
        }
    }
    bytes
}

#[inline(never)]
fn run_merge(
    template: &CodeValueFhirTemplate,
    existing: &serde_json::Value,
    group: &ObservationGroup,
) {
    let _ = black_box(template.merge_observation(existing, group));
}

fn merge(batches: usize) {
    let mut template = CodeValueFhirTemplate::new("heartrate", vec![]);
    template.period_interval = PeriodInterval::Hourly;
    template.value =
        SampledDataValueType::new("hr", 1000.0, Some("count/min")).map(FhirValueType::SampledData);
    let hour = |offset: usize| {
        let ms: Vec<Measurement> = measurements(3600, 1)
            .into_iter()
            .map(|mut m| {
                m.properties[0].value =
                    (60 + (m.occurrence_time_utc.timestamp() as usize + offset) % 40).to_string();
                m
            })
            .collect();
        group_batch(ms)
            .pop()
            .and_then(|g| {
                g.observation_groups(&WindowSpec::new(PeriodInterval::Hourly))
                    .ok()
            })
            .and_then(|mut g| g.pop())
    };
    let (Some(first), Some(second)) = (hour(0), hour(7)) else {
        eprintln!("no group");
        return;
    };
    let Ok(existing) = template.create_observation(&first, base()) else {
        eprintln!("no observation");
        return;
    };
    let existing = existing.to_json();
    for _ in 0..=batches {
        run_merge(&template, &existing, &second);
    }
}

/// Nanoseconds this thread has spent on a CPU (Linux `schedstat`; 0 elsewhere). On a shared
/// machine this is steadier than wall-clock time: time spent waiting for a core is left out.
fn on_cpu_nanos() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Prints every Observation of one batch (JSON lines), for before/after comparisons.
fn dump() {
    use std::io::Write;
    let template = quantity_template();
    let mut windower = Windower::new(template.window_spec());
    for m in measurements(N, 100) {
        let _ = windower.push(m);
    }
    let mut out = std::io::stdout().lock();
    for (i, g) in windower.flush_all().into_iter().enumerate() {
        let ids = ResolvedIds::new(&format!("patient-{i}"), &g.device_id, None);
        let precision = if i.is_multiple_of(2) {
            IdPrecision::Seconds
        } else {
            IdPrecision::Milliseconds
        };
        let (Ok(identity), Ok(obs)) = (
            ObservationIdentity::new(&g, &ids, precision),
            template.create_observation(&g, base() + Duration::nanoseconds(i as i64 * 7_300)),
        ) else {
            continue;
        };
        let obs = obs.with_identity(identity);
        let _ = writeln!(out, "{}", obs.to_json_string());
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "build".to_owned());
    let batches: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    if mode == "merge" {
        merge(batches);
        return;
    }
    if mode == "dump" {
        dump();
        return;
    }
    let serialize = match mode.as_str() {
        "build" => false,
        "serialize" => true,
        other => {
            eprintln!("unknown mode {other:?}: use build, serialize or merge");
            std::process::exit(2);
        }
    };
    let template = quantity_template();
    let mut w = Workload {
        windower: Windower::new(template.window_spec()),
        template,
        resolved: (0..100)
            .map(|d| {
                let device = format!("device-{d}");
                let ids = ResolvedIds::new(&format!("patient-{d}"), &device, None);
                (device, ids)
            })
            .collect(),
        issued: base(),
    };
    let input = measurements(N, 100);
    // Warm-up: the windower's tables reach their steady size, as in the bench.
    run_batch(&mut w, input.clone(), serialize);
    let mut bytes = 0usize;
    let mut elapsed = std::time::Duration::ZERO;
    let mut on_cpu = 0u64;
    for _ in 0..batches {
        let batch = input.clone();
        let (start, cpu) = (std::time::Instant::now(), on_cpu_nanos());
        bytes += run_batch(&mut w, batch, serialize);
        on_cpu += on_cpu_nanos().saturating_sub(cpu);
        elapsed += start.elapsed();
    }
    let measurements = (batches * N) as f64;
    eprintln!(
        "{mode}: {batches} batches of {N}: {:.0} measurements/s wall-clock, {:.0}/s on-CPU \
         ({:.0} ns each), {bytes} JSON bytes",
        measurements / elapsed.as_secs_f64(),
        measurements / (on_cpu as f64 / 1e9),
        on_cpu as f64 / measurements,
    );
}
