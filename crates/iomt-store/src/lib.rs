//! Embedded stores on SQLite: the dead-letter store and the local FHIR store.
//!
//! There are two consumers: the service (`iomt run`), which calls both stores from tokio's
//! `spawn_blocking` — the APIs are synchronous and every store is `Send + Sync` — and the CLI
//! (`iomt dead-letters`, `iomt export`), which opens the same files while the service runs.
//!
//! # Layout
//! * [`dead_letter`]: [`DeadLetterStore`], every message or group the pipeline could not
//!   process, with the reason, for inspection and redrive.
//! * [`fhir`]: [`LocalFhirStore`], the Patients, Devices, Encounters and Observations the
//!   pipeline writes when no FHIR server is configured. It is **not a FHIR server**: see its
//!   module docs for what it does and does not do.
//! * [`error`]: [`StoreError`], classified with the original connector's exception names.
//!
//! # Design decisions
//! * **SQLite, bundled.** One file per store, no server to run, the same library version on
//!   every machine (`rusqlite` with `bundled`). WAL mode lets the CLI read while the service
//!   writes.
//! * **One transaction per call.** `put` of dead letters and `persist` of groups each commit
//!   once: durable batches are what makes SQLite fast, and the pipeline hands over batches
//!   anyway.
//! * **The pure functions stay in `iomt_transform`.** The local store builds, identifies and
//!   merges Observations with exactly the functions the FHIR server path uses, so both paths
//!   write the same Observations; this crate adds only storage, identity lookups and `meta`.
//!
//! # Invariants
//! * Nothing here logs, and no error message carries, a payload, a header, an identifier value
//!   or a resource id: they are patient data.
//! * A store never holds a half-written call: a failed call rolls back and reports every item
//!   as failed.

pub mod dead_letter;
pub mod error;
pub mod fhir;
mod sqlite;

pub use dead_letter::{
    DeadLetter, DeadLetterFilter, DeadLetterStore, DeadLetterSummary, NewDeadLetter, Stage,
};
pub use error::{STORE_ERROR_CLASS, StoreError, UnknownStage};
pub use fhir::{
    LocalFhirStore, LocalIdentityMode, LocalStoreConfig, ResourceCounts, StoreFailure,
    StoreOutcome, UnknownIdentityMode,
};

// The service shares both stores between tasks (`Arc`) and calls them from blocking threads.
const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<DeadLetterStore>();
    send_and_sync::<LocalFhirStore>();
};
