//! The local FHIR store's tables and the statements on them.
//!
//! # Layout
//! * `resource (resource_type, id, version, canonical, body)`: one row per resource, the
//!   current version only (no history); `body` is the resource's JSON with
//!   `meta.versionId = version`, compressed when large (see `body`; reads go through
//!   `resource::parse_stored`, which decodes).
//! * `identifier (resource_type, value, system, id)`: one row per identifier of a resource
//!   (`system` is `''` when the identifier has none), keyed for the two searches the pipeline
//!   makes: `value` alone, and `system` + `value`.
//!
//! # Canonical Observations
//! Nearly every Observation is one the pipeline wrote: its only identifier is
//! `{SERVICE_SYSTEM, value}` and its id is `sha256(SERVICE_SYSTEM + "_" + value)`, so its id
//! *is* its identifier's index entry. Such rows are marked `canonical` and get no identifier
//! rows: a search for `[SERVICE_SYSTEM|]value` probes the id derived from the value, plus the
//! identifier table for everything else. This halves what a new Observation writes: its ids
//! are hashes, so each index entry lands on a random page, and the pages a commit dirties (and
//! copies through the write-ahead log) are the main cost of writing.
//!
//! # What must hold
//! * The identifier rows of a resource are exactly the identifiers in its stored body, except
//!   for a canonical Observation, which has none: every write of a body replaces them
//!   (Observation merges keep the identifier and the id, so they skip it).
//! * Every statement is prepared once per connection (`prepare_cached`).

use iomt_transform::SERVICE_SYSTEM;
use iomt_transform::observation::resource_id;
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::Value;

use super::resource::{identifiers, parse_stored, set_meta};
use crate::error::StoreError;

pub(crate) const SCHEMA: &str = "
    CREATE TABLE resource (
        resource_type TEXT    NOT NULL,
        id            TEXT    NOT NULL,
        version       INTEGER NOT NULL,
        canonical     INTEGER NOT NULL,
        body          BLOB    NOT NULL,
        PRIMARY KEY (resource_type, id)
    );
    CREATE TABLE identifier (
        resource_type TEXT NOT NULL,
        value         TEXT NOT NULL,
        system        TEXT NOT NULL,
        id            TEXT NOT NULL,
        PRIMARY KEY (resource_type, value, system, id)
    ) WITHOUT ROWID;
";

const FIND_BY_VALUE: &str = "SELECT id, version, body FROM resource \
     WHERE resource_type = ?1 AND id IN \
     (SELECT id FROM identifier WHERE resource_type = ?1 AND value = ?2) ORDER BY id";

const FIND_BY_SYSTEM_VALUE: &str = "SELECT id, version, body FROM resource \
     WHERE resource_type = ?1 AND id IN \
     (SELECT id FROM identifier WHERE resource_type = ?1 AND value = ?2 AND system = ?3) \
     ORDER BY id";

const GET_CANONICAL: &str = "SELECT id, version, body FROM resource \
     WHERE resource_type = 'Observation' AND id = ?1 AND canonical = 1";

const HAS_OBSERVATION_IDENTIFIERS: &str =
    "SELECT EXISTS (SELECT 1 FROM identifier WHERE resource_type = 'Observation')";

const GET: &str = "SELECT version, body FROM resource WHERE resource_type = ?1 AND id = ?2";

const INSERT_NEW: &str = "INSERT INTO resource (resource_type, id, version, canonical, body) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (resource_type, id) DO NOTHING";

const UPSERT: &str = "INSERT INTO resource (resource_type, id, version, canonical, body) \
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (resource_type, id) \
     DO UPDATE SET version = excluded.version, canonical = excluded.canonical, \
     body = excluded.body";

const UPDATE: &str = "UPDATE resource SET version = ?3, body = ?4 \
     WHERE resource_type = ?1 AND id = ?2";

const INSERT_IDENTIFIER: &str = "INSERT OR IGNORE INTO identifier (resource_type, value, system, id) \
     VALUES (?1, ?2, ?3, ?4)";

const DELETE_IDENTIFIER: &str = "DELETE FROM identifier \
     WHERE resource_type = ?1 AND value = ?2 AND system = ?3 AND id = ?4";

