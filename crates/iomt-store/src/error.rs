//! [`StoreError`]: every way a store operation can fail, classified.
//!
//! # What must hold
//! * Each error answers [`class`](StoreError::class): the original connector's exception name
//!   where one applies (identity and mapping failures of the local FHIR store are the same
//!   failures the FHIR server path reports, under the same names), and
//!   [`STORE_ERROR_CLASS`] for failures of the store itself. The dead-letter store records
//!   that class.
//! * [`is_retryable`](StoreError::is_retryable) is true only where the same call may succeed
//!   later unchanged: storage I/O (a full disk, a busy or locked database). Identity and data
//!   errors are not retryable: they need a changed mapping, a seeded Device or other data.
//! * Messages are lowercase, say what to do, and carry no patient data: no identifier values,
//!   no resource ids, no payload bytes. The dead-letter record holds the data.

use std::path::PathBuf;

use iomt_model::ErrorClass;
use iomt_transform::TransformError;
use thiserror::Error;

/// The class recorded for failures of the store itself (storage I/O, an unreadable file, a
/// resource `put_resource` refused). The original connector had no such class: it had no
/// embedded store.
pub const STORE_ERROR_CLASS: &str = "LocalStoreException";

/// Why a store operation failed.
#[derive(Debug, Clone, PartialEq, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or prepared.
    #[error(
        "cannot open the store at {}: {detail}; check that the directory exists and is writable and that no other program holds the file", path.display()
    )]
    Open {
        /// The file.
        path: PathBuf,
        /// SQLite's or the file system's explanation.
        detail: String,
    },
    /// The file is a database of another kind (e.g. the dead-letter file opened as the FHIR
    /// store).
    #[error(
        "{} is not {expected}: give each store its own file", path.display()
    )]
    WrongFile {
        /// The file.
        path: PathBuf,
        /// What it should have been (`an iomt dead-letter store`, …).
        expected: &'static str,
    },
    /// The file was written by a newer iomt with a schema this one does not know.
    #[error(
        "{} has schema version {found} but this iomt knows versions up to {supported}: upgrade iomt, or open a copy made by this version", path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The file's schema version.
        found: i64,
        /// The newest version this build reads.
        supported: i64,
    },
    /// A storage operation failed (SQLite or the file system).
    #[error("{operation} failed: {detail}")]
    Storage {
        /// What was being done (`write dead letters`, `commit observations`, …).
        operation: &'static str,
        /// SQLite's explanation (never data).
        detail: String,
        /// Whether trying again later may succeed (busy, locked, full disk, I/O error).
        retryable: bool,
    },
    /// Writing an export failed.
    #[error("cannot write the export: {detail}; check the output's free space and permissions")]
    Export {
        /// The I/O error.
        detail: String,
    },
    /// Stored data could not be read back (a damaged file, or a row written by hand).
    #[error(
        "the store holds an unreadable {what}: {reason}; restore the file from a backup or delete the damaged entry"
    )]
    Corrupt {
        /// What (`Observation`, `dead letter`, …).
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `put_resource` was given something that is not a storable resource.
    #[error("invalid resource: {reason}")]
    InvalidResource {
        /// What is wrong (never the resource's content).
        reason: String,
    },
    /// The local FHIR store keeps only Patient, Device, Encounter and Observation resources.
    #[error(
        "the local fhir store keeps only Patient, Device, Encounter and Observation resources, not {resource_type}: use a fhir server for other resources"
    )]
    UnsupportedResourceType {
        /// The resource type given.
        resource_type: String,
    },
    /// A Device, Patient or Encounter the group needs does not exist.
    #[error("{resource_type} not found: {hint}")]
    NotFound {
        /// `Device`, `Patient` or `Encounter`.
        resource_type: &'static str,
        /// What was searched and what to do.
        hint: &'static str,
    },
    /// More than one resource has the identifier.
    #[error(
        "multiple resources {count} of type {resource_type} found, expected one: give the identifier to one {resource_type} only"
    )]
    MultipleFound {
        /// The resource type.
        resource_type: &'static str,
        /// How many matched.
        count: usize,
    },
    /// The Device is linked to another Patient than the group names.
    #[error(
        "the device is linked to a different patient than the message names: correct the device's patient reference or the message's patient id"
    )]
    PatientDeviceMismatch,
    /// The group lacks an identifier the identity mode needs.
    #[error(
        "the measurement has no {resource_type} id, but identity mode {mode} needs one: extract it in the device mapping ({field})"
    )]
    IdentityNotDefined {
        /// `Device`, `Patient` or `Encounter`.
        resource_type: &'static str,
        /// The identity mode.
        mode: &'static str,
        /// The device mapping field that provides it.
        field: &'static str,
    },
    /// The group could not be turned into (or merged into) an Observation.
    #[error(transparent)]
    Transform(#[from] TransformError),
}

