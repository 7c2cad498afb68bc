//! The dead-letter store: every message or group the pipeline could not process, kept with the
//! reason, so a user can see why data did not arrive and send it again (redrive) after fixing a
//! mapping, a Device or the server.
//!
//! # What must hold
//! * **Nothing is lost once [`put`](DeadLetterStore::put) returns.** One call is one
//!   transaction, committed with `synchronous=FULL`: the write-ahead log is flushed to disk
//!   before the call returns, so a crash or power cut right after keeps every entry. The
//!   pipeline may acknowledge the original message (MQTT, Kafka offset) only after that.
//! * **Ids only grow.** Ids are assigned in insertion order and never reused, also after
//!   [`remove`](DeadLetterStore::remove) or [`purge`](DeadLetterStore::purge), so paging with
//!   `after_id` sees every entry exactly once and a redrive never removes a newer entry.
//! * **The payload is patient data.** This module never logs it, nor the headers or device id;
//!   listings ([`list`](DeadLetterStore::list)) leave the payload out and give its size.
//!
//! # Layout
//! One table, one row per entry, the payload last in the row so that listings do not read it.
//! Times are stored as microseconds since the Unix epoch (UTC); sub-microsecond digits are
//! dropped. Indexes on (class, id), (stage, id) and (occurred_at, id) serve the filters.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Row, params, params_from_iter};

use crate::error::{StoreError, UnknownStage};
use crate::sqlite::{self, FileKind};

/// The pipeline stage at which a message or group failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// Receiving the message (decoding, decompressing, size limits).
    Ingest,
    /// Device mapping: the message could not become measurements.
    Normalize,
    /// Windowing: a measurement could not be placed in an observation window.
    Group,
    /// FHIR mapping: a group could not become (or be merged into) an Observation.
    Transform,
    /// Writing: identity resolution or the write itself failed.
    Persist,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 5] = [
        Stage::Ingest,
        Stage::Normalize,
        Stage::Group,
        Stage::Transform,
        Stage::Persist,
    ];

    /// The lowercase name (`normalize`), as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Ingest => "ingest",
            Stage::Normalize => "normalize",
            Stage::Group => "group",
            Stage::Transform => "transform",
            Stage::Persist => "persist",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = UnknownStage;

    fn from_str(s: &str) -> Result<Stage, UnknownStage> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| UnknownStage {
                given: s.to_owned(),
            })
    }
}

/// An entry to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeadLetter {
    /// The error class from the catalogue (`InvalidJsonException`,
    /// `FhirResourceNotFoundException`, …).
    pub class: String,
    /// Where it failed.
    pub stage: Stage,
    /// The error message (no payload data in it).
    pub reason: String,
    /// When it failed.
    pub occurred_at: DateTime<Utc>,
    /// The device id, when known.
    pub device_id: Option<String>,
    /// Whether a redrive may succeed without a change (the error was transient).
    pub retryable: bool,
    /// Where the message came from: `http`, `mqtt:<topic>`, `kafka:<topic>/<partition>`, ….
    pub source: String,
    /// The message's offset in the ingest log, when it has one.
    pub log_offset: Option<u64>,
    /// The message's headers or properties, in order.
    pub headers: Vec<(String, String)>,
    /// The original message as received (for a group: its measurements as the pipeline
    /// serializes them).
    pub payload: Vec<u8>,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The entry's id (increasing in insertion order, never reused).
    pub id: i64,
    /// The error class.
    pub class: String,
    /// Where it failed.
    pub stage: Stage,
    /// The error message.
    pub reason: String,
    /// When it failed (microsecond precision).
    pub occurred_at: DateTime<Utc>,
    /// The device id, when known.
    pub device_id: Option<String>,
    /// Whether a redrive may succeed without a change.
    pub retryable: bool,
    /// Where the message came from.
    pub source: String,
    /// The message's offset in the ingest log.
    pub log_offset: Option<u64>,
    /// The message's headers or properties.
    pub headers: Vec<(String, String)>,
    /// The original message.
    pub payload: Vec<u8>,
    /// How many redrives of this entry were attempted ([`DeadLetterStore::mark_redriven`]).
    pub redrive_count: u32,
}

