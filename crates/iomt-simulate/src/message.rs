//! Simulated messages: what one device sends once, in the fields of its shape.
//!
//! A message is what a device (or its hub) hands to the connector: a JSON body plus, for the
//! IoT Hub shape, the properties and system properties the hub attaches. The envelope form
//! (`{"Body": …, "Properties": {…}, "SystemProperties": {…}}`) is how the connector hands an
//! event to the device templates, and what `iomt normalize --envelope` reads.
//!
//! # What must hold
//! * A [`MessageKind::Good`] message normalizes with its shape's example device mapping into
//!   measurements of its signal, and those map to Observations with the example FHIR mapping.
//! * A [`MessageKind::Bad`] message fails normalization with that mapping: the dead-letter path
//!   gets real work. Its defect is one a real fleet produces (a truncated upload, a firmware
//!   that drops or renames a field or nests a value, a sensor that reports `null`).

use std::fmt;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::{Value, json};

use crate::physiology::{Readings, uniform};
use crate::shape::{Shape, Signal};

/// The property carrying the device's own clock in the IoT Hub shape.
pub const CREATION_TIME_PROPERTY: &str = "iothub-creation-time-utc";
/// The system property carrying the device id in the IoT Hub shape.
pub const DEVICE_ID_SYSTEM_PROPERTY: &str = "iothub-connection-device-id";
/// The system property carrying the hub's enqueued time in the IoT Hub shape.
pub const ENQUEUED_TIME_SYSTEM_PROPERTY: &str = "iothub-enqueuedtime";

/// One simulated message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimMessage {
    /// The sending device's id (also when a bad message lost it from its fields).
    pub device_id: String,
    /// The body: one JSON object, or for [`BadKind::InvalidJson`] a truncated one. Never
    /// contains a line break, so it is one NDJSON line.
    pub body: Vec<u8>,
    /// Application properties (`Properties` of the envelope), in sending order.
    pub properties: Vec<(String, String)>,
    /// System properties (`SystemProperties` of the envelope), in sending order.
    pub system_properties: Vec<(String, String)>,
    /// What the message is meant to exercise.
    pub kind: MessageKind,
}

impl SimMessage {
    /// A message read from elsewhere (a file, a dead-letter export), to be sent as it is.
    pub fn replayed(
        device_id: impl Into<String>,
        body: impl Into<Vec<u8>>,
        properties: Vec<(String, String)>,
        system_properties: Vec<(String, String)>,
    ) -> SimMessage {
        SimMessage {
            device_id: device_id.into(),
            body: body.into(),
            properties,
            system_properties,
            kind: MessageKind::Replayed,
        }
    }

    /// The message as one event envelope `{"Body": …, "Properties": {…},
    /// "SystemProperties": {…}}`, the form `iomt normalize --envelope` reads. The body is
    /// embedded as it is, so an invalid body makes an invalid envelope.
    pub fn envelope_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 64 + 64 * self.properties.len());
        out.extend_from_slice(b"{\"Body\":");
        out.extend_from_slice(&self.body);
        out.extend_from_slice(b",\"Properties\":");
        write_object(&mut out, &self.properties);
        out.extend_from_slice(b",\"SystemProperties\":");
        write_object(&mut out, &self.system_properties);
        out.push(b'}');
        out
    }

    /// Whether the message is meant to fail normalization.
    pub fn is_bad(&self) -> bool {
        matches!(self.kind, MessageKind::Bad(_))
    }
}

fn write_object(out: &mut Vec<u8>, pairs: &[(String, String)]) {
    out.push(b'{');
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, name);
        out.push(b':');
        let _ = serde_json::to_writer(&mut *out, value);
    }
    out.push(b'}');
}

/// What a message is meant to exercise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A valid reading of this signal.
    Good(Signal),
    /// A message with this defect, which fails normalization.
    Bad(BadKind),
    /// A message read from a file (`iomt replay`), not generated: what it exercises is not
    /// known.
    Replayed,
}

/// The defect of a bad message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BadKind {
    /// The body is cut short: not JSON (`InvalidDataFormatException`).
    InvalidJson,
    /// The device id or the timestamp is missing (in the IoT Hub shape: the system property
    /// with the device id, or both the creation-time property and the enqueued time).
    MissingField,
    /// A field has the wrong type: a value nested in an object, a timestamp sent as a number,
    /// a Fahrenheit reading sent as text.
    WrongType,
    /// A required value (or the epoch timestamp) is `null`.
    NullValue,
}

impl BadKind {
    /// Every defect.
    pub const ALL: [BadKind; 4] = [
        BadKind::InvalidJson,
        BadKind::MissingField,
        BadKind::WrongType,
        BadKind::NullValue,
    ];

    /// A short name (`invalid-json`, `missing-field`, `wrong-type`, `null-value`).
    pub fn name(self) -> &'static str {
        match self {
            BadKind::InvalidJson => "invalid-json",
            BadKind::MissingField => "missing-field",
            BadKind::WrongType => "wrong-type",
            BadKind::NullValue => "null-value",
        }
    }
}

