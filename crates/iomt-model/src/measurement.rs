//! Normalized measurements and the original's wire format for them.
//!
//! The wire format is the original's Newtonsoft serialization (SPEC §5): PascalCase members in
//! the order `Type, OccurrenceTimeUtc, IngestionTimeUtc, DeviceId, PatientId, EncounterId,
//! CorrelationId, Properties`, nulls written, every property value a string, dates in ISO 8601
//! with trailing fraction zeros trimmed. Reading accepts member names in any case (as
//! Newtonsoft does) and any date with `Z`, an offset, or no zone (taken as UTC).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::timestamp;

/// One named value of a measurement, e.g. `hr = "65"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasurementProperty {
    /// The template's `valueName`.
    #[serde(rename = "Name", alias = "name")]
    pub name: String,
    /// The value as text, written as the original writes it.
    #[serde(rename = "Value", alias = "value")]
    pub value: String,
}

/// One normalized measurement: what a device template extracted from one match in one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The template's `typeName`, e.g. `heartrate`.
    pub type_name: String,
    /// When the device measured it, in UTC.
    pub occurrence_time_utc: DateTime<Utc>,
    /// When the message was received (the event's enqueued time), once known.
    pub ingestion_time_utc: Option<DateTime<Utc>>,
    /// The device's identifier as found in the message.
    pub device_id: String,
    /// The patient's identifier, when the template extracts one.
    pub patient_id: Option<String>,
    /// The encounter's identifier, when the template extracts one.
    pub encounter_id: Option<String>,
    /// The correlation id, when the template extracts one.
    pub correlation_id: Option<String>,
    /// The values, in template order. Names may repeat.
    pub properties: Vec<MeasurementProperty>,
}

/// Why a wire-format measurement could not be read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WireFormatError {
    /// The text is not a measurement object.
    #[error("measurement is not valid wire-format json: {0}")]
    Json(#[from] serde_json::Error),
    /// A date member is not a date.
    #[error("measurement member {member} is not a date: {value:?}")]
    BadDate {
        /// The member name.
        member: &'static str,
        /// The text found.
        value: String,
    },
    /// A required member is missing or null.
    #[error("measurement member {0} is missing")]
    Missing(&'static str),
}

#[derive(Serialize)]
struct WireOut<'a> {
    #[serde(rename = "Type")]
    type_name: &'a str,
    #[serde(rename = "OccurrenceTimeUtc")]
    occurrence: String,
    #[serde(rename = "IngestionTimeUtc")]
    ingestion: Option<String>,
    #[serde(rename = "DeviceId")]
    device_id: &'a str,
    #[serde(rename = "PatientId")]
    patient_id: Option<&'a str>,
    #[serde(rename = "EncounterId")]
    encounter_id: Option<&'a str>,
    #[serde(rename = "CorrelationId")]
    correlation_id: Option<&'a str>,
    #[serde(rename = "Properties")]
    properties: &'a [MeasurementProperty],
}

impl Measurement {
    /// Serializes to the original's wire format (one line, no spaces).
    pub fn to_wire_json(&self) -> String {
        let out = WireOut {
            type_name: &self.type_name,
            occurrence: timestamp::format_newtonsoft(self.occurrence_time_utc),
            ingestion: self.ingestion_time_utc.map(timestamp::format_newtonsoft),
            device_id: &self.device_id,
            patient_id: self.patient_id.as_deref(),
            encounter_id: self.encounter_id.as_deref(),
            correlation_id: self.correlation_id.as_deref(),
            properties: &self.properties,
        };
        // Serializing plain strings and vectors cannot fail.
        serde_json::to_string(&out).unwrap_or_default()
    }

    /// The wire format as a JSON value, for reports.
    pub fn to_wire_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.to_wire_json()).unwrap_or(serde_json::Value::Null)
    }

    /// Reads the original's wire format. Member names are matched case-insensitively.
    pub fn from_wire_json(text: &str) -> Result<Measurement, WireFormatError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        Self::from_wire_value(&value)
    }

    /// Reads the original's wire format from a parsed value.
    pub fn from_wire_value(value: &serde_json::Value) -> Result<Measurement, WireFormatError> {
        let obj = value.as_object().ok_or_else(|| {
            WireFormatError::Json(serde::de::Error::custom("expected a json object"))
        })?;
        let get = |name: &str| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
                .filter(|v| !v.is_null())
        };
        let text = |name: &'static str| -> Option<String> {
            get(name).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        let date = |name: &'static str| -> Result<Option<DateTime<Utc>>, WireFormatError> {
            match text(name) {
                None => Ok(None),
                Some(s) => timestamp::parse(&s)
                    .map(Some)
                    .ok_or(WireFormatError::BadDate {
                        member: name,
                        value: s,
                    }),
            }
        };
        let properties = match get("Properties") {
            None => Vec::new(),
            Some(p) => serde_json::from_value(p.clone())?,
        };
        Ok(Measurement {
            type_name: text("Type").ok_or(WireFormatError::Missing("Type"))?,
            occurrence_time_utc: date("OccurrenceTimeUtc")?
                .ok_or(WireFormatError::Missing("OccurrenceTimeUtc"))?,
            ingestion_time_utc: date("IngestionTimeUtc")?,
            device_id: text("DeviceId").ok_or(WireFormatError::Missing("DeviceId"))?,
            patient_id: text("PatientId"),
            encounter_id: text("EncounterId"),
            correlation_id: text("CorrelationId"),
            properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"Type":"heartrate","OccurrenceTimeUtc":"2019-02-01T22:46:01.875Z","IngestionTimeUtc":"2019-02-01T22:46:02.101Z","DeviceId":"device123","PatientId":null,"EncounterId":null,"CorrelationId":null,"Properties":[{"Name":"hr","Value":"65"}]}"#;

    #[test]
    fn wire_format_round_trips_byte_for_byte() {
        let m = Measurement::from_wire_json(SAMPLE).unwrap();
        assert_eq!(m.properties[0].value, "65");
        assert_eq!(m.to_wire_json(), SAMPLE);
    }

    #[test]
    fn reads_any_case_and_offsets() {
        let m = Measurement::from_wire_json(
            r#"{"type":"hr","occurrenceTimeUtc":"2019-02-01T23:46:01+01:00","deviceId":"d","properties":[{"name":"hr","value":"1"}]}"#,
        )
        .unwrap();
        assert_eq!(
            m.to_wire_json(),
            r#"{"Type":"hr","OccurrenceTimeUtc":"2019-02-01T22:46:01Z","IngestionTimeUtc":null,"DeviceId":"d","PatientId":null,"EncounterId":null,"CorrelationId":null,"Properties":[{"Name":"hr","Value":"1"}]}"#
        );
    }

    #[test]
    fn rejects_missing_members() {
        assert!(matches!(
            Measurement::from_wire_json(r#"{"Type":"hr","DeviceId":"d"}"#),
            Err(WireFormatError::Missing("OccurrenceTimeUtc"))
        ));
    }
}
