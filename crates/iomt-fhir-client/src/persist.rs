//! Persisting observation groups: identity, then create or merge (SPEC §8).
//!
//! [`Persister::persist`] takes a batch of groups and returns one [`PersistOutcome`] per group,
//! in input order. It runs in three phases, the second overlapping the other two:
//! 1. **Plan**, per device: find the group's FHIR template, resolve its Device, Patient and
//!    Encounter ([`IdentityResolver`]), compute its Observation identity (identifier and id).
//! 2. **Prefetch**: the Observations not in the cache are searched for in batches of
//!    `observations.prefetch_batch` identifiers per request (`POST Observation/_search` with
//!    `identifier=a,b,c`: identifier values alone unless `observations.lookup_token` asks for
//!    `system|value`; results filtered for exact matches), instead of one search per
//!    group. A search starts as soon as planning has gathered its identifiers, and a write
//!    waits only for the search that covers its group: the server answers lookups while the
//!    client plans, and the first devices are written while later lookups are out.
//! 3. **Write**, per device: no Observation ⇒ build it and `PUT Observation/{id}`; one ⇒
//!    merge the group into it and, if that changed anything, `PUT` it with
//!    `If-Match: W/"{versionId}"`; unchanged ⇒ no request. A 409 or 412 (or a 404/410 on an
//!    update: the resource was deleted) drops the cached copy, re-reads and tries again, up to
//!    `observations.conflict_retries` times. With `bundles.enabled` the writes are sent as
//!    `batch` Bundles instead (below).
//!
//! # Ordering and concurrency
//! The groups of one device are planned and written in input order, one at a time; devices run
//! concurrently, at most `http.max_concurrency` at once, on tokio tasks (so building and
//! merging Observations use every core). With bundles, writes go in rounds: a round takes from
//! each device the longest run of groups that touch *different* Observations; a second group
//! for the same Observation waits for the next round and so sees the first one's result. Order
//! is kept where it matters — between writes to the same resource.
//!
//! # Caches
//! The Observation cache maps an identifier to the resource last read or written (with its
//! version), so a stream of groups for one hour or day costs one `PUT` each and no search. It is
//! a hint: a stale entry costs a 412 and a re-read, never a lost update. One-instant
//! Observations are not cached (see `remember`): nothing continues them, and a duplicate is
//! found by the prefetch.
//!
//! # Failing fast during outages
//! Once a request in a `persist` call has failed for a server-wide reason (connection failure,
//! timeout, throttling, 502/503/504) after its retries, the groups of that call that have not
//! started fail at once with the same (retryable) error instead of each waiting through its own
//! retries: the caller sees the outage in seconds and can retry the batch later.
//!
//! # What must hold
//! * Every input group comes back: as `Created`, `Updated`, `Unchanged`, or `Failed` with the
//!   group itself and a classified error for the dead-letter store. Nothing is dropped.
//! * An Observation found on the server is the group's only if one of its identifiers has
//!   exactly the connector's system and exactly the group's value, whichever token form the
//!   search used: one with the same value in another system is never merged into or
//!   overwritten.
//! * Writes are idempotent: ids are deterministic (SPEC §7.4) and merges re-read on conflict,
//!   so replaying a batch after a crash changes nothing that was already written.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use chrono::Utc;
use foldhash::fast::RandomState;
use iomt_transform::{
    FhirTemplate, FhirTemplates, IdPrecision, MergeOutcome, ObservationGroup, ObservationIdentity,
    PeriodInterval, SERVICE_SYSTEM,
};
use moka::sync::Cache;
use serde_json::Value;
use tokio::sync::SetOnce;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::config::{FhirClientConfig, IdentityMode, LookupToken};
use crate::error::{FhirClientError, Interaction, Operation};
use crate::http::{FhirClient, WriteResponse, version_from_etag};
use crate::identity::{DeviceLink, IdentityResolver};
use crate::metrics::{Counters, CountersSnapshot};
use crate::search::{has_identifier, identifier_token, push_form_search_value};

/// What happened to one group.
#[derive(Debug)]
pub enum PersistOutcome {
    /// A new Observation was written.
    Created {
        /// The Observation's resource id.
        id: String,
    },
    /// The group was merged into an existing Observation, which was written.
    Updated {
        /// The Observation's resource id.
        id: String,
    },
    /// The existing Observation already had everything: nothing was written.
    Unchanged {
        /// The Observation's resource id.
        id: String,
    },
    /// The group could not be persisted; it is returned for the dead-letter store.
    Failed(Box<PersistFailure>),
}

impl PersistOutcome {
    /// The Observation id, for the outcomes that have one.
    pub fn id(&self) -> Option<&str> {
        match self {
            PersistOutcome::Created { id }
            | PersistOutcome::Updated { id }
            | PersistOutcome::Unchanged { id } => Some(id),
            PersistOutcome::Failed(_) => None,
        }
    }

    /// The failure, if the group failed.
    pub fn failure(&self) -> Option<&PersistFailure> {
        match self {
            PersistOutcome::Failed(f) => Some(f),
            _ => None,
        }
    }
}

/// A group that could not be persisted, and why.
#[derive(Debug)]
pub struct PersistFailure {
    /// The group, unchanged.
    pub group: ObservationGroup,
    /// The classified error ([`FhirClientError::class`], [`FhirClientError::retry_hint`]).
    pub error: FhirClientError,
}

