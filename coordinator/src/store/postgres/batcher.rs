//! Group commit on PostgreSQL: concurrent writes of one kind (creates, or
//! updates) leave as ONE statement, one round trip and one commit for all.
//!
//! Callers hand a write to a [`Batcher`] with a reply slot. Its dispatcher
//! task takes the first write queued and everything queued behind it (up to
//! [`MAX_BATCH`] writes), sends it as one statement on a pooled connection,
//! in a task of its own, and that task answers each caller with its own
//! outcome. A lone write is sent at once and waits for no timer; while a
//! batch is out, writes queue, so batches grow with the load by themselves
//! (as with the SQLite writer, `store::sqlite::writer`).
//!
//! One batch of a kind at a time, normally: the server's work per statement
//! (executor start, commit, WAL flush, wake-ups) outweighs its work per
//! write, so fewer and larger statements cost it the least, and a write
//! waits at most for the batch before its own. Measured on the saga-2
//! benchmark (two cores), one batch at a time gave more throughput, less
//! database CPU and lower latency than two or four. A batch can stall,
//! though (waiting for a row lock another coordinator holds), and must not
//! hold up every write behind it: once the oldest batch out has taken
//! [`STALLED`], another may go, up to [`MAX_IN_FLIGHT`].
//!
//! Each write of a batch keeps its own outcome: the statement reports which
//! writes it applied, and applies each all or nothing (see `super::batch_sql`).
//! When the statement fails as a whole:
//! - a deadlock or serialization failure (which the lock order of
//!   `super::batch_sql` makes rare) rolled everything back: the batch is sent
//!   again, [`RETRIES`] times at most, then every write is `Unavailable`;
//! - another database error rolled everything back too, and may be one
//!   write's own fault (say, a value the database refuses): each write is
//!   then sent alone, to get its own answer;
//! - anything else (the connection broke, no connection was free) reaches
//!   every write as the store's error for it, `Unavailable` mostly. A
//!   statement whose answer is lost may or may not have committed; callers
//!   retry, which creates and fenced updates tolerate
//!   (`super::batched_writes`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::{mpsc, oneshot};
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::Instant;

use crate::store::StoreError;

/// The most writes in one statement: bounds the statement's parameters and
/// the time its row locks are held.
pub(super) const MAX_BATCH: usize = 128;

/// The most batches of one kind out at once (each on a connection of its
/// own), all but one of them sent because the ones before stalled.
pub(super) const MAX_IN_FLIGHT: usize = 4;

/// How long a batch may be out before the next one goes without waiting for
/// it: far longer than a batch takes (a few milliseconds under load), far
/// shorter than the time a caller would notice.
const STALLED: Duration = Duration::from_millis(20);

/// Writes that may wait for a batch before callers wait to enqueue
/// (backpressure instead of unbounded memory).
const QUEUE: usize = 4 * MAX_BATCH;

/// How many times a batch that hit a deadlock or a serialization failure is
/// sent again before its writes are answered `Unavailable` (which callers
/// retry later anyway).
const RETRIES: usize = 2;

/// A kind of write that can be sent many at once.
pub(super) trait Batch: Sized + Send + Sync + 'static {
    /// Names the kind in logs.
    const WHAT: &'static str;

    /// The transaction the write changes. A batch holds at most one write
    /// per transaction: the statements match their input to rows by gid.
    fn gid(&self) -> &str;

    /// Sends `batch` as one statement in autocommit; per write, in order,
    /// whether it was applied. An error means nothing was committed, but
    /// for an I/O error, after which nobody knows.
    fn run(
        pool: &PgPool,
        batch: &[Self],
    ) -> impl Future<Output = Result<Vec<bool>, sqlx::Error>> + Send;
}

/// A write waiting for its batch, and where its outcome goes.
struct Job<W> {
    write: W,
    reply: oneshot::Sender<Result<bool, StoreError>>,
}

