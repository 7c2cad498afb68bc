//! The Observation this crate builds, as typed structs serialized in FHIR element order.
//!
//! The original serializes with Firely, which writes elements in the order of the FHIR R4
//! specification and leaves out absent values and empty lists. The types here do the same, so
//! `serde_json::to_string(&observation)` is byte-comparable with the original's output (after
//! the `issued` instant).
//!
//! An Observation *borrows* what comes from its template (codes, category, units) and from its
//! group (the type name, String values) for the lifetime `'a`, so building one copies no text
//! and touches no reference count. With shared (`Arc`) strings, the atomic increment and
//! decrement per string and Observation were about a tenth of the time to window, identify
//! and build an instant Quantity. Callers serialize the Observation while its template and
//! group are at hand.
//!
//! Dates are formatted while serializing. [`Observation::to_json_bytes`] writes the same bytes
//! as the `Serialize` impls here without serde's generic machinery (`observation/json.rs`);
//! the impls remain the reference it is tested against, and give
//! [`Observation::to_json`].

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::Number;

use super::identity::{ObservationIdentity, SERVICE_SYSTEM};
use crate::time::{Instant, RoundTrip};

/// A FHIR `Coding` (also the template's `{code, system, display}`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Coding {
    /// `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<Arc<str>>,
    /// `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<Arc<str>>,
    /// `display`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub display: Option<Arc<str>>,
}

impl Coding {
    /// A coding from optional parts.
    pub fn new(system: Option<&str>, code: Option<&str>, display: Option<&str>) -> Coding {
        Coding {
            system: system.map(Arc::from),
            code: code.map(Arc::from),
            display: display.map(Arc::from),
        }
    }

    /// The connector's own coding for `name`: `{system: SERVICE_SYSTEM, code: name, display: name}`.
    pub(crate) fn service(name: &Arc<str>) -> Coding {
        Coding {
            system: Some(service_system()),
            code: Some(name.clone()),
            display: Some(name.clone()),
        }
    }
}

fn service_system() -> Arc<str> {
    static SYSTEM: std::sync::LazyLock<Arc<str>> =
        std::sync::LazyLock::new(|| Arc::from(SERVICE_SYSTEM));
    SYSTEM.clone()
}

/// A FHIR `CodeableConcept` (also the template's `{text, codes}` category).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CodeableConcept {
    /// `coding`, left out when empty.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub coding: Vec<Coding>,
    /// `text`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Arc<str>>,
}

/// The `code` of an Observation or component: the template's codes followed by the
/// connector's own coding `{SERVICE_SYSTEM, name, name}`, and `text = name` — how the original
/// codes them. Both parts are borrowed, so building a code copies nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCode<'a> {
    /// The template's codes.
    pub codes: &'a [Coding],
    /// The type name (Observation) or value name (component).
    pub name: &'a str,
}

impl ServiceCode<'_> {
    /// The code as a plain `CodeableConcept`.
    pub fn to_codeable_concept(&self) -> CodeableConcept {
        let name: Arc<str> = Arc::from(self.name);
        let mut coding = self.codes.to_vec();
        coding.push(Coding::service(&name));
        CodeableConcept {
            coding,
            text: Some(name),
        }
    }
}

impl Serialize for ServiceCode<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Codings<'a>(&'a ServiceCode<'a>);
        impl Serialize for Codings<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                #[derive(Serialize)]
                struct Service<'a> {
                    system: &'a str,
                    code: &'a str,
                    display: &'a str,
                }
                let mut seq = serializer.serialize_seq(Some(self.0.codes.len() + 1))?;
                for c in self.0.codes.iter() {
                    seq.serialize_element(c)?;
                }
                seq.serialize_element(&Service {
                    system: SERVICE_SYSTEM,
                    code: self.0.name,
                    display: self.0.name,
                })?;
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("coding", &Codings(self))?;
        map.serialize_entry("text", self.name)?;
        map.end()
    }
}