const DELETE_IDENTIFIERS_OF: &str = "DELETE FROM identifier WHERE resource_type = ?1 AND id = ?2";

/// A stored resource, as read.
#[derive(Debug)]
pub(crate) struct Found {
    pub id: String,
    pub version: u64,
    pub body: Vec<u8>,
}

impl Found {
    /// A row of `id, version, body`.
    fn from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Found> {
        Ok(Found {
            id: row.get(0)?,
            version: version_from_sql(row.get(1)?),
            body: row.get(2)?,
        })
    }
}

fn version_from_sql(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn version_to_sql(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The resources of `resource_type` with identifier `value` (and exactly `system`, when
/// given), in id order.
pub(crate) fn find(
    conn: &Connection,
    op: &'static str,
    resource_type: &str,
    system: Option<&str>,
    value: &str,
) -> Result<Vec<Found>, StoreError> {
    let storage = |e: rusqlite::Error| StoreError::storage(op, &e);
    let map = Found::from_row;
    let found: Result<Vec<Found>, rusqlite::Error> = match system {
        None => conn
            .prepare_cached(FIND_BY_VALUE)
            .map_err(storage)?
            .query_map(params![resource_type, value], map)
            .map_err(storage)?
            .collect(),
        Some(system) => conn
            .prepare_cached(FIND_BY_SYSTEM_VALUE)
            .map_err(storage)?
            .query_map(params![resource_type, value, system], map)
            .map_err(storage)?
            .collect(),
    };
    let mut found = found.map_err(storage)?;
    if resource_type == "Observation"
        && system.is_none_or(|s| s == SERVICE_SYSTEM)
        && let Some(canonical) = get_canonical(conn, op, value)?
    {
        // Sorted by id, as the identifier search returns them.
        let at = found.partition_point(|f| f.id < canonical.id);
        found.insert(at, canonical);
    }
    Ok(found)
}

/// Whether any Observation has identifier rows, i.e. any is not canonical (see the module
/// docs). When none has, a search for a canonical identifier is one primary-key probe.
pub(crate) fn observations_have_identifier_rows(
    conn: &Connection,
    op: &'static str,
) -> Result<bool, StoreError> {
    conn.prepare_cached(HAS_OBSERVATION_IDENTIFIERS)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)))
        .map_err(|e| StoreError::storage(op, &e))
}

/// The Observation whose canonical identifier is `value` (`[SERVICE_SYSTEM|]value`), as
/// [`find`] finds it; when `identifier_rows` is false (see
/// [`observations_have_identifier_rows`]) only its canonical row can match.
pub(crate) fn find_observation(
    conn: &Connection,
    op: &'static str,
    value: &str,
    identifier_rows: bool,
) -> Result<Vec<Found>, StoreError> {
    if identifier_rows {
        return find(conn, op, "Observation", Some(SERVICE_SYSTEM), value);
    }
    Ok(get_canonical(conn, op, value)?.into_iter().collect())
}

/// The canonical Observation for identifier `value`: the one probe of the id derived from it.
pub(crate) fn get_canonical(
    conn: &Connection,
    op: &'static str,
    value: &str,
) -> Result<Option<Found>, StoreError> {
    let id = resource_id(Some(SERVICE_SYSTEM), value);
    conn.prepare_cached(GET_CANONICAL)
        .and_then(|mut stmt| stmt.query_row([&id], Found::from_row).optional())
        .map_err(|e| StoreError::storage(op, &e))
}

/// Whether an Observation with `identifiers` and `id` is canonical (see the module docs).
fn is_canonical(resource_type: &str, id: &str, identifiers: &[(String, String)]) -> bool {
    resource_type == "Observation"
        && matches!(identifiers, [(system, value)]
            if system == SERVICE_SYSTEM && id == resource_id(Some(SERVICE_SYSTEM), value))
}

/// The stored version and body of a resource.
pub(crate) fn get(
    conn: &Connection,
    op: &'static str,
    resource_type: &str,
    id: &str,
) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    conn.prepare_cached(GET)
        .and_then(|mut stmt| {
            stmt.query_row(params![resource_type, id], |row| {
                Ok((version_from_sql(row.get(0)?), row.get::<_, Vec<u8>>(1)?))
            })
            .optional()
        })
        .map_err(|e| StoreError::storage(op, &e))
}

