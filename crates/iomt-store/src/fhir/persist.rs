//! One transaction of a `persist` call: plan, build and merge (in parallel), write, commit;
//! the caller then publishes to the caches.
//!
//! 1. **Plan** (sequential, in the transaction): per group, its template, its identity
//!    (Device, Patient, Encounter: may create resources, see `identity`) and its Observation
//!    identity. Groups for the same Observation form one *chain*, in input order, whose base is
//!    the cached Observation (taken out of the cache), the stored one, or none. One-instant
//!    Observations are not looked up but *presumed* new (only a replay finds one stored): when
//!    the stored Observations are all canonical, the insert's primary key is the lookup, and a
//!    chain whose insert finds its Observation is built again on it by the writer. That saves
//!    a primary-key probe per new one-instant Observation.
//! 2. **Build** (no I/O): each chain starts from its base and applies its groups in order —
//!    create, merge (`iomt_transform`'s functions), or unchanged — then serializes and
//!    compresses the result. Chains are independent, so with [`LocalStoreConfig::workers`]
//!    above one they are built on helper threads *and* the writer (see `ordered`).
//! 3. **Write** (sequential): every changed Observation once, slice after slice in order;
//!    then the commit.
//!
//! Build and write go over slices of `BUILD_SLICE` chains, built at most `BUILD_AHEAD`
//! slices ahead of the one being written, so a transaction holds the built Observations of a
//! few slices, not of all its chains. A builder takes its slice's chains and hands them to
//! the writer with what it built, and the writer drops each chain once written: a base lives
//! no longer than its write.
//!
//! # What must hold
//! * Groups of one Observation are applied in input order, each seeing the previous one's
//!   result, exactly as if the call were made once per group.
//! * The caches learn a transaction's results only after its commit ([`Publish`]). A cached
//!   Observation a transaction works on is out of the cache meanwhile; when the transaction
//!   rolls back, it stays out, and the next call reads the committed state from the file.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use hashbrown::HashTable;
use iomt_transform::{
    FhirTemplate, FhirTemplates, JsonMergeOutcome, MergeOutcome, ObservationGroup,
    ObservationIdentity, PeriodInterval, ResolvedIds, SERVICE_SYSTEM,
};
use rusqlite::Connection;
use serde_json::Value;

use super::LocalStoreConfig;
use super::cache::{CachedObservation, ObservationCache};
use super::db;
use super::identity::{IdentityCache, Resolved, Resolver};
use super::ordered;
use super::resource::{parse_stored, replace_meta, set_meta, splice_meta};
use crate::error::StoreError;

pub(crate) const PERSIST: &str = "persist observations";

/// Below this many chains a call is built on the calling thread: starting threads would cost
/// more than they save.
const PARALLEL_MIN_CHAINS: usize = 64;

/// Chains built before their Observations are written: enough for the build threads to share,
/// few enough that their Observations take a few megabytes.
const BUILD_SLICE: usize = 256;

/// Slices built ahead of the one being written: enough to keep builders busy while the
/// writer writes, few enough to bound what built Observations hold.
const BUILD_AHEAD: usize = 4;

/// A group's result before the commit.
#[derive(Debug)]
pub(crate) enum Written {
    Created(String),
    Updated(String),
    Unchanged(String),
}

/// Each group's result (`None`: not reached), by group index.
pub(crate) type Results = Vec<Option<Result<Written, StoreError>>>;

/// What a chain starts from.
enum Base {
    /// No such Observation yet. (Its identity's `identifier_value` is the chain's
    /// `identifier`, moved there; [`create`] puts it back.)
    New(ObservationIdentity),
    /// Presumed new without a probe: a one-instant Observation, which only a replay finds
    /// stored. Its insert finds out otherwise, and the chain is then built again on the stored
    /// Observation (see [`Persist::write_slice`]).
    Presumed(ObservationIdentity),
    /// The committed state, taken out of the cache for the call (the call puts back what it
    /// leaves, changed or not, once committed).
    Cached(CachedObservation),
    /// The committed state, read from the file.
    Stored(db::Found),
}