/// Hands writes of kind `W` to the dispatcher. It ends when the last clone
/// is dropped, once it has answered everything queued.
pub(super) struct Batcher<W> {
    queue: mpsc::Sender<Job<W>>,
}

impl<W: Batch> std::fmt::Debug for Batcher<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Batcher({})", W::WHAT)
    }
}

impl<W> Clone for Batcher<W> {
    fn clone(&self) -> Self {
        Batcher {
            queue: self.queue.clone(),
        }
    }
}

impl<W: Batch> Batcher<W> {
    /// Starts the dispatcher on the current tokio runtime; batches go out on
    /// connections of `pool`.
    pub(super) fn start(pool: &PgPool) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(dispatch(pool.clone(), jobs));
        Batcher { queue }
    }

    /// Sends `write` in the next batch; answers whether it was applied once
    /// that batch has committed, or the store's error.
    pub(super) async fn submit(&self, write: W) -> Result<bool, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { write, reply })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// The dispatcher is gone (the runtime is shutting down) or a batch's task
/// panicked (a bug).
fn stopped() -> StoreError {
    StoreError::Unavailable("the PostgreSQL write batcher has stopped".into())
}

/// Takes batches off the queue and sends each in a task of its own, until
/// the queue is closed and empty; then waits for the batches out.
async fn dispatch<W: Batch>(pool: PgPool, mut queue: mpsc::Receiver<Job<W>>) {
    let mut out = InFlight {
        batches: JoinSet::new(),
        sent: HashMap::new(),
    };
    let mut deferred = VecDeque::new();
    loop {
        let first = match deferred.pop_front() {
            Some(job) => job,
            None => loop {
                tokio::select! {
                    job = queue.recv() => match job {
                        Some(job) => break job,
                        None => {
                            while out.batches.join_next().await.is_some() {}
                            return;
                        }
                    },
                    done = out.batches.join_next_with_id(), if !out.batches.is_empty() => {
                        out.finished(done);
                    }
                }
            },
        };
        out.wait_for_turn().await;
        let batch = take_batch(first, &mut deferred, &mut queue);
        let id = out.batches.spawn(send(pool.clone(), batch)).id();
        out.sent.insert(id, Instant::now());
    }
}

/// The batches out, and when each was sent.
struct InFlight {
    batches: JoinSet<()>,
    sent: HashMap<task::Id, Instant>,
}

impl InFlight {
    fn finished(&mut self, done: Option<Result<(task::Id, ()), JoinError>>) {
        match done {
            Some(Ok((id, ()))) => {
                self.sent.remove(&id);
            }
            // Its callers were answered `stopped` when its replies dropped.
            Some(Err(e)) => {
                tracing::error!(error = %e, "a PostgreSQL write batch panicked");
                self.sent.remove(&e.id());
            }
            None => {}
        }
    }

    /// Returns once the next batch may go: when none is out, or when the
    /// oldest out has stalled and fewer than [`MAX_IN_FLIGHT`] are.
    async fn wait_for_turn(&mut self) {
        while let Some(&oldest) = self.sent.values().min() {
            let stalled_at = oldest + STALLED;
            let room = self.batches.len() < MAX_IN_FLIGHT;
            if room && Instant::now() >= stalled_at {
                return;
            }
            tokio::select! {
                done = self.batches.join_next_with_id() => self.finished(done),
                () = tokio::time::sleep_until(stalled_at), if room => {}
            }
        }
    }
}

/// `first` and every write queued behind it, up to [`MAX_BATCH`]: the writes
/// put off before come first.
fn take_batch<W: Batch>(
    first: Job<W>,
    deferred: &mut VecDeque<Job<W>>,
    queue: &mut mpsc::Receiver<Job<W>>,
) -> Vec<Job<W>> {
    let mut batch = Vec::with_capacity(MAX_BATCH.min(1 + deferred.len() + queue.len()));
    batch.push(first);
    while batch.len() < MAX_BATCH {
        match deferred.pop_front() {
            Some(job) => batch.push(job),
            None => break,
        }
    }
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    if batch.len() > 1 {
        put_off_repeated_gids(&mut batch, deferred);
    }
    batch
}