/// An entry without its payload and headers, for listings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterSummary {
    /// The entry's id.
    pub id: i64,
    /// The error class.
    pub class: String,
    /// Where it failed.
    pub stage: Stage,
    /// The error message.
    pub reason: String,
    /// When it failed.
    pub occurred_at: DateTime<Utc>,
    /// The device id, when known.
    pub device_id: Option<String>,
    /// Whether a redrive may succeed without a change.
    pub retryable: bool,
    /// Where the message came from.
    pub source: String,
    /// The payload's size in bytes.
    pub payload_bytes: u64,
    /// How many redrives were attempted.
    pub redrive_count: u32,
}

/// Which entries a query concerns; every field that is set must match.
///
/// Entries come in id order. `since` is inclusive, `until` exclusive; `after_id` and `limit`
/// page through a listing (pass the last id seen as the next `after_id`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterFilter {
    /// Exactly this error class.
    pub class: Option<String>,
    /// Exactly this stage.
    pub stage: Option<Stage>,
    /// Failed at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// Failed before this instant.
    pub until: Option<DateTime<Utc>>,
    /// Ids greater than this one.
    pub after_id: Option<i64>,
    /// At most this many entries (the first ones in id order).
    pub limit: Option<usize>,
}

const KIND: FileKind = FileKind {
    application_id: 0x494f_4d44, // "IOMD"
    description: "an iomt dead-letter store",
    schema_version: 1,
    upgrades: &[],
    schema: "
        CREATE TABLE dead_letter (
            id            INTEGER PRIMARY KEY AUTOINCREMENT,
            class         TEXT    NOT NULL,
            stage         TEXT    NOT NULL,
            reason        TEXT    NOT NULL,
            occurred_at   INTEGER NOT NULL,
            device_id     TEXT,
            retryable     INTEGER NOT NULL,
            source        TEXT    NOT NULL,
            log_offset    INTEGER,
            redrive_count INTEGER NOT NULL DEFAULT 0,
            payload_bytes INTEGER NOT NULL,
            headers       TEXT    NOT NULL,
            payload       BLOB    NOT NULL
        );
        CREATE INDEX dead_letter_class ON dead_letter (class, id);
        CREATE INDEX dead_letter_stage ON dead_letter (stage, id);
        CREATE INDEX dead_letter_time ON dead_letter (occurred_at, id);
    ",
    synchronous: "FULL",
    cache_kib: 8 * 1024,
    page_size: 4096,
    wal_autocheckpoint_pages: 1000,
};

const SUMMARY_COLUMNS: &str = "id, class, stage, reason, occurred_at, device_id, retryable, \
                               source, payload_bytes, redrive_count";

/// The dead-letter store: an SQLite file, one writer connection behind a mutex.
///
/// Synchronous by design: the service calls it from `spawn_blocking`. `Send + Sync`; calls
/// from several threads are serialized.
#[derive(Debug)]
pub struct DeadLetterStore {
    conn: Mutex<Connection>,
}

