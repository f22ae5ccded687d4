//! The SQLite writer: one OS thread that owns the only writing connection
//! and commits queued writes in batches (group commit).
//!
//! Callers hand it a write as a closure over the connection together with a
//! reply slot. The thread takes everything queued (up to [`MAX_BATCH`]
//! writes), applies it in one `BEGIN IMMEDIATE ... COMMIT`, each write in a
//! savepoint of its own, and answers every caller only after that commit:
//! one fsync makes a whole batch durable. While one batch commits the next
//! one queues, so batches grow with the load by themselves and a lone write
//! waits for nothing but its own commit.
//!
//! Why a thread of its own with a synchronous connection rather than an
//! async driver: SQLite runs in the calling thread, so an async driver puts
//! each connection on a worker thread and sends it every statement as a
//! message, with a wake-up back. A saga write is five or so statements, a
//! batch hundreds, and each hand-off costs tens of microseconds and two
//! context switches; the batch's commit waited on that chain rather than on
//! the disk. Here a batch costs one hand-off in and one reply per write.

use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::checkpoint::{Checkpointer, WRITER_AUTOCHECKPOINT};
use super::connection::error;
use crate::store::{Cause, StoreError};

/// The most writes committed together. Bounds the time a batch holds the
/// write lock and the work lost to a batch that fails as a whole.
pub const MAX_BATCH: usize = 256;

/// Writes that may wait for the writer before callers wait to enqueue
/// (backpressure instead of unbounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// How long a statement waits for a lock held by another process on the
/// same file (another `dtx` command, a backup) before giving up with BUSY,
/// which callers see as `Unavailable`.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: every statement the writes use,
/// with room to spare.
const STATEMENT_CACHE: usize = 32;

/// The writer's page cache, in KiB (SQLite's default is 2000). Keys are
/// client-chosen gids, so inserts land on leaf pages all over the indexes;
/// the cache keeps the inner pages and recent leaves at hand as the log
/// grows, within the coordinator's memory budget.
const CACHE_KIB: u32 = 16 * 1024;

/// The sending side of the writer's queue. The thread ends, closing the
/// connection, when the last clone is dropped.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
    /// Runs as long as the writer does.
    _checkpoints: Checkpointer,
}

impl Writer {
    /// Opens the writing connection on `path` with the durable settings and
    /// starts the thread. The database must exist and be migrated.
    pub(super) fn start(path: &std::path::Path) -> Result<Writer, StoreError> {
        let conn = Connection::open(path).map_err(error)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(error)?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // WAL is a property of the file (set by `open`'s migration
        // connection); `synchronous` and foreign keys are per connection.
        // FULL: a commit returns only after the log is on disk, so an
        // acknowledged write survives a power cut, not only kill -9.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
             PRAGMA cache_size = -{CACHE_KIB}; PRAGMA wal_autocheckpoint = {WRITER_AUTOCHECKPOINT};"
        ))
        .map_err(error)?;
        let checkpoints = Checkpointer::start(path)?;
        let (queue, jobs) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("dtx-sqlite-writer".into())
            .spawn(move || run(conn, jobs))
            .map_err(|e| {
                StoreError::Other(Cause::explained("cannot start the SQLite writer", e))
            })?;
        Ok(Writer {
            queue,
            _checkpoints: checkpoints,
        })
    }

    /// Runs `op` in the next batch; answers once that batch is committed
    /// (with `op`'s own result) or failed (with `Unavailable`).
    pub(super) async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Queued {
            op: Some(op),
            result: None,
            reply,
        };
        self.queue
            .send(Box::new(job))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }
}

/// The writer thread panicked (a bug) or the store is being dropped.
fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer thread has stopped".into())
}

/// Applies queued writes in batches until every sender is gone.
fn run(conn: Connection, mut jobs: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let committed = commit_batch(&conn, &mut batch);
        if let Err(e) = &committed {
            tracing::warn!(writes = batch.len(), error = %e, "SQLite batch not committed");
            // Leave no transaction open behind a failed batch; when SQLite
            // rolled back by itself this fails harmlessly.
            let _ = conn.execute_batch("ROLLBACK");
        }
        for job in batch.drain(..) {
            job.answer(committed.as_ref().map(|_| ()));
        }
    }
}

/// Applies every job of `batch`, each in a savepoint, and commits. An error
/// means nothing of the batch was committed.
fn commit_batch(conn: &Connection, batch: &mut [Box<dyn Job>]) -> Result<(), Cause> {
    // IMMEDIATE takes the write lock now rather than at the first write, so
    // a lock held by another process is waited for (busy timeout) here, and
    // not discovered half-way through the batch.
    run_sql(conn, "BEGIN IMMEDIATE")?;
    for job in batch.iter_mut() {
        run_sql(conn, "SAVEPOINT write")?;
        // A failed savepoint statement means SQLite rolled the whole
        // transaction back by itself (it does on a full disk or an I/O
        // error): the batch is lost and must not be committed in part.
        if !job.apply(conn) {
            run_sql(conn, "ROLLBACK TO write")?;
        }
        run_sql(conn, "RELEASE write")?;
    }
    run_sql(conn, "COMMIT")
}

fn run_sql(conn: &Connection, sql: &str) -> Result<(), Cause> {
    conn.prepare_cached(sql)
        .and_then(|mut stmt| stmt.raw_execute())
        .map(|_| ())
        .map_err(|e| Cause::explained(format!("`{sql}` failed"), e))
}

/// A write waiting in the writer's queue, with its typed reply slot hidden
/// behind this trait so that writes of every result type share one queue.
trait Job: Send {
    /// Runs the write on the connection; `true` when it succeeded and its
    /// changes should be kept.
    fn apply(&mut self, conn: &Connection) -> bool;

    /// Answers the caller once the batch is over: the write's own result if
    /// the batch committed, otherwise why it did not.
    fn answer(self: Box<Self>, committed: Result<(), &Cause>);
}

impl std::fmt::Debug for dyn Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

struct Queued<T, F> {
    op: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Queued<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(op) = self.op.take() else {
            return false;
        };
        let result = op(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn answer(self: Box<Self>, committed: Result<(), &Cause>) {
        let reply = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Other("the write was never applied".into())),
            (Err(why), _) => Err(StoreError::Unavailable(Cause::explained(
                "the write was not committed",
                why.clone(),
            ))),
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(reply);
    }
}