/// Moves every write whose gid an earlier write of `batch` has to
/// `deferred`, in order. A transaction has one driver, which writes one
/// write at a time, so this is for writers that break that rule: their
/// writes were concurrent, so either order is theirs.
fn put_off_repeated_gids<W: Batch>(batch: &mut Vec<Job<W>>, deferred: &mut VecDeque<Job<W>>) {
    let mut seen = HashSet::with_capacity(batch.len());
    let repeated: Vec<bool> = batch
        .iter()
        .map(|job| !seen.insert(job.write.gid()))
        .collect();
    if !repeated.contains(&true) {
        return;
    }
    let mut kept = Vec::with_capacity(batch.len());
    for (job, repeated) in batch.drain(..).zip(repeated) {
        if repeated {
            deferred.push_back(job);
        } else {
            kept.push(job);
        }
    }
    *batch = kept;
}

/// Sends one batch and answers each of its writes.
async fn send<W: Batch>(pool: PgPool, batch: Vec<Job<W>>) {
    let pool = &pool;
    let (writes, replies): (Vec<W>, Vec<_>) =
        batch.into_iter().map(|job| (job.write, job.reply)).unzip();
    match run_retrying(pool, &writes).await {
        Ok(applied) => {
            for (reply, applied) in replies.into_iter().zip(applied) {
                // The caller may have given up waiting; nothing to do then.
                let _ = reply.send(Ok(applied));
            }
        }
        Err(e) => {
            let database = matches!(e, sqlx::Error::Database(_));
            let error = StoreError::from(e);
            // The database refused the statement's contents, which rolled it
            // back: one write's data may be at fault (an error that may pass
            // by itself is `Unavailable` instead).
            if database && writes.len() > 1 && !matches!(error, StoreError::Unavailable(_)) {
                tracing::debug!(what = W::WHAT, writes = writes.len(), %error,
                    "batch refused; sending its writes one by one");
                for (write, reply) in writes.iter().zip(replies) {
                    let outcome = run_retrying(pool, std::slice::from_ref(write)).await;
                    let _ = reply.send(outcome.map(|applied| applied[0]).map_err(StoreError::from));
                }
                return;
            }
            for reply in replies {
                let _ = reply.send(Err(copy(&error)));
            }
        }
    }
}

/// Runs the batch, again after a deadlock or serialization failure.
async fn run_retrying<W: Batch>(pool: &PgPool, writes: &[W]) -> Result<Vec<bool>, sqlx::Error> {
    let mut retries = 0;
    loop {
        match W::run(pool, writes).await {
            Err(e) if retries < RETRIES && is_conflict(&e) => {
                retries += 1;
                tracing::debug!(what = W::WHAT, writes = writes.len(), error = %e, retries,
                    "batch rolled back by a lock conflict; sending it again");
            }
            Ok(applied) if applied.len() != writes.len() => {
                // `Batch::run` answers each write; anything else is a bug.
                return Err(sqlx::Error::Protocol(format!(
                    "{} batch of {} writes answered {}",
                    W::WHAT,
                    writes.len(),
                    applied.len()
                )));
            }
            other => return other,
        }
    }
}

/// A deadlock or a serialization failure: the statement was rolled back,
/// and the same statement may well pass if sent again.
fn is_conflict(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == "40P01" || code == "40001")
}

/// The same error for another write of the batch.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound => StoreError::NotFound,
        StoreError::Fenced => StoreError::Fenced,
        StoreError::Conflict(why) => StoreError::Conflict(why.clone()),
        StoreError::Unavailable(why) => StoreError::Unavailable(why.clone()),
        StoreError::InvalidInput(why) => StoreError::InvalidInput(why.clone()),
        StoreError::Other(why) => StoreError::Other(why.clone()),
    }
}
