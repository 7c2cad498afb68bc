//! Validating a device mapping, optionally with its FHIR mapping: every load error of both, and
//! the cross checks of SPEC §14.
//!
//! # Cross checks (the original's `MappingValidator`)
//! For every device template, in file order:
//! * its `typeName` has no FHIR template (looked up case-insensitively, as the service does) ⇒
//!   warning `No matching Fhir Template exists for Device Mapping [<type>]. Ensure case matches.
//!   Available Fhir Templates: [...]`;
//! * otherwise, for each of its `values[]` whose `valueName` no value or component of that FHIR
//!   template reads ⇒ warning `The value [<v>] in Device Mapping [<type>] is not represented
//!   within the Fhir Template of type [<type>]. Available values are: [...]. No value will appear
//!   inside of Observations.`
//!
//! Both keep the original's wording at the start so users recognise them. They are warnings:
//! the mappings load, but measurements of that type (or that value) never reach an Observation.
//!
//! # Differences from the original
//! * A FHIR template that failed to load is not reported a second time as missing: its load
//!   error already says what is wrong. When a template failed before its `typeName` was read,
//!   any type may be the one it was meant for, so no type is reported missing. When the FHIR mapping as a whole is unusable (not JSON,
//!   not a collection), the cross checks are skipped.
//! * The value check reads both `value` and `components` of the FHIR template. The original read
//!   only `components` when a template had any (a template with both lost its `value` name),
//!   and so warned about a value that does appear in Observations.
//! * Names in the lists are joined with `", "` (the original wrote `" ,"`).

use iomt_normalize::{DeviceMapping, TemplateError as DeviceTemplateError};
use iomt_transform::{FhirTemplates, TemplateError as FhirTemplateError};

use crate::report::{
    MappingError, MappingKind, MappingSummary, ValidationReport, Warning, WarningKind,
};

/// Loads both mappings leniently and reports every error and warning, with the cross checks
/// when a FHIR mapping is given. Pure: reads nothing but its arguments.
pub fn validate(device_mapping: &str, fhir_mapping: Option<&str>) -> ValidationReport {
    let (device, device_errors) = DeviceMapping::load_lenient(device_mapping);
    let fhir = fhir_mapping.map(FhirTemplates::load_lenient);
    check(
        &device,
        &device_errors,
        fhir.as_ref()
            .map(|(templates, errors)| (templates, errors.as_slice())),
    )
}

/// The report for mappings already loaded (shared with the test run).
pub(crate) fn check(
    device: &DeviceMapping,
    device_errors: &[DeviceTemplateError],
    fhir: Option<(&FhirTemplates, &[FhirTemplateError])>,
) -> ValidationReport {
    let mut errors: Vec<MappingError> = device_errors.iter().map(device_error).collect();
    let mut warnings: Vec<Warning> = device
        .warnings()
        .iter()
        .map(|w| template_warning(MappingKind::Device, device_location(w), &w.message))
        .collect();
    let mut fhir_summary = None;
    if let Some((templates, fhir_errors)) = fhir {
        errors.extend(fhir_errors.iter().map(fhir_error));
        warnings.extend(
            templates
                .warnings()
                .iter()
                .map(|w| template_warning(MappingKind::Fhir, fhir_location(w), &w.message)),
        );
        fhir_summary = Some(fhir_mapping_summary(templates));
        cross_check(device, templates, fhir_errors, &mut warnings);
    }
    ValidationReport {
        device_mapping: device_mapping_summary(device),
        fhir_mapping: fhir_summary,
        errors,
        warnings,
    }
}

pub(crate) fn device_mapping_summary(device: &DeviceMapping) -> MappingSummary {
    MappingSummary {
        templates: device.templates().len(),
        type_names: device
            .templates()
            .iter()
            .map(|t| t.type_name.clone())
            .collect(),
    }
}

pub(crate) fn fhir_mapping_summary(templates: &FhirTemplates) -> MappingSummary {
    MappingSummary {
        templates: templates.len(),
        type_names: templates.iter().map(|t| t.type_name().to_owned()).collect(),
    }
}

/// Template index, type name, field, line, column.
type Location = (
    Option<usize>,
    Option<String>,
    Option<String>,
    Option<u32>,
    Option<u32>,
);