impl fmt::Display for BadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The identity of one simulated device.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub device_id: String,
    pub patient_id: String,
}

/// RFC 3339 UTC with milliseconds, as devices and hubs write instants.
fn instant(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A message under construction: the body as a JSON tree, so a defect can be applied to it.
struct Draft {
    body: Value,
    properties: Vec<(String, String)>,
    system_properties: Vec<(String, String)>,
}

/// Builds one message of `signal` from `readings` taken at `now`; `defect` spoils it.
pub(crate) fn build(
    shape: Shape,
    identity: &Identity,
    signal: Signal,
    readings: &Readings,
    now: DateTime<Utc>,
    defect: Option<BadKind>,
    rng: &mut fastrand::Rng,
) -> SimMessage {
    let mut draft = match shape {
        Shape::Wearable => wearable(identity, signal, readings, now),
        Shape::IotHub => iot_hub(identity, signal, readings, now, rng),
        Shape::IotCentral => iot_central(identity, readings, now, rng),
    };
    let kind = match defect {
        None => MessageKind::Good(signal),
        Some(defect) => {
            spoil(shape, signal, defect, &mut draft, rng);
            MessageKind::Bad(defect)
        }
    };
    let mut body = draft.body.to_string().into_bytes();
    if defect == Some(BadKind::InvalidJson) {
        // Any proper, non-empty prefix of an object's text is not JSON: the closing brace is
        // its last byte.
        let cut = 1 + rng.usize(0..body.len() - 1);
        body.truncate(cut);
    }
    SimMessage {
        device_id: identity.device_id.clone(),
        body,
        properties: draft.properties,
        system_properties: draft.system_properties,
        kind,
    }
}

/// The hub's delay between the device's send and the enqueued time: 20–400 ms.
fn enqueued(now: DateTime<Utc>, rng: &mut fastrand::Rng) -> DateTime<Utc> {
    now + TimeDelta::milliseconds(uniform(rng, 20.0, 400.0) as i64)
}

fn wearable(identity: &Identity, signal: Signal, r: &Readings, now: DateTime<Utc>) -> Draft {
    let mut body = json!({
        "deviceId": identity.device_id,
        "patientId": identity.patient_id,
    });
    let fields = body.as_object_mut().expect("built as an object");
    match signal {
        Signal::HeartRate => {
            fields.insert("endDate".into(), instant(now).into());
            fields.insert("heartRate".into(), r.heart_rate.into());
        }
        Signal::Spo2 => {
            fields.insert("endDate".into(), instant(now).into());
            fields.insert("spo2".into(), r.spo2.into());
        }
        Signal::BloodPressure => {
            fields.insert("endDate".into(), instant(now).into());
            fields.insert("systolic".into(), r.systolic.into());
            fields.insert("diastolic".into(), r.diastolic.into());
        }
        Signal::Steps => {
            // The example maps steps to one Quantity per day, which takes one value per day:
            // every report of a day carries the day's start, so they are one measurement that
            // later reports replace, not several that cannot share the Observation.
            let day_start = r.steps_day.and_time(chrono::NaiveTime::MIN).and_utc();
            fields.insert("endDate".into(), instant(day_start).into());
            fields.insert("steps".into(), r.steps.into());
        }
        Signal::BodyTemperature => {
            fields.insert("epochMs".into(), now.timestamp_millis().into());
            fields.insert(
                "temperatureF".into(),
                fahrenheit_tenths(r.temperature_c).into(),
            );
        }
    }
    Draft {
        body,
        properties: Vec::new(),
        system_properties: Vec::new(),
    }
}

/// °C as °F with one decimal, kept inside the °F equivalent of the temperature bounds so the
/// mapped Celsius value stays inside them too.
fn fahrenheit_tenths(celsius: f64) -> f64 {
    let tenths = (celsius * 18.0 + 320.0).round().clamp(970.0, 1000.0);
    tenths / 10.0
}

fn iot_hub(
    identity: &Identity,
    signal: Signal,
    r: &Readings,
    now: DateTime<Utc>,
    rng: &mut fastrand::Rng,
) -> Draft {
    let body = match signal {
        Signal::BloodPressure => json!({
            "systolic": r.systolic,
            "diastolic": r.diastolic,
            "patientId": identity.patient_id,
        }),
        _ => json!({ "heartRate": r.heart_rate, "patientId": identity.patient_id }),
    };
    Draft {
        body,
        properties: vec![(CREATION_TIME_PROPERTY.to_owned(), instant(now))],
        system_properties: vec![
            (
                DEVICE_ID_SYSTEM_PROPERTY.to_owned(),
                identity.device_id.clone(),
            ),
            (
                ENQUEUED_TIME_SYSTEM_PROPERTY.to_owned(),
                instant(enqueued(now, rng)),
            ),
        ],
    }
}

fn iot_central(
    identity: &Identity,
    r: &Readings,
    now: DateTime<Utc>,
    rng: &mut fastrand::Rng,
) -> Draft {
    let body = json!({
        "applicationId": "iomt-simulator",
        "messageSource": "telemetry",
        "deviceId": identity.device_id,
        "schema": "default@v1",
        "templateId": "urn:iomt:simulator:monitor:1",
        "enqueuedTime": instant(enqueued(now, rng)),
        "telemetry": { "HeartRate": r.heart_rate },
        "enrichments": { "patientId": identity.patient_id },
        "messageProperties": {},
    });
    Draft {
        body,
        properties: Vec::new(),
        system_properties: Vec::new(),
    }
}

/// The fields holding `signal`'s values in `shape`'s body, by JSON pointer.
fn value_pointers(shape: Shape, signal: Signal) -> &'static [&'static str] {
    match (shape, signal) {
        (Shape::IotCentral, _) => &["/telemetry/HeartRate"],
        (_, Signal::HeartRate) => &["/heartRate"],
        (_, Signal::Spo2) => &["/spo2"],
        (_, Signal::BloodPressure) => &["/systolic", "/diastolic"],
        (_, Signal::Steps) => &["/steps"],
        (_, Signal::BodyTemperature) => &["/temperatureF"],
    }
}

