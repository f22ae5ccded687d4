//! The SQLite backend: the embedded default, one file on one machine,
//! created on first start.
//!
//! # Durability and group commit
//!
//! An acknowledged write must survive `kill -9` and a power cut, so the
//! database runs in WAL mode with `synchronous = FULL`: every commit waits
//! for an fsync of the log. An fsync costs milliseconds, and SQLite lets only
//! one connection write at a time, so a commit per write would cap the whole
//! coordinator at a few hundred writes a second however many transactions it
//! drives.
//!
//! Writes therefore go through ONE writer task that owns the only writing
//! connection. Callers send each write over a channel with a reply slot; the
//! task takes everything queued (up to [`MAX_BATCH`] writes), applies it in a
//! single `BEGIN IMMEDIATE ... COMMIT`, and answers each caller only after
//! that commit: one fsync makes a whole batch durable. While one batch
//! commits, the next one queues, so batches grow with the load by themselves
//! and a lone write waits for nothing but its own commit.
//!
//! Each write in a batch runs inside a savepoint of its own. A write that is
//! refused (fenced out, a conflict) or fails rolls back to its savepoint and
//! gets its own error; the others in the batch are not affected. Only a
//! failure of the batch itself (cannot begin or commit, e.g. the disk is
//! full) fails every write in it, with `Unavailable`.
//!
//! Reads do not queue behind writes: they use a separate pool of read-only
//! connections, which WAL lets read a consistent snapshot while the writer
//! writes.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Connection, Sqlite};
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::rows::backend::{Backend, BoxFuture};
use super::rows::sql::CLAIM_EXPIRED_SQLITE;

/// The most writes committed together. Bounds the time a batch holds the
/// write lock and the work lost to a batch that fails as a whole.
pub const MAX_BATCH: usize = 256;

/// Writes that may wait for the writer before callers wait to enqueue
/// (backpressure instead of unbounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// Read connections. WAL readers do not block each other or the writer.
const READERS: u32 = 4;

/// How long a statement waits for a lock held by another process on the
/// same file (another `dtx` command, a backup) before giving up with BUSY,
/// which callers see as `Unavailable`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The durable transaction log in a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Queue of the writer task. The task ends, closing the writing
    /// connection, when the last clone of the store is dropped.
    writer: mpsc::Sender<Box<dyn Job>>,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens the database file that `url` names (`sqlite:dtx.db`,
    /// `sqlite:///var/lib/dtx/dtx.db`), creating it when missing, applies the
    /// migrations in `migrations/sqlite`, and starts the writer task.
    ///
    /// In-memory and unnamed databases are refused: the log must be durable,
    /// and the writer and the readers must see the same database.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(StoreError::Other(format!(
                "`{url}` is an in-memory database; the transaction log must be a file: use sqlite:<path>"
            )));
        }
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        // An empty path would make SQLite use a private temporary file that
        // vanishes on close: as volatile as memory, and as wrong for a log.
        if options.get_filename().as_os_str().is_empty() {
            return Err(StoreError::Other(format!(
                "`{url}` names no file: use sqlite:<path>"
            )));
        }
        let mut conn = SqliteConnection::connect_with(&options).await?;
        sqlx::migrate!("../migrations/sqlite")
            .run(&mut conn)
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options.read_only(true))
            .await?;
        let (writer, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run_writer(conn, queue));
        Ok(SqliteStore { writer, readers })
    }
}

impl Backend for SqliteStore {
    type Db = Sqlite;

    const CLAIM_EXPIRED: &'static str = CLAIM_EXPIRED_SQLITE;

    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Queued {
            op: Some(op),
            result: None,
            reply,
        };
        self.writer
            .send(Box::new(job))
            .await
            .map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    fn readers(&self) -> &SqlitePool {
        &self.readers
    }
}

/// The writer task panicked (a bug) or the runtime is shutting down.
fn writer_gone() -> StoreError {
    StoreError::Unavailable("the SQLite writer task has stopped".into())
}

/// Applies queued writes in batches until every sender is gone.
async fn run_writer(mut conn: SqliteConnection, mut queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let committed = commit_batch(&mut conn, &mut batch).await;
        if let Err(e) = &committed {
            tracing::warn!(writes = batch.len(), error = %e, "SQLite batch not committed");
        }
        for job in batch.drain(..) {
            job.answer(committed.as_ref().map(|_| ()).map_err(String::as_str));
        }
    }
    let _ = conn.close().await;
}

/// Applies every job of `batch`, each in a savepoint, and commits. An error
/// means nothing of the batch was committed.
async fn commit_batch(
    conn: &mut SqliteConnection,
    batch: &mut [Box<dyn Job>],
) -> Result<(), String> {
    // IMMEDIATE takes the write lock now rather than at the first write, so
    // a lock held by another process is waited for (busy timeout) here, and
    // not discovered half-way through the batch.
    let mut tx = conn
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| e.to_string())?;
    for job in batch.iter_mut() {
        let mut savepoint = Connection::begin(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        // A failed savepoint statement means SQLite rolled the whole
        // transaction back by itself (it does on a full disk or an I/O
        // error): the batch is lost and must not be committed in part.
        if job.apply(&mut savepoint).await {
            savepoint.commit().await.map_err(|e| e.to_string())?;
        } else {
            savepoint.rollback().await.map_err(|e| e.to_string())?;
        }
    }
    tx.commit().await.map_err(|e| e.to_string())
}

/// A write waiting in the writer's queue, with its typed reply slot hidden
/// behind this trait so that writes of every result type share one queue.
trait Job: Send {
    /// Runs the write on the writer's connection; `true` when it succeeded
    /// and its changes should be kept.
    fn apply<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool>;

    /// Answers the caller once the batch is over: the write's own result if
    /// the batch committed, otherwise why it did not.
    fn answer(self: Box<Self>, committed: Result<(), &str>);
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
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, StoreError>>
        + Send
        + 'static,
{
    fn apply<'a>(&'a mut self, conn: &'a mut SqliteConnection) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Some(op) = self.op.take() else {
                return false;
            };
            let result = op(conn).await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn answer(self: Box<Self>, committed: Result<(), &str>) {
        let reply = match (committed, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Other("the write was never applied".into())),
            (Err(why), _) => Err(StoreError::Unavailable(format!(
                "the write was not committed: {why}"
            ))),
        };
        // The caller may have given up waiting; nothing to do then.
        let _ = self.reply.send(reply);
    }
}