/// A FHIR `Quantity` as the connector writes it (units borrowed from the template).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quantity<'a> {
    /// `value`.
    pub value: Number,
    /// `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'a str>,
    /// `system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<&'a str>,
    /// `code`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'a str>,
}

/// The `origin` of a SampledData: always zero in the template's unit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Origin<'a> {
    /// Always `0`.
    pub value: Number,
    /// The template's `unit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<&'a str>,
}

/// A FHIR `SampledData` as the connector writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SampledData<'a> {
    /// `{value: 0, unit}`.
    pub origin: Origin<'a>,
    /// The template's `defaultPeriod` (milliseconds).
    pub period: Number,
    /// Always `1`.
    pub dimensions: u32,
    /// Space-separated values, `E` for empty slots (see [`crate::sampled_data`]).
    pub data: String,
}

/// The value of an Observation or component (`value[x]`).
#[derive(Debug, Clone, PartialEq)]
pub enum ObservationValue<'a> {
    /// `valueSampledData`.
    SampledData(SampledData<'a>),
    /// `valueQuantity`.
    Quantity(Quantity<'a>),
    /// `valueString`: the group's value text.
    String(&'a str),
    /// `valueCodeableConcept`: the template's concept.
    CodeableConcept(&'a CodeableConcept),
}

impl ObservationValue<'_> {
    /// The JSON member name (`valueQuantity`, …).
    pub fn member(&self) -> &'static str {
        match self {
            ObservationValue::SampledData(_) => "valueSampledData",
            ObservationValue::Quantity(_) => "valueQuantity",
            ObservationValue::String(_) => "valueString",
            ObservationValue::CodeableConcept(_) => "valueCodeableConcept",
        }
    }

    /// The value as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        let result = match self {
            ObservationValue::SampledData(v) => serde_json::to_value(v),
            ObservationValue::Quantity(v) => serde_json::to_value(v),
            ObservationValue::String(v) => Ok(serde_json::Value::String((*v).to_owned())),
            ObservationValue::CodeableConcept(v) => serde_json::to_value(v),
        };
        // Serializing these plain structs into a Value cannot fail.
        result.unwrap_or(serde_json::Value::Null)
    }

    fn serialize_entry<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        match self {
            ObservationValue::SampledData(v) => map.serialize_entry(self.member(), v),
            ObservationValue::Quantity(v) => map.serialize_entry(self.member(), v),
            ObservationValue::String(v) => map.serialize_entry(self.member(), v),
            ObservationValue::CodeableConcept(v) => map.serialize_entry(self.member(), v),
        }
    }
}

/// An Observation component: `{code, value[x]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Component<'a> {
    /// The component's code (template codes plus the service coding for the value name).
    pub code: ServiceCode<'a>,
    /// The component's value.
    pub value: ObservationValue<'a>,
}

impl Serialize for Component<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("code", &self.code)?;
        self.value.serialize_entry(&mut map)?;
        map.end()
    }
}

/// An Observation's `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservationStatus {
    /// Created by the connector.
    Final,
    /// Changed by a merge.
    Amended,
}

struct Reference<'a>(&'static str, &'a str);

impl Serialize for Reference<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Text<'a>(&'static str, &'a str);
        impl std::fmt::Display for Text<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}/{}", self.0, self.1)
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("reference", &Displayed(Text(self.0, self.1)))?;
        map.end()
    }
}

struct Displayed<T>(T);

impl<T: std::fmt::Display> Serialize for Displayed<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

struct Period {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("start", &Displayed(RoundTrip(self.start)))?;
        map.serialize_entry("end", &Displayed(RoundTrip(self.end)))?;
        map.end()
    }
}

struct Identifiers<'a>(&'a str);

impl Serialize for Identifiers<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Identifier<'a> {
            system: &'a str,
            value: &'a str,
        }
        [Identifier {
            system: SERVICE_SYSTEM,
            value: self.0,
        }]
        .serialize(serializer)
    }
}

