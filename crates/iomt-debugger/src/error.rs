//! Why a measurement group produced no Observation in a test run.
//!
//! Most group failures are the FHIR stage's own ([`TransformError`]); the debugger adds the ones
//! that only exist because it resolves identities and looks templates up itself. Every variant
//! answers [`GroupError::class`] with the original's error class, so a report reads like the
//! service's logs. The message the original's mapping validator wrote itself (no FHIR template
//! for a type) keeps its wording at the start, so users recognise it; the rest follows the
//! house style (lowercase, says what to do).

use iomt_model::ErrorClass;
use iomt_transform::TransformError;
use thiserror::Error;

/// Why a measurement group (or one of its observation groups) produced no Observation.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No FHIR template has the group's type name (compared case-insensitively).
    #[error(
        "No Fhir Template exists with the type name [{type_name}]. available fhir templates: [{}]; add a fhir template with typeName '{type_name}' (type names are compared case-insensitively)",
        .available.join(", ")
    )]
    NoFhirTemplate {
        /// The measurement type.
        type_name: String,
        /// The type names the FHIR mapping has.
        available: Vec<String>,
    },
    /// No FHIR template for the type loaded, and one that failed to load may have been it.
    #[error(
        "no fhir template for type '{type_name}' loaded: the fhir mapping has templates with errors (listed in mappingErrors); fix them first"
    )]
    FhirTemplateNotLoaded {
        /// The measurement type.
        type_name: String,
    },
    /// Identity mode `create` references `Patient/<PatientId>`, but the group has no patient
    /// id.
    #[error(
        "measurements of type '{type_name}' from device '{device_id}' have no patient id, which identity mode create needs for the subject Patient/<PatientId>: add a patientIdExpression to the device template, or test with identity mode lookup"
    )]
    PatientIdMissing {
        /// The measurement type.
        type_name: String,
        /// The device identifier.
        device_id: String,
    },
    /// The FHIR stage failed (grouping, building the Observation, its identity).
    #[error(transparent)]
    Transform(#[from] TransformError),
}

impl GroupError {
    /// The original's error class.
    pub fn class(&self) -> ErrorClass {
        match self {
            GroupError::NoFhirTemplate { .. } | GroupError::FhirTemplateNotLoaded { .. } => {
                ErrorClass::TemplateNotFoundException
            }
            GroupError::PatientIdMissing { .. } => ErrorClass::ResourceIdentityNotDefinedException,
            GroupError::Transform(e) => e.class(),
        }
    }
}