/// A copy of an Observation as the server has it, with its id and version.
///
/// The body is kept as the bytes received (or sent) and parsed only when a merge needs it: a
/// stream of one-instant Observations is created and never merged, and parsing every write's
/// JSON back would be most of the connector's CPU time per Observation.
#[derive(Debug)]
struct Stored {
    id: String,
    version: Option<String>,
    body: StoredBody,
}

#[derive(Debug)]
enum StoredBody {
    /// JSON text (a write's response, or what was sent when the server returned nothing).
    Json(Bytes),
    /// Already parsed (a search result).
    Value(Value),
}

impl Stored {
    fn from_resource(resource: Value) -> Option<Stored> {
        let id = resource.get("id")?.as_str()?.to_owned();
        Some(Stored {
            id,
            version: meta_version(&resource),
            body: StoredBody::Value(resource),
        })
    }

    /// The copy after a successful write of `sent` to `id`: the server's body when it returned
    /// one, otherwise what was sent; the version from the ETag, otherwise from the body. `None`
    /// (nothing cached) when the version is unknown, since a merge without `If-Match` could
    /// overwrite another writer's change.
    fn after_write(
        id: &str,
        response_body: Bytes,
        etag_version: Option<String>,
        sent: Bytes,
    ) -> Option<Stored> {
        let returned = response_body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        let body = if returned { response_body } else { sent };
        let version = etag_version.or_else(|| {
            serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| meta_version(&v))
        })?;
        Some(Stored {
            id: id.to_owned(),
            version: Some(version),
            body: StoredBody::Json(body),
        })
    }

    /// The resource, parsed if needed; `None` when it is not an Observation's JSON.
    fn resource(&self) -> Option<std::borrow::Cow<'_, Value>> {
        let value = match &self.body {
            StoredBody::Value(v) => std::borrow::Cow::Borrowed(v),
            StoredBody::Json(b) => std::borrow::Cow::Owned(serde_json::from_slice(b).ok()?),
        };
        (value.get("resourceType").and_then(Value::as_str) == Some("Observation")).then_some(value)
    }
}