impl DeadLetterStore {
    /// Opens the store at `path`, creating the file (and its directory) when missing.
    ///
    /// # Errors
    /// [`StoreError::Open`] when the file cannot be opened or created,
    /// [`StoreError::WrongFile`] for a file of another kind, [`StoreError::NewerSchema`] for
    /// one from a newer iomt.
    pub fn open(path: &Path) -> Result<DeadLetterStore, StoreError> {
        let conn = sqlite::open(path, &KIND)?;
        Ok(DeadLetterStore {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held rolled its transaction back (Transaction's drop),
        // so the connection is consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores `entries` in one transaction; their ids, in order. Durable when it returns.
    ///
    /// # Errors
    /// [`StoreError::Storage`] (retryable for a full disk, a locked file, an I/O error); then
    /// nothing was stored.
    pub fn put(&self, entries: &[NewDeadLetter]) -> Result<Vec<i64>, StoreError> {
        const OP: &str = "write dead letters";
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(|e| StoreError::storage(OP, &e))?;
        let mut ids = Vec::with_capacity(entries.len());
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO dead_letter (class, stage, reason, occurred_at, device_id, \
                     retryable, source, log_offset, payload_bytes, headers, payload) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(|e| StoreError::storage(OP, &e))?;
            for entry in entries {
                let headers = headers_json(&entry.headers);
                insert
                    .execute(params![
                        entry.class,
                        entry.stage.as_str(),
                        entry.reason,
                        entry.occurred_at.timestamp_micros(),
                        entry.device_id,
                        entry.retryable,
                        entry.source,
                        entry.log_offset.map(u64_to_sql),
                        entry.payload.len() as i64,
                        headers,
                        entry.payload,
                    ])
                    .map_err(|e| StoreError::storage(OP, &e))?;
                ids.push(tx.last_insert_rowid());
            }
        }
        tx.commit().map_err(|e| StoreError::storage(OP, &e))?;
        Ok(ids)
    }

    /// The entries matching `filter`, in id order, without payloads.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; [`StoreError::Corrupt`] for a row this module did not write.
    pub fn list(&self, filter: &DeadLetterFilter) -> Result<Vec<DeadLetterSummary>, StoreError> {
        const OP: &str = "list dead letters";
        let (clause, values) = where_clause(filter);
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM dead_letter{clause} ORDER BY id{}",
            limit_clause(filter)
        );
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(&sql)
            .map_err(|e| StoreError::storage(OP, &e))?;
        let mut rows = stmt
            .query(params_from_iter(values))
            .map_err(|e| StoreError::storage(OP, &e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| StoreError::storage(OP, &e))? {
            out.push(summary_from_row(row)?);
        }
        Ok(out)
    }

    /// One entry with its payload; `None` when there is no entry `id`.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; [`StoreError::Corrupt`] for a row this module did not write.
    pub fn get(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        const OP: &str = "read a dead letter";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, class, stage, reason, occurred_at, device_id, retryable, source, \
                 log_offset, redrive_count, headers, payload FROM dead_letter WHERE id = ?1",
            )
            .map_err(|e| StoreError::storage(OP, &e))?;
        let mut rows = stmt.query([id]).map_err(|e| StoreError::storage(OP, &e))?;
        match rows.next().map_err(|e| StoreError::storage(OP, &e))? {
            None => Ok(None),
            Some(row) => Ok(Some(entry_from_row(row)?)),
        }
    }

    /// How many entries there are per class and stage, sorted by class then stage.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; [`StoreError::Corrupt`] for a row this module did not write.
    pub fn counts(&self) -> Result<Vec<(String, Stage, u64)>, StoreError> {
        const OP: &str = "count dead letters";
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT class, stage, count(*) FROM dead_letter GROUP BY class, stage \
                 ORDER BY class, stage",
            )
            .map_err(|e| StoreError::storage(OP, &e))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| StoreError::storage(OP, &e))?;
        let mut out = Vec::new();
        for row in rows {
            let (class, stage, count) = row.map_err(|e| StoreError::storage(OP, &e))?;
            out.push((
                class,
                parse_stage(&stage)?,
                u64::try_from(count).unwrap_or(0),
            ));
        }
        Ok(out)
    }

    /// Deletes the entries matching `filter` (with `limit`, the first ones in id order); how
    /// many. An empty filter deletes everything.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; then nothing was deleted.
    pub fn purge(&self, filter: &DeadLetterFilter) -> Result<u64, StoreError> {
        const OP: &str = "purge dead letters";
        let (clause, values) = where_clause(filter);
        let sql = if filter.limit.is_some() {
            format!(
                "DELETE FROM dead_letter WHERE id IN \
                 (SELECT id FROM dead_letter{clause} ORDER BY id{})",
                limit_clause(filter)
            )
        } else {
            format!("DELETE FROM dead_letter{clause}")
        };
        let conn = self.conn();
        let deleted = conn
            .prepare_cached(&sql)
            .and_then(|mut stmt| stmt.execute(params_from_iter(values)))
            .map_err(|e| StoreError::storage(OP, &e))?;
        if deleted > 0 {
            release_free_pages(&conn);
        }
        Ok(deleted as u64)
    }