/// The groups of one Observation in this call.
struct Chain<'t> {
    identifier: String,
    base: Base,
    /// (group index, template), in input order.
    groups: Vec<(usize, &'t dyn FhirTemplate)>,
    /// An hour/day/correlation window: cached after the commit.
    cacheable: bool,
}

impl Base {
    /// The resource id, taken.
    fn into_id(self) -> String {
        match self {
            Base::New(identity) | Base::Presumed(identity) => identity.id,
            Base::Cached(cached) => cached.id,
            Base::Stored(found) => found.id,
        }
    }
}

impl Chain<'_> {
    fn id(&self) -> &str {
        match &self.base {
            Base::New(identity) | Base::Presumed(identity) => &identity.id,
            Base::Cached(cached) => &cached.id,
            Base::Stored(found) => &found.id,
        }
    }
}

/// An Observation's state while its chain is built.
enum Body {
    /// Parsed, built or merged.
    Owned(Value),
    /// Serialized (new, stored, or merged on its text); parsed on first use by a merge that
    /// cannot work on the text.
    Bytes(Vec<u8>),
}

impl Body {
    fn value(&mut self) -> Result<&Value, StoreError> {
        if let Body::Bytes(bytes) = self {
            *self = Body::Owned(parse_stored("Observation", bytes)?);
        }
        Ok(match self {
            Body::Owned(v) => v,
            Body::Bytes(_) => unreachable!("parsed just above"),
        })
    }
}

/// What building a chain produced.
#[derive(Default)]
struct Built {
    /// (group index, result).
    results: Vec<(usize, Result<Written, StoreError>)>,
    /// The new state, when the chain changed the Observation.
    changed: Option<Changed>,
    /// Whether the stored base parsed (only then is it worth caching).
    base_readable: bool,
}

struct Changed {
    version: u64,
    json: Vec<u8>,
    /// `json` compressed, when `body::encode` compresses it (made on the build workers).
    compressed: Option<Vec<u8>>,
}

impl Changed {
    /// What goes into the `body` column.
    fn stored(&self) -> &[u8] {
        self.compressed.as_deref().unwrap_or(&self.json)
    }

    /// What goes into the `body` column, taken (for the cache, once written).
    fn into_stored(self) -> Vec<u8> {
        self.compressed.unwrap_or(self.json)
    }
}

/// The cache updates of a call, applied once its transactions committed.
#[derive(Default)]
pub(crate) struct Publish {
    entries: Vec<(String, CachedObservation)>,
    resolved: Resolved,
}

impl Publish {
    pub fn apply(self, observations: &mut ObservationCache, identities: &mut IdentityCache) {
        for (identifier, entry) in self.entries {
            observations.insert(identifier, entry);
        }
        self.resolved.publish(identities);
    }
}

/// Every group's result: with `error` (the transaction rolled back), every group that had
/// not failed on its own fails with it.
fn answered(results: Results, error: Option<&StoreError>) -> Vec<Result<Written, StoreError>> {
    results
        .into_iter()
        .map(|result| match (result, error) {
            (Some(Err(own)), _) => Err(own),
            (Some(Ok(written)), None) => Ok(written),
            (Some(Ok(_)) | None, Some(error)) => Err(error.clone()),
            // Every group is answered by the plan or the build; a gap is a bug.
            (None, None) => unreachable!("a group got no result"),
        })
        .collect()
}

/// One call's context.
pub(crate) struct Persist<'a> {
    pub conn: &'a Connection,
    pub config: &'a LocalStoreConfig,
    pub observations: &'a mut ObservationCache,
    pub identities: &'a mut IdentityCache,
    pub now: DateTime<Utc>,
    pub last_updated: &'a str,
}

