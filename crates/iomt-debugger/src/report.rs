//! The reports: plain data, serialized as stable camelCase JSON.
//!
//! # Stability
//! The JSON written from these types is what the CLI prints, what the web page renders and what
//! the service returns, so it is a contract:
//! * member names are camelCase and never renamed without a version change;
//! * every member is always present: an absent value is `null` and an empty list is `[]`
//!   (consumers never have to test for missing keys), with one exception: `aggregated` is
//!   `null` unless aggregation was asked for;
//! * lists keep input order (messages, templates) or first-appearance order (groups,
//!   aggregated errors), never a hash order;
//! * error classes are the original connector's exception names
//!   ([`ErrorClass::name`]), severities are `blocking` / `non-blocking`.

use std::fmt;

use iomt_model::{ErrorClass, Severity};
use serde::{Deserialize, Serialize, Serializer};

fn class_name<S: Serializer>(class: &ErrorClass, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(class.name())
}

fn optional_class_name<S: Serializer>(class: &Option<ErrorClass>, s: S) -> Result<S::Ok, S::Error> {
    match class {
        Some(c) => s.serialize_str(c.name()),
        None => s.serialize_none(),
    }
}

fn severity_name<S: Serializer>(severity: &Severity, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(severity.as_str())
}

/// Which mapping file an error or warning points into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MappingKind {
    /// The device mapping (`devicecontent.json`).
    Device,
    /// The FHIR mapping (`fhirmapping.json`).
    Fhir,
}

impl MappingKind {
    /// `device` or `fhir`.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingKind::Device => "device",
            MappingKind::Fhir => "fhir",
        }
    }
}

/// Writes `template 1 (hr), field values[0].valueName, line 3, column 7: ` (the parts known).
fn write_location(
    f: &mut fmt::Formatter<'_>,
    template_index: Option<usize>,
    type_name: Option<&str>,
    field: Option<&str>,
    line: Option<u32>,
    column: Option<u32>,
) -> fmt::Result {
    let mut parts = Vec::new();
    if let Some(index) = template_index {
        parts.push(match type_name {
            Some(name) => format!("template {index} ({name})"),
            None => format!("template {index}"),
        });
    }
    if let Some(field) = field {
        parts.push(format!("field {field}"));
    }
    if let Some(line) = line {
        parts.push(match column {
            Some(column) => format!("line {line}, column {column}"),
            None => format!("line {line}"),
        });
    }
    if !parts.is_empty() {
        write!(f, "{}: ", parts.join(", "))?;
    }
    Ok(())
}

/// One error in a mapping file: the mapping cannot be used until it is fixed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingError {
    /// The mapping the error is in.
    pub mapping: MappingKind,
    /// The original's error class (`InvalidTemplateException`, `TemplateNotFoundException`).
    #[serde(serialize_with = "class_name")]
    pub class: ErrorClass,
    /// Whether it stops the pipeline (mapping errors always do).
    #[serde(serialize_with = "severity_name")]
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
    /// The template's index in the mapping's `template` array.
    pub template_index: Option<usize>,
    /// The template's `typeName`, when it has one.
    pub type_name: Option<String>,
    /// The field concerned, as spelled in mapping files (`values[0].valueName`).
    pub field: Option<String>,
    /// 1-based line in the mapping file.
    pub line: Option<u32>,
    /// 1-based column in the mapping file.
    pub column: Option<u32>,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_location(
            f,
            self.template_index,
            self.type_name.as_deref(),
            self.field.as_deref(),
            self.line,
            self.column,
        )?;
        f.write_str(&self.message)
    }
}

/// What a warning is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum WarningKind {
    /// Something in a mapping loads but has no effect (an ignored member, a `timeZone` on an
    /// instant template).
    Template,
    /// A device template's `typeName` has no FHIR template (cross check).
    NoFhirTemplate,
    /// A device template's value is used by no value or component of the FHIR template of its
    /// type (cross check).
    ValueNotInFhirTemplate,
    /// A message produced no measurement: no template's type match found anything in it.
    NoMeasurements,
}