    /// Deletes the entries `ids` (after a successful redrive), in one transaction; how many
    /// existed.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; then nothing was deleted.
    pub fn remove(&self, ids: &[i64]) -> Result<u64, StoreError> {
        let removed = self.for_each_id(
            "remove dead letters",
            "DELETE FROM dead_letter WHERE id = ?1",
            ids,
        )?;
        if removed > 0 {
            release_free_pages(&self.conn());
        }
        Ok(removed)
    }

    /// Counts a redrive attempt for the entries `ids` (their `redrive_count` grows by one); how
    /// many existed. Call it when a redrive of an entry failed again, so a user sees which
    /// entries keep failing.
    ///
    /// # Errors
    /// [`StoreError::Storage`]; then nothing was changed.
    pub fn mark_redriven(&self, ids: &[i64]) -> Result<u64, StoreError> {
        self.for_each_id(
            "count dead-letter redrives",
            "UPDATE dead_letter SET redrive_count = redrive_count + 1 WHERE id = ?1",
            ids,
        )
    }

    fn for_each_id(&self, op: &'static str, sql: &str, ids: &[i64]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn();
        let tx = conn
            .transaction()
            .map_err(|e| StoreError::storage(op, &e))?;
        let mut changed = 0u64;
        {
            let mut stmt = tx
                .prepare_cached(sql)
                .map_err(|e| StoreError::storage(op, &e))?;
            for id in ids {
                changed += stmt
                    .execute([id])
                    .map_err(|e| StoreError::storage(op, &e))? as u64;
            }
        }
        tx.commit().map_err(|e| StoreError::storage(op, &e))?;
        Ok(changed)
    }
}

/// Gives pages freed by deletions back to the file system (best effort: the entries are
/// already gone either way).
fn release_free_pages(conn: &Connection) {
    let _ = conn.execute_batch("PRAGMA incremental_vacuum");
}

/// The `WHERE` clause (with a leading space, or empty) and its values for `filter`.
fn where_clause(filter: &DeadLetterFilter) -> (String, Vec<SqlValue>) {
    let mut conditions: Vec<&str> = Vec::new();
    let mut values: Vec<SqlValue> = Vec::new();
    if let Some(class) = &filter.class {
        conditions.push("class = ?");
        values.push(SqlValue::Text(class.clone()));
    }
    if let Some(stage) = filter.stage {
        conditions.push("stage = ?");
        values.push(SqlValue::Text(stage.as_str().to_owned()));
    }
    if let Some(since) = filter.since {
        conditions.push("occurred_at >= ?");
        values.push(SqlValue::Integer(micros_ceil(since)));
    }
    if let Some(until) = filter.until {
        conditions.push("occurred_at < ?");
        values.push(SqlValue::Integer(micros_ceil(until)));
    }
    if let Some(after) = filter.after_id {
        conditions.push("id > ?");
        values.push(SqlValue::Integer(after));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!(" WHERE {}", conditions.join(" AND ")), values)
    }
}

/// ` LIMIT n` for a filter with a limit (written into the SQL so that the statement is cached
/// per filter shape, not per value… the values vary little: page sizes).
fn limit_clause(filter: &DeadLetterFilter) -> String {
    match filter.limit {
        Some(limit) => format!(" LIMIT {}", i64::try_from(limit).unwrap_or(i64::MAX)),
        None => String::new(),
    }
}

/// Microseconds since the epoch, rounded up: stored times are rounded down, so comparing a
/// stored time with the rounded-up bound gives the same answer as comparing the full times
/// whenever the stored time was whole microseconds.
fn micros_ceil(t: DateTime<Utc>) -> i64 {
    let micros = t.timestamp_micros();
    if t.timestamp_subsec_nanos().is_multiple_of(1000) {
        micros
    } else {
        micros.saturating_add(1)
    }
}

fn time_from_micros(micros: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(micros).ok_or_else(|| StoreError::Corrupt {
        what: "dead letter",
        reason: "its time is out of range".into(),
    })
}

