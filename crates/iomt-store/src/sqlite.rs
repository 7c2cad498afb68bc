//! Opening a store file: pragmas, file identity, schema creation and version checks, shared by
//! both stores.
//!
//! # What must hold
//! * Every connection runs in WAL mode (readers never block the writer, a commit is one append
//!   to the log) with a busy timeout, so a second process (`iomt export` next to a running
//!   service) waits for the lock instead of failing at once.
//! * A file carries its store's `application_id`: opening the dead-letter file as the FHIR
//!   store (or any other SQLite file) is refused before anything is written to it.
//! * `user_version` is the schema version. A file from a newer iomt is refused rather than
//!   written with an old schema's assumptions. A file from an older one is upgraded in one
//!   transaction, step by step through [`FileKind::upgrades`], before anything else is written.

use std::path::Path;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};

use crate::error::{StoreError, sqlite_detail};

/// What kind of store a file is.
pub(crate) struct FileKind {
    /// `PRAGMA application_id`.
    pub application_id: i32,
    /// For messages: `an iomt dead-letter store`.
    pub description: &'static str,
    /// The schema version the DDL creates.
    pub schema_version: i64,
    /// The DDL, run once on a new file.
    pub schema: &'static str,
    /// `upgrades[i]` is the SQL that takes a file from schema version `i + 1` to `i + 2`
    /// (empty when only what may be written changes, not the tables).
    pub upgrades: &'static [&'static str],
    /// `PRAGMA synchronous` (`FULL` or `NORMAL`).
    pub synchronous: &'static str,
    /// The page cache per connection, in KiB. Indexes that outgrow it are read back from the
    /// file on every lookup, and a transaction that outgrows it spills pages mid-way.
    pub cache_kib: u32,
    /// `PRAGMA page_size` of a new file.
    pub page_size: u32,
    /// `PRAGMA wal_autocheckpoint`: the log size, in pages, that triggers copying it into the
    /// file (SQLite's default is 1000).
    pub wal_autocheckpoint_pages: u32,
}

/// The most the write-ahead log file keeps after a checkpoint emptied it.
const JOURNAL_SIZE_LIMIT: i64 = 64 << 20;

/// How long a connection waits for another connection's lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Prepared statements kept per connection (the filter combinations of the dead-letter
/// queries are the largest set).
const STATEMENT_CACHE: usize = 96;

/// Opens (creating when missing) the store file at `path`, with its schema.
pub(crate) fn open(path: &Path, kind: &FileKind) -> Result<Connection, StoreError> {
    let open_error = |detail: String| StoreError::Open {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| open_error(e.to_string()))?;
    }
    let mut conn = connect(path, kind.page_size)?;
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| open_error(sqlite_detail(&e)))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| open_error(sqlite_detail(&e)))?;
    if app_id == 0 && version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| open_error(sqlite_detail(&e)))?;
        if tables != 0 {
            return Err(StoreError::WrongFile {
                path: path.to_path_buf(),
                expected: kind.description,
            });
        }
        let tx = conn
            .transaction()
            .map_err(|e| open_error(sqlite_detail(&e)))?;
        tx.execute_batch(kind.schema)
            .and_then(|()| tx.pragma_update(None, "application_id", kind.application_id))
            .and_then(|()| tx.pragma_update(None, "user_version", kind.schema_version))
            .and_then(|()| tx.commit())
            .map_err(|e| open_error(sqlite_detail(&e)))?;
    } else if app_id != kind.application_id {
        return Err(StoreError::WrongFile {
            path: path.to_path_buf(),
            expected: kind.description,
        });
    } else if version > kind.schema_version {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: kind.schema_version,
        });
    } else if version < kind.schema_version {
        upgrade(&mut conn, kind, version).map_err(|e| open_error(sqlite_detail(&e)))?;
    }
    settings(&conn, kind).map_err(|e| open_error(sqlite_detail(&e)))?;
    Ok(conn)
}

/// Takes a file from schema `version` to `kind.schema_version`, in one transaction.
fn upgrade(conn: &mut Connection, kind: &FileKind, version: i64) -> rusqlite::Result<()> {
    debug_assert_eq!(
        kind.upgrades.len() as i64,
        kind.schema_version - 1,
        "one upgrade per schema version after the first"
    );
    let tx = conn.transaction()?;
    for step in kind
        .upgrades
        .iter()
        .skip(usize::try_from(version - 1).unwrap_or(0))
    {
        tx.execute_batch(step)?;
    }
    tx.pragma_update(None, "user_version", kind.schema_version)?;
    tx.commit()
}

/// The per-connection settings.
fn settings(conn: &Connection, kind: &FileKind) -> rusqlite::Result<()> {
    conn.pragma_update(None, "synchronous", kind.synchronous)?;
    conn.pragma_update(None, "cache_size", -i64::from(kind.cache_kib))?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "wal_autocheckpoint", kind.wal_autocheckpoint_pages)?;
    conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
}

/// Another connection to a store file [`open`] prepared (for reads beside the writer).
pub(crate) fn open_more(path: &Path, kind: &FileKind) -> Result<Connection, StoreError> {
    let conn = connect(path, kind.page_size)?;
    settings(&conn, kind).map_err(|e| StoreError::Open {
        path: path.to_path_buf(),
        detail: sqlite_detail(&e),
    })?;
    Ok(conn)
}

fn connect(path: &Path, page_size: u32) -> Result<Connection, StoreError> {
    let open_error = |e: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        detail: sqlite_detail(&e),
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_error)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_error)?;
    // These take effect only on a new, empty file (before the journal mode writes its first
    // page) and are no-ops on existing ones. Incremental vacuum lets purges give pages back to
    // the file system.
    conn.pragma_update(None, "page_size", page_size)
        .map_err(open_error)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
        .map_err(open_error)?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(open_error)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Open {
            path: path.to_path_buf(),
            detail: format!(
                "the file system does not support write-ahead logging (journal mode is {mode})"
            ),
        });
    }
    // Plans do not change with bound values. Without this, SQLite (built with STAT4)
    // re-prepares a cached statement whenever a parameter that could sway the plan gets a new
    // value — i.e. on nearly every lookup.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(open_error)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}
