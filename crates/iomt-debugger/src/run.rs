//! Test runs: sample messages through both mappings, as the service would process them.
//!
//! # What a run does
//! 1. Both mappings load leniently ([`crate::validate`] reports their errors and the cross
//!    checks); the run uses whatever loaded.
//! 2. Each message is wrapped (or not, see [`MessageKind`]) and normalized with
//!    `DeviceMapping::normalize_traced`: its measurements, the templates that matched, or its
//!    error. A message's `IngestionTimeUtc` is its envelope's enqueued time, as in the service.
//! 3. The measurements of all messages form **one batch**, grouped as the service groups a
//!    batch ([`group_batch`]: key, de-duplication by occurrence time), then split into
//!    observation groups by each type's FHIR template
//!    ([`MeasurementGroup::observation_groups`]).
//! 4. One Observation per observation group ([`FhirTemplate::create_observation`]), with the
//!    identity of [`IdentityMode`].
//!
//! # What must hold
//! * Pure: no clock (the caller passes `issued`), no I/O, no randomness; the same input gives
//!   the same report, byte for byte.
//! * Nothing panics on bad input: every failure is an entry in the report.
//! * A failure never hides the rest: every message runs, and every group is tried.

use chrono::{DateTime, Utc};
use iomt_model::Measurement;
use iomt_normalize::{DeviceMapping, EnvelopeBuilder, NormalizeError, parse_token};
use iomt_transform::group::group_batch;
use iomt_transform::{
    FhirTemplate, FhirTemplates, IdPrecision, MeasurementGroup, ObservationGroup,
    ObservationIdentity, ResolvedIds, TemplateError as FhirTemplateError, Window, WindowSpec,
};
use serde::{Deserialize, Serialize};

use crate::error::GroupError;
use crate::message::{Message, MessageKind, enqueued_time};
use crate::report::{
    AggregatedIssue, GroupErrorReport, GroupKey, Level, MessageError, MessageReport,
    ObservationReport, Stage, Summary, TemplateMatch, TestReport, Warning, WarningKind,
    WindowReport,
};
use crate::validate::{check, device_mapping_summary, fhir_mapping_summary};

/// The subject the original's Data Mapper wrote in lookup mode, where the real Patient is only
/// known to the FHIR server.
pub const PATIENT_PLACEHOLDER: &str = "<Patient-Reference-On-FHIR-Server>";

/// The text of the warning for a message that produced no measurement (the original's).
pub const NO_MEASUREMENTS: &str = "No measurements were produced for the given device data.";

/// Which identity the Observations get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// As the original's Data Mapper in Create mode: subject `Patient/<PatientId>` and device
    /// `Device/<DeviceId>` with the identifiers from the messages (the service would reference
    /// the resources it creates, whose ids are hashes of those identifiers). A group without a
    /// patient id fails.
    #[default]
    Create,
    /// As the Data Mapper in Lookup mode: subject `Patient/<Patient-Reference-On-FHIR-Server>`
    /// (the service reads it from the Device on the server), device `Device/<DeviceId>`.
    Lookup,
    /// No identity (no `id`, `identifier`, `subject`, `device`), as the original's mapping
    /// validator built Observations.
    None,
}

/// How a test run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestOptions {
    /// The identity the Observations get.
    pub identity: IdentityMode,
    /// The Observations' `issued` instant (the CLI passes the current time, tests a fixed one).
    pub issued: DateTime<Utc>,
    /// Count identical errors (and message warnings) together instead of listing each
    /// (SPEC §14), for large samples.
    pub aggregate: bool,
}

impl TestOptions {
    /// Options with `issued`, identity [`IdentityMode::Create`] and no aggregation.
    pub fn new(issued: DateTime<Utc>) -> TestOptions {
        TestOptions {
            identity: IdentityMode::Create,
            issued,
            aggregate: false,
        }
    }

    /// The same options with another identity mode.
    pub fn with_identity(mut self, identity: IdentityMode) -> TestOptions {
        self.identity = identity;
        self
    }

    /// The same options with aggregation on or off.
    pub fn with_aggregation(mut self, aggregate: bool) -> TestOptions {
        self.aggregate = aggregate;
        self
    }
}

/// What the FHIR stage made of one batch of measurements.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutcome {
    /// One Observation per observation group.
    pub observations: Vec<ObservationReport>,
    /// The groups that produced none.
    pub errors: Vec<GroupErrorReport>,
}

