//! Checkpointing the local store's write-ahead log on a thread of its own.
//!
//! # Why
//! SQLite's automatic checkpoint runs on the connection that committed, when the log has
//! grown past a size: copying the log's pages into the database file and syncing it then
//! takes the single writer's time (a tenth of all the pipeline's CPU under load, measured with
//! `benches/service.rs` in `iomt-runtime`). In WAL mode a checkpoint may run on another
//! connection while the writer goes on, so here the writer only signals, and this thread
//! checkpoints.
//!
//! # What must hold
//! * The log stays bounded. A passive checkpoint beside a busy writer may never catch up with
//!   it, and SQLite restarts the log from its beginning only when a write begins after every
//!   page in it was copied. So when the log reaches [`HARD_LIMIT_BYTES`] the writer checkpoints
//!   itself, between its transactions, which copies everything (readers permitting) and lets
//!   the next transaction restart the log.
//! * Durability is not this module's: a checkpoint only copies committed pages (and syncs the
//!   log first), so stopping, failing or never running loses nothing; it costs disk space.

use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use rusqlite::Connection;
use rusqlite::wal::CheckpointMode;

use crate::error::StoreError;
use crate::sqlite::{self, FileKind};

/// The log size at which the writer asks for a checkpoint.
pub(crate) const SOFT_LIMIT_BYTES: i64 = 32 << 20;

/// The log size at which the writer checkpoints itself.
pub(crate) const HARD_LIMIT_BYTES: i64 = 256 << 20;

/// What the checkpointing thread is asked to do.
enum Request {
    Checkpoint,
    Stop,
}

/// The checkpointing thread; stopped and joined when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    requests: SyncSender<Request>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts the thread on a connection of its own to `path`, and makes `writer` signal it
    /// when its log reaches `soft_limit_bytes`, and checkpoint itself past `hard_limit_bytes`
    /// (the store passes [`SOFT_LIMIT_BYTES`] and [`HARD_LIMIT_BYTES`]).
    pub(crate) fn start(
        path: &Path,
        kind: &FileKind,
        writer: &mut Connection,
        soft_limit_bytes: i64,
        hard_limit_bytes: i64,
    ) -> Result<Checkpointer, StoreError> {
        let conn = sqlite::open_more(path, kind)?;
        let open_error = |e: rusqlite::Error| StoreError::Open {
            path: path.to_path_buf(),
            detail: crate::error::sqlite_detail(&e),
        };
        let page_size: i64 = writer
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(open_error)?;
        let pages = |bytes: i64| i32::try_from(bytes / page_size.max(512)).unwrap_or(i32::MAX);
        let (soft_pages, hard_pages) = (pages(soft_limit_bytes), pages(hard_limit_bytes));
        let (requests, received) = sync_channel::<Request>(1);
        let signal = requests.clone();
        // Replaces the automatic checkpoint on this connection (SQLite's autocheckpoint is
        // itself a log hook).
        writer
            .wal_hook(Some(move |wal: &mut rusqlite::hooks::Wal, pages: i32| {
                if pages >= hard_pages {
                    // The result is ignored, as SQLite's own automatic checkpoint ignores it:
                    // an error returned here would make the commit, which has happened, report
                    // a failure. Busy (the thread is checkpointing) only means the next commit
                    // tries again.
                    let _ = wal.checkpoint_v2(CheckpointMode::PASSIVE);
                } else if pages >= soft_pages {
                    match signal.try_send(Request::Checkpoint) {
                        // Full: a request is pending already.
                        Ok(()) | Err(TrySendError::Full(_)) => {}
                        // The thread is gone (it panicked): the hard limit still bounds the log.
                        Err(TrySendError::Disconnected(_)) => {}
                    }
                }
                Ok(())
            }))
            .map_err(open_error)?;
        let thread = std::thread::Builder::new()
            .name("iomt-store-checkpoint".into())
            .spawn(move || run(&conn, &received))
            .map_err(|e| StoreError::Open {
                path: path.to_path_buf(),
                detail: format!("cannot start the checkpoint thread ({e})"),
            })?;
        Ok(Checkpointer {
            requests,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // Waits for a checkpoint under way, so the thread's connection is closed when the
        // store is.
        if self.requests.send(Request::Stop).is_ok()
            && let Some(thread) = self.thread.take()
        {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, received: &Receiver<Request>) {
    while let Ok(Request::Checkpoint) = received.recv() {
        // A failure (the file busy with another process's checkpoint, say) loses nothing (see
        // the module docs): the next signal tries again, and the hard limit bounds the log.
        let _ = conn.wal_checkpoint_v2(rusqlite::DEFAULT_NAME, CheckpointMode::PASSIVE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// Writes `rows` rows of 4 KiB, one transaction each; returns the database file's size
    /// (only a checkpoint writes to it in WAL mode) and the log file's.
    fn write(conn: &Connection, path: &Path, from: i64, rows: i64) -> (u64, u64) {
        for i in from..from + rows {
            conn.execute(
                "INSERT INTO resource (resource_type, id, version, canonical, body) \
                 VALUES ('Patient', ?1, 1, 0, zeroblob(4096))",
                [format!("p{i}")],
            )
            .unwrap();
        }
        sizes(path)
    }

    fn sizes(path: &Path) -> (u64, u64) {
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        (size(path), size(Path::new(&wal)))
    }

    #[test]
    fn the_thread_checkpoints_once_the_log_passes_the_soft_limit() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("f.db");
        let mut conn = sqlite::open(&path, &super::super::KIND).unwrap();
        let _checkpointer =
            Checkpointer::start(&path, &super::super::KIND, &mut conn, 256 << 10, 1 << 40).unwrap();
        let (before, _) = sizes(&path);
        write(&conn, &path, 0, 200); // ~800 KiB of log
        let deadline = Instant::now() + Duration::from_secs(10);
        while sizes(&path).0 < before + (256 << 10) {
            assert!(Instant::now() < deadline, "no checkpoint copied the log");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn past_the_hard_limit_the_writer_checkpoints_and_the_log_restarts() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("f.db");
        let mut conn = sqlite::open(&path, &super::super::KIND).unwrap();
        // The soft limit is never reached: only the writer's own checkpoints run.
        let _checkpointer =
            Checkpointer::start(&path, &super::super::KIND, &mut conn, 1 << 40, 512 << 10).unwrap();
        let (_, wal) = write(&conn, &path, 0, 2000); // ~8 MiB in all
        assert!(
            wal < 2 << 20,
            "the log grew to {wal} bytes past a 512 KiB hard limit"
        );
        let (db, _) = sizes(&path);
        assert!(db > 7 << 20, "the database file holds only {db} bytes");
    }
}
