//! The local FHIR store: the Patients, Devices, Encounters and Observations the pipeline
//! writes, kept in an SQLite file, so that `iomt run` without a FHIR server (and a gateway
//! between uplinks) shows Observations at once.
//!
//! **It is not a FHIR server.** It has no REST API, no search beyond identifier lookups, no
//! history, no validation, no references checking, and keeps only the four resource types
//! above. It does the job the persist stage does against a FHIR server — identity resolution
//! (SPEC §9) and create-or-merge of Observations (SPEC §8) — and hands the result to
//! `iomt export` as FHIR NDJSON, which any FHIR server can import.
//!
//! # Same Observations as the FHIR path
//! Building an Observation from a group, its identifier and id, merging a group into an
//! existing Observation and deciding that nothing changed are `iomt_transform`'s functions, the
//! very ones `iomt-fhir-client` calls; identity resolution follows the same table (see
//! `identity`). The only members this store writes itself are `meta.versionId` (1, then +1 per
//! write) and `meta.lastUpdated`, which a FHIR server sets too.
//!
//! # One call, few transactions, one flush
//! [`LocalFhirStore::persist`] takes a call's groups in transactions of
//! [`LocalStoreConfig::transaction_groups`]. Per transaction it resolves every group's
//! identity, builds and merges its Observation (groups for the same Observation in input
//! order, each seeing the previous one's result; distinct Observations on up to
//! [`LocalStoreConfig::workers`] threads), then writes each changed Observation once and
//! commits (see `persist`). If a write or the commit fails, nothing of that transaction is
//! kept and each of its groups comes back `Failed` with the storage error; a group's own
//! failure (identity, mapping) fails only that group. Transactions go in input order, so a
//! later one sees the earlier ones' Observations.
//!
//! # Caches
//! Recently written hour/day Observations are kept as stored (compressed), by identifier,
//! bounded by [`LocalStoreConfig::observation_cache_bytes`] (see `cache`); identities per device and
//! encounter identifier. Both learn a call's results only after its commit. One-instant
//! Observations (`periodInterval` 0) are not cached, as on the FHIR path: nothing continues
//! them, and a replayed group finds its Observation through its identifier (for one-instant
//! Observations, through its insert: see `persist`).
//!
//! # Concurrency and durability
//! One writer connection behind a mutex (SQLite has one writer at a time anyway) and one
//! reader connection for [`get`](LocalFhirStore::get) and friends, which in WAL mode never
//! waits for the writer and sees committed data only. A third connection, on a thread of its
//! own, checkpoints the write-ahead log when the writer signals that it has grown (see
//! `checkpoint`), so copying pages into the file is off the writer's path.
//!
//! # Stored form
//! Bodies from 256 bytes are kept LZ4-compressed against a dictionary of what FHIR resources
//! repeat (see `body`; schema version 3): an hour of SampledData then fits one page, which is
//! what makes merging it cheap, and a one-instant Observation takes a third of its JSON.
//!
//! **What `persist` returned as written is on the disk**, power cuts included: a caller that
//! acknowledges its input once `persist` returned (a log checkpoint moved past it) must never
//! have to replay a lost write. `synchronous=NORMAL` syncs the write-ahead log only at
//! checkpoints, so after its last commit `persist` flushes the log file itself (`fdatasync`)
//! — once per call, where `synchronous=FULL` would flush once per transaction. If that flush
//! fails, every group the call saved comes back `Failed` and retryable (the commits are kept;
//! a retry merges idempotently). [`put_resource`](LocalFhirStore::put_resource) is used for
//! seeding and flushes the same way.
//!
//! The service's pipeline splits that in two:
//! [`persist_unsynced`](LocalFhirStore::persist_unsynced) commits, and
//! [`sync`](LocalFhirStore::sync) flushes every commit so far. It writes its next batch while
//! the previous one's flush runs, and moves its checkpoint past a batch only once a flush
//! after it succeeded. A failed flush is not retried (see `sync`). Freeing a call's groups
//! happens on a thread of its own (see `deferred_drop`).