/// Offsets are u64; SQLite integers are i64. The bits are kept (offsets past `i64::MAX` are
/// stored negative and read back unchanged).
fn u64_to_sql(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

fn u64_from_sql(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

fn headers_json(headers: &[(String, String)]) -> String {
    // A list of string pairs always serializes.
    serde_json::to_string(headers).unwrap_or_else(|_| "[]".to_owned())
}

fn parse_stage(text: &str) -> Result<Stage, StoreError> {
    text.parse().map_err(|_| StoreError::Corrupt {
        what: "dead letter",
        reason: "its stage is unknown".into(),
    })
}

fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T, StoreError> {
    row.get(index)
        .map_err(|e| StoreError::storage("read dead letters", &e))
}

fn summary_from_row(row: &Row<'_>) -> Result<DeadLetterSummary, StoreError> {
    Ok(DeadLetterSummary {
        id: column(row, 0)?,
        class: column(row, 1)?,
        stage: parse_stage(&column::<String>(row, 2)?)?,
        reason: column(row, 3)?,
        occurred_at: time_from_micros(column(row, 4)?)?,
        device_id: column(row, 5)?,
        retryable: column(row, 6)?,
        source: column(row, 7)?,
        payload_bytes: u64::try_from(column::<i64>(row, 8)?).unwrap_or(0),
        redrive_count: u32::try_from(column::<i64>(row, 9)?).unwrap_or(u32::MAX),
    })
}

fn entry_from_row(row: &Row<'_>) -> Result<DeadLetter, StoreError> {
    let headers: String = column(row, 10)?;
    Ok(DeadLetter {
        id: column(row, 0)?,
        class: column(row, 1)?,
        stage: parse_stage(&column::<String>(row, 2)?)?,
        reason: column(row, 3)?,
        occurred_at: time_from_micros(column(row, 4)?)?,
        device_id: column(row, 5)?,
        retryable: column(row, 6)?,
        source: column(row, 7)?,
        log_offset: column::<Option<i64>>(row, 8)?.map(u64_from_sql),
        redrive_count: u32::try_from(column::<i64>(row, 9)?).unwrap_or(u32::MAX),
        headers: serde_json::from_str(&headers).map_err(|_| StoreError::Corrupt {
            what: "dead letter",
            reason: "its headers are not a list of name/value pairs".into(),
        })?,
        payload: column(row, 11)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_flushed_to_disk() {
        let dir = tempfile::TempDir::new().unwrap();
        let store = DeadLetterStore::open(&dir.path().join("dl.db")).unwrap();
        let conn = store.conn();
        let pragma = |name: &str| -> String {
            conn.pragma_query_value(None, name, |r| r.get::<_, rusqlite::types::Value>(0))
                .map(|v| match v {
                    SqlValue::Integer(i) => i.to_string(),
                    SqlValue::Text(t) => t,
                    other => format!("{other:?}"),
                })
                .unwrap()
        };
        assert_eq!(pragma("journal_mode"), "wal");
        assert_eq!(pragma("synchronous"), "2", "FULL");
        assert_eq!(pragma("auto_vacuum"), "2", "INCREMENTAL");
    }

    #[test]
    fn stage_names_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage.to_string().parse::<Stage>(), Ok(stage));
            assert_eq!(stage.to_string(), stage.to_string().to_lowercase());
        }
        let err = "Persist".parse::<Stage>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown stage 'Persist': use one of ingest, normalize, group, transform, persist"
        );
    }

    #[test]
    fn offsets_keep_their_bits() {
        for v in [0, 1, u64::MAX, i64::MAX as u64 + 1] {
            assert_eq!(u64_from_sql(u64_to_sql(v)), v);
        }
    }

    #[test]
    fn bounds_round_up_to_the_microsecond() {
        let t = DateTime::from_timestamp(10, 1_500).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
        let t = DateTime::from_timestamp(10, 2_000).unwrap();
        assert_eq!(micros_ceil(t), 10_000_002);
    }

    #[test]
    fn filter_clauses() {
        let (clause, values) = where_clause(&DeadLetterFilter::default());
        assert_eq!(clause, "");
        assert!(values.is_empty());
        let (clause, values) = where_clause(&DeadLetterFilter {
            class: Some("X".into()),
            stage: Some(Stage::Persist),
            after_id: Some(3),
            ..DeadLetterFilter::default()
        });
        assert_eq!(clause, " WHERE class = ? AND stage = ? AND id > ?");
        assert_eq!(values.len(), 3);
    }
}