/// Runs `messages` through both mappings as one batch and reports everything (see the module
/// docs).
pub fn test_mapping(
    device_mapping: &str,
    fhir_mapping: &str,
    messages: &[Message],
    options: &TestOptions,
) -> TestReport {
    let (device, device_errors) = DeviceMapping::load_lenient(device_mapping);
    let (fhir, fhir_errors) = FhirTemplates::load_lenient(fhir_mapping);
    let validation = check(&device, &device_errors, Some((&fhir, &fhir_errors)));

    let mut builder = EnvelopeBuilder::new();
    let mut reports = Vec::with_capacity(messages.len());
    let mut batch = Vec::new();
    let mut message_warnings = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let (report, measurements) = run_message(&device, &mut builder, index, message);
        batch.extend(measurements);
        if report.error.is_none() && report.measurements.is_empty() {
            message_warnings.push(Warning {
                kind: WarningKind::NoMeasurements,
                mapping: None,
                message: NO_MEASUREMENTS.to_owned(),
                template_index: None,
                type_name: None,
                field: None,
                line: None,
                column: None,
                message_index: Some(index),
            });
        }
        reports.push(report);
    }
    let measurement_count = batch.len();
    let outcome = transform(&fhir, &fhir_errors, batch, options);

    let summary = Summary {
        messages: messages.len(),
        failed_messages: reports.iter().filter(|r| r.error.is_some()).count(),
        measurements: measurement_count,
        observations: outcome.observations.len(),
        failed_groups: outcome.errors.len(),
    };
    let mut report = TestReport {
        summary,
        device_mapping: device_mapping_summary(&device),
        fhir_mapping: fhir_mapping_summary(&fhir),
        mapping_errors: validation.errors,
        warnings: validation.warnings,
        messages: reports,
        observations: outcome.observations,
        group_errors: outcome.errors,
        aggregated: None,
    };
    if options.aggregate {
        report.aggregated = Some(aggregate(&mut report, message_warnings));
    } else {
        report.warnings.extend(message_warnings);
    }
    report
}

fn run_message(
    device: &DeviceMapping,
    builder: &mut EnvelopeBuilder,
    index: usize,
    message: &Message,
) -> (MessageReport, Vec<Measurement>) {
    let token = match message.kind {
        MessageKind::Body => builder.build(&message.bytes, &[], &[]),
        MessageKind::Envelope => parse_token(&message.bytes),
    };
    let mut report = MessageReport {
        index,
        line: message.line,
        templates: Vec::new(),
        measurements: Vec::new(),
        error: None,
    };
    let token = match token {
        Ok(token) => token,
        Err(e) => {
            report.error = Some(message_error(&e));
            return (report, Vec::new());
        }
    };
    let (result, outcomes) = device.normalize_traced(&token);
    report.templates = outcomes
        .into_iter()
        .filter(|o| o.matches > 0)
        .map(|o| TemplateMatch {
            template_index: o.template_index,
            type_name: o.type_name,
            matches: o.matches,
        })
        .collect();
    match result {
        Ok(mut measurements) => {
            let ingestion = enqueued_time(&token);
            for m in &mut measurements {
                m.ingestion_time_utc = ingestion;
            }
            report.measurements = measurements
                .iter()
                .map(Measurement::to_wire_value)
                .collect();
            (report, measurements)
        }
        Err(e) => {
            report.error = Some(message_error(&e));
            (report, Vec::new())
        }
    }
}

fn message_error(e: &NormalizeError) -> MessageError {
    let origin = e.origin();
    let class = e.class();
    MessageError {
        class,
        severity: class.severity(),
        message: e.to_string(),
        template_index: origin.map(|o| o.template_index),
        type_name: origin.map(|o| o.type_name.clone()),
        line: origin.and_then(|o| o.pos).map(|p| p.line),
        column: origin.and_then(|o| o.pos).map(|p| p.column),
    }
}

/// Groups one batch of measurements as the service does and builds one Observation per
/// observation group: steps 3 and 4 of the module docs, for callers that have measurements
/// already (the conformance suite, replays of normalized data).
pub fn transform_batch(
    templates: &FhirTemplates,
    measurements: Vec<Measurement>,
    options: &TestOptions,
) -> BatchOutcome {
    transform(templates, &[], measurements, options)
}

fn transform(
    templates: &FhirTemplates,
    template_errors: &[FhirTemplateError],
    measurements: Vec<Measurement>,
    options: &TestOptions,
) -> BatchOutcome {
    let mut outcome = BatchOutcome::default();
    for group in group_batch(measurements) {
        let Some(first) = group.measurements.first() else {
            continue;
        };
        let key = group_key(first);
        let template = match templates.get(group.type_name()) {
            Some(t) => t,
            None => {
                let error = missing_template(templates, template_errors, group.type_name());
                outcome.errors.push(group_error(key, None, &error));
                continue;
            }
        };
        let spec = template.window_spec();
        match observation_groups(group, &spec) {
            Ok(groups) => {
                for og in groups {
                    let window = window_report(&og.window, &spec);
                    match observe(template.as_ref(), &og, options) {
                        Ok(observation) => outcome.observations.push(ObservationReport {
                            group: group_key_of(&og),
                            window,
                            observation,
                        }),
                        Err(e) => {
                            outcome
                                .errors
                                .push(group_error(group_key_of(&og), Some(window), &e));
                        }
                    }
                }
            }
            Err(e) => outcome.errors.push(group_error(key, None, &e)),
        }
    }
    outcome
}