mod body;
mod cache;
mod checkpoint;
mod db;
mod deferred_drop;
mod identity;
mod ordered;
mod persist;
mod resource;

use std::fmt;
use std::io::Write;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

use chrono::Utc;
use iomt_transform::{FhirTemplates, IdPrecision, ObservationGroup};
use rusqlite::Connection;
use serde_json::Value;

use self::cache::ObservationCache;
use self::checkpoint::Checkpointer;
use self::deferred_drop::DeferredDrop;
use self::identity::IdentityCache;
use self::persist::{PERSIST, Persist, Written};
use self::resource::{RESOURCE_TYPES, instant, is_valid_id, known_type, parse_stored};
use crate::error::StoreError;
use crate::sqlite::{self, FileKind};

/// How groups are linked to their Device, Patient and Encounter (SPEC §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalIdentityMode {
    /// Look the Device up; when it (or its Patient) is missing, create the Patient and the
    /// Device from the message's ids. The default here, so that a newcomer's first messages
    /// become Observations without seeding anything.
    #[default]
    Create,
    /// The Device must exist ([`LocalFhirStore::put_resource`]) and name its Patient.
    Lookup,
    /// As `Lookup`, and every group must have an encounter id whose Encounter exists.
    LookupWithEncounter,
}

impl LocalIdentityMode {
    /// The name used in configuration and messages (`create`, `lookup`,
    /// `lookup_with_encounter`).
    pub fn as_str(self) -> &'static str {
        match self {
            LocalIdentityMode::Create => "create",
            LocalIdentityMode::Lookup => "lookup",
            LocalIdentityMode::LookupWithEncounter => "lookup_with_encounter",
        }
    }
}

impl fmt::Display for LocalIdentityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A text that names no identity mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown identity mode '{given}': use create, lookup or lookup_with_encounter")]
pub struct UnknownIdentityMode {
    /// The text given.
    pub given: String,
}

impl FromStr for LocalIdentityMode {
    type Err = UnknownIdentityMode;

    /// Accepts the names above and, case-insensitively, the original's setting values
    /// (`Create`, `LookupWithEncounter`, `R4DeviceAndPatientCreateIdentityService`, …).
    fn from_str(s: &str) -> Result<LocalIdentityMode, UnknownIdentityMode> {
        let lower = s.trim().to_ascii_lowercase();
        match lower.as_str() {
            "create" | "r4deviceandpatientcreateidentityservice" => Ok(LocalIdentityMode::Create),
            "lookup" | "r4deviceandpatientlookupidentityservice" => Ok(LocalIdentityMode::Lookup),
            "lookup_with_encounter"
            | "lookupwithencounter"
            | "r4deviceandpatientwithencounterlookupidentityservice" => {
                Ok(LocalIdentityMode::LookupWithEncounter)
            }
            _ => Err(UnknownIdentityMode {
                given: s.to_owned(),
            }),
        }
    }
}

/// How the local store resolves identities and names Observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalStoreConfig {
    /// The identity mode.
    pub identity: LocalIdentityMode,
    /// The identifier system Devices are looked up (and created) with; blank means none.
    pub default_device_identifier_system: Option<String>,
    /// The precision of Observation identifier time segments (keep the default for a store
    /// that already holds Observations: changing it changes every identifier).
    pub id_precision: IdPrecision,
    /// The most memory the cache of hour/day Observations may take; 0 disables it. Entries are
    /// kept as stored: an hour of 1-second SampledData takes a few hundred bytes compressed, so
    /// the default 16 MiB holds the open hours and days of tens of thousands of devices.
    pub observation_cache_bytes: usize,
    /// How many groups one transaction of a [`persist`](LocalFhirStore::persist) call takes.
    /// A transaction holds every group's plan (identity, starting state) until it commits, so
    /// this bounds the memory a large call takes; the call flushes the log once, whatever the
    /// number of its transactions. The default, 40,000, takes the service's whole batch
    /// (`pipeline.max_batch_messages`) in one transaction: the plan and the commit run on the
    /// writer alone while builders wait, so fewer, larger transactions keep both cores busy
    /// longer, and a page that many groups dirty is written to the log once. Measured with
    /// `iomt-runtime`'s `benches/service.rs`: 109k–111k messages/s against 92k–95k with
    /// 10,000, with the same peak memory (the plan holds ~0.5 KB per Observation).
    pub transaction_groups: NonZeroUsize,
    /// How many device and encounter identities are cached (each).
    pub identity_cache_entries: NonZeroUsize,
    /// How many threads build and merge a call's Observations, the calling thread (which
    /// writes) included (calls with few distinct Observations use only the caller). With 2 or
    /// more, `workers - 1` builder threads build slices of Observations ahead of the caller,
    /// which writes them in order and builds too whenever the next one is not ready. Default
    /// 1, everything on the caller; the service uses 2 on machines with two cores or more
    /// (`destination.local.workers`), where it measured faster end to end (`iomt-runtime`'s
    /// `benches/service.rs`).
    pub workers: NonZeroUsize,
}