impl<'a> Persist<'a> {
    /// Plans, builds and writes `groups` in one transaction, and commits it. Returns every
    /// group's result and, when the transaction committed, its cache updates (the caller
    /// applies them).
    ///
    /// On a storage error the transaction rolls back: every group that had not failed on its
    /// own fails with that error, and there is nothing to publish.
    pub fn run(
        mut self,
        groups: &[ObservationGroup],
        templates: &FhirTemplates,
    ) -> (Vec<Result<Written, StoreError>>, Publish) {
        let mut results: Results = (0..groups.len()).map(|_| None).collect();
        match self.plan_and_write(groups, templates, &mut results) {
            Ok(publish) => (answered(results, None), publish),
            Err(error) => (answered(results, Some(&error)), Publish::default()),
        }
    }

    /// The body of [`Persist::run`]; its transaction rolls back (is dropped) on an error.
    fn plan_and_write(
        &mut self,
        groups: &[ObservationGroup],
        templates: &FhirTemplates,
        results: &mut Results,
    ) -> Result<Publish, StoreError> {
        let conn = self.conn;
        let tx = conn
            .unchecked_transaction()
            .map_err(|e| StoreError::storage(PERSIST, &e))?;
        // Whether some Observation has identifier rows (only `put_resource`, under the same
        // writer lock, adds them).
        let identifier_rows = db::observations_have_identifier_rows(conn, PERSIST)?;
        let mut resolved = Resolved::default();

        // 1. Plan.
        let mut chains: Vec<Chain<'_>> = Vec::new();
        // Chains by identifier, as indices into `chains` (whose identifiers are the keys: no
        // second copy of each).
        let hasher = hashbrown::DefaultHashBuilder::default();
        let mut chain_of: HashTable<usize> = HashTable::new();
        for (index, group) in groups.iter().enumerate() {
            let (template, mut identity) = match self.plan(group, templates, &mut resolved) {
                Ok(planned) => planned,
                Err(e @ StoreError::Storage { .. }) => return Err(e),
                Err(e) => {
                    results[index] = Some(Err(e));
                    continue;
                }
            };
            let cacheable = group.window.interval != PeriodInterval::Single;
            let hash = hasher.hash_one(identity.identifier_value.as_str());
            if let Some(&c) =
                chain_of.find(hash, |&c| chains[c].identifier == identity.identifier_value)
            {
                chains[c].groups.push((index, template));
                chains[c].cacheable |= cacheable;
                continue;
            }
            // The chain keeps the identifier; a new Observation's identity gets it back when
            // it is created.
            let identifier = std::mem::take(&mut identity.identifier_value);
            let base = match self.base(identity, &identifier, cacheable, identifier_rows) {
                Ok(base) => base,
                Err(e @ StoreError::Storage { .. }) => return Err(e),
                Err(e) => {
                    results[index] = Some(Err(e));
                    continue;
                }
            };
            chain_of.insert_unique(hash, chains.len(), |&c| {
                hasher.hash_one(chains[c].identifier.as_str())
            });
            chains.push(Chain {
                identifier,
                base,
                groups: vec![(index, template)],
                cacheable,
            });
        }
        drop(chain_of);

        // 2. Build and 3. write, a slice of chains at a time: only a few slices of built
        // Observations are held at once (~20 KB each for an hour of SampledData). A builder
        // takes its slice's chains and hands them to the writer with what it built; the
        // writer drops them once written, so a base (a stored Observation) lives no longer
        // than its chain's write.
        let mut publish = Publish {
            resolved,
            ..Publish::default()
        };
        let helpers = if chains.len() < PARALLEL_MIN_CHAINS {
            0
        } else {
            self.config.workers.get() - 1
        };
        let (now, last_updated) = (self.now, self.last_updated);
        let mut slices: Vec<Mutex<Option<Vec<Chain<'_>>>>> = Vec::new();
        let mut chains = chains.into_iter().peekable();
        while chains.peek().is_some() {
            let slice = chains.by_ref().take(BUILD_SLICE).collect();
            slices.push(Mutex::new(Some(slice)));
        }
        let this = &*self;
        ordered::run(
            slices.len(),
            helpers,
            BUILD_AHEAD,
            |i| {
                // Each index is built once, so its slice is there.
                let slice = slices[i]
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take()
                    .unwrap_or_default();
                let built: Vec<Built> = slice
                    .iter()
                    .map(|chain| build(chain, groups, now, last_updated))
                    .collect();
                (slice, built)
            },
            |_, (slice, built)| this.write_slice(slice, built, groups, results, &mut publish),
        )?;
        tx.commit().map_err(|e| StoreError::storage(PERSIST, &e))?;
        Ok(publish)
    }

