//! Why a group could not become (or be merged into) an Observation.
//!
//! Every variant maps to one [`ErrorClass`] of the original's catalogue ([`TransformError::class`]),
//! which decides whether the pipeline stops (a mapping problem) or only sets the group aside
//! (a data problem). Messages are lowercase, carry the names a user searches their mapping for,
//! and say what to change.

use iomt_model::ErrorClass;
pub use iomt_model::TemplateError;
use iomt_model::mapping_error::render_errors;
use thiserror::Error;

/// Why an observation group could not be windowed, built or merged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TransformError {
    /// No FHIR template has the measurement's type name (compared case-insensitively).
    #[error(
        "no fhir template for measurement type '{type_name}': add a template with this typeName to the fhir mapping"
    )]
    TemplateNotFound {
        /// The measurement's `Type`.
        type_name: String,
    },
    /// The template groups by correlation id (`periodInterval: -1`) but the measurement has
    /// none.
    #[error(
        "measurement of type '{type_name}' has no correlation id, but its fhir template groups by correlation id (periodInterval -1): extract a correlationIdExpression in the device mapping or change periodInterval"
    )]
    CorrelationIdNotDefined {
        /// The measurement's `Type`.
        type_name: String,
    },
    /// A Quantity value needs exactly one value in its observation group.
    #[error(
        "quantity '{value_name}' expects exactly 1 value per observation but the group has {count}: use periodInterval 0 for quantities or map the value to SampledData"
    )]
    QuantityValueCount {
        /// The template's `valueName`.
        value_name: String,
        /// How many values the group has.
        count: usize,
    },
    /// A Quantity value is not a decimal number.
    #[error(
        "quantity '{value_name}' value '{value}' is not a decimal number (digits, one '.', optional sign, no exponent): fix the device mapping's value expression"
    )]
    QuantityValueInvalid {
        /// The template's `valueName`.
        value_name: String,
        /// The text received.
        value: String,
    },
    /// A String value needs exactly one value in its observation group.
    #[error(
        "string '{value_name}' expects exactly 1 value per observation but the group has {count}: use periodInterval 0 for string values"
    )]
    StringValueCount {
        /// The template's `valueName`.
        value_name: String,
        /// How many values the group has.
        count: usize,
    },
    /// The existing Observation holds another value type than the template produces (or none).
    #[error(
        "existing observation's {element} is {actual}, but the fhir template maps it to {expected}: a value type cannot change for an existing observation; delete the observation or keep the value type"
    )]
    ValueTypeMismatch {
        /// `value` or `component 'systolic' value`.
        element: String,
        /// The type the template produces (`SampledData`, `Quantity`, `String`,
        /// `CodeableConcept`).
        expected: &'static str,
        /// What the existing Observation has (`Quantity`, `absent`, …).
        actual: String,
    },
    /// The existing SampledData has more than one dimension.
    #[error(
        "existing observation's {element} sampled data has {dimensions} dimensions; only 1 dimension can be merged"
    )]
    SampledDataDimensions {
        /// `value` or `component 'systolic' value`.
        element: String,
        /// The dimensions found.
        dimensions: String,
    },
    /// The existing Observation's `effective[x]` is neither a period nor a dateTime.
    #[error(
        "existing observation's effective[x] is {found}; only effectivePeriod and effectiveDateTime can be merged"
    )]
    UnsupportedEffective {
        /// The member found (`effectiveInstant`, `absent`, …).
        found: String,
    },
    /// The existing Observation is not shaped like an Observation where merging needs it.
    #[error("existing observation cannot be merged: {reason}")]
    InvalidExistingObservation {
        /// What is wrong, naming the element.
        reason: String,
    },
    /// A SampledData string would be unreasonably long (a tiny `defaultPeriod` over a long
    /// observation period).
    #[error(
        "sampled data for '{value_name}' would need {slots} slots (limit {limit}): raise defaultPeriod or use a shorter periodInterval"
    )]
    SampledDataTooLarge {
        /// The template's `valueName`.
        value_name: String,
        /// The slots the period would need.
        slots: u64,
        /// The limit.
        limit: u64,
    },
    /// An identity needed for the Observation's identifier is blank.
    #[error(
        "{resource} resource id is blank: resolve the {resource} before building its observation identifier"
    )]
    MissingResourceId {
        /// `Patient` or `Device`.
        resource: &'static str,
    },
}

impl TransformError {
    /// The original's error class, which decides how the pipeline handles the error.
    pub fn class(&self) -> ErrorClass {
        match self {
            TransformError::TemplateNotFound { .. } => ErrorClass::TemplateNotFoundException,
            TransformError::CorrelationIdNotDefined { .. } => {
                ErrorClass::CorrelationIdNotDefinedException
            }
            TransformError::QuantityValueCount { .. }
            | TransformError::QuantityValueInvalid { .. } => {
                ErrorClass::InvalidQuantityFhirValueException
            }
            TransformError::StringValueCount { .. }
            | TransformError::SampledDataTooLarge { .. } => ErrorClass::FhirDataMappingException,
            TransformError::ValueTypeMismatch { .. }
            | TransformError::SampledDataDimensions { .. }
            | TransformError::UnsupportedEffective { .. }
            | TransformError::InvalidExistingObservation { .. } => {
                ErrorClass::NotSupportedException
            }
            TransformError::MissingResourceId { .. } => {
                ErrorClass::ResourceIdentityNotDefinedException
            }
        }
    }

    /// The message the original connector gave for this error, where users may search logs for
    /// it (e.g. `Expected 1 value. Received 2.`); `None` where the original had no message of
    /// its own.
    pub fn original_message(&self) -> Option<String> {
        match self {
            TransformError::QuantityValueCount { count, .. } => {
                Some(format!("Expected 1 value. Received {count}."))
            }
            TransformError::QuantityValueInvalid { value, .. } => {
                Some(format!("Error encountered processing value: {value}."))
            }
            TransformError::TemplateNotFound { type_name } => Some(type_name.clone()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_messages() {
        let e = TransformError::QuantityValueCount {
            value_name: "hr".into(),
            count: 2,
        };
        assert_eq!(e.class(), ErrorClass::InvalidQuantityFhirValueException);
        assert_eq!(
            e.original_message().as_deref(),
            Some("Expected 1 value. Received 2.")
        );
        let text = e.to_string();
        assert!(text.starts_with("quantity 'hr' expects exactly 1 value"));
        assert_eq!(
            TransformError::CorrelationIdNotDefined {
                type_name: "x".into()
            }
            .class(),
            ErrorClass::CorrelationIdNotDefinedException
        );
    }
}

/// A FHIR mapping that failed to load, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("fhir mapping is invalid ({} error(s)); fix each and load it again:\n{}", .errors.len(), render_errors(.errors))]
pub struct FhirMappingError {
    /// Every problem, in file order.
    pub errors: Vec<TemplateError>,
}

impl FhirMappingError {
    /// The error class of the whole failure: always a blocking template error.
    pub fn class(&self) -> ErrorClass {
        ErrorClass::InvalidTemplateException
    }
}
