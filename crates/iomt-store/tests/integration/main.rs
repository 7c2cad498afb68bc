//! Integration tests of both stores, on real SQLite files in temporary directories.
//!
//! One test binary (`autotests = false`): `dead_letter` for the dead-letter store,
//! `local_fhir` for the local FHIR store fed with groups that the wearable example's mappings
//! produce from device messages (`support`).

mod dead_letter;
mod local_fhir;
mod support;