fn device_location(e: &DeviceTemplateError) -> Location {
    (
        e.template_index,
        e.type_name.clone(),
        e.field.clone(),
        e.pos.map(|p| p.line),
        e.pos.map(|p| p.column),
    )
}

fn fhir_location(e: &FhirTemplateError) -> Location {
    (
        e.template_index,
        e.type_name.clone(),
        e.field.clone(),
        e.pos.map(|p| p.line),
        e.pos.map(|p| p.column),
    )
}

fn mapping_error(
    mapping: MappingKind,
    class: iomt_model::ErrorClass,
    message: &str,
    at: Location,
) -> MappingError {
    let (template_index, type_name, field, line, column) = at;
    MappingError {
        mapping,
        class,
        severity: class.severity(),
        message: message.to_owned(),
        template_index,
        type_name,
        field,
        line,
        column,
    }
}

fn device_error(e: &DeviceTemplateError) -> MappingError {
    mapping_error(MappingKind::Device, e.class, &e.message, device_location(e))
}

fn fhir_error(e: &FhirTemplateError) -> MappingError {
    mapping_error(MappingKind::Fhir, e.class, &e.message, fhir_location(e))
}

fn template_warning(mapping: MappingKind, at: Location, message: &str) -> Warning {
    let (template_index, type_name, field, line, column) = at;
    Warning {
        kind: WarningKind::Template,
        mapping: Some(mapping),
        message: message.to_owned(),
        template_index,
        type_name,
        field,
        line,
        column,
        message_index: None,
    }
}

fn cross_check(
    device: &DeviceMapping,
    fhir: &FhirTemplates,
    fhir_errors: &[FhirTemplateError],
    warnings: &mut Vec<Warning>,
) {
    if fhir_errors.iter().any(|e| e.template_index.is_none()) {
        // The FHIR mapping as a whole did not load; its error says why.
        return;
    }
    // A FHIR template that failed to load before its typeName was known may be the one a
    // device type looks for: then "missing" warnings would be guesses.
    let unnamed_failure = fhir_errors.iter().any(|e| e.type_name.is_none());
    let available: Vec<&str> = fhir.iter().map(|t| t.type_name()).collect();
    for template in device.templates() {
        let warning =
            |kind, message: String, field: String, pos: iomt_model::spanned::Pos| Warning {
                kind,
                mapping: Some(MappingKind::Device),
                message,
                template_index: Some(template.index),
                type_name: Some(template.type_name.clone()),
                field: Some(field),
                line: Some(pos.line),
                column: Some(pos.column),
                message_index: None,
            };
        let Some(fhir_template) = fhir.get(&template.type_name) else {
            let failed_to_load = fhir_errors.iter().any(|e| {
                e.type_name
                    .as_deref()
                    .is_some_and(|n| n.to_lowercase() == template.type_name.to_lowercase())
            });
            if !failed_to_load && !unnamed_failure {
                warnings.push(warning(
                    WarningKind::NoFhirTemplate,
                    no_fhir_template_message(&template.type_name, &available),
                    "typeName".to_owned(),
                    template.pos,
                ));
            }
            continue;
        };
        let mut used = fhir_template.value_names();
        let mut seen = std::collections::HashSet::new();
        used.retain(|name| seen.insert(*name));
        for (i, value) in template.values.iter().enumerate() {
            if used.contains(&value.name.as_str()) {
                continue;
            }
            let pos = value.expression.as_ref().map_or(template.pos, |e| e.pos);
            warnings.push(warning(
                WarningKind::ValueNotInFhirTemplate,
                value_not_used_message(&value.name, &template.type_name, &used),
                format!("values[{i}].valueName"),
                pos,
            ));
        }
    }
}

fn no_fhir_template_message(type_name: &str, available: &[&str]) -> String {
    format!(
        "No matching Fhir Template exists for Device Mapping [{type_name}]. Ensure case matches. Available Fhir Templates: [{}]; add a fhir template with typeName '{type_name}' (compared case-insensitively), or its measurements cannot become observations",
        available.join(", ")
    )
}

fn value_not_used_message(value_name: &str, type_name: &str, used: &[&str]) -> String {
    format!(
        "The value [{value_name}] in Device Mapping [{type_name}] is not represented within the Fhir Template of type [{type_name}]. Available values are: [{}]. No value will appear inside of Observations; add a value or component with valueName '{value_name}' to that fhir template, or remove the value from the device template",
        used.join(", ")
    )
}
