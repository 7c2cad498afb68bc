//! Property tests: the invariants the module docs promise, over generated data.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use iomt_model::{Measurement, MeasurementProperty};
use iomt_transform::fhir_template::{CodeValueMapping, SampledDataValueType};
use iomt_transform::group::{PeriodInterval, WindowSpec};
use iomt_transform::observation::Coding;
use iomt_transform::{
    CodeValueFhirTemplate, FhirTemplate, FhirValueType, MergeOutcome, ObservationGroup, Windower,
};
use proptest::prelude::*;
use serde_json::Value;

fn base() -> DateTime<Utc> {
    iomt_model::timestamp::parse("2024-03-09T00:00:00Z").unwrap()
}

const ZONES: &[Option<chrono_tz::Tz>] = &[
    None,
    Some(chrono_tz::America::New_York),
    Some(chrono_tz::Europe::Berlin),
    Some(chrono_tz::Asia::Kolkata),
    Some(chrono_tz::Australia::Lord_Howe),
    Some(chrono_tz::America::Sao_Paulo),
    Some(chrono_tz::Pacific::Chatham),
];

fn interval() -> impl Strategy<Value = PeriodInterval> {
    prop_oneof![
        Just(PeriodInterval::Single),
        Just(PeriodInterval::Hourly),
        Just(PeriodInterval::Daily),
        Just(PeriodInterval::CorrelationId),
    ]
}