impl Default for LocalStoreConfig {
    fn default() -> LocalStoreConfig {
        LocalStoreConfig {
            identity: LocalIdentityMode::default(),
            default_device_identifier_system: None,
            id_precision: IdPrecision::default(),
            observation_cache_bytes: 16 << 20,
            transaction_groups: NonZeroUsize::new(40_000).unwrap_or(NonZeroUsize::MIN),
            identity_cache_entries: NonZeroUsize::new(100_000).unwrap_or(NonZeroUsize::MIN),
            workers: NonZeroUsize::MIN,
        }
    }
}

/// What happened to one group.
#[derive(Debug)]
pub enum StoreOutcome {
    /// A new Observation was written.
    Created {
        /// The Observation's id.
        id: String,
    },
    /// The group was merged into an existing Observation, which was written.
    Updated {
        /// The Observation's id.
        id: String,
    },
    /// The existing Observation already had everything: nothing was written.
    Unchanged {
        /// The Observation's id.
        id: String,
    },
    /// The group could not be persisted; it is handed back for the dead-letter store. (Boxed:
    /// a call's outcomes are mostly successes, and a batch's vector of them stays small.)
    Failed(Box<StoreFailure>),
}

/// A group that could not be persisted, and why.
#[derive(Debug)]
pub struct StoreFailure {
    /// The group, unchanged.
    pub group: ObservationGroup,
    /// Why ([`StoreError::class`], [`StoreError::is_retryable`]).
    pub error: StoreError,
}

impl StoreOutcome {
    /// The Observation id, for the outcomes that have one.
    pub fn id(&self) -> Option<&str> {
        match self {
            StoreOutcome::Created { id }
            | StoreOutcome::Updated { id }
            | StoreOutcome::Unchanged { id } => Some(id),
            StoreOutcome::Failed(_) => None,
        }
    }

    /// The error, if the group failed.
    pub fn error(&self) -> Option<&StoreError> {
        match self {
            StoreOutcome::Failed(failure) => Some(&failure.error),
            _ => None,
        }
    }
}

/// How many resources of each type the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceCounts {
    /// Patients.
    pub patients: u64,
    /// Devices.
    pub devices: u64,
    /// Encounters.
    pub encounters: u64,
    /// Observations.
    pub observations: u64,
}

impl ResourceCounts {
    /// All resources.
    pub fn total(&self) -> u64 {
        self.patients + self.devices + self.encounters + self.observations
    }
}