fn observation_groups(
    group: MeasurementGroup,
    spec: &WindowSpec,
) -> Result<Vec<ObservationGroup>, GroupError> {
    Ok(group.observation_groups(spec)?)
}

fn missing_template(
    templates: &FhirTemplates,
    template_errors: &[FhirTemplateError],
    type_name: &str,
) -> GroupError {
    let folded = type_name.to_lowercase();
    // A template that failed to load may have been this type's (a template that failed
    // before its typeName was read may have been any type's).
    let failed_to_load = template_errors.iter().any(|e| {
        e.type_name
            .as_deref()
            .is_none_or(|n| n.to_lowercase() == folded)
    });
    if failed_to_load {
        GroupError::FhirTemplateNotLoaded {
            type_name: type_name.to_owned(),
        }
    } else {
        GroupError::NoFhirTemplate {
            type_name: type_name.to_owned(),
            available: templates.iter().map(|t| t.type_name().to_owned()).collect(),
        }
    }
}

fn observe(
    template: &dyn FhirTemplate,
    og: &ObservationGroup,
    options: &TestOptions,
) -> Result<serde_json::Value, GroupError> {
    let observation = template.create_observation(og, options.issued)?;
    let ids = match options.identity {
        IdentityMode::None => None,
        IdentityMode::Create => {
            let patient = og
                .patient_id
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .ok_or_else(|| GroupError::PatientIdMissing {
                    type_name: og.type_name.clone(),
                    device_id: og.device_id.clone(),
                })?;
            Some(ResolvedIds::new(patient, &og.device_id, None))
        }
        IdentityMode::Lookup => Some(ResolvedIds::new(PATIENT_PLACEHOLDER, &og.device_id, None)),
    };
    let observation = match ids {
        Some(ids) => {
            let identity = ObservationIdentity::new(og, &ids, IdPrecision::Seconds)?;
            observation.with_identity(identity)
        }
        None => observation,
    };
    Ok(observation.to_json())
}

fn group_key(m: &Measurement) -> GroupKey {
    GroupKey {
        type_name: m.type_name.clone(),
        device_id: m.device_id.clone(),
        patient_id: m.patient_id.clone(),
        encounter_id: m.encounter_id.clone(),
        correlation_id: m.correlation_id.clone(),
    }
}

fn group_key_of(g: &ObservationGroup) -> GroupKey {
    GroupKey {
        type_name: g.type_name.clone(),
        device_id: g.device_id.clone(),
        patient_id: g.patient_id.clone(),
        encounter_id: g.encounter_id.clone(),
        correlation_id: g.correlation_id.clone(),
    }
}

fn window_report(window: &Window, spec: &WindowSpec) -> WindowReport {
    WindowReport {
        start: iomt_model::timestamp::format_roundtrip(window.start),
        end: iomt_model::timestamp::format_roundtrip(window.end),
        period_interval: window.interval.minutes(),
        interval: window.interval.name(),
        time_zone: spec.time_zone.map(|tz| tz.name().to_owned()),
    }
}

fn group_error(group: GroupKey, window: Option<WindowReport>, e: &GroupError) -> GroupErrorReport {
    let class = e.class();
    GroupErrorReport {
        group,
        window,
        class,
        severity: class.severity(),
        message: e.to_string(),
    }
}

/// Moves every error (and the message warnings) of `report` into counted issues.
fn aggregate(report: &mut TestReport, message_warnings: Vec<Warning>) -> Vec<AggregatedIssue> {
    let mut issues: Vec<AggregatedIssue> = Vec::new();
    let mut add = |issue: AggregatedIssue| match issues.iter_mut().find(|i| {
        i.level == issue.level
            && i.stage == issue.stage
            && i.class == issue.class
            && i.message == issue.message
    }) {
        Some(existing) => existing.count += 1,
        None => issues.push(issue),
    };
    // In input order: each message's error or warning, then the groups'.
    let mut warnings = message_warnings.into_iter().peekable();
    for m in &report.messages {
        if let Some(e) = &m.error {
            add(AggregatedIssue {
                level: Level::Error,
                stage: Stage::Normalization,
                class: Some(e.class),
                message: e.message.clone(),
                count: 1,
                first_message_index: Some(m.index),
                first_line: m.line,
                template_index: e.template_index,
                type_name: e.type_name.clone(),
            });
        }
        while let Some(w) = warnings.next_if(|w| w.message_index == Some(m.index)) {
            add(AggregatedIssue {
                level: Level::Warning,
                stage: Stage::Normalization,
                class: None,
                message: w.message,
                count: 1,
                first_message_index: Some(m.index),
                first_line: m.line,
                template_index: None,
                type_name: None,
            });
        }
    }
    for e in report.group_errors.drain(..) {
        add(AggregatedIssue {
            level: Level::Error,
            stage: Stage::FhirTransformation,
            class: Some(e.class),
            message: e.message,
            count: 1,
            first_message_index: None,
            first_line: None,
            template_index: None,
            type_name: Some(e.group.type_name),
        });
    }
    report.messages.retain(|m| m.error.is_none());
    issues
}