/// Measurements over ten days (spanning the 2024 spring DST changes), each with a unique `id`
/// property; `(device, offset in ms, duplicate-time flag)`.
fn measurements() -> impl Strategy<Value = Vec<(u8, i64)>> {
    prop::collection::vec((0u8..3, 0i64..(10 * 24 * 3600 * 1000)), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every measurement lands in exactly one released window, of its own key, whose bounds
    /// contain it; windows of one key with different bounds never overlap.
    #[test]
    fn every_measurement_in_exactly_one_containing_window(
        raw in measurements(),
        interval in interval(),
        zone in 0..ZONES.len(),
        flush_every in 1usize..20,
    ) {
        let spec = WindowSpec { interval, time_zone: ZONES[zone] };
        let mut windower = Windower::new(spec);
        let mut sent: HashMap<String, (String, DateTime<Utc>)> = HashMap::new();
        let mut groups: Vec<ObservationGroup> = Vec::new();
        let mut seen_times: HashMap<(u8, i64), ()> = HashMap::new();
        let mut watermark = base();
        for (i, (device, offset)) in raw.iter().enumerate() {
            if seen_times.insert((*device, *offset), ()).is_some() {
                continue; // one measurement per key and instant (duplicates are de-duplicated)
            }
            let time = base() + Duration::milliseconds(*offset);
            let id = i.to_string();
            sent.insert(id.clone(), (format!("d{device}"), time));
            windower.push(Measurement {
                type_name: "hr".into(),
                occurrence_time_utc: time,
                ingestion_time_utc: None,
                device_id: format!("d{device}"),
                patient_id: None,
                encounter_id: None,
                correlation_id: Some("session".into()),
                properties: vec![MeasurementProperty { name: "id".into(), value: id }],
            }).unwrap();
            if i % flush_every == 0 {
                watermark = watermark.max(time - Duration::hours(3));
                groups.extend(windower.flush_until(watermark));
            }
        }
        groups.extend(windower.flush_all());
        prop_assert_eq!(windower.open_windows(), 0);
        let mut found: HashMap<String, usize> = HashMap::new();
        for g in &groups {
            prop_assert!(g.window.start <= g.window.end);
            for v in g.values("id").unwrap_or(&[]) {
                *found.entry(v.value.clone()).or_default() += 1;
                let (device, time) = &sent[&v.value];
                prop_assert_eq!(&g.device_id, device);
                prop_assert_eq!(v.time, *time);
                prop_assert!(g.window.contains(*time), "{:?} not in {:?}", time, g.window);
            }
        }
        prop_assert_eq!(found.len(), sent.len());
        prop_assert!(found.values().all(|n| *n == 1));
        if interval != PeriodInterval::CorrelationId {
            for a in &groups {
                for b in &groups {
                    let distinct = (a.window.start, a.window.end) != (b.window.start, b.window.end);
                    if a.device_id == b.device_id && distinct {
                        prop_assert!(
                            a.window.end < b.window.start || b.window.end < a.window.start,
                            "{:?} overlaps {:?}", a.window, b.window
                        );
                    }
                }
            }
        }
    }
}

fn template() -> CodeValueFhirTemplate {
    let sd = |name: &str| {
        FhirValueType::SampledData(SampledDataValueType::new(name, 1000.0, Some("u")).unwrap())
    };
    let mut t = CodeValueFhirTemplate::new("hr", vec![Coding::new(Some("s"), Some("c"), None)]);
    t.period_interval = PeriodInterval::Hourly;
    t.value = Some(sd("hr"));
    t.components = vec![
        CodeValueMapping {
            codes: Arc::from(vec![]),
            value: sd("a"),
        },
        CodeValueMapping {
            codes: Arc::from(vec![]),
            value: sd("b"),
        },
    ];
    t
}

/// One group of the hour 2024-03-09T10: `(second of the hour, property, value)`.
fn group_of(values: &[(u16, u8, u16)]) -> ObservationGroup {
    let hour = iomt_model::timestamp::parse("2024-03-09T10:00:00Z").unwrap();
    let measurements = values
        .iter()
        .map(|(second, prop, value)| Measurement {
            type_name: "hr".into(),
            occurrence_time_utc: hour + Duration::seconds(i64::from(*second)),
            ingestion_time_utc: None,
            device_id: "d".into(),
            patient_id: None,
            encounter_id: None,
            correlation_id: None,
            properties: vec![MeasurementProperty {
                name: ["hr", "a", "b"][usize::from(*prop % 3)].into(),
                value: value.to_string(),
            }],
        })
        .collect::<Vec<_>>();
    let mut groups = iomt_transform::group::group_batch(measurements)
        .pop()
        .unwrap()
        .observation_groups(&WindowSpec::new(PeriodInterval::Hourly))
        .unwrap();
    groups.pop().unwrap()
}

fn apply(t: &CodeValueFhirTemplate, existing: Value, g: &ObservationGroup) -> Value {
    match t.merge_observation(&existing, g).unwrap() {
        MergeOutcome::Unchanged => existing,
        MergeOutcome::Changed(v) => v,
    }
}

/// Components sorted by their service code: component order records which group came first.
fn normalized(mut obs: Value) -> Value {
    if let Some(components) = obs.get_mut("component").and_then(Value::as_array_mut) {
        components.sort_by_key(|c| c["code"]["text"].as_str().unwrap_or_default().to_owned());
    }
    obs
}

fn issued() -> DateTime<Utc> {
    iomt_model::timestamp::parse("2024-03-09T12:00:00Z").unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    /// Merging a group a second time changes nothing.
    #[test]
    fn merge_is_idempotent(
        first in prop::collection::vec((0u16..3600, 0u8..3, 0u16..500), 1..30),
        second in prop::collection::vec((0u16..3600, 0u8..3, 0u16..500), 1..30),
    ) {
        let t = template();
        let existing = t.create_observation(&group_of(&first), issued()).unwrap().to_json();
        let g = group_of(&second);
        let once = apply(&t, existing, &g);
        prop_assert_eq!(t.merge_observation(&once, &g).unwrap(), MergeOutcome::Unchanged);
    }

    /// Groups whose timestamps are all distinct give the same Observation in any order.
    #[test]
    fn merge_order_does_not_matter(
        seconds in prop::collection::hash_set(0u16..3600, 3..40),
        props in prop::collection::vec((0u8..3, 0u16..500), 40),
        split in prop::collection::vec(0usize..3, 40),
        order in Just(()).prop_perturb(|_, mut rng| {
            let mut o = vec![0usize, 1, 2];
            for i in (1..o.len()).rev() {
                o.swap(i, rng.random_range(0..=i));
            }
            o
        }),
    ) {
        let mut parts: Vec<Vec<(u16, u8, u16)>> = vec![Vec::new(); 3];
        for (i, second) in seconds.iter().enumerate() {
            let (prop, value) = props[i];
            parts[split[i]].push((*second, prop, value));
        }
        parts.retain(|p| !p.is_empty());
        prop_assume!(parts.len() >= 2);
        let t = template();
        let groups: Vec<ObservationGroup> = parts.iter().map(|p| group_of(p)).collect();
        let run = |order: &[usize]| {
            let mut obs = t.create_observation(&groups[order[0]], issued()).unwrap().to_json();
            for &i in &order[1..] {
                obs = apply(&t, obs, &groups[i]);
            }
            normalized(obs)
        };
        let natural: Vec<usize> = (0..groups.len()).collect();
        let shuffled: Vec<usize> = order.into_iter().filter(|i| *i < groups.len()).collect();
        prop_assert_eq!(run(&natural), run(&shuffled));
    }
}
