//! The persist stage's destination: a FHIR server (through `iomt-fhir-client`) or the
//! embedded local store (`iomt-store`), behind one interface so the pipeline treats them alike.
//!
//! What must hold: one [`SinkOutcome`] per group, in input order; a failure carries the group,
//! its error class, a reason without secrets, and whether trying again later may succeed.

use std::sync::Arc;

use iomt_fhir_client::{PersistOutcome, Persister, RetryHint};
use iomt_store::{LocalFhirStore, LocalIdentityMode, StoreFailure, StoreOutcome};
use iomt_transform::{FhirTemplates, ObservationGroup};

use crate::error::{RuntimeError, join_error};

/// What happened to one group.
#[derive(Debug)]
pub enum SinkOutcome {
    /// Written or found unchanged.
    Saved(SavedKind),
    /// Not persisted.
    Failed(Box<SinkFailure>),
}

/// How a group was saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavedKind {
    /// A new Observation.
    Created,
    /// Merged into an existing Observation.
    Updated,
    /// The existing Observation already had everything.
    Unchanged,
}

impl SavedKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            SavedKind::Created => "created",
            SavedKind::Updated => "updated",
            SavedKind::Unchanged => "unchanged",
        }
    }
}

/// A group that was not persisted.
#[derive(Debug)]
pub struct SinkFailure {
    /// The group, unchanged.
    pub group: ObservationGroup,
    /// The error class (the original's catalogue name).
    pub class: String,
    /// Why, in words (no secrets, no identifiers).
    pub reason: String,
    /// Whether trying again later may succeed.
    pub retryable: bool,
}

/// Where Observations go.
#[derive(Clone)]
pub enum Sink {
    /// A FHIR server.
    Fhir(Arc<FhirSink>),
    /// The embedded local store.
    Local(Arc<LocalFhirStore>),
}

/// A FHIR server destination. The client holds the FHIR templates it builds Observations
/// with; when the mappings are reloaded a new client is made for the new templates (caches
/// start empty; they are hints, so this costs lookups, never correctness).
pub struct FhirSink {
    config: iomt_fhir_client::FhirClientConfig,
    current: std::sync::Mutex<(Arc<FhirTemplates>, Persister)>,
}

impl FhirSink {
    /// A destination for `config`, with the templates in force.
    ///
    /// # Errors
    /// The client cannot be built (a secret cannot be read, a key does not parse).
    pub fn new(
        config: iomt_fhir_client::FhirClientConfig,
        templates: Arc<FhirTemplates>,
    ) -> Result<FhirSink, iomt_fhir_client::FhirClientError> {
        let persister = Persister::new(&config, templates.clone())?;
        Ok(FhirSink {
            config,
            current: std::sync::Mutex::new((templates, persister)),
        })
    }

    /// The client for `templates`, rebuilt if they changed since the last call.
    pub fn persister(&self, templates: &Arc<FhirTemplates>) -> Persister {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&current.0, templates) {
            match Persister::new(&self.config, templates.clone()) {
                Ok(p) => *current = (templates.clone(), p),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot rebuild the fhir client for the reloaded mappings; keeping the previous one")
                }
            }
        }
        current.1.clone()
    }
}

/// Maps a configured identity mode name to the local store's mode.
pub(crate) fn local_identity_mode(name: &str) -> Option<LocalIdentityMode> {
    match name.to_ascii_lowercase().replace(['_', '-'], "").as_str() {
        "create" => Some(LocalIdentityMode::Create),
        "lookup" => Some(LocalIdentityMode::Lookup),
        "lookupwithencounter" => Some(LocalIdentityMode::LookupWithEncounter),
        _ => None,
    }
}

impl Sink {
    /// A short name for logs (`fhir`, `local`).
    pub fn kind(&self) -> &'static str {
        match self {
            Sink::Fhir(_) => "fhir",
            Sink::Local(_) => "local",
        }
    }

    /// Whether the destination answers its health probe (a FHIR server's `metadata`; the
    /// local store always does).
    pub async fn healthy(&self) -> bool {
        match self {
            Sink::Fhir(fhir) => {
                let persister = fhir
                    .current
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .1
                    .clone();
                persister.healthcheck().await.is_ok()
            }
            Sink::Local(_) => true,
        }
    }

    /// Makes what [`persist`](Self::persist) saved durable. The local store's `persist`
    /// leaves flushing its write-ahead log to this, so the pipeline writes its next batch
    /// while the flush runs; a FHIR server's answers are durable already.
    ///
    /// # Errors
    /// The flush failed: stop, and let the input replay from its last checkpoint (see
    /// [`LocalFhirStore::sync`] for why a flush is not retried).
    pub async fn sync(&self) -> Result<(), RuntimeError> {
        match self {
            Sink::Fhir(_) => Ok(()),
            Sink::Local(store) => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.sync())
                    .await
                    .map_err(join_error)??;
                Ok(())
            }
        }
    }

    /// Persists `groups` with `templates`; one outcome per group, in order. Saved groups are
    /// durable once [`sync`](Self::sync) returned `Ok`.
    pub async fn persist(
        &self,
        groups: Vec<ObservationGroup>,
        templates: Arc<FhirTemplates>,
    ) -> Vec<SinkOutcome> {
        match self {
            Sink::Fhir(fhir) => fhir
                .persister(&templates)
                .persist(groups)
                .await
                .into_iter()
                .map(|o| match o {
                    PersistOutcome::Created { .. } => SinkOutcome::Saved(SavedKind::Created),
                    PersistOutcome::Updated { .. } => SinkOutcome::Saved(SavedKind::Updated),
                    PersistOutcome::Unchanged { .. } => SinkOutcome::Saved(SavedKind::Unchanged),
                    PersistOutcome::Failed(f) => {
                        let f = *f;
                        SinkOutcome::Failed(Box::new(SinkFailure {
                            class: f.error.class().name().to_owned(),
                            reason: f.error.to_string(),
                            retryable: !matches!(f.error.retry_hint(), RetryHint::NoRetry),
                            group: f.group,
                        }))
                    }
                })
                .collect(),
            Sink::Local(store) => persist_local(store, groups, templates).await,
        }
    }
}