/// Applies `defect` (other than the truncation, which happens on the text).
fn spoil(
    shape: Shape,
    signal: Signal,
    defect: BadKind,
    draft: &mut Draft,
    rng: &mut fastrand::Rng,
) {
    let values = value_pointers(shape, signal);
    let value = values[rng.usize(0..values.len())];
    match defect {
        BadKind::InvalidJson => {}
        BadKind::MissingField => match shape {
            Shape::IotHub => {
                if rng.bool() {
                    draft
                        .system_properties
                        .retain(|(name, _)| name != DEVICE_ID_SYSTEM_PROPERTY);
                } else {
                    draft
                        .properties
                        .retain(|(name, _)| name != CREATION_TIME_PROPERTY);
                    draft
                        .system_properties
                        .retain(|(name, _)| name != ENQUEUED_TIME_SYSTEM_PROPERTY);
                }
            }
            Shape::Wearable | Shape::IotCentral => {
                let timestamp = match (shape, signal) {
                    (Shape::IotCentral, _) => "enqueuedTime",
                    (_, Signal::BodyTemperature) => "epochMs",
                    _ => "endDate",
                };
                let field = if rng.bool() { "deviceId" } else { timestamp };
                if let Some(fields) = draft.body.as_object_mut() {
                    fields.remove(field);
                }
            }
        },
        BadKind::WrongType => {
            if signal == Signal::BodyTemperature {
                // Sent as text, which the mapping's arithmetic refuses.
                if let Some(v) = draft.body.pointer_mut(value) {
                    *v = Value::String(v.to_string());
                }
            } else if shape != Shape::IotHub && rng.bool() {
                // An epoch number where an ISO 8601 instant belongs.
                let field = if shape == Shape::IotCentral {
                    "/enqueuedTime"
                } else {
                    "/endDate"
                };
                if let Some(v) = draft.body.pointer_mut(field) {
                    let seconds = v
                        .as_str()
                        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                        .map_or(0, |t| t.timestamp());
                    *v = seconds.into();
                }
            } else if let Some(v) = draft.body.pointer_mut(value) {
                // A firmware that started nesting its values.
                *v = json!({ "value": v.take(), "unit": unit(signal) });
            }
        }
        BadKind::NullValue => {
            // A null temperature does not match the temperature template at all (the message
            // would be dropped, not failed); a null epoch does fail.
            let field = if signal == Signal::BodyTemperature {
                "/epochMs"
            } else {
                value
            };
            if let Some(v) = draft.body.pointer_mut(field) {
                *v = Value::Null;
            }
        }
    }
}

fn unit(signal: Signal) -> &'static str {
    match signal {
        Signal::HeartRate => "/min",
        Signal::Spo2 => "%",
        Signal::BloodPressure => "mm[Hg]",
        Signal::Steps => "{steps}",
        Signal::BodyTemperature => "[degF]",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_embeds_the_body_and_both_property_maps() {
        let message = SimMessage {
            device_id: "d-1".into(),
            body: br#"{"heartRate":70}"#.to_vec(),
            properties: vec![("a".into(), "1".into())],
            system_properties: vec![("quote\"d".into(), "x".into()), ("b".into(), "2".into())],
            kind: MessageKind::Good(Signal::HeartRate),
        };
        let envelope: Value = serde_json::from_slice(&message.envelope_json()).unwrap();
        assert_eq!(
            envelope,
            json!({
                "Body": {"heartRate": 70},
                "Properties": {"a": "1"},
                "SystemProperties": {"quote\"d": "x", "b": "2"},
            })
        );
    }

    #[test]
    fn fahrenheit_keeps_celsius_inside_the_bounds() {
        for celsius in [36.1, 36.1001, 36.5, 37.0, 37.7999, 37.8] {
            let f = fahrenheit_tenths(celsius);
            let back = (f - 32.0) / 1.8;
            assert!((36.1..=37.8).contains(&back), "{celsius} → {f} → {back}");
            assert!((back - celsius).abs() < 0.05);
        }
    }
}
