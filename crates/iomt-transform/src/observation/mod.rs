//! Observations: built from a group (create path), identified deterministically, and merged
//! into an existing Observation (SPEC §7.2–§8).
//!
//! The persist stage calls, per group: [`ObservationIdentity::new`] (search the server by
//! [`ObservationIdentity::search_token`]), then either
//! [`FhirTemplate::create_observation`](crate::FhirTemplate::create_observation) followed by
//! [`Observation::with_identity`] (nothing found) or
//! [`FhirTemplate::merge_observation`](crate::FhirTemplate::merge_observation) (one found),
//! writing only [`MergeOutcome::Changed`] results.

pub(crate) mod build;
pub mod identity;
mod json;
pub(crate) mod merge;
pub(crate) mod merge_json;
pub mod model;
pub(crate) mod value;

pub use identity::{IdPrecision, ObservationIdentity, ResolvedIds, SERVICE_SYSTEM, resource_id};
pub use merge::MergeOutcome;
pub use merge_json::JsonMergeOutcome;
pub use model::{
    CodeableConcept, Coding, Component, Observation, ObservationStatus, ObservationValue, Origin,
    Quantity, SampledData, ServiceCode,
};

#[cfg(test)]
mod tests;