const KIND: FileKind = FileKind {
    application_id: 0x494f_4d46, // "IOMF"
    description: "an iomt local fhir store",
    // 2: bodies may be LZ4-compressed (see `body`); schema-1 bodies read as they are, and an
    // older iomt must not read compressed ones. 3: bodies may be compressed against `body`'s
    // dictionary, which an iomt of schema 2 cannot read.
    schema_version: 3,
    upgrades: &["", ""],
    schema: db::SCHEMA,
    synchronous: "NORMAL",
    // The identifier and primary-key index pages a batch touches; Observation bodies are
    // read back through the operating system's cache when the Observation cache misses.
    // 8 MiB: large transactions fill the cache with their dirty pages, and 16 MiB held
    // noticeably more resident memory (4 MiB: ~35 MiB less than 16, but slower writes;
    // measured with `iomt-runtime`'s `benches/service.rs`).
    cache_kib: 8 * 1024,
    // Compressed, an hour of SampledData fits a 4 KiB page; most writes dirty pages at
    // random (hashed ids), and each dirty page is written to the log and again at the
    // checkpoint, so smaller pages write less (measured with `iomt-runtime`'s
    // `benches/service.rs`: 4 KiB faster than 8 KiB once bodies were compressed).
    page_size: 4096,
    // For connections other than the writer, whose log is checkpointed by `checkpoint`.
    wal_autocheckpoint_pages: 4096,
};

/// The local FHIR store (see the module docs). `Send + Sync`; writes are serialized.
#[derive(Debug)]
pub struct LocalFhirStore {
    path: PathBuf,
    /// Stopped before the connections close (fields drop in order).
    _checkpointer: Checkpointer,
    config: LocalStoreConfig,
    writer: Mutex<Writer>,
    reader: Mutex<Connection>,
    /// Whether a commit may not be flushed to the disk yet (see [`LocalFhirStore::sync`]).
    unsynced: AtomicBool,
    /// Frees the groups of a call off the caller's path (see `deferred_drop`).
    deferred_drop: DeferredDrop,
}