/// Inserts a new canonical Observation (see the module docs): the caller guarantees that its
/// only identifier is `{SERVICE_SYSTEM, identifier}` and `id` is derived from it. `stored` is
/// its JSON as `body::encode` gives it. `false` (nothing written) when the id is taken.
pub(crate) fn insert_canonical_observation(
    conn: &Connection,
    op: &'static str,
    id: &str,
    version: u64,
    stored: &[u8],
) -> Result<bool, StoreError> {
    conn.prepare_cached(INSERT_NEW)
        .and_then(|mut stmt| {
            stmt.execute(params![
                "Observation",
                id,
                version_to_sql(version),
                true,
                stored
            ])
        })
        .map(|n| n == 1)
        .map_err(|e| StoreError::storage(op, &e))
}

/// Replaces the body of an existing resource row with `stored` (its JSON as `body::encode`
/// gives it); `false` when there is none.
pub(crate) fn update(
    conn: &Connection,
    op: &'static str,
    resource_type: &str,
    id: &str,
    version: u64,
    stored: &[u8],
) -> Result<bool, StoreError> {
    conn.prepare_cached(UPDATE)
        .and_then(|mut stmt| {
            stmt.execute(params![resource_type, id, version_to_sql(version), stored])
        })
        .map(|n| n == 1)
        .map_err(|e| StoreError::storage(op, &e))
}

/// Adds one identifier row.
fn insert_identifier(
    conn: &Connection,
    op: &'static str,
    resource_type: &str,
    system: &str,
    value: &str,
    id: &str,
) -> Result<(), StoreError> {
    conn.prepare_cached(INSERT_IDENTIFIER)
        .and_then(|mut stmt| stmt.execute(params![resource_type, value, system, id]))
        .map(drop)
        .map_err(|e| StoreError::storage(op, &e))
}

/// Writes `resource` (which has `resourceType` and a valid `id`) as a FHIR update would: its
/// version is the stored one plus one (1 when new), `meta` is set, its identifier rows are
/// replaced. Returns the written version and JSON.
pub(crate) fn write_resource(
    conn: &Connection,
    op: &'static str,
    resource_type: &'static str,
    id: &str,
    mut resource: Value,
    last_updated: &str,
) -> Result<(u64, Vec<u8>), StoreError> {
    let storage = |e: rusqlite::Error| StoreError::storage(op, &e);
    let previous = get(conn, op, resource_type, id)?;
    let version = previous.as_ref().map_or(1, |(v, _)| v + 1);
    if let Some((_, body)) = &previous {
        match parse_stored(resource_type, body) {
            Ok(old) => {
                let mut stmt = conn.prepare_cached(DELETE_IDENTIFIER).map_err(storage)?;
                for (system, value) in identifiers(&old) {
                    stmt.execute(params![resource_type, value, system, id])
                        .map_err(storage)?;
                }
            }
            // An unreadable body cannot say which identifiers it had: drop them all (a scan,
            // but only on this repair path).
            Err(_) => {
                conn.prepare_cached(DELETE_IDENTIFIERS_OF)
                    .and_then(|mut stmt| stmt.execute(params![resource_type, id]))
                    .map_err(storage)?;
            }
        }
    }
    if let Some(object) = resource.as_object_mut() {
        set_meta(object, version, last_updated);
    }
    let body = serde_json::to_vec(&resource).map_err(|e| StoreError::InvalidResource {
        reason: format!("cannot serialize it: {e}"),
    })?;
    let identifiers = identifiers(&resource);
    let canonical = is_canonical(resource_type, id, &identifiers);
    conn.prepare_cached(UPSERT)
        .and_then(|mut stmt| {
            stmt.execute(params![
                resource_type,
                id,
                version_to_sql(version),
                canonical,
                super::body::encode(&body).as_ref()
            ])
        })
        .map_err(storage)?;
    if !canonical {
        for (system, value) in identifiers {
            insert_identifier(conn, op, resource_type, &system, &value, id)?;
        }
    }
    Ok((version, body))
}