    /// Writes a slice's built chains and notes their results and cache updates.
    ///
    /// A chain presumed new whose insert finds its Observation stored (a replay) is built
    /// again on the stored one, here on the writer: what a probe would have given.
    fn write_slice(
        &self,
        slice: Vec<Chain<'_>>,
        built: Vec<Built>,
        groups: &[ObservationGroup],
        results: &mut Results,
        publish: &mut Publish,
    ) -> Result<(), StoreError> {
        for (chain, built) in slice.into_iter().zip(built) {
            if let (Base::Presumed(_), Some(changed)) = (&chain.base, &built.changed) {
                let inserted = db::insert_canonical_observation(
                    self.conn,
                    PERSIST,
                    chain.id(),
                    changed.version,
                    changed.stored(),
                )?;
                if inserted {
                    self.note(chain, built, false, results, publish)?;
                    continue;
                }
                if let Some(found) = db::get_canonical(self.conn, PERSIST, &chain.identifier)? {
                    let replay = Chain {
                        base: Base::Stored(found),
                        ..chain
                    };
                    let rebuilt = build(&replay, groups, self.now, self.last_updated);
                    self.note(replay, rebuilt, true, results, publish)?;
                    continue;
                }
                // Else the id is a resource's without this identifier: `write` writes it as
                // a FHIR update would.
            }
            self.note(chain, built, true, results, publish)?;
        }
        Ok(())
    }

    /// Notes a built chain's results and cache updates, writing its new state first when
    /// `write` (else it is written already).
    fn note(
        &self,
        chain: Chain<'_>,
        built: Built,
        write: bool,
        results: &mut Results,
        publish: &mut Publish,
    ) -> Result<(), StoreError> {
        for (index, result) in built.results {
            results[index] = Some(result);
        }
        match built.changed {
            Some(mut changed) => {
                if write {
                    self.write(&chain, &mut changed)?;
                }
                if chain.cacheable {
                    let id = chain.base.into_id();
                    let entry = CachedObservation::new(id, changed.version, changed.into_stored());
                    publish.entries.push((chain.identifier, entry));
                }
            }
            None => match chain.base {
                Base::Stored(found) if chain.cacheable && built.base_readable => {
                    let entry = CachedObservation::new(found.id, found.version, found.body);
                    publish.entries.push((chain.identifier, entry));
                }
                // Unchanged (or failed on its own): back into the cache as it was.
                Base::Cached(cached) => publish.entries.push((chain.identifier, cached)),
                _ => {}
            },
        }
        Ok(())
    }