fn meta_version(resource: &Value) -> Option<String> {
    resource
        .get("meta")
        .and_then(|m| m.get("versionId"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// What the batch's lookup found for one identifier.
#[derive(Clone)]
enum Prefetched {
    /// No Observation has it.
    Absent,
    /// Exactly one has it.
    Found(Arc<Stored>),
    /// Several have it: left to the one-by-one search, which reports them.
    Ambiguous,
}

/// The answer to one lookup search: per identifier of the chunk, in order; `None` when the
/// search failed (the groups then search one by one).
type ChunkAnswer = Option<Box<[Prefetched]>>;

/// Where a group's answer will be: chunk, and position in it.
#[derive(Clone, Copy)]
struct Lookup {
    chunk: u32,
    position: u32,
}

/// One group, ready to be written.
struct Planned {
    index: usize,
    group: ObservationGroup,
    template: Arc<dyn FhirTemplate>,
    identity: ObservationIdentity,
    /// The group's slot in the batch's lookups; taken by the first look, so that a re-read
    /// after a conflict asks the server rather than the (now stale) lookup.
    lookup: Option<Lookup>,
}

impl Planned {
    fn key(&self) -> &str {
        &self.identity.identifier_value
    }

    /// One-instant Observations are never cached (see `Inner::remember`), so looking them up
    /// in the cache is skipped.
    fn cacheable(&self) -> bool {
        self.group.window.interval != PeriodInterval::Single
    }
}

/// The persist stage's FHIR side. Cheap to clone; clones share caches and connections.
#[derive(Debug, Clone)]
pub struct Persister {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: FhirClient,
    templates: Arc<FhirTemplates>,
    identity: IdentityResolver,
    observations: Cache<String, Arc<Stored>, RandomState>,
    precision: IdPrecision,
    conflict_retries: u32,
    prefetch_batch: usize,
    /// The system searches name in their tokens (`system|value`); `None` searches by value
    /// alone ([`LookupToken`]). Results are matched on system and value exactly either way.
    search_system: Option<&'static str>,
    bundle_entries: Option<usize>,
    concurrency: usize,
}

type Slot = (usize, PersistOutcome);

/// Per-call state shared by the tasks of one `persist` call.
struct CallState {
    /// Collects the identifiers to look up while the devices are planned, and starts a
    /// search each time `prefetch_batch` of them are together.
    chunker: Mutex<Chunker>,
    /// The answers of the batch's lookup searches, one cell per chunk, set when the search
    /// returns (or fails); set once, when planning is over.
    lookups: OnceLock<Box<[Arc<SetOnce<ChunkAnswer>>]>>,
    abort: OnceLock<FhirClientError>,
}

/// The lookups being put together during planning.
struct Chunker {
    /// Hashes of the identifiers already given a lookup: a second group for the same
    /// Observation in the batch gets none (by then the first one's write answers it).
    seen: HashSet<u64, RandomState>,
    hasher: RandomState,
    /// The identifiers of the chunk being filled.
    open: Vec<String>,
    /// One answer cell per chunk, the open one included.
    cells: Vec<Arc<SetOnce<ChunkAnswer>>>,
    /// The searches started.
    tasks: JoinSet<()>,
}

impl CallState {
    fn new() -> CallState {
        CallState {
            chunker: Mutex::new(Chunker {
                seen: HashSet::default(),
                hasher: RandomState::default(),
                open: Vec::new(),
                cells: Vec::new(),
                tasks: JoinSet::new(),
            }),
            lookups: OnceLock::new(),
            abort: OnceLock::new(),
        }
    }

    /// What the batch's lookup found for `lookup`, waiting for its search if it is still out;
    /// `None` when the search failed or found several.
    async fn prefetched(&self, lookup: Lookup) -> Option<Prefetched> {
        let cell = self.lookups.get()?.get(lookup.chunk as usize)?;
        match cell.wait().await {
            Some(answers) => answers.get(lookup.position as usize).cloned(),
            None => None,
        }
    }

    /// Records a server-wide failure, so the call's remaining groups fail fast.
    fn note(&self, error: &FhirClientError) {
        let server_wide = match error {
            FhirClientError::Connection { .. }
            | FhirClientError::Timeout { .. }
            | FhirClientError::Throttled { .. } => true,
            FhirClientError::ServerError { status, .. } => matches!(status, 502..=504),
            _ => false,
        };
        if server_wide && self.abort.set(error.clone()).is_ok() {
            warn!(error = %error, "fhir server unavailable; failing the batch's remaining groups");
        }
    }

    fn aborted(&self) -> Option<FhirClientError> {
        self.abort.get().cloned()
    }
}

impl Persister {
    /// Builds the persister: the client (see [`FhirClient::new`]), the identity resolver and the
    /// caches. Nothing is sent yet; call [`healthcheck`](Self::healthcheck) to probe the server.
    ///
    /// # Errors
    /// An invalid configuration, an unreadable secret, an unusable key.
    pub fn new(
        config: &FhirClientConfig,
        templates: Arc<FhirTemplates>,
    ) -> Result<Persister, FhirClientError> {
        let client = FhirClient::with_counters(config, Arc::new(Counters::default()))?;
        let identity = IdentityResolver::new(client.clone(), &config.identity);
        let cache = &config.observations.cache;
        Ok(Persister {
            inner: Arc::new(Inner {
                client,
                templates,
                identity,
                observations: Cache::builder()
                    .max_capacity(cache.capacity.get())
                    .time_to_live(cache.time_to_live)
                    .build_with_hasher(RandomState::default()),
                precision: config.observations.id_precision,
                conflict_retries: config.observations.conflict_retries,
                prefetch_batch: config.observations.prefetch_batch.get(),
                search_system: match config.observations.lookup_token {
                    LookupToken::Value => None,
                    LookupToken::SystemAndValue => Some(SERVICE_SYSTEM),
                },
                bundle_entries: config
                    .bundles
                    .enabled
                    .then_some(config.bundles.max_entries.get()),
                concurrency: config.http.max_concurrency.get(),
            }),
        })
    }

    /// The FHIR client (for extra requests sharing the pool, token and concurrency bound).
    pub fn client(&self) -> &FhirClient {
        &self.inner.client
    }

    /// The counters so far.
    pub fn counters(&self) -> CountersSnapshot {
        self.inner.client.counters()
    }

    /// Probes the server: `GET [base]/metadata` (with a token), checking that it is FHIR R4.
    ///
    /// # Errors
    /// The request's failure, or [`FhirClientError::InvalidResponse`] when the answer is not an
    /// R4 capability statement.
    pub async fn healthcheck(&self) -> Result<crate::check::ServerInfo, FhirClientError> {
        crate::check::probe_capabilities(&self.inner.client).await
    }

    /// Persists `groups`; one outcome per group, in input order.
    ///
    /// Must be called inside a tokio runtime; it spawns tasks (aborted if the returned future
    /// is dropped).
    pub async fn persist(&self, groups: Vec<ObservationGroup>) -> Vec<PersistOutcome> {
        let total = groups.len();
        let mut slots: Vec<Option<PersistOutcome>> = (0..total).map(|_| None).collect();
        let state = Arc::new(CallState::new());

        // Phase 1: plan, per device.
        let mut by_device: HashMap<String, usize, RandomState> = HashMap::default();
        let mut devices: Vec<Vec<(usize, ObservationGroup)>> = Vec::new();
        for (index, group) in groups.into_iter().enumerate() {
            let d = match by_device.get(group.device_id.as_str()) {
                Some(d) => *d,
                None => {
                    devices.push(Vec::new());
                    by_device.insert(group.device_id.clone(), devices.len() - 1);
                    devices.len() - 1
                }
            };
            devices[d].push((index, group));
        }
        let planned: Vec<(Vec<Planned>, Vec<Slot>)> = self
            .run_per_device(devices, state.clone(), |inner, state, work| async move {
                inner.plan_device(work, &state).await
            })
            .await;
        let mut plans: Vec<Vec<Planned>> = Vec::with_capacity(planned.len());
        for (plan, failed) in planned {
            for (i, outcome) in failed {
                slots[i] = Some(outcome);
            }
            if !plan.is_empty() {
                plans.push(plan);
            }
        }

        // Phase 2: the lookups of the Observations not in the cache started during planning;
        // start the last one. They run while the writes start: a group waits only for the
        // search that covers it.
        let lookups = self.inner.finish_lookups(&state);

        // Phase 3: write.
        let written: Vec<Vec<Slot>> = match self.inner.bundle_entries {
            Some(max) => vec![self.inner.clone().write_bundled(plans, max, &state).await],
            None => {
                self.run_per_device(plans, state.clone(), |inner, state, plan| async move {
                    inner.write_device(plan, &state).await
                })
                .await
            }
        };
        for (i, outcome) in written.into_iter().flatten() {
            slots[i] = Some(outcome);
        }
        // Every lookup has answered by now, unless no group waited for it.
        join_all(lookups).await;
        let counters = self.inner.client.counters_ref();
        slots
            .into_iter()
            .map(|slot| {
                // Every group is answered by exactly one phase; a missing slot is a bug.
                let outcome = slot.unwrap_or_else(|| unreachable!("a group got no outcome"));
                if outcome.failure().is_some() {
                    Counters::inc(&counters.groups_failed);
                }
                outcome
            })
            .collect()
    }

    /// Runs `work` per item on at most `concurrency` tasks, items of one task in order.
    async fn run_per_device<W, R, F, Fut>(
        &self,
        items: Vec<W>,
        state: Arc<CallState>,
        work: F,
    ) -> Vec<R>
    where
        W: Send + 'static,
        R: Send + 'static,
        F: Fn(Arc<Inner>, Arc<CallState>, W) -> Fut + Send + Sync + Clone + 'static,
        Fut: Future<Output = R> + Send,
    {
        let workers = self.inner.concurrency.min(items.len());
        let queue = Arc::new(Mutex::new(VecDeque::from(items)));
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let queue = queue.clone();
            let inner = self.inner.clone();
            let state = state.clone();
            let work = work.clone();
            tasks.spawn(async move {
                let mut out = Vec::new();
                loop {
                    let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                    let Some(item) = next else { break };
                    out.push(work(inner.clone(), state.clone(), item).await);
                }
                out
            });
        }
        join_all(tasks).await.into_iter().flatten().collect()
    }
}

fn failed(index: usize, group: ObservationGroup, error: FhirClientError) -> Slot {
    debug!(class = %error.class(), error = %error, "group failed");
    (
        index,
        PersistOutcome::Failed(Box::new(PersistFailure { group, error })),
    )
}

fn is_conflict(error: &FhirClientError, updating: bool) -> bool {
    match error {
        FhirClientError::Conflict { .. } => true,
        FhirClientError::Rejected { status, .. } => updating && matches!(status, 404 | 410),
        _ => false,
    }
}

const OBSERVATION_UPDATE: Operation = Operation::new(Interaction::Update, "Observation");

impl Inner {
    async fn plan_device(
        self: &Arc<Self>,
        work: Vec<(usize, ObservationGroup)>,
        state: &Arc<CallState>,
    ) -> (Vec<Planned>, Vec<Slot>) {
        let mut plan = Vec::with_capacity(work.len());
        let mut failures = Vec::new();
        // A device-level failure applies to the device's later groups in this call too (in
        // create mode only when it is not about the group's own patient id).
        let mut device_error: Option<FhirClientError> = None;
        let mut link: Option<Arc<DeviceLink>> = None;
        for (index, group) in work {
            if let Some(e) = state.aborted() {
                failures.push(failed(index, group, e));
                continue;
            }
            let template = match self.templates.require(&group.type_name) {
                Ok(t) => t.clone(),
                Err(e) => {
                    failures.push(failed(index, group, e.into()));
                    continue;
                }
            };
            if let Some(e) = &device_error {
                failures.push(failed(index, group, e.clone()));
                continue;
            }
            let device = match &link {
                Some(l) => l.clone(),
                None => match self.identity.device(&group).await {
                    Ok(l) => {
                        link = Some(l.clone());
                        l
                    }
                    Err(e) => {
                        state.note(&e);
                        let group_specific = self.identity.mode() == IdentityMode::Create
                            && matches!(
                                e,
                                FhirClientError::IdentityNotDefined { .. }
                                    | FhirClientError::PatientDeviceMismatch
                                    | FhirClientError::MultipleFound {
                                        resource_type: "Patient",
                                        ..
                                    }
                            );
                        if !group_specific {
                            device_error = Some(e.clone());
                        }
                        failures.push(failed(index, group, e));
                        continue;
                    }
                },
            };
            let ids = match self.identity.with_encounter(&device, &group).await {
                Ok(ids) => ids,
                Err(e) => {
                    state.note(&e);
                    failures.push(failed(index, group, e));
                    continue;
                }
            };
            match ObservationIdentity::new(&group, &ids, self.precision) {
                Ok(identity) => plan.push(Planned {
                    index,
                    group,
                    template,
                    identity,
                    lookup: None,
                }),
                Err(e) => failures.push(failed(index, group, e.into())),
            }
        }
        self.assign_lookups(&mut plan, state);
        (plan, failures)
    }

    /// Phase 2, during planning: gives each of a device's groups whose Observation is not in
    /// the cache a [`Lookup`], and starts a search each time `prefetch_batch` identifiers are
    /// together, so the server works on lookups while the rest of the batch is planned.
    fn assign_lookups(self: &Arc<Self>, plan: &mut [Planned], state: &Arc<CallState>) {
        if self.prefetch_batch < 2 || state.aborted().is_some() {
            return;
        }
        let wanted: Vec<&mut Planned> = plan
            .iter_mut()
            .filter(|p| !(p.cacheable() && self.observations.contains_key(p.key())))
            .collect();
        if wanted.is_empty() {
            return;
        }
        let mut chunker = state.chunker.lock().unwrap_or_else(|p| p.into_inner());
        for p in wanted {
            let hash = chunker.hasher.hash_one(p.key());
            if !chunker.seen.insert(hash) {
                continue;
            }
            if chunker.open.is_empty() {
                chunker.cells.push(Arc::new(SetOnce::new()));
            }
            chunker.open.push(p.key().to_owned());
            p.lookup = Some(Lookup {
                chunk: u32::try_from(chunker.cells.len() - 1).unwrap_or(u32::MAX),
                position: u32::try_from(chunker.open.len() - 1).unwrap_or(u32::MAX),
            });
            if chunker.open.len() >= self.prefetch_batch {
                self.start_lookup(&mut chunker, state);
            }
        }
    }

    /// Starts the search of the open chunk.
    fn start_lookup(self: &Arc<Self>, chunker: &mut Chunker, state: &Arc<CallState>) {
        let keys = std::mem::take(&mut chunker.open);
        let Some(cell) = chunker.cells.last().cloned() else {
            return;
        };
        let inner = self.clone();
        let state = state.clone();
        chunker.tasks.spawn(async move {
            // Whatever happens (a panic included), the chunk gets an answer: a group waiting
            // for it must not wait forever.
            let answer = AnswerOnDrop(cell);
            let found = inner.lookup_chunk(&keys, &state).await;
            answer.set(found);
        });
    }

    /// After planning: starts the last, partly filled lookup, publishes the answer cells to
    /// the writers, and hands over the searches to be joined.
    fn finish_lookups(self: &Arc<Self>, state: &Arc<CallState>) -> JoinSet<()> {
        let mut chunker = state.chunker.lock().unwrap_or_else(|p| p.into_inner());
        if !chunker.open.is_empty() {
            if chunker.cells.len() == 1 && chunker.open.len() == 1 {
                // One identifier in all: its group's own search costs the same, and finds
                // several matches too. "Failed" sends it there.
                if let Some(cell) = chunker.cells.last() {
                    let _ = cell.set(None);
                }
                chunker.open.clear();
            } else {
                self.start_lookup(&mut chunker, state);
            }
        }
        let cells = std::mem::take(&mut chunker.cells);
        if state.lookups.set(cells.into_boxed_slice()).is_err() {
            unreachable!("lookups are finished once per call");
        }
        std::mem::take(&mut chunker.tasks)
    }

    /// One lookup search: the Observations with any of `keys` (exactly matched), per key.
    async fn lookup_chunk(&self, keys: &[String], state: &CallState) -> ChunkAnswer {
        // `system|` once, encoded, then copied before every value (empty: value alone).
        let mut system = String::new();
        if let Some(search_system) = self.search_system {
            push_form_search_value(&mut system, search_system);
            system.push_str("%7C"); // |
        }
        let mut form = String::with_capacity(
            keys.iter()
                .map(|k| k.len() + 3 + system.len())
                .sum::<usize>()
                + 40,
        );
        form.push_str("identifier=");
        for (i, key) in keys.iter().enumerate() {
            if i > 0 {
                form.push_str("%2C"); // ,
            }
            form.push_str(&system);
            push_form_search_value(&mut form, key);
        }
        form.push_str("&_count=");
        form.push_str(&(2 * keys.len()).max(10).to_string());
        let found = match self.client.search_post_form("Observation", form).await {
            Ok(found) => found,
            Err(e) => {
                // Not fatal: the groups search one by one and report what fails.
                warn!(error = %e, "observation prefetch failed");
                state.note(&e);
                return None;
            }
        };
        let mut answers: Box<[Prefetched]> = vec![Prefetched::Absent; keys.len()].into();
        if found.is_empty() {
            return Some(answers);
        }
        let position: HashMap<&str, usize, RandomState> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        for resource in found {
            // The keys this resource has exactly (a server may match more loosely).
            let mut matched: Vec<usize> = resource
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|id| id.get("system").and_then(Value::as_str) == Some(SERVICE_SYSTEM))
                .filter_map(|id| id.get("value").and_then(Value::as_str))
                .filter_map(|value| position.get(value).copied())
                .collect();
            matched.sort_unstable();
            matched.dedup();
            if matched.is_empty() {
                continue;
            }
            let stored = Stored::from_resource(resource).map(Arc::new);
            for i in matched {
                answers[i] = match (&answers[i], &stored) {
                    (Prefetched::Absent, Some(stored)) => Prefetched::Found(stored.clone()),
                    // A second match, or one without an id: the one-by-one search decides.
                    _ => Prefetched::Ambiguous,
                };
            }
        }
        Some(answers)
    }

    /// The Observation with `identity`'s identifier on the server, exactly matched.
    async fn find_observation(
        &self,
        identity: &ObservationIdentity,
    ) -> Result<Option<Arc<Stored>>, FhirClientError> {
        let token = identifier_token(self.search_system, &identity.identifier_value);
        let found = self
            .client
            .search("Observation", &[("identifier", &token)])
            .await?;
        let mut matched: Vec<Value> = found
            .into_iter()
            .filter(|r| has_identifier(r, Some(SERVICE_SYSTEM), &identity.identifier_value))
            .collect();
        match matched.len() {
            0 => Ok(None),
            1 => Ok(matched.pop().and_then(Stored::from_resource).map(Arc::new)),
            count => Err(FhirClientError::MultipleFound {
                resource_type: "Observation",
                count,
            }),
        }
    }

    /// What is known before writing `p`: the cache, then the batch's lookup (once), then a
    /// search.
    async fn existing(
        &self,
        p: &mut Planned,
        state: &CallState,
    ) -> Result<Option<Arc<Stored>>, FhirClientError> {
        let counters = self.client.counters_ref();
        let lookup = p.lookup.take();
        if p.cacheable()
            && let Some(stored) = self.observations.get(p.key())
        {
            Counters::inc(&counters.observation_cache_hits);
            return Ok(Some(stored));
        }
        Counters::inc(&counters.observation_cache_misses);
        let prefetched = match lookup {
            Some(lookup) => state.prefetched(lookup).await,
            None => None,
        };
        if prefetched.is_none()
            && let Some(e) = state.aborted()
        {
            // The lookup failed for a server-wide reason: fail fast rather than search.
            return Err(e);
        }
        match prefetched {
            Some(Prefetched::Absent) => Ok(None),
            Some(Prefetched::Found(stored)) => Ok(Some(stored)),
            Some(Prefetched::Ambiguous) | None => self.find_observation(&p.identity).await,
        }
    }

    async fn write_device(&self, plan: Vec<Planned>, state: &CallState) -> Vec<Slot> {
        let mut out = Vec::with_capacity(plan.len());
        for mut p in plan {
            if let Some(e) = state.aborted() {
                out.push(failed(p.index, p.group, e));
                continue;
            }
            match self.write_one(&mut p, state).await {
                Ok(outcome) => out.push((p.index, outcome)),
                Err(e) => {
                    state.note(&e);
                    out.push(failed(p.index, p.group, e));
                }
            }
        }
        out
    }

    /// Caches the copy of `p`'s Observation after a write (or forgets it when there is none).
    ///
    /// Observations of one instant (`periodInterval` 0) are not cached: a later group for the
    /// same instant is a duplicate or a replay, which the batch's prefetch finds anyway, and
    /// skipping the insert saves a good part of the CPU time spent per such Observation.
    fn remember(&self, p: &Planned, stored: impl FnOnce() -> Option<Stored>) {
        if !p.cacheable() {
            return;
        }
        match stored() {
            Some(s) => self.observations.insert(p.key().to_owned(), Arc::new(s)),
            None => self.observations.invalidate(p.key()),
        }
    }

    /// Create or merge one group, re-reading after conflicts.
    async fn write_one(
        &self,
        p: &mut Planned,
        state: &CallState,
    ) -> Result<PersistOutcome, FhirClientError> {
        let counters = self.client.counters_ref();
        let mut existing = self.existing(p, state).await?;
        let mut conflicts = 0u32;
        loop {
            let updating = existing.is_some();
            let result: Result<PersistOutcome, FhirClientError> = match &existing {
                None => {
                    let observation = p
                        .template
                        .create_observation(&p.group, Utc::now())?
                        .with_identity(p.identity.clone());
                    let body = Bytes::from(observation.to_json_bytes());
                    self.client
                        .update("Observation", &p.identity.id, body.clone(), None)
                        .await
                        .map(|w| {
                            self.after_create(p, w, body);
                            PersistOutcome::Created {
                                id: p.identity.id.clone(),
                            }
                        })
                }
                Some(stored) => {
                    let Some(resource) = stored.resource() else {
                        // A cached copy that cannot be read back: forget it and ask the server.
                        self.observations.invalidate(p.key());
                        existing = self.find_observation(&p.identity).await?;
                        if existing.as_ref().is_some_and(|s| s.resource().is_none()) {
                            return Err(FhirClientError::InvalidResponse {
                                operation: OBSERVATION_UPDATE,
                                reason: "the existing observation is not an Observation's json"
                                    .into(),
                            });
                        }
                        continue;
                    };
                    match p.template.merge_observation(&resource, &p.group)? {
                        MergeOutcome::Unchanged => {
                            Counters::inc(&counters.observations_unchanged);
                            return Ok(PersistOutcome::Unchanged {
                                id: stored.id.clone(),
                            });
                        }
                        MergeOutcome::Changed(merged) => {
                            let body = Bytes::from(serde_json::to_vec(&merged).map_err(|e| {
                                FhirClientError::InvalidResponse {
                                    operation: OBSERVATION_UPDATE,
                                    reason: e.to_string(),
                                }
                            })?);
                            self.client
                                .update(
                                    "Observation",
                                    &stored.id,
                                    body.clone(),
                                    stored.version.as_deref(),
                                )
                                .await
                                .map(|w| {
                                    Counters::inc(&counters.observations_updated);
                                    self.remember(p, || {
                                        Stored::after_write(&stored.id, w.body, w.version, body)
                                    });
                                    PersistOutcome::Updated {
                                        id: stored.id.clone(),
                                    }
                                })
                        }
                    }
                }
            };
            match result {
                Ok(outcome) => return Ok(outcome),
                Err(e) if is_conflict(&e, updating) && conflicts < self.conflict_retries => {
                    conflicts += 1;
                    Counters::inc(&counters.conflicts);
                    debug!(
                        status = e.status(),
                        conflicts, "write conflict; re-reading the observation"
                    );
                    self.observations.invalidate(p.key());
                    existing = self.find_observation(&p.identity).await?;
                }
                Err(e) if is_conflict(&e, updating) => {
                    Counters::inc(&counters.conflicts);
                    self.observations.invalidate(p.key());
                    return Err(FhirClientError::Conflict {
                        operation: OBSERVATION_UPDATE,
                        status: e.status().unwrap_or(409),
                        attempts: conflicts + 1,
                    });
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn after_create(&self, p: &Planned, written: WriteResponse, sent: Bytes) {
        let counters = self.client.counters_ref();
        Counters::inc(&counters.observations_created);
        if written.status == 200 {
            // The PUT replaced a resource the search did not find: another writer created it
            // in between (the original's FHIRResourceContention).
            Counters::inc(&counters.contention);
            warn!("an observation create replaced an existing resource (contention)");
        }
        self.remember(p, || {
            Stored::after_write(&p.identity.id, written.body, written.version, sent)
        });
    }
}

/// One write in a bundle.
struct BundleOp {
    planned: Planned,
    device: usize,
    conflicts: u32,
    /// `None` for a create.
    version: Option<String>,
    resource_id: String,
    body: Bytes,
}

/// What a group in a bundle round needs.
enum Decided {
    Write(Box<BundleOp>),
    Done(Slot),
}

impl Inner {
    /// Phase 3 with bundles: rounds of distinct Observations, written as `batch` Bundles.
    async fn write_bundled(
        self: Arc<Self>,
        plans: Vec<Vec<Planned>>,
        max_entries: usize,
        state: &Arc<CallState>,
    ) -> Vec<Slot> {
        let mut out = Vec::new();
        let mut queues: Vec<VecDeque<(Planned, u32)>> = plans
            .into_iter()
            .map(|plan| plan.into_iter().map(|p| (p, 0)).collect())
            .collect();
        loop {
            // Take a round: per device, the longest prefix of distinct Observations.
            let mut keys: HashSet<String> = HashSet::new();
            let mut round: Vec<(Planned, usize, u32)> = Vec::new();
            for (d, queue) in queues.iter_mut().enumerate() {
                while let Some((front, _)) = queue.front() {
                    if !keys.insert(front.key().to_owned()) {
                        break;
                    }
                    if let Some((p, c)) = queue.pop_front() {
                        round.push((p, d, c));
                    }
                }
            }
            if round.is_empty() {
                return out;
            }
            // Decide each write (searching where neither cache nor prefetch knows), on up to
            // `concurrency` tasks.
            let decided: Vec<Decided> = {
                let mut tasks = JoinSet::new();
                let queue = Arc::new(Mutex::new(VecDeque::from(round)));
                for _ in 0..self
                    .concurrency
                    .min(queue.lock().map(|q| q.len()).unwrap_or(1))
                {
                    let inner = self.clone();
                    let state = state.clone();
                    let queue = queue.clone();
                    tasks.spawn(async move {
                        let mut decided = Vec::new();
                        loop {
                            let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
                            let Some((p, d, c)) = next else { break };
                            decided.push(inner.decide(p, d, c, &state).await);
                        }
                        decided
                    });
                }
                join_all(tasks).await.into_iter().flatten().collect()
            };
            let mut ops: Vec<BundleOp> = Vec::new();
            for d in decided {
                match d {
                    Decided::Write(op) => ops.push(*op),
                    Decided::Done(slot) => out.push(slot),
                }
            }
            // Send the bundles concurrently (the client bounds requests in flight).
            ops.sort_by_key(|op| op.planned.index);
            let mut sends = JoinSet::new();
            let mut rest = ops.into_iter().peekable();
            while rest.peek().is_some() {
                let chunk: Vec<BundleOp> = rest.by_ref().take(max_entries).collect();
                let inner = self.clone();
                sends.spawn(async move { inner.send_bundle(chunk).await });
            }
            for (slots, retry) in join_all(sends).await {
                for slot in slots {
                    if let PersistOutcome::Failed(f) = &slot.1 {
                        state.note(&f.error);
                    }
                    out.push(slot);
                }
                for op in retry {
                    queues[op.device].push_front((op.planned, op.conflicts));
                }
            }
        }
    }

    /// The write a group needs: a create, an update, or nothing (unchanged / failed).
    async fn decide(
        &self,
        mut p: Planned,
        device: usize,
        conflicts: u32,
        state: &CallState,
    ) -> Decided {
        if let Some(e) = state.aborted() {
            return Decided::Done(failed(p.index, p.group, e));
        }
        let existing = match self.existing(&mut p, state).await {
            Ok(e) => e,
            Err(e) => {
                state.note(&e);
                return Decided::Done(failed(p.index, p.group, e));
            }
        };
        let (resource_id, version, body) = match existing {
            None => match p.template.create_observation(&p.group, Utc::now()) {
                Ok(o) => (
                    p.identity.id.clone(),
                    None,
                    Bytes::from(o.with_identity(p.identity.clone()).to_json_bytes()),
                ),
                Err(e) => return Decided::Done(failed(p.index, p.group, e.into())),
            },
            Some(stored) => match stored
                .resource()
                .ok_or_else(|| FhirClientError::InvalidResponse {
                    operation: OBSERVATION_UPDATE,
                    reason: "the existing observation is not an Observation's json".into(),
                })
                .and_then(|r| Ok(p.template.merge_observation(&r, &p.group)?))
            {
                Ok(MergeOutcome::Unchanged) => {
                    Counters::inc(&self.client.counters_ref().observations_unchanged);
                    return Decided::Done((
                        p.index,
                        PersistOutcome::Unchanged {
                            id: stored.id.clone(),
                        },
                    ));
                }
                Ok(MergeOutcome::Changed(merged)) => match serde_json::to_vec(&merged) {
                    Ok(bytes) => (
                        stored.id.clone(),
                        Some(stored.version.clone().unwrap_or_default()),
                        Bytes::from(bytes),
                    ),
                    Err(e) => {
                        let error = FhirClientError::InvalidResponse {
                            operation: OBSERVATION_UPDATE,
                            reason: e.to_string(),
                        };
                        return Decided::Done(failed(p.index, p.group, error));
                    }
                },
                Err(e) => return Decided::Done(failed(p.index, p.group, e)),
            },
        };
        Decided::Write(Box::new(BundleOp {
            planned: p,
            device,
            conflicts,
            version,
            resource_id,
            body,
        }))
    }

    /// Sends one bundle; returns the answered groups and the ops to retry after a conflict.
    async fn send_bundle(&self, ops: Vec<BundleOp>) -> (Vec<Slot>, Vec<BundleOp>) {
        let counters = self.client.counters_ref();
        let mut bundle =
            Vec::with_capacity(ops.iter().map(|o| o.body.len() + 160).sum::<usize>() + 64);
        bundle.extend_from_slice(br#"{"resourceType":"Bundle","type":"batch","entry":["#);
        for (i, op) in ops.iter().enumerate() {
            if i > 0 {
                bundle.push(b',');
            }
            bundle.extend_from_slice(br#"{"resource":"#);
            bundle.extend_from_slice(&op.body);
            bundle.extend_from_slice(br#","request":{"method":"PUT","url":"#);
            let url = format!("Observation/{}", op.resource_id);
            let _ = serde_json::to_writer(&mut bundle, &url);
            if let Some(version) = op.version.as_deref().filter(|v| !v.is_empty()) {
                bundle.extend_from_slice(br#","ifMatch":"#);
                let _ = serde_json::to_writer(&mut bundle, &format!("W/\"{version}\""));
            }
            bundle.extend_from_slice(b"}}");
        }
        bundle.extend_from_slice(b"]}");
        Counters::inc(&counters.bundles_sent);
        let response = match self.client.batch(Bytes::from(bundle)).await {
            Ok(r) => r,
            Err(e) => {
                let slots = ops
                    .into_iter()
                    .map(|op| failed(op.planned.index, op.planned.group, e.clone()))
                    .collect();
                return (slots, Vec::new());
            }
        };
        let entries = response.get("entry").and_then(Value::as_array);
        let batch_op = Operation::new(Interaction::Batch, "Bundle");
        let Some(entries) = entries.filter(|e| e.len() == ops.len()) else {
            let error = FhirClientError::InvalidResponse {
                operation: batch_op,
                reason: format!(
                    "the batch response has {} entries for {} requests",
                    entries.map_or(0, Vec::len),
                    ops.len()
                ),
            };
            let slots = ops
                .into_iter()
                .map(|op| failed(op.planned.index, op.planned.group, error.clone()))
                .collect();
            return (slots, Vec::new());
        };
        let mut slots = Vec::with_capacity(ops.len());
        let mut retry = Vec::new();
        for (mut op, entry) in ops.into_iter().zip(entries) {
            let response = entry.get("response");
            let status = response
                .and_then(|r| r.get("status"))
                .and_then(Value::as_str)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<u16>().ok())
                .unwrap_or(0);
            let updating = op.version.is_some();
            if (200..300).contains(&status) {
                let etag_version = response
                    .and_then(|r| r.get("etag"))
                    .and_then(Value::as_str)
                    .and_then(version_from_etag);
                let returned = entry
                    .get("resource")
                    .filter(|r| {
                        r.get("resourceType").and_then(Value::as_str) == Some("Observation")
                    })
                    .cloned();
                let stored = match returned {
                    Some(resource) => Stored::from_resource(resource).map(|mut s| {
                        s.version = s.version.or(etag_version);
                        s
                    }),
                    None => Stored::after_write(
                        &op.resource_id,
                        Bytes::new(),
                        etag_version,
                        op.body.clone(),
                    ),
                };
                self.remember(&op.planned, || stored);
                let id = op.resource_id;
                let outcome = if updating {
                    Counters::inc(&counters.observations_updated);
                    PersistOutcome::Updated { id }
                } else {
                    Counters::inc(&counters.observations_created);
                    if status == 200 {
                        Counters::inc(&counters.contention);
                    }
                    PersistOutcome::Created { id }
                };
                slots.push((op.planned.index, outcome));
                continue;
            }
            let outcome = response
                .and_then(|r| r.get("outcome"))
                .and_then(crate::http::outcome::operation_outcome_text);
            let operation = OBSERVATION_UPDATE;
            let error = match status {
                409 | 412 => FhirClientError::Conflict {
                    operation,
                    status,
                    attempts: op.conflicts + 1,
                },
                404 | 410 if updating => FhirClientError::Conflict {
                    operation,
                    status,
                    attempts: op.conflicts + 1,
                },
                401 => FhirClientError::Unauthorized { operation, outcome },
                403 => FhirClientError::Forbidden { operation, outcome },
                429 => FhirClientError::Throttled {
                    operation,
                    attempts: 1,
                    retry_after: None,
                },
                s if s >= 500 => FhirClientError::ServerError {
                    operation,
                    status: s,
                    attempts: 1,
                    outcome,
                },
                0 => FhirClientError::InvalidResponse {
                    operation: batch_op,
                    reason: "a batch response entry has no status".into(),
                },
                s => FhirClientError::Rejected {
                    operation,
                    status: s,
                    outcome,
                },
            };
            if matches!(error, FhirClientError::Conflict { .. }) {
                Counters::inc(&counters.conflicts);
                self.observations.invalidate(op.planned.key());
                if op.conflicts < self.conflict_retries {
                    op.conflicts += 1;
                    retry.push(op);
                    continue;
                }
            }
            slots.push(failed(op.planned.index, op.planned.group, error));
        }
        (slots, retry)
    }
}

/// Sets a lookup chunk's answer; dropped without one (a panic in the search), it sets
/// "failed", so the groups waiting for it search one by one instead of waiting forever.
struct AnswerOnDrop(Arc<SetOnce<ChunkAnswer>>);

impl AnswerOnDrop {
    fn set(self, answer: ChunkAnswer) {
        let _ = self.0.set(answer);
    }
}

impl Drop for AnswerOnDrop {
    fn drop(&mut self) {
        if !self.0.initialized() {
            let _ = self.0.set(None);
        }
    }
}

/// Joins every task of `set`, re-raising panics (hiding one would drop its groups).
async fn join_all<T: 'static>(mut set: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => unreachable!("persist task cancelled: {e}"),
        }
    }
    out
}
