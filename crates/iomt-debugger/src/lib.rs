//! The mapping debugger: checks a device mapping and a FHIR mapping together, and test-runs
//! sample device messages through both, reporting every step.
//!
//! There are three consumers of this crate: `iomt validate` / `iomt test-mapping` (the CLI),
//! the web page that will edit mappings in the browser, and the service's mapping-test
//! endpoint. They all call the two functions here, so what a user sees while writing a mapping
//! is what the service will do with it.
//!
//! * [`validate`]: every load error of both mappings (class, severity, message, template,
//!   field, line, column, which mapping), their warnings, and the cross checks of SPEC §14 (a
//!   device type without FHIR template, a device value no FHIR template reads).
//! * [`test_mapping`]: sample messages → measurements (with the templates that matched) → one
//!   batch grouped as the service groups a batch → one Observation per observation group, with
//!   every error and warning on the way. [`transform_batch`] is its second half, for callers
//!   that already have measurements.
//!
//! # Design decisions
//! * **Reports, not `Result`s.** A debugger's job is to show what went wrong, so both functions
//!   always return a report: a broken mapping, a message that is not JSON, a group without FHIR
//!   template are entries in it, each with the original's error class. The reports are plain
//!   data with a stable camelCase JSON form ([`report`]); renderers (CLI text, web page) never
//!   need the libraries' error types.
//! * **The service's code path, not a copy.** Loading is `load_lenient` of the normalize and
//!   transform crates, normalization is `normalize_traced`, grouping is `group_batch` then
//!   `observation_groups`, Observations come from `create_observation`. The only logic of its
//!   own is identity (the service resolves it against a FHIR server; the debugger writes the
//!   references the original's Data Mapper wrote, see [`IdentityMode`]) and the cross checks.
//! * **All messages form one batch.** The original's mapping validator built one Observation per
//!   measurement; its Data Mapper one per uploaded group. Grouping the whole sample as one batch
//!   shows what the service would write for it: hourly SampledData filled by several messages,
//!   duplicates collapsed, a Quantity that fails because a day holds two values.
//! * **Pure.** No clock, no I/O, no async runtime (CI checks that the crate depends on no
//!   tokio/hyper/reqwest): the caller passes the `issued` instant, so reports are reproducible
//!   and golden-testable, and the crate can run in a browser later.
//!
//! # What must hold
//! * The same inputs give the same report, byte for byte (lists are in input or
//!   first-appearance order, never hash order).
//! * No input makes these functions panic.
//! * A report lists every problem found; one failure never hides another (every message runs,
//!   every group is tried, both mappings are checked).

pub mod error;
pub mod message;
pub mod report;
mod run;
mod validate;

pub use error::GroupError;
pub use message::{Message, MessageKind, enqueued_time};
pub use report::{
    AggregatedIssue, GroupErrorReport, GroupKey, Level, MappingError, MappingKind, MappingSummary,
    MessageError, MessageReport, ObservationReport, Stage, Summary, TemplateMatch, TestReport,
    ValidationReport, Warning, WarningKind, WindowReport,
};
pub use run::{
    BatchOutcome, IdentityMode, NO_MEASUREMENTS, PATIENT_PLACEHOLDER, TestOptions, test_mapping,
    transform_batch,
};
pub use validate::validate;

#[cfg(test)]
mod tests;