    /// The group's template and Observation identity (resolving its Device, Patient and
    /// Encounter).
    fn plan<'t>(
        &mut self,
        group: &ObservationGroup,
        templates: &'t FhirTemplates,
        resolved: &mut Resolved,
    ) -> Result<(&'t dyn FhirTemplate, ObservationIdentity), StoreError> {
        let template = templates.require(&group.type_name)?;
        let mut resolver = Resolver {
            conn: self.conn,
            config: self.config,
            cache: &mut *self.identities,
            resolved,
            last_updated: self.last_updated,
        };
        let link = resolver.device(group)?;
        let encounter = resolver.encounter(group)?;
        let ids = ResolvedIds {
            patient: link.patient,
            device: link.device,
            encounter,
        };
        let identity = ObservationIdentity::new(group, &ids, self.config.id_precision)?;
        Ok((template.as_ref(), identity))
    }

    /// Where the Observation with `identity` stands: cached, stored, or new. A one-instant
    /// Observation (not `cacheable`) is presumed new without a probe when every stored
    /// Observation is canonical (no `identifier_rows`): its insert is the probe.
    fn base(
        &mut self,
        identity: ObservationIdentity,
        identifier: &str,
        cacheable: bool,
        identifier_rows: bool,
    ) -> Result<Base, StoreError> {
        if let Some(cached) = self.observations.take(identifier) {
            return Ok(Base::Cached(cached));
        }
        if !cacheable && !identifier_rows {
            return Ok(Base::Presumed(identity));
        }
        let mut found = db::find_observation(self.conn, PERSIST, identifier, identifier_rows)?;
        match found.len() {
            0 => Ok(Base::New(identity)),
            1 => Ok(found.pop().map_or(Base::New(identity), Base::Stored)),
            count => Err(StoreError::MultipleFound {
                resource_type: "Observation",
                count,
            }),
        }
    }

    /// Writes a chain's new state.
    fn write(&self, chain: &Chain<'_>, changed: &mut Changed) -> Result<(), StoreError> {
        let id = chain.id();
        let written = if matches!(chain.base, Base::New(_) | Base::Presumed(_)) {
            debug_assert_eq!(
                id,
                iomt_transform::observation::resource_id(Some(SERVICE_SYSTEM), &chain.identifier)
            );
            db::insert_canonical_observation(
                self.conn,
                PERSIST,
                id,
                changed.version,
                changed.stored(),
            )?
        } else {
            db::update(
                self.conn,
                PERSIST,
                "Observation",
                id,
                changed.version,
                changed.stored(),
            )?
        };
        if !written {
            // The id is taken by a resource without this identifier (written with
            // put_resource), or the row went away: write it as a FHIR update would.
            let value = parse_stored("Observation", &changed.json)?;
            let (version, json) = db::write_resource(
                self.conn,
                PERSIST,
                "Observation",
                id,
                value,
                self.last_updated,
            )?;
            changed.version = version;
            changed.json = json;
            changed.compressed = None;
        }
        Ok(())
    }
}

/// Applies a chain's groups to its base, in order.
fn build(
    chain: &Chain<'_>,
    groups: &[ObservationGroup],
    now: DateTime<Utc>,
    last_updated: &str,
) -> Built {
    let mut built = Built::default();
    let id = chain.id();
    let base = match &chain.base {
        Base::New(_) | Base::Presumed(_) => None,
        Base::Cached(cached) => Some((cached.stored.as_slice(), cached.version)),
        Base::Stored(found) => Some((found.body.as_slice(), found.version)),
    };
    let (mut body, mut version) = match base {
        None => (None, 0),
        // Kept as text: the usual merge (SampledData inside its hour or day) works on it
        // without parsing (`merge`); anything else parses it on first use.
        Some((stored, version)) => match super::body::decode("Observation", stored) {
            Ok(json) => (Some(Body::Bytes(json.into_owned())), version),
            Err(e) => {
                built.results = chain
                    .groups
                    .iter()
                    .map(|(index, _)| (*index, Err(e.clone())))
                    .collect();
                return built;
            }
        },
    };
    let mut changed = false;
    for &(index, template) in &chain.groups {
        let group = &groups[index];
        let result = if let Some(current) = body.as_mut() {
            match merge(template, group, current, version, last_updated) {
                Ok(None) => Ok(Written::Unchanged(id.to_owned())),
                Ok(Some(merged)) => {
                    *current = merged;
                    version += 1;
                    changed = true;
                    Ok(Written::Updated(id.to_owned()))
                }
                Err(e) => Err(e),
            }
        } else {
            let (Base::New(identity) | Base::Presumed(identity)) = &chain.base else {
                unreachable!("only a new chain starts without a body")
            };
            match create(
                template,
                group,
                identity,
                &chain.identifier,
                now,
                last_updated,
            ) {
                Ok(new) => {
                    body = Some(new);
                    version = 1;
                    changed = true;
                    Ok(Written::Created(id.to_owned()))
                }
                Err(e) => Err(e),
            }
        };
        built.results.push((index, result));
    }
    // A merge, on the text or the parsed value, succeeded only on a readable base.
    built.base_readable = built.results.iter().any(|(_, result)| result.is_ok());
    match body {
        Some(body) if changed => {
            let json = match body {
                Body::Bytes(json) => Ok(json),
                // sonic-rs writes the same JSON as serde_json with vectorized string escaping:
                // a SampledData data string is most of an hour Observation.
                Body::Owned(value) => sonic_rs::to_vec(&value),
            };
            match json {
                Ok(json) => {
                    let compressed = match super::body::encode(&json) {
                        Cow::Owned(compressed) => Some(compressed),
                        Cow::Borrowed(_) => None,
                    };
                    built.changed = Some(Changed {
                        version,
                        json,
                        compressed,
                    });
                }
                Err(e) => {
                    let error = StoreError::Corrupt {
                        what: "Observation",
                        reason: format!("it cannot be serialized: {e}"),
                    };
                    for (_, result) in &mut built.results {
                        if result.is_ok() {
                            *result = Err(error.clone());
                        }
                    }
                }
            }
        }
        _ => {}
    }
    built
}