#[derive(Debug)]
struct Writer {
    conn: Connection,
    observations: ObservationCache,
    identities: IdentityCache,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while the lock was held rolled its transaction back (Transaction's drop) before
    // any cache was touched (caches change only after a commit), so the state is consistent.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl LocalFhirStore {
    /// Opens the store at `path`, creating the file (and its directory) when missing.
    ///
    /// # Errors
    /// [`StoreError::Open`], [`StoreError::WrongFile`] (e.g. the dead-letter file),
    /// [`StoreError::NewerSchema`].
    pub fn open(path: &Path, config: LocalStoreConfig) -> Result<LocalFhirStore, StoreError> {
        let mut config = config;
        config.default_device_identifier_system = config
            .default_device_identifier_system
            .filter(|s| !s.trim().is_empty());
        let mut conn = sqlite::open(path, &KIND)?;
        let reader = sqlite::open_more(path, &KIND)?;
        let checkpointer = Checkpointer::start(
            path,
            &KIND,
            &mut conn,
            checkpoint::SOFT_LIMIT_BYTES,
            checkpoint::HARD_LIMIT_BYTES,
        )?;
        Ok(LocalFhirStore {
            path: path.to_path_buf(),
            _checkpointer: checkpointer,
            writer: Mutex::new(Writer {
                conn,
                observations: ObservationCache::new(config.observation_cache_bytes),
                identities: IdentityCache::new(config.identity_cache_entries.get()),
            }),
            reader: Mutex::new(reader),
            config,
            unsynced: AtomicBool::new(false),
            deferred_drop: DeferredDrop::start("iomt-store-drop"),
        })
    }

    /// The configuration in effect (a blank device identifier system is `None`).
    pub fn config(&self) -> &LocalStoreConfig {
        &self.config
    }

    /// Persists `groups`: one outcome per group, in order, in transactions of
    /// [`LocalStoreConfig::transaction_groups`] groups, durable when it returns (see the module
    /// docs).
    pub fn persist(
        &self,
        groups: Vec<ObservationGroup>,
        templates: &FhirTemplates,
    ) -> Vec<StoreOutcome> {
        self.persist_calls(groups, templates, true)
    }

    /// As [`persist`](Self::persist), but what it returns as saved is committed (later calls
    /// and readers see it; a crash of the process keeps it) and durable against a power cut
    /// only once a later [`sync`](Self::sync) returned `Ok`. So a caller can write its next
    /// batch while this one's flush runs, and must not acknowledge a group's input before.
    pub fn persist_unsynced(
        &self,
        groups: Vec<ObservationGroup>,
        templates: &FhirTemplates,
    ) -> Vec<StoreOutcome> {
        self.persist_calls(groups, templates, false)
    }

    /// Makes every commit so far durable against a power cut: flushes the write-ahead log to
    /// the disk (`fdatasync`), unless nothing was written since the last flush. It may run
    /// while another thread persists.
    ///
    /// # Errors
    /// [`StoreError::Storage`] when the flush fails. Do not retry it: after a failed flush
    /// the operating system may have dropped the pages it could not write, and a second
    /// flush can then succeed without them. Stop, and on the next start let the input replay
    /// everything after its last acknowledged position (merges are idempotent).
    pub fn sync(&self) -> Result<(), StoreError> {
        if !self.unsynced.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.sync_log().inspect_err(|_| {
            self.unsynced.store(true, Ordering::SeqCst);
        })
    }

    /// [`persist`](Self::persist) (`sync`) or [`persist_unsynced`](Self::persist_unsynced).
    fn persist_calls(
        &self,
        groups: Vec<ObservationGroup>,
        templates: &FhirTemplates,
        sync: bool,
    ) -> Vec<StoreOutcome> {
        if groups.is_empty() {
            return Vec::new();
        }
        let now = Utc::now();
        let last_updated = instant(now);
        let mut guard = lock(&self.writer);
        let Writer {
            conn,
            observations,
            identities,
        } = &mut *guard;
        let mut results = Vec::new();
        // One transaction per chunk; the next one plans once this one's results are in the
        // caches, so it sees them.
        for chunk in groups.chunks(self.config.transaction_groups.get()) {
            let (chunk_results, publish) = Persist {
                conn,
                config: &self.config,
                observations,
                identities,
                now,
                last_updated: &last_updated,
            }
            .run(chunk, templates);
            if results.is_empty() {
                results = chunk_results;
            } else {
                results.extend(chunk_results);
            }
            publish.apply(observations, identities);
        }
        drop(guard);
        if results
            .iter()
            .any(|r| matches!(r, Ok(Written::Created(_) | Written::Updated(_))))
        {
            self.unsynced.store(true, Ordering::SeqCst);
        }
        // One flush of the write-ahead log for every transaction of the call.
        if sync && let Err(error) = self.sync() {
            // Unchanged groups too: what they found may be one of this call's writes.
            for result in &mut results {
                if result.is_ok() {
                    *result = Err(error.clone());
                }
            }
        }
        let outcome = |result: Result<Written, StoreError>| match result {
            Ok(Written::Created(id)) => Ok(StoreOutcome::Created { id }),
            Ok(Written::Updated(id)) => Ok(StoreOutcome::Updated { id }),
            Ok(Written::Unchanged(id)) => Ok(StoreOutcome::Unchanged { id }),
            Err(error) => Err(error),
        };
        if results.iter().all(Result::is_ok) {
            // No outcome needs its group back: free them off the caller's path.
            let outcomes = results
                .into_iter()
                .filter_map(|result| outcome(result).ok())
                .collect();
            self.deferred_drop.drop_later(groups);
            return outcomes;
        }
        groups
            .into_iter()
            .zip(results)
            .map(|(group, result)| {
                outcome(result).unwrap_or_else(|error| {
                    StoreOutcome::Failed(Box::new(StoreFailure { group, error }))
                })
            })
            .collect()
    }

    /// Flushes the write-ahead log to the disk (see [`sync`](Self::sync)).
    fn sync_log(&self) -> Result<(), StoreError> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        std::fs::File::open(&wal)
            .and_then(|f| f.sync_data())
            .map_err(|e| StoreError::Storage {
                operation: PERSIST,
                detail: format!(
                    "flushing the write-ahead log to the disk failed ({e}); check the disk that holds the store (full, read-only or failing)"
                ),
                retryable: true,
            })
    }