impl StoreError {
    /// The error class recorded with a dead letter: the original's exception name where one
    /// applies (`FhirResourceNotFoundException`, `TemplateNotFoundException`, …), otherwise
    /// [`STORE_ERROR_CLASS`].
    pub fn class(&self) -> &'static str {
        self.error_class()
            .map_or(STORE_ERROR_CLASS, ErrorClass::name)
    }

    /// The catalogue entry, when the error is one the original connector knew.
    pub fn error_class(&self) -> Option<ErrorClass> {
        match self {
            StoreError::NotFound { .. } => Some(ErrorClass::FhirResourceNotFoundException),
            StoreError::MultipleFound { .. } => Some(ErrorClass::MultipleResourceFoundException),
            StoreError::PatientDeviceMismatch => Some(ErrorClass::PatientDeviceMismatchException),
            StoreError::IdentityNotDefined { .. } => {
                Some(ErrorClass::ResourceIdentityNotDefinedException)
            }
            StoreError::Transform(e) => Some(e.class()),
            _ => None,
        }
    }

    /// Whether the same call may succeed later, unchanged: storage I/O yes; identity, data and
    /// mapping errors no.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Storage { retryable, .. } => *retryable,
            StoreError::Open { .. } | StoreError::Export { .. } => true,
            _ => false,
        }
    }

    /// A storage error from SQLite, classified.
    pub(crate) fn storage(operation: &'static str, error: &rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        let retryable = matches!(
            error.sqlite_error_code(),
            Some(
                C::DatabaseBusy
                    | C::DatabaseLocked
                    | C::OutOfMemory
                    | C::SystemIoFailure
                    | C::DiskFull
                    | C::CannotOpen
                    | C::FileLockingProtocolFailed
                    | C::ReadOnly
                    | C::PermissionDenied
            )
        );
        StoreError::Storage {
            operation,
            detail: sqlite_detail(error),
            retryable,
        }
    }
}

/// SQLite's explanation of an error, without anything a query could have carried.
///
/// rusqlite's messages name SQL and constraint columns, never bound values; a conversion error
/// names the column index and type only.
pub(crate) fn sqlite_detail(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(e, Some(message)) => format!("{message} ({:?})", e.code),
        rusqlite::Error::SqliteFailure(e, None) => format!("{e}"),
        other => other.to_string(),
    }
}

/// A text that names no stage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown stage '{given}': use one of ingest, normalize, group, transform, persist")]
pub struct UnknownStage {
    /// The text given.
    pub given: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_and_retry() {
        assert_eq!(
            StoreError::NotFound {
                resource_type: "Device",
                hint: "x"
            }
            .class(),
            "FhirResourceNotFoundException"
        );
        assert_eq!(
            StoreError::PatientDeviceMismatch.class(),
            "PatientDeviceMismatchException"
        );
        assert_eq!(
            StoreError::MultipleFound {
                resource_type: "Device",
                count: 2
            }
            .class(),
            "MultipleResourceFoundException"
        );
        assert_eq!(
            StoreError::IdentityNotDefined {
                resource_type: "Patient",
                mode: "create",
                field: "patientIdExpression"
            }
            .class(),
            "ResourceIdentityNotDefinedException"
        );
        let e = StoreError::Transform(TransformError::TemplateNotFound {
            type_name: "hr".into(),
        });
        assert_eq!(e.class(), "TemplateNotFoundException");
        assert!(!e.is_retryable());
        assert!(!StoreError::PatientDeviceMismatch.is_retryable());

        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let e = StoreError::storage("write dead letters", &busy);
        assert!(e.is_retryable());
        assert_eq!(e.class(), STORE_ERROR_CLASS);
        assert_eq!(
            e.to_string(),
            "write dead letters failed: database is locked (DatabaseBusy)"
        );
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(!StoreError::storage("x", &constraint).is_retryable());
    }
}