/// A problem that does not stop anything but probably means the mapping does not do what its
/// author meant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warning {
    /// What the warning is about.
    pub kind: WarningKind,
    /// The mapping the location fields point into (`null` for message warnings).
    pub mapping: Option<MappingKind>,
    /// What is wrong and what to do.
    pub message: String,
    /// The template's index in its mapping.
    pub template_index: Option<usize>,
    /// The template's `typeName`.
    pub type_name: Option<String>,
    /// The field concerned.
    pub field: Option<String>,
    /// 1-based line in the mapping file.
    pub line: Option<u32>,
    /// 1-based column in the mapping file.
    pub column: Option<u32>,
    /// For message warnings: the index of the input message.
    pub message_index: Option<usize>,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(index) = self.message_index {
            write!(f, "message {index}: ")?;
        }
        write_location(
            f,
            self.template_index,
            self.type_name.as_deref(),
            self.field.as_deref(),
            self.line,
            self.column,
        )?;
        f.write_str(&self.message)
    }
}

/// What loaded from one mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MappingSummary {
    /// How many templates loaded.
    pub templates: usize,
    /// The `typeName` of each loaded template, in file order.
    pub type_names: Vec<String>,
}

/// The result of [`validate`](crate::validate): every error and warning of the mappings and of
/// their cross checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidationReport {
    /// What loaded from the device mapping.
    pub device_mapping: MappingSummary,
    /// What loaded from the FHIR mapping, when one was given.
    pub fhir_mapping: Option<MappingSummary>,
    /// Every error of both mappings, device mapping first, each in file order.
    pub errors: Vec<MappingError>,
    /// Every warning: the mappings' own, then the cross checks.
    pub warnings: Vec<Warning>,
}

impl ValidationReport {
    /// Whether the mappings can be used (warnings do not count).
    pub fn is_valid(&self) -> bool {
        self.errors.is_empty()
    }
}

/// A template that found something in a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMatch {
    /// The template's index in the device mapping.
    pub template_index: usize,
    /// The template's `typeName`.
    pub type_name: String,
    /// How many matches its type match found (one measurement each).
    pub matches: usize,
}

/// Why one message produced no measurements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageError {
    /// The original's error class (`IncompatibleDataException`, …).
    #[serde(serialize_with = "class_name")]
    pub class: ErrorClass,
    /// `non-blocking` for message errors: the message is set aside, the next one runs.
    #[serde(serialize_with = "severity_name")]
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
    /// The template that failed.
    pub template_index: Option<usize>,
    /// Its `typeName`.
    pub type_name: Option<String>,
    /// Where the failing expression (or template) is in the device mapping: 1-based line.
    pub line: Option<u32>,
    /// 1-based column.
    pub column: Option<u32>,
}

/// How one input message fared.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageReport {
    /// The message's position in the input, from 0.
    pub index: usize,
    /// The message's 1-based line in the input file, when it came from one.
    pub line: Option<usize>,
    /// The templates that matched, in template order.
    pub templates: Vec<TemplateMatch>,
    /// The measurements, in the original's wire format (PascalCase, dates as the service
    /// writes them).
    pub measurements: Vec<serde_json::Value>,
    /// Why the message failed; a failed message has no measurements.
    pub error: Option<MessageError>,
}

/// The key of a measurement group: the measurements that may share an Observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupKey {
    /// The measurement type.
    pub type_name: String,
    /// The device identifier from the messages.
    pub device_id: String,
    /// The patient identifier from the messages.
    pub patient_id: Option<String>,
    /// The encounter identifier from the messages.
    pub encounter_id: Option<String>,
    /// The correlation id from the messages.
    pub correlation_id: Option<String>,
}

/// The period one Observation covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowReport {
    /// First instant, .NET round-trip format (`2024-01-01T12:00:00.0000000Z`), as the
    /// Observation's `effectivePeriod.start`.
    pub start: String,
    /// Last instant, inclusive (`…T12:59:59.9999999Z` for an hour).
    pub end: String,
    /// The FHIR template's `periodInterval` (`0`, `60`, `1440`, `-1`).
    pub period_interval: i64,
    /// Its name (`Single`, `Hourly`, `Daily`, `CorrelationId`).
    pub interval: &'static str,
    /// The IANA zone aligning hours and days, when the template names one.
    pub time_zone: Option<String>,
}