    /// Stores a Patient, Device, Encounter or Observation as a FHIR update would (e.g. to seed
    /// Devices for identity mode `lookup`): a resource without `id` gets a new one (a UUID);
    /// an existing one is replaced and its version incremented. Returns the id.
    ///
    /// Writing a Device, Patient or Encounter empties the identity caches; writing an
    /// Observation empties the Observation cache.
    ///
    /// # Errors
    /// [`StoreError::InvalidResource`] (not an object, no `resourceType`, an invalid `id`),
    /// [`StoreError::UnsupportedResourceType`], [`StoreError::Storage`].
    pub fn put_resource(&self, resource: &Value) -> Result<String, StoreError> {
        const OP: &str = "write a resource";
        let object = resource
            .as_object()
            .ok_or_else(|| StoreError::InvalidResource {
                reason: "it is not a json object".into(),
            })?;
        let given_type = object
            .get("resourceType")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::InvalidResource {
                reason: "it has no resourceType".into(),
            })?;
        let resource_type =
            known_type(given_type).ok_or_else(|| StoreError::UnsupportedResourceType {
                resource_type: given_type.to_owned(),
            })?;
        let id = match object.get("id") {
            None => uuid::Uuid::new_v4().to_string(),
            Some(Value::String(id)) if is_valid_id(id) => id.clone(),
            Some(_) => {
                return Err(StoreError::InvalidResource {
                    reason: "its id is not a fhir id (1 to 64 letters, digits, '-' or '.')".into(),
                });
            }
        };
        let mut resource = resource.clone();
        if let Some(object) = resource.as_object_mut() {
            object.insert("id".into(), Value::String(id.clone()));
            // Where FHIR puts it: right after resourceType.
            let position = object.keys().position(|k| k == "resourceType").unwrap_or(0);
            if let Some(value) = object.shift_remove("id") {
                object.shift_insert((position + 1).min(object.len()), "id".into(), value);
            }
        }
        let last_updated = instant(Utc::now());
        let mut guard = lock(&self.writer);
        let writer = &mut *guard;
        let tx = writer
            .conn
            .transaction()
            .map_err(|e| StoreError::storage(OP, &e))?;
        db::write_resource(&tx, OP, resource_type, &id, resource, &last_updated)?;
        tx.commit().map_err(|e| StoreError::storage(OP, &e))?;
        match resource_type {
            "Observation" => writer.observations.clear(),
            _ => writer.identities.clear(),
        }
        drop(guard);
        self.sync_log()?;
        Ok(id)
    }

    /// The resource `resource_type/id`, as last committed.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedResourceType`], [`StoreError::Storage`],
    /// [`StoreError::Corrupt`].
    pub fn get(&self, resource_type: &str, id: &str) -> Result<Option<Value>, StoreError> {
        let resource_type = checked_type(resource_type)?;
        if !is_valid_id(id) {
            return Ok(None);
        }
        let conn = lock(&self.reader);
        match db::get(&conn, "read a resource", resource_type, id)? {
            Some((_, body)) => Ok(Some(parse_stored(resource_type, &body)?)),
            None => Ok(None),
        }
    }

    /// The resources of `resource_type` with an identifier of value `value` and, when given,
    /// exactly `system` (as a FHIR `identifier=[system|]value` search), in id order.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn find_by_identifier(
        &self,
        resource_type: &str,
        system: Option<&str>,
        value: &str,
    ) -> Result<Vec<Value>, StoreError> {
        let resource_type = checked_type(resource_type)?;
        let conn = lock(&self.reader);
        db::find(&conn, "search by identifier", resource_type, system, value)?
            .into_iter()
            .map(|found| parse_stored(resource_type, &found.body))
            .collect()
    }

    /// Writes the resources of `resource_types` (all four when empty) as FHIR NDJSON: one
    /// resource per line, by type in the order given, then by id. A consistent snapshot, read on
    /// a connection of its own (persisting goes on meanwhile). Returns how many were written.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedResourceType`], [`StoreError::Export`] when `out` fails,
    /// [`StoreError::Storage`].
    pub fn export_ndjson(
        &self,
        out: &mut dyn Write,
        resource_types: &[&str],
    ) -> Result<u64, StoreError> {
        const OP: &str = "export resources";
        let types: Vec<&'static str> = if resource_types.is_empty() {
            RESOURCE_TYPES.to_vec()
        } else {
            resource_types
                .iter()
                .map(|t| checked_type(t))
                .collect::<Result<_, _>>()?
        };
        let storage = |e: rusqlite::Error| StoreError::storage(OP, &e);
        let export = |e: std::io::Error| StoreError::Export {
            detail: e.to_string(),
        };
        let mut conn = sqlite::open_more(&self.path, &KIND)?;
        let tx = conn.transaction().map_err(storage)?;
        let mut written = 0u64;
        {
            let mut stmt = tx
                .prepare("SELECT body FROM resource WHERE resource_type = ?1 ORDER BY id")
                .map_err(storage)?;
            for resource_type in types {
                let mut rows = stmt.query([resource_type]).map_err(storage)?;
                while let Some(row) = rows.next().map_err(storage)? {
                    let body = row.get_ref(0).map_err(storage)?;
                    let bytes = body.as_bytes().map_err(|e| storage(e.into()))?;
                    let json = body::decode(resource_type, bytes)?;
                    out.write_all(&json).map_err(export)?;
                    out.write_all(b"\n").map_err(export)?;
                    written += 1;
                }
            }
        }
        tx.finish().map_err(storage)?;
        out.flush().map_err(export)?;
        Ok(written)
    }

    /// How many resources of each type the store holds.
    ///
    /// # Errors
    /// [`StoreError::Storage`].
    pub fn counts(&self) -> Result<ResourceCounts, StoreError> {
        const OP: &str = "count resources";
        let storage = |e: rusqlite::Error| StoreError::storage(OP, &e);
        let conn = lock(&self.reader);
        let mut stmt = conn
            .prepare_cached("SELECT resource_type, count(*) FROM resource GROUP BY resource_type")
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
            })
            .map_err(storage)?;
        let mut counts = ResourceCounts::default();
        for row in rows {
            let (resource_type, n) = row.map_err(storage)?;
            let n = u64::try_from(n).unwrap_or(0);
            match resource_type.as_str() {
                "Patient" => counts.patients = n,
                "Device" => counts.devices = n,
                "Encounter" => counts.encounters = n,
                "Observation" => counts.observations = n,
                _ => {}
            }
        }
        Ok(counts)
    }
}

