//! Grouping and transformation: normalized [`Measurement`](iomt_model::Measurement)s become FHIR R4
//! Observations through FHIR templates (`fhirmapping.json`).
//!
//! This is the pure core of the FHIR-transformation half of the connector. It reads no clock,
//! opens no socket and spawns nothing: time is passed in (event time drives the windows, the
//! caller passes the watermark and the `issued` instant), identities are resolved by the caller
//! and existing Observations are handed in as JSON. The service, the conformance suite and the
//! mapping debugger all call the same functions, so a result seen in the debugger is the result
//! the service writes.
//!
//! # Layout (in pipeline order)
//! * [`group`]: which measurements belong together. [`group::batch`] is the original's per-batch
//!   grouping (key, de-duplication by occurrence time); [`group::Windower`] is the streaming state
//!   machine that assigns measurements to observation windows (instant, hour, day, correlation
//!   id) and releases them when the caller's watermark passes; both produce
//!   [`ObservationGroup`]s.
//! * [`fhir_template`]: the FHIR mapping model ([`CodeValueFhirTemplate`], value types) and the
//!   case-insensitive [`FhirTemplates`] lookup; each template kind implements [`FhirTemplate`].
//! * [`observation`]: building an Observation from a group (create path), the deterministic
//!   identifier and id, and merging a group into an Observation already on the server.
//! * [`sampled_data`]: the SampledData `data` string (build, parse, merge).
//! * [`decimal`]: .NET `decimal.Parse` for Quantity values.
//! * [`error`]: [`TransformError`], each variant mapped to the original's error class.
//!
//! # Design decisions
//! * Windowing is a *task* stage (state that outlives one message), building and merging are
//!   *function* stages (pure, parallelizable). The windower owns the measurements it buffers and
//!   moves them into the groups it releases, so nothing is copied on the hot path.
//! * A built Observation is a typed struct ([`Observation`]) serialized in FHIR element order
//!   (the order the original's Firely serializer writes). It borrows its text from the
//!   template and the group instead of sharing it (no reference counting per measurement),
//!   and is written as JSON by a direct writer (dates and fixed parts as bytes) that produces
//!   exactly serde_json's output. Merge works on the server's JSON ([`serde_json::Value`]) so
//!   members this crate does not know survive.
//! * Behaviour follows the original (SPEC §5–§8). Every deviation is documented under a
//!   "Deviation" heading in the module that implements it: [`group::batch`] (grouping key),
//!   [`decimal`] (number text), [`fhir_template`] loading (stricter validation),
//!   [`observation`] merge (absent values, appended components).
//!
//! # Calling it (the persist stage, per observation group)
//! ```text
//! templates = FhirTemplates::from_json_str(mapping)?          // blocking on error
//! windower  = Windower::new(Arc::new(templates))              // per partition / task
//! windower.push(measurement)  -> Err(Rejected) => dead-letter
//! for group in windower.flush_until(watermark):
//!     template = templates.require(&group.type_name)?
//!     identity = ObservationIdentity::new(&group, &resolved_ids, IdPrecision::Seconds)?
//!     GET Observation?identifier={identity.search_token()}
//!     none     => PUT Observation/{identity.id}  template.create_observation(&group, now)?.with_identity(identity)
//!     existing => match template.merge_observation(&existing, &group)? {
//!                     Changed(v) => PUT with If-Match, Unchanged => nothing }
//! ```
//!
//! # Invariants
//! * No function panics on bad data: malformed measurements, templates or existing
//!   Observations yield a [`TransformError`].
//! * Every timestamp is UTC and truncated to .NET's 100 ns tick before it is compared.
//! * A window's bounds contain every measurement in it; windows of one key and one interval
//!   never overlap.

pub mod decimal;
pub mod error;
pub mod fhir_template;
pub mod group;
pub mod observation;
pub mod sampled_data;
mod time;

pub use error::{FhirMappingError, TemplateError, TransformError};
pub use fhir_template::{
    CodeValueFhirTemplate, FhirTemplate, FhirTemplates, FhirValueType, PeriodInterval,
    RegisterError,
};
pub use group::{
    MeasurementGroup, ObservationGroup, PropertyValues, Rejected, TimeValue, Window, WindowSpec,
    WindowSpecSource, Windower,
};
pub use observation::{
    IdPrecision, JsonMergeOutcome, MergeOutcome, Observation, ObservationIdentity, ResolvedIds,
    SERVICE_SYSTEM,
};