/// One Observation built from one observation group.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservationReport {
    /// The group's key.
    pub group: GroupKey,
    /// The group's window.
    pub window: WindowReport,
    /// The Observation as FHIR JSON, members in FHIR order.
    pub observation: serde_json::Value,
}

/// Why a measurement group (or one of its observation groups) produced no Observation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupErrorReport {
    /// The group's key.
    pub group: GroupKey,
    /// The window, when the error happened after windowing.
    pub window: Option<WindowReport>,
    /// The original's error class.
    #[serde(serialize_with = "class_name")]
    pub class: ErrorClass,
    /// Whether the service would stop (`blocking`, a mapping problem) or set the group aside.
    #[serde(serialize_with = "severity_name")]
    pub severity: Severity,
    /// What is wrong and what to do.
    pub message: String,
}

/// Counts of a test run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Input messages.
    pub messages: usize,
    /// Messages that failed.
    pub failed_messages: usize,
    /// Measurements produced.
    pub measurements: usize,
    /// Observations produced.
    pub observations: usize,
    /// Groups that failed.
    pub failed_groups: usize,
}

/// Where in the pipeline an aggregated issue arose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    /// Device messages to measurements (the original's `NORMALIZATION` category).
    Normalization,
    /// Measurements to Observations (the original's `FHIRTRANSFORMATION` category).
    FhirTransformation,
}

/// Whether an aggregated issue is an error or a warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Something failed.
    Error,
    /// Nothing failed, but probably not what was meant.
    Warning,
}

/// Identical issues counted together (the original's aggregated device results).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedIssue {
    /// Error or warning.
    pub level: Level,
    /// Normalization (messages) or FHIR transformation (groups).
    pub stage: Stage,
    /// The error class; `null` for warnings.
    #[serde(serialize_with = "optional_class_name")]
    pub class: Option<ErrorClass>,
    /// The text every counted occurrence had.
    pub message: String,
    /// How many messages (normalization) or groups (FHIR transformation) had it.
    pub count: usize,
    /// The first message that had it.
    pub first_message_index: Option<usize>,
    /// That message's line in the input file.
    pub first_line: Option<usize>,
    /// The template concerned, when known.
    pub template_index: Option<usize>,
    /// Its `typeName`, when known.
    pub type_name: Option<String>,
}

/// The result of [`test_mapping`](crate::test_mapping).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TestReport {
    /// Counts.
    pub summary: Summary,
    /// What loaded from the device mapping.
    pub device_mapping: MappingSummary,
    /// What loaded from the FHIR mapping.
    pub fhir_mapping: MappingSummary,
    /// Every error of both mappings. The run uses what loaded, but the service would use
    /// neither mapping until this list is empty.
    pub mapping_errors: Vec<MappingError>,
    /// Every warning: the mappings', the cross checks', then the messages' (unless
    /// aggregated).
    pub warnings: Vec<Warning>,
    /// One entry per input message, in input order. With aggregation, failed messages are
    /// left out (their errors are counted in `aggregated`).
    pub messages: Vec<MessageReport>,
    /// One Observation per observation group, groups in first-appearance order.
    pub observations: Vec<ObservationReport>,
    /// Groups that produced no Observation (empty with aggregation: counted in
    /// `aggregated`).
    pub group_errors: Vec<GroupErrorReport>,
    /// With aggregation: identical errors and message warnings counted together, in
    /// first-appearance order; `null` otherwise.
    pub aggregated: Option<Vec<AggregatedIssue>>,
}

impl TestReport {
    /// Whether everything worked: both mappings load, no message failed and every group
    /// became an Observation. Warnings do not count.
    pub fn is_success(&self) -> bool {
        self.mapping_errors.is_empty()
            && self.summary.failed_messages == 0
            && self.summary.failed_groups == 0
    }
}