/// An Observation built from one observation group (SPEC §7.2).
///
/// Serializes as FHIR JSON in element order: `resourceType, id, identifier, status, category,
/// code, subject, encounter, effectivePeriod, issued, value[x], device, component`. The identity
/// members (`id`, `identifier`, `subject`, `encounter`, `device`) are present once
/// [`Observation::with_identity`] was applied; the mapping debugger shows Observations without
/// them, as the original's does. `'a` is the lifetime of the template and group it was built
/// from.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation<'a> {
    /// Identity (id, identifier, references), when resolved.
    pub identity: Option<ObservationIdentity>,
    /// `status`.
    pub status: ObservationStatus,
    /// `category`, from the template (left out when empty).
    pub category: &'a [CodeableConcept],
    /// `code`.
    pub code: ServiceCode<'a>,
    /// `effectivePeriod.start`.
    pub effective_start: DateTime<Utc>,
    /// `effectivePeriod.end`.
    pub effective_end: DateTime<Utc>,
    /// `issued`, passed in by the caller.
    pub issued: DateTime<Utc>,
    /// `value[x]`.
    pub value: Option<ObservationValue<'a>>,
    /// `component`, only those with data (left out when empty).
    pub components: Vec<Component<'a>>,
}

impl<'a> Observation<'a> {
    /// Adds the identity: `id`, `identifier`, `subject`, `device` and, when resolved,
    /// `encounter`.
    pub fn with_identity(mut self, identity: ObservationIdentity) -> Observation<'a> {
        self.identity = Some(identity);
        self
    }

    /// The Observation as FHIR JSON text.
    pub fn to_json_string(&self) -> String {
        let mut out = String::with_capacity(self.json_len_hint());
        super::json::write_observation(&mut out, self);
        out
    }

    /// The Observation as FHIR JSON bytes (UTF-8), e.g. for an HTTP request body.
    ///
    /// The bytes are those of the `Serialize` impl, written by a direct writer that skips
    /// serde's generic machinery (this is on the persist path for every Observation).
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.json_len_hint());
        super::json::write_observation(&mut out, self);
        out
    }

    /// A capacity that holds the JSON without growing: 1 KiB plus the SampledData texts.
    fn json_len_hint(&self) -> usize {
        let data_len: usize = self
            .components
            .iter()
            .map(|c| &c.value)
            .chain(&self.value)
            .map(|v| match v {
                ObservationValue::SampledData(sd) => sd.data.len(),
                _ => 0,
            })
            .sum();
        1024 + data_len
    }

    /// The Observation as a JSON value (members in FHIR order).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl Serialize for Observation<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("resourceType", "Observation")?;
        if let Some(id) = &self.identity {
            map.serialize_entry("id", &id.id)?;
            map.serialize_entry("identifier", &Identifiers(&id.identifier_value))?;
        }
        map.serialize_entry("status", &self.status)?;
        if !self.category.is_empty() {
            map.serialize_entry("category", self.category)?;
        }
        map.serialize_entry("code", &self.code)?;
        if let Some(id) = &self.identity {
            map.serialize_entry("subject", &Reference("Patient", &id.patient_id))?;
            if let Some(encounter) = &id.encounter_id {
                map.serialize_entry("encounter", &Reference("Encounter", encounter))?;
            }
        }
        map.serialize_entry(
            "effectivePeriod",
            &Period {
                start: self.effective_start,
                end: self.effective_end,
            },
        )?;
        map.serialize_entry("issued", &Displayed(Instant(self.issued)))?;
        if let Some(value) = &self.value {
            value.serialize_entry(&mut map)?;
        }
        if let Some(id) = &self.identity {
            map.serialize_entry("device", &Reference("Device", &id.device_id))?;
        }
        if !self.components.is_empty() {
            map.serialize_entry("component", &self.components)?;
        }
        map.end()
    }
}
