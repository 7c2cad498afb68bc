//! The error catalogue: the original connector's exception class names, which users search
//! their logs and dashboards for, and how each one is handled.
//!
//! Every stage's error type maps to one [`ErrorClass`]. The class decides the [`Severity`]: a
//! problem with a *mapping* blocks (nothing can be processed correctly until the user fixes it),
//! a problem with one *message* or one *group* does not (it is reported and dead-lettered, and
//! the next message is processed as if nothing happened). The original retried non-blocking
//! failures forever and so stalled whole partitions (SPEC §16.6); iomt never does.

use std::fmt;

/// Whether an error stops the pipeline or only the message it concerns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Severity {
    /// A mapping or configuration is wrong: the user must fix it before data can flow.
    Blocking,
    /// One message or group cannot be processed: it is reported and set aside.
    NonBlocking,
}

impl Severity {
    /// The lowercase name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocking => "blocking",
            Severity::NonBlocking => "non-blocking",
        }
    }
}

macro_rules! error_classes {
    ($($(#[$doc:meta])* $variant:ident => $severity:ident,)*) => {
        /// An error class, named as in the original connector and the MedTech service.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorClass {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorClass {
            /// Every class, in declaration order.
            pub const ALL: &'static [ErrorClass] = &[$(ErrorClass::$variant,)*];

            /// The original's exception name, e.g. `IncompatibleDataException`.
            pub fn name(self) -> &'static str {
                match self { $(ErrorClass::$variant => stringify!($variant),)* }
            }

            /// Whether the class stops the pipeline.
            pub fn severity(self) -> Severity {
                match self { $(ErrorClass::$variant => Severity::$severity,)* }
            }

            /// Looks a class up by its exception name.
            pub fn from_name(name: &str) -> Option<ErrorClass> {
                match name { $(stringify!($variant) => Some(ErrorClass::$variant),)* _ => None }
            }
        }
    };
}

error_classes! {
    /// A device message is not JSON.
    InvalidDataFormatException => NonBlocking,
    /// A device message lacks a required value, or a value has the wrong shape.
    IncompatibleDataException => NonBlocking,
    /// An expression failed while evaluating a message (several tokens where one was
    /// expected, a custom function's argument error).
    TemplateExpressionException => NonBlocking,
    /// A mapping file is invalid.
    InvalidTemplateException => Blocking,
    /// A template type name is unknown.
    TemplateNotFoundException => Blocking,
    /// Normalizing a message failed for a reason the message's data caused.
    NormalizationDataMappingException => NonBlocking,
    /// A measurement group could not be mapped to FHIR.
    FhirDataMappingException => NonBlocking,
    /// A Quantity value is not a number, or a group has not exactly one value for it.
    InvalidQuantityFhirValueException => NonBlocking,
    /// A correlation-id window was asked for a measurement without a correlation id.
    CorrelationIdNotDefinedException => NonBlocking,
    /// A Device, Patient or Encounter was not found on the FHIR server.
    FhirResourceNotFoundException => NonBlocking,
    /// More than one resource matched an identifier.
    MultipleResourceFoundException => NonBlocking,
    /// The device is linked to a different patient than the message names.
    PatientDeviceMismatchException => NonBlocking,
    /// A message lacks an identity that the identity mode needs (patient, encounter).
    ResourceIdentityNotDefinedException => NonBlocking,
    /// An operation is not supported for the data given (for example merging into an
    /// Observation of another value type).
    NotSupportedException => NonBlocking,
    /// The FHIR server rejected a request after retries.
    FhirClientException => NonBlocking,
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for class in ErrorClass::ALL {
            assert_eq!(ErrorClass::from_name(class.name()), Some(*class));
        }
        assert_eq!(
            ErrorClass::InvalidTemplateException.severity(),
            Severity::Blocking
        );
        assert_eq!(
            ErrorClass::IncompatibleDataException.severity(),
            Severity::NonBlocking
        );
    }
}
