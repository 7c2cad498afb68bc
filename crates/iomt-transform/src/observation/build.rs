//! The create path: an Observation from one group and its template (SPEC §7.2).
//!
//! * `status = final`, `issued` as passed in, `effectivePeriod` = the group's window (also for
//!   instant windows, start = end).
//! * `code` = the template's codes followed by the service coding `{SERVICE_SYSTEM, typeName,
//!   typeName}` and `text = typeName`, where `typeName` is the *measurement's* spelling.
//! * `category` from the template when it has any.
//! * `value[x]` only when the template's value has a `valueName` and the group has values for
//!   it; each component only when the group has values for it.

use chrono::{DateTime, Utc};

use super::model::{Component, Observation, ObservationStatus, ServiceCode};
use super::value::create_value;
use crate::error::TransformError;
use crate::fhir_template::CodeValueFhirTemplate;
use crate::group::ObservationGroup;
use crate::time::ticks;

pub(crate) fn create_observation<'a>(
    template: &'a CodeValueFhirTemplate,
    group: &'a ObservationGroup,
    issued: DateTime<Utc>,
) -> Result<Observation<'a>, TransformError> {
    let period = (ticks(group.window.start), ticks(group.window.end));
    let value = match &template.value {
        Some(v) if !v.value_name().chars().all(char::is_whitespace) => {
            match group.values(v.value_name()) {
                Some(values) => Some(create_value(v, values, period)?),
                None => None,
            }
        }
        _ => None,
    };
    let mut components = Vec::new();
    for mapping in &template.components {
        let name = mapping.value.value_name();
        if let Some(values) = group.values(name) {
            components.push(Component {
                code: ServiceCode {
                    codes: &mapping.codes,
                    name,
                },
                value: create_value(&mapping.value, values, period)?,
            });
        }
    }
    Ok(Observation {
        identity: None,
        status: ObservationStatus::Final,
        category: &template.category,
        code: ServiceCode {
            codes: &template.codes,
            // The measurement's spelling names the Observation.
            name: &group.type_name,
        },
        effective_start: group.window.start,
        effective_end: group.window.end,
        issued,
        value,
        components,
    })
}
