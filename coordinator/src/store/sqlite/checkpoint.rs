//! Checkpoints of the write-ahead log, on a thread of their own instead of
//! inside the writer's commits.
//!
//! In WAL mode a commit appends pages to the log; a checkpoint copies them
//! back into the database file and fsyncs it. By default SQLite runs one in
//! the committing connection whenever the log passes 1000 pages, so every
//! so often one batch of writes also paid for copying megabytes and a second
//! fsync, and every write queued behind it waited. Here the writer only
//! checkpoints as a safety net ([`WRITER_AUTOCHECKPOINT`]), and this thread
//! runs a PASSIVE checkpoint every [`INTERVAL`]: it copies what no reader
//! still needs, never waits for the writer or the readers, and the writer
//! starts the log again from its beginning once everything was copied.
//!
//! Durability does not depend on checkpoints: a commit is durable once its
//! log pages are synced, which the writer does before answering.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

use super::connection::error;
use super::writer::BUSY_TIMEOUT;
use crate::store::{Cause, StoreError};

/// How often the log is checkpointed. Short enough that the log stays a few
/// megabytes under full load, long enough to cost nothing when idle.
const INTERVAL: Duration = Duration::from_millis(200);

/// The log size, in pages, past which the writer checkpoints by itself: only
/// reached when this thread falls far behind (about 40 MB of log).
pub(super) const WRITER_AUTOCHECKPOINT: u32 = 10_000;

/// Keeps the checkpoint thread running; the thread ends when the last clone
/// is dropped.
#[derive(Debug, Clone)]
pub(super) struct Checkpointer {
    _alive: mpsc::Sender<()>,
}

impl Checkpointer {
    /// Opens a connection of its own on `path` and starts the thread.
    pub(super) fn start(path: &Path) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        // The checkpoint syncs the database file when this connection's
        // level says so: FULL, like the writer.
        conn.execute_batch("PRAGMA synchronous = FULL;")
            .map_err(error)?;
        let (alive, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("dtx-sqlite-checkpoint".into())
            .spawn(move || run(conn, stopped))
            .map_err(|e| {
                StoreError::Other(Cause::explained("cannot start the SQLite checkpointer", e))
            })?;
        Ok(Checkpointer { _alive: alive })
    }
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(INTERVAL) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            // The writer's safety net keeps the log bounded meanwhile.
            tracing::warn!(error = %e, "SQLite checkpoint failed; retrying");
        }
    }
}
