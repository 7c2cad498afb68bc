//! Generated traffic against the example mappings: good messages become Observations, bad
//! ones fail normalization.

use chrono::TimeDelta;
use iomt_debugger::{Message, TestOptions, test_mapping};
use iomt_normalize::{DeviceMapping, EnvelopeBuilder, parse_token};
use iomt_simulate::{BadKind, FleetConfig, MessageKind, Shape, SimMessage};

use crate::common::{example_mappings, generate, normalize, start};

/// The message as `iomt test-mapping` reads it from `iomt simulate --output`.
fn as_debugger_message(shape: Shape, message: &SimMessage) -> Message {
    if shape.needs_envelope() {
        Message::envelope(message.envelope_json())
    } else {
        Message::body(message.body.clone())
    }
}

fn fleet(shape: Shape, bad_message_rate: f64) -> FleetConfig {
    FleetConfig {
        devices: 20,
        shape,
        seed: 11,
        bad_message_rate,
        ..FleetConfig::default()
    }
}

// 3 000 messages, 20 devices, half a second apart: 25 minutes of traffic, one batch.
#[test]
fn every_good_message_becomes_observations_through_its_example_mappings() {
    for shape in Shape::ALL {
        let messages = generate(fleet(shape, 0.0), 3_000, TimeDelta::milliseconds(500));
        let (device, fhir) = example_mappings(shape);
        let input: Vec<Message> = messages
            .iter()
            .map(|m| as_debugger_message(shape, m))
            .collect();
        let report = test_mapping(&device, &fhir, &input, &TestOptions::new(start()));
        assert!(
            report.mapping_errors.is_empty(),
            "{shape}: {:?}",
            report.mapping_errors
        );
        assert_eq!(
            report.summary.failed_messages,
            0,
            "{shape}: {:?}",
            report.messages.iter().find(|m| m.error.is_some())
        );
        assert_eq!(
            report.summary.failed_groups,
            0,
            "{shape}: {:?}",
            report.group_errors.first()
        );
        assert!(report.is_success(), "{shape}");
        for (message, outcome) in messages.iter().zip(&report.messages) {
            let MessageKind::Good(signal) = message.kind else {
                panic!("{shape}: bad message at rate 0");
            };
            let types: Vec<&str> = outcome
                .measurements
                .iter()
                .map(|m| m["Type"].as_str().unwrap())
                .collect();
            assert_eq!(types, [signal.type_name()], "{shape}: {outcome:?}");
        }
        let signals = shape.signals().count();
        let mut observed: Vec<&str> = report
            .observations
            .iter()
            .map(|o| o.group.type_name.as_str())
            .collect();
        observed.sort_unstable();
        observed.dedup();
        assert_eq!(
            observed.len(),
            signals,
            "{shape}: every signal is observed: {observed:?}"
        );
        assert!(
            report.observations.len() >= 20,
            "{shape}: {}",
            report.summary.observations
        );
    }
}

#[test]
fn good_messages_normalize_with_their_properties_as_http_ingest_sends_them() {
    for shape in Shape::ALL {
        let (device, _) = example_mappings(shape);
        let mapping = DeviceMapping::from_json_str(&device).unwrap();
        let mut builder = EnvelopeBuilder::new();
        for message in generate(fleet(shape, 0.0), 1_000, TimeDelta::milliseconds(300)) {
            let measurements = normalize(&mapping, &mut builder, &message)
                .unwrap_or_else(|e| panic!("{shape}: {e}"));
            assert_eq!(measurements.len(), 1, "{shape}");
            let m = &measurements[0];
            assert_eq!(m.device_id, message.device_id);
            assert_eq!(
                m.patient_id.as_deref(),
                Some(message.device_id.replace("sim-", "sim-patient-").as_str())
            );
            if shape == Shape::IotHub {
                assert!(
                    m.occurrence_time_utc >= start(),
                    "the device time comes from the creation-time property"
                );
            }
        }
    }
}

#[test]
fn bad_messages_fail_normalization_with_their_defects_error() {
    for shape in Shape::ALL {
        let (device, _) = example_mappings(shape);
        let mapping = DeviceMapping::from_json_str(&device).unwrap();
        let mut builder = EnvelopeBuilder::new();
        let mut seen = Vec::new();
        for message in generate(fleet(shape, 1.0), 2_000, TimeDelta::milliseconds(300)) {
            let MessageKind::Bad(defect) = message.kind else {
                panic!("{shape}: good message at rate 1");
            };
            if !seen.contains(&defect) {
                seen.push(defect);
            }
            let error = match normalize(&mapping, &mut builder, &message) {
                Ok(measurements) => panic!(
                    "{shape} {defect}: normalized into {measurements:?} from {}",
                    String::from_utf8_lossy(&message.body)
                ),
                Err(e) => e,
            };
            let class = error.class().name();
            let expected: &[&str] = match defect {
                BadKind::InvalidJson => &["InvalidDataFormatException"],
                _ => &["IncompatibleDataException", "TemplateExpressionException"],
            };
            assert!(
                expected.contains(&class),
                "{shape} {defect}: {class}: {error}"
            );

            // The envelope form (what --output writes for IoT Hub) fails the same way.
            if shape.needs_envelope() {
                let from_envelope = parse_token(&message.envelope_json())
                    .and_then(|token| mapping.normalize(&token));
                assert!(
                    from_envelope.is_err(),
                    "{shape} {defect}: envelope normalized"
                );
            }
        }
        assert_eq!(seen.len(), BadKind::ALL.len(), "{shape}: {seen:?}");
    }
}

#[test]
fn a_mixed_stream_fails_exactly_its_bad_messages() {
    for shape in Shape::ALL {
        let messages = generate(fleet(shape, 0.1), 2_000, TimeDelta::milliseconds(500));
        let bad = messages.iter().filter(|m| m.is_bad()).count();
        assert!(bad > 100, "{shape}: {bad}");
        let (device, fhir) = example_mappings(shape);
        let input: Vec<Message> = messages
            .iter()
            .map(|m| as_debugger_message(shape, m))
            .collect();
        let report = test_mapping(&device, &fhir, &input, &TestOptions::new(start()));
        assert_eq!(report.summary.failed_messages, bad, "{shape}");
        assert_eq!(
            report.summary.failed_groups,
            0,
            "{shape}: {:?}",
            report.group_errors.first()
        );
        for (message, outcome) in messages.iter().zip(&report.messages) {
            assert_eq!(
                message.is_bad(),
                outcome.error.is_some(),
                "{shape}: {outcome:?}"
            );
        }
    }
}