/// A new Observation for `group`: `iomt_transform` builds it, the store adds `meta`.
fn create(
    template: &dyn FhirTemplate,
    group: &ObservationGroup,
    identity: &ObservationIdentity,
    identifier: &str,
    now: DateTime<Utc>,
    last_updated: &str,
) -> Result<Body, StoreError> {
    let observation = template
        .create_observation(group, now)?
        .with_identity(ObservationIdentity {
            identifier_value: identifier.to_owned(),
            ..identity.clone()
        });
    if let Some(bytes) = splice_meta(&observation.to_json_bytes(), &identity.id, 1, last_updated) {
        return Ok(Body::Bytes(bytes));
    }
    let mut value = observation.to_json();
    if let Some(object) = value.as_object_mut() {
        set_meta(object, 1, last_updated);
    }
    Ok(Body::Owned(value))
}

/// `group` merged into `current` (version `version`): the new state with its `meta`, or
/// `None` when nothing changed. On text when `iomt_transform` can merge it exactly without
/// parsing it (`FhirTemplate::merge_observation_json`), else on the parsed value.
fn merge(
    template: &dyn FhirTemplate,
    group: &ObservationGroup,
    current: &mut Body,
    version: u64,
    last_updated: &str,
) -> Result<Option<Body>, StoreError> {
    if let Body::Bytes(json) = current
        && let Some(outcome) = template.merge_observation_json(json, group)
    {
        let text = match outcome {
            JsonMergeOutcome::Unchanged => return Ok(None),
            JsonMergeOutcome::Changed(text) => text,
        };
        if let Some(bytes) = replace_meta(text.as_bytes(), version + 1, last_updated) {
            return Ok(Some(Body::Bytes(bytes)));
        }
        // `meta` not in the store's form: set it on the parsed value.
        let mut value = parse_stored("Observation", text.as_bytes())?;
        if let Some(object) = value.as_object_mut() {
            set_meta(object, version + 1, last_updated);
        }
        return Ok(Some(Body::Owned(value)));
    }
    match template.merge_observation(current.value()?, group)? {
        MergeOutcome::Unchanged => Ok(None),
        MergeOutcome::Changed(mut value) => {
            if let Some(object) = value.as_object_mut() {
                set_meta(object, version + 1, last_updated);
            }
            Ok(Some(Body::Owned(value)))
        }
    }
}