/// Persists `groups` into the local store in one blocking call (the store takes them in
/// transactions of bounded size, see [`LocalFhirStore::persist_unsynced`]; [`Sink::sync`]
/// flushes them). If that task is cancelled before it ran (the runtime is shutting down),
/// nothing was written and every group comes back as a retryable failure.
async fn persist_local(
    store: &Arc<LocalFhirStore>,
    groups: Vec<ObservationGroup>,
    templates: Arc<FhirTemplates>,
) -> Vec<SinkOutcome> {
    if groups.is_empty() {
        return Vec::new();
    }
    // The groups wait in this slot until the task runs, so a task cancelled before it started
    // hands them back.
    let slot = Arc::new(std::sync::Mutex::new(Some(groups)));
    let (task_store, task_slot) = (store.clone(), slot.clone());
    let joined = tokio::task::spawn_blocking(move || {
        let groups = task_slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default();
        task_store.persist_unsynced(groups, &templates)
    })
    .await;
    match joined {
        Ok(done) => done.into_iter().map(from_store).collect(),
        // A panic in the store is a bug; re-raise it rather than lose groups.
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
            .into_iter()
            .map(cancelled)
            .collect(),
    }
}

/// A group whose store task was cancelled before it ran: nothing was written, try again.
fn cancelled(group: ObservationGroup) -> SinkOutcome {
    SinkOutcome::Failed(Box::new(SinkFailure {
        group,
        class: iomt_store::STORE_ERROR_CLASS.to_owned(),
        reason: "the local store task was cancelled before it ran (the service is shutting down); the group is retried".to_owned(),
        retryable: true,
    }))
}

fn from_store(outcome: StoreOutcome) -> SinkOutcome {
    match outcome {
        StoreOutcome::Created { .. } => SinkOutcome::Saved(SavedKind::Created),
        StoreOutcome::Updated { .. } => SinkOutcome::Saved(SavedKind::Updated),
        StoreOutcome::Unchanged { .. } => SinkOutcome::Saved(SavedKind::Unchanged),
        StoreOutcome::Failed(failure) => {
            let StoreFailure { group, error } = *failure;
            SinkOutcome::Failed(Box::new(SinkFailure {
                class: error.class().to_owned(),
                reason: error.to_string(),
                retryable: error.is_retryable(),
                group,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use chrono::{DateTime, Utc};
    use iomt_transform::{PeriodInterval, PropertyValues, TimeValue, WindowSpec};

    use super::*;

    fn group(device: usize) -> ObservationGroup {
        let time: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        ObservationGroup {
            type_name: "spo2".into(),
            device_id: format!("device-{device}"),
            patient_id: Some(format!("patient-{device}")),
            encounter_id: None,
            correlation_id: None,
            window: WindowSpec::new(PeriodInterval::Single).window_for(time),
            properties: vec![PropertyValues {
                name: "spo2".into(),
                values: vec![TimeValue {
                    time,
                    value: "97".into(),
                }],
            }],
        }
    }

    /// The local path used to `break` out of its loop when the store task was cancelled and
    /// returned fewer outcomes than groups (the pipeline then lost track of the rest).
    #[test]
    fn a_cancelled_store_task_hands_every_group_back_as_retryable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            LocalFhirStore::open(&dir.path().join("fhir.db"), Default::default()).unwrap(),
        );
        let templates = Arc::new(
            FhirTemplates::from_json_str(include_str!(
                "../../../examples/wearable/fhirmapping.json"
            ))
            .unwrap(),
        );
        // A runtime that is shutting down cancels blocking tasks instead of running them.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let handle = runtime.handle().clone();
        runtime.shutdown_background();
        let _entered = handle.enter();
        let groups: Vec<ObservationGroup> = (0..5).map(group).collect();
        let mut persisting = pin!(persist_local(&store, groups, templates));
        let mut cx = Context::from_waker(Waker::noop());
        let outcomes = loop {
            if let Poll::Ready(outcomes) = persisting.as_mut().poll(&mut cx) {
                break outcomes;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert_eq!(outcomes.len(), 5);
        for (i, outcome) in outcomes.iter().enumerate() {
            let SinkOutcome::Failed(failure) = outcome else {
                panic!("group {i} was not handed back: {outcome:?}");
            };
            assert!(failure.retryable);
            assert_eq!(failure.group.device_id, format!("device-{i}"));
            assert_eq!(failure.class, iomt_store::STORE_ERROR_CLASS);
        }
        assert_eq!(store.counts().unwrap().total(), 0, "nothing was written");
    }
}