fn checked_type(resource_type: &str) -> Result<&'static str, StoreError> {
    known_type(resource_type).ok_or_else(|| StoreError::UnsupportedResourceType {
        resource_type: resource_type.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_tuned() {
        let dir = tempfile::TempDir::new().unwrap();
        let store =
            LocalFhirStore::open(&dir.path().join("f.db"), LocalStoreConfig::default()).unwrap();
        for conn in [&lock(&store.writer).conn, &*lock(&store.reader)] {
            let get =
                |name: &str| -> i64 { conn.pragma_query_value(None, name, |r| r.get(0)).unwrap() };
            assert_eq!(get("page_size"), 4096);
            assert_eq!(get("synchronous"), 1, "NORMAL");
            assert_eq!(get("cache_size"), -8 * 1024);
            let mode: String = conn
                .pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
    }

    #[test]
    fn identity_mode_names() {
        for mode in [
            LocalIdentityMode::Create,
            LocalIdentityMode::Lookup,
            LocalIdentityMode::LookupWithEncounter,
        ] {
            assert_eq!(mode.as_str().parse::<LocalIdentityMode>(), Ok(mode));
        }
        assert_eq!(
            "R4DeviceAndPatientWithEncounterLookupIdentityService".parse(),
            Ok(LocalIdentityMode::LookupWithEncounter)
        );
        assert_eq!("Create".parse(), Ok(LocalIdentityMode::Create));
        assert_eq!(
            "fhir".parse::<LocalIdentityMode>().unwrap_err().to_string(),
            "unknown identity mode 'fhir': use create, lookup or lookup_with_encounter"
        );
    }
}
