//! The pure generator: determinism, physiological bounds, bad-message rate.

use std::collections::{BTreeMap, HashMap};

use chrono::TimeDelta;
use iomt_normalize::{DeviceMapping, EnvelopeBuilder};
use iomt_simulate::physiology::{
    DIASTOLIC, HEART_RATE, PULSE_PRESSURE_MIN, SPO2, SYSTOLIC, TEMPERATURE_C,
};
use iomt_simulate::{BadKind, FleetConfig, MessageKind, Shape};

use crate::common::{example_mappings, generate, normalize};

#[test]
fn the_same_seed_gives_the_same_messages_and_another_seed_others() {
    for shape in Shape::ALL {
        let config = |seed| FleetConfig {
            devices: 7,
            shape,
            seed,
            bad_message_rate: 0.1,
            ..FleetConfig::default()
        };
        let step = TimeDelta::milliseconds(250);
        let first = generate(config(42), 2_000, step);
        assert_eq!(first, generate(config(42), 2_000, step), "{shape}");
        let other = generate(config(43), 2_000, step);
        let same = first.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(
            same < 100,
            "{shape}: seed 43 repeats {same} of seed 42's messages"
        );
    }
}

fn value(m: &iomt_model::Measurement, name: &str) -> f64 {
    let property = m
        .properties
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("{} has no {name}", m.type_name));
    property
        .value
        .parse()
        .unwrap_or_else(|e| panic!("{name} = {:?}: {e}", property.value))
}

/// Pearson correlation.
fn correlation(pairs: &[(f64, f64)]) -> f64 {
    let n = pairs.len() as f64;
    let (mx, my) = pairs
        .iter()
        .fold((0.0, 0.0), |(x, y), (a, b)| (x + a / n, y + b / n));
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx).powi(2);
        syy += (y - my).powi(2);
    }
    sxy / (sxx * syy).sqrt()
}

// 100 000 wearable messages from 100 devices one second apart: about 28 hours, so every device
// crosses midnight, has activity bursts and quiet stretches.
#[test]
fn readings_stay_within_physiological_bounds_over_100k_messages() {
    let messages = generate(
        FleetConfig {
            devices: 100,
            seed: 7,
            ..FleetConfig::default()
        },
        100_000,
        TimeDelta::seconds(1),
    );
    let (device_mapping, _) = example_mappings(Shape::Wearable);
    let mapping = DeviceMapping::from_json_str(&device_mapping).unwrap();
    let mut builder = EnvelopeBuilder::new();

    let mut heart_rates: HashMap<String, Vec<f64>> = HashMap::new();
    let mut pressures = Vec::new();
    let mut steps: HashMap<(String, chrono::DateTime<chrono::Utc>), f64> = HashMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut step_days = 0;
    for message in &messages {
        let measurements = normalize(&mapping, &mut builder, message).unwrap();
        assert_eq!(measurements.len(), 1);
        let m = &measurements[0];
        *counts.entry(m.type_name.clone()).or_default() += 1;
        match m.type_name.as_str() {
            "heartrate" => {
                let hr = value(m, "hr");
                assert!(
                    (f64::from(*HEART_RATE.start())..=f64::from(*HEART_RATE.end())).contains(&hr),
                    "heart rate {hr}"
                );
                heart_rates.entry(m.device_id.clone()).or_default().push(hr);
            }
            "spo2" => {
                let spo2 = value(m, "spo2");
                assert!(
                    (f64::from(*SPO2.start())..=f64::from(*SPO2.end())).contains(&spo2),
                    "SpO2 {spo2}"
                );
            }
            "bloodpressure" => {
                let (sys, dia) = (value(m, "systolic"), value(m, "diastolic"));
                assert!(
                    (f64::from(*SYSTOLIC.start())..=f64::from(*SYSTOLIC.end())).contains(&sys),
                    "systolic {sys}"
                );
                assert!(
                    (f64::from(*DIASTOLIC.start())..=f64::from(*DIASTOLIC.end())).contains(&dia),
                    "diastolic {dia}"
                );
                assert!(sys - dia >= f64::from(PULSE_PRESSURE_MIN), "{sys}/{dia}");
                pressures.push((sys, dia));
            }
            "steps" => {
                let count = value(m, "steps");
                assert!((0.0..=60_000.0).contains(&count), "steps {count}");
                let day = (m.device_id.clone(), m.occurrence_time_utc);
                let previous = steps.insert(day, count);
                match previous {
                    Some(previous) => assert!(count >= previous, "steps went down"),
                    None => step_days += 1,
                }
            }
            "bodytemperature" => {
                let celsius = value(m, "celsius");
                assert!(TEMPERATURE_C.contains(&celsius), "temperature {celsius} °C");
            }
            other => panic!("unexpected type {other}"),
        }
    }
    assert_eq!(counts.len(), 5, "every signal appears: {counts:?}");
    assert!(step_days > 100, "steps start over on the second day");
    let r = correlation(&pressures);
    assert!(r > 0.3, "systolic and diastolic move together: r = {r}");

    // Resting rates differ between patients, and bursts lift the rate well above rest.
    let mut medians: Vec<f64> = heart_rates
        .values_mut()
        .map(|rates| {
            rates.sort_by(f64::total_cmp);
            rates[rates.len() / 2]
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    assert!(
        medians[0] < 65.0 && medians[medians.len() - 1] > 85.0,
        "{medians:?}"
    );
    let above_rest = heart_rates
        .values()
        .flatten()
        .filter(|&&hr| hr >= 120.0)
        .count();
    assert!(
        above_rest > 100,
        "activity bursts: {above_rest} readings ≥ 120"
    );
}

#[test]
fn the_bad_message_rate_is_honoured_with_every_defect() {
    let messages = generate(
        FleetConfig {
            bad_message_rate: 0.05,
            ..FleetConfig::default()
        },
        20_000,
        TimeDelta::milliseconds(100),
    );
    let mut defects: BTreeMap<&str, usize> = BTreeMap::new();
    for message in &messages {
        if let MessageKind::Bad(kind) = message.kind {
            *defects.entry(kind.name()).or_default() += 1;
        }
    }
    let bad: usize = defects.values().sum();
    assert!((800..=1_200).contains(&bad), "{bad} of 20000 bad at 5 %");
    assert_eq!(defects.len(), BadKind::ALL.len(), "{defects:?}");
    assert!(
        messages.iter().all(|m| !m.body.contains(&b'\n')),
        "every body is one NDJSON line"
    );
}
