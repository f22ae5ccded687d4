//! The sub-transaction barrier: makes a participant's handler safe against
//! the three things a coordinator's retries and a network's delays produce,
//! on SQLite and PostgreSQL, inside the participant's own local transaction.
//!
//! | what arrives | what the barrier does | the answer |
//! |---|---|---|
//! | a call again (retry, duplicate) | skips the business | the first call's answer, refusal included |
//! | `compensate`/`cancel` whose `action`/`try` never ran here, or was refused | skips the business, records that the forward step must not run | success (*null compensation*) |
//! | `action`/`try` after its `compensate`/`cancel` | skips the business | refused (*suspension*) |
//! | anything else | lets the business run | what the business decides |
//!
//! # How
//! The table `dtx_barrier` has one row per (gid, branch, operation), with a
//! unique key. Inside the business transaction the barrier inserts the row
//! of the current operation with `ON CONFLICT DO NOTHING`; an undo first
//! also inserts the row of the forward step it undoes, marked `never_ran`.
//! Whether each insert took effect says everything:
//!
//! - the current operation's row already existed → a duplicate: its stored
//!   outcome is the answer;
//! - an undo inserted the forward step's marker → the forward step never ran:
//!   null compensation; and because the marker stays, a forward step that
//!   arrives later finds a row it did not write → suspension.
//!
//! Races are settled by the unique key, not by reading first: on PostgreSQL
//! an insert that meets an uncommitted row with the same key waits for that
//! transaction and then sees its committed row (READ COMMITTED); on SQLite a
//! barrier transaction holds the write lock from `BEGIN IMMEDIATE` on. So of
//! two identical calls exactly one runs the business, and a `cancel` racing
//! its `try` either runs after the try committed (and undoes it) or commits
//! its marker first (and the try is then refused).
//!
//! # Answering a duplicate as the first call was answered
//! The outcome is stored in the row. A success is committed with the business
//! changes. A refusal of `action`/`try` must undo the business changes yet be
//! remembered, so the business runs after a savepoint: [`BarrierWork::refuse`]
//! rolls back to the savepoint (the barrier row stays), marks the row
//! `refused` and commits. A repeated call is then refused again, and the
//! `compensate`/`cancel` of a refused step is a null compensation (its
//! business was rolled back, so there is nothing to undo).
//!
//! A refusal of a phase-two operation (`compensate`, `confirm`, `cancel`) is
//! *not* remembered: the coordinator retries those until they succeed, so the
//! next attempt must run the business again.
//!
//! An error (anything that is neither success nor refusal) rolls back the
//! whole transaction, barrier row included: the coordinator will retry and
//! the retry runs as if it were the first call.
//!
//! # Cleanup
//! Rows accumulate, one per call. [`Barrier::cleanup_older_than`] deletes the
//! rows of transactions whose every row is older than a horizon. Only delete
//! rows of transactions that are final and can no longer send any call: the
//! horizon must be longer than the longest `deadline_ms` plus
//! `request_timeout_ms` of your transactions (a forward call may still be
//! delivered until then) plus the time phase two may take (it is retried
//! until it succeeds, and flagged after `attention_after_ms`). Days, not
//! minutes: if a row is deleted too early, a late `try` after its `cancel`
//! would run and never be cancelled.

mod backend;
mod error;
mod work;

use crate::answer::BranchAnswer;
use crate::context::BranchContext;
use crate::op::BranchOp;
use crate::refusal::WorkError;
use backend::{Backend, Key, SAVEPOINT, StoredRow};
use futures_util::future::BoxFuture;
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;
use sqlx::{Database, Pool, Transaction};
use std::marker::PhantomData;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::BarrierError;
pub use work::BarrierWork;

/// A database the barrier runs on: `Sqlite` or `Postgres` (each with its
/// cargo feature). Sealed.
pub trait BarrierDatabase: Database + Backend {}
#[cfg(feature = "sqlite")]
impl BarrierDatabase for Sqlite {}
#[cfg(feature = "postgres")]
impl BarrierDatabase for Postgres {}

/// Row outcomes, as stored.
const SUCCEEDED: &str = "succeeded";
const REFUSED: &str = "refused";
const NEVER_RAN: &str = "never_ran";

/// Rows of this many transactions are deleted per cleanup statement, so a
/// cleanup never holds locks for long.
const CLEANUP_BATCH: i64 = 500;

/// The barrier for one backend. It holds no state; create it where needed.
///
/// Two ways to use it. The closure form, [`run`](Self::run), does
/// everything around the business step: it opens the local transaction,
/// passes the barrier, runs the step, and commits with the barrier's record
/// (or answers a skipped call as the barrier says):
///
/// ```no_run
/// use dtx_sdk::barrier::{Barrier, BarrierError};
/// use dtx_sdk::{BranchAnswer, BranchContext, WorkError};
///
/// async fn reserve(pool: &sqlx::SqlitePool, ctx: &BranchContext, qty: i64)
///     -> Result<BranchAnswer, BarrierError> {
///     Barrier::sqlite()
///         .run(pool, ctx, move |conn| Box::pin(async move {
///             let updated = sqlx::query(
///                 "UPDATE stock SET qty = qty - $1 WHERE sku = 'apple' AND qty >= $1",
///             )
///             .bind(qty)
///             .execute(&mut *conn)
///             .await?;
///             if updated.rows_affected() == 0 {
///                 return Err(WorkError::refused("not enough apples"));
///             }
///             Ok(())
///         }))
///         .await
/// }
/// ```
///
/// The explicit form, [`begin`](Self::begin) (or [`enter`](Self::enter) on
/// a transaction of your own), hands you the [`Entry`] to act on, for a
/// handler that needs more than the closure gives (a success body,
/// answering [`BranchAnswer::StillWorking`]):
///
/// ```no_run
/// use dtx_sdk::barrier::{Barrier, Entry};
/// use dtx_sdk::{BranchAnswer, BranchContext};
///
/// async fn reserve(
///     pool: &sqlx::SqlitePool,
///     ctx: &BranchContext,
///     qty: i64,
/// ) -> Result<BranchAnswer, dtx_sdk::barrier::BarrierError> {
///     let mut work = match Barrier::sqlite().begin(pool, ctx).await? {
///         Entry::Proceed(work) => work,
///         Entry::Skip(skipped) => return Ok(skipped.answer()),
///     };
///     let updated = sqlx::query("UPDATE stock SET qty = qty - $1 WHERE sku = 'apple' AND qty >= $1")
///         .bind(qty)
///         .execute(&mut *work)
///         .await?;
///     if updated.rows_affected() == 0 {
///         return work.refuse("not enough apples").await;
///     }
///     work.succeed().await
/// }
/// ```
pub struct Barrier<DB> {
    _db: PhantomData<fn() -> DB>,
}

impl<DB> Clone for Barrier<DB> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<DB> Copy for Barrier<DB> {}

impl<DB> std::fmt::Debug for Barrier<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Barrier")
    }
}

impl<DB: BarrierDatabase> Barrier<DB> {
    /// The barrier on `DB`, for code generic over the backend; otherwise
    /// [`Barrier::sqlite`] and [`Barrier::postgres`] read better.
    pub fn new() -> Self {
        Barrier { _db: PhantomData }
    }
}

impl<DB: BarrierDatabase> Default for Barrier<DB> {
    fn default() -> Self {
        Barrier::new()
    }
}

#[cfg(feature = "sqlite")]
impl Barrier<Sqlite> {
    /// The barrier on SQLite. Use a pool in WAL mode with a busy timeout,
    /// since concurrent calls wait for each other's write lock:
    /// [`db::sqlite_options`](crate::db::sqlite_options) gives both.
    pub fn sqlite() -> Self {
        Barrier { _db: PhantomData }
    }
}

#[cfg(feature = "postgres")]
impl Barrier<Postgres> {
    /// The barrier on PostgreSQL (READ COMMITTED, the default isolation).
    pub fn postgres() -> Self {
        Barrier { _db: PhantomData }
    }
}

/// What the barrier decided on entry.
#[derive(Debug)]
#[must_use = "run the business on `Proceed` and answer the `Skip`"]
pub enum Entry<'c, DB: Database> {
    /// First arrival: run the business on the work's connection, then end
    /// with [`BarrierWork::succeed`] or [`BarrierWork::refuse`] (each commits
    /// and gives the answer). Dropping it rolls everything back, barrier row
    /// included, and the retry runs anew: do that on errors, and for
    /// [`BranchAnswer::StillWorking`].
    Proceed(BarrierWork<'c, DB>),
    /// Do not touch business data; answer [`Skipped::answer`]. The barrier
    /// has already committed the transaction.
    Skip(Skipped),
}

/// Why the business must not run.
#[derive(Debug, Clone, PartialEq)]
pub enum Skipped {
    /// This call was carried out before: answer as then.
    Duplicate(Recorded),
    /// An undo whose forward step never ran here or was refused: nothing to
    /// undo. Answer success. The forward step, if it arrives later, is
    /// refused.
    NullCompensation,
    /// A forward step that arrived after its undo: it must not run, since
    /// nothing would undo it. Answer refused.
    Suspended,
}

/// The stored outcome of a call carried out before.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// It succeeded, with this body if one was given.
    Succeeded(Option<serde_json::Value>),
    /// It was refused, for this reason.
    Refused(String),
}

impl Skipped {
    /// The answer the handler must give.
    pub fn answer(&self) -> BranchAnswer {
        match self {
            Skipped::Duplicate(Recorded::Succeeded(body)) => BranchAnswer::Success(body.clone()),
            Skipped::Duplicate(Recorded::Refused(reason)) => BranchAnswer::Refused(reason.clone()),
            Skipped::NullCompensation => BranchAnswer::Success(None),
            Skipped::Suspended => BranchAnswer::Refused(
                "this branch was already cancelled or compensated here, so its forward step \
                 must not run (suspension)"
                    .to_owned(),
            ),
        }
    }
}

impl From<Skipped> for BranchAnswer {
    fn from(skipped: Skipped) -> Self {
        skipped.answer()
    }
}

impl<DB: BarrierDatabase> Barrier<DB> {
    /// Creates the barrier table if needed, by versioned migrations
    /// (`migrations/sqlite`, `migrations/postgres` in this crate) recorded in
    /// their own table, `_dtx_sdk_migrations`, so they never clash with the
    /// service's own sqlx migrations (two migrators sharing a table each see
    /// the other's versions as unknown and refuse to run). Call it at start-up.
    ///
    /// On PostgreSQL sqlx takes an advisory lock while migrating, so service
    /// instances starting together do not race; on an engine without
    /// advisory locks (CockroachDB), apply `migrations/postgres` with your own
    /// tooling instead.
    pub async fn migrate(&self, pool: &Pool<DB>) -> Result<(), BarrierError> {
        Ok(DB::migrate(pool).await?)
    }

    /// The closure form: begins a local transaction the right way for this
    /// backend, passes the barrier, runs `work` on the transaction's
    /// connection, and ends the call:
    ///
    /// - `Ok(())` → commits the business changes with the barrier's record
    ///   and answers success;
    /// - [`WorkError::Refused`] → undoes the business changes and answers
    ///   refused, as [`BarrierWork::refuse`] does (remembered for `action`,
    ///   `try` and the other forward steps);
    /// - [`WorkError::Database`], [`WorkError::Failed`] → rolls everything
    ///   back, barrier row included, and fails with [`BarrierError`] (500):
    ///   the retry runs anew.
    ///
    /// A repeated call, a null compensation or a suspended forward step does
    /// not run `work`: it is answered as the barrier says. Write `work` as
    /// `move |conn| Box::pin(async move { ... })`, owning what it uses; see
    /// [`Barrier`] for an example. For a success body, or to answer
    /// [`BranchAnswer::StillWorking`], use [`begin`](Self::begin).
    pub async fn run<W>(
        &self,
        pool: &Pool<DB>,
        context: &BranchContext,
        work: W,
    ) -> Result<BranchAnswer, BarrierError>
    where
        W: for<'c> FnOnce(&'c mut DB::Connection) -> BoxFuture<'c, Result<(), WorkError>> + Send,
    {
        let mut entered = match self.begin(pool, context).await? {
            Entry::Proceed(entered) => entered,
            Entry::Skip(skipped) => {
                tracing::debug!(gid = context.gid(), branch = context.branch_id(),
                    op = %context.op(), ?skipped, "the barrier skipped the call");
                return Ok(skipped.answer());
            }
        };
        match work(&mut entered).await {
            Ok(()) => entered.succeed().await,
            Err(WorkError::Refused(refusal)) => entered.refuse(refusal).await,
            // Dropping `entered` rolls everything back.
            Err(WorkError::Database(e)) => Err(e.into()),
            Err(WorkError::Failed(e)) => Err(BarrierError::Failed(e)),
        }
    }

    /// Begins a local transaction the right way for this backend (`BEGIN
    /// IMMEDIATE` on SQLite) and [enters](Self::enter) the barrier.
    pub async fn begin(
        &self,
        pool: &Pool<DB>,
        context: &BranchContext,
    ) -> Result<Entry<'static, DB>, BarrierError> {
        let tx = DB::begin_barrier(pool).await?;
        self.enter(tx, context).await
    }

    /// Passes the barrier inside `tx`, which it takes over: it commits it on
    /// [`Entry::Skip`] and hands it to the business in [`Entry::Proceed`].
    ///
    /// On SQLite, begin `tx` with `BEGIN IMMEDIATE` (as [`begin`](Self::begin)
    /// does) if it read anything before: a deferred transaction that read
    /// first fails instead of waiting when a concurrent call wrote.
    pub async fn enter<'c>(
        &self,
        mut tx: Transaction<'c, DB>,
        context: &BranchContext,
    ) -> Result<Entry<'c, DB>, BarrierError> {
        let op = context.op();
        let key = Key {
            gid: context.gid(),
            branch_id: context.branch_id(),
            op: op.as_str(),
        };
        let now = now_ms(SystemTime::now());
        let skipped = match op.undoes() {
            None => {
                if DB::insert(&mut *tx, key, op.as_str(), SUCCEEDED, now).await? {
                    None
                } else {
                    let row = found(DB::find(&mut *tx, key).await?, key)?;
                    Some(if row.outcome == NEVER_RAN {
                        Skipped::Suspended
                    } else {
                        Skipped::Duplicate(recorded(row, key)?)
                    })
                }
            }
            Some(forward) => {
                // The forward marker first, then our own row: every barrier
                // transaction of a branch takes the forward key first, so two
                // of them never wait on each other in opposite orders.
                let forward_key = Key {
                    op: forward.as_str(),
                    ..key
                };
                let marked = DB::insert(&mut *tx, forward_key, op.as_str(), NEVER_RAN, now).await?;
                if !DB::insert(&mut *tx, key, op.as_str(), SUCCEEDED, now).await? {
                    let row = found(DB::find(&mut *tx, key).await?, key)?;
                    Some(Skipped::Duplicate(recorded(row, key)?))
                } else if marked {
                    Some(Skipped::NullCompensation)
                } else {
                    let row = found(DB::find(&mut *tx, forward_key).await?, forward_key)?;
                    (row.outcome != SUCCEEDED).then_some(Skipped::NullCompensation)
                }
            }
        };
        match skipped {
            Some(skipped) => {
                tx.commit().await?;
                Ok(Entry::Skip(skipped))
            }
            None => {
                DB::execute(&mut *tx, SAVEPOINT).await?;
                Ok(Entry::Proceed(BarrierWork::new(tx, context)))
            }
        }
    }

    /// Deletes the rows of transactions whose every row is older than `age`;
    /// returns how many rows went. See the module documentation for how to
    /// choose `age` (days, not minutes). Runs in batches, each its own short
    /// transaction, so it can run while calls are served.
    pub async fn cleanup_older_than(
        &self,
        pool: &Pool<DB>,
        age: Duration,
    ) -> Result<u64, BarrierError> {
        let cutoff = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
        self.cleanup_created_before(pool, cutoff).await
    }

    /// Like [`cleanup_older_than`](Self::cleanup_older_than), with the cutoff
    /// as a point in time.
    pub async fn cleanup_created_before(
        &self,
        pool: &Pool<DB>,
        cutoff: SystemTime,
    ) -> Result<u64, BarrierError> {
        let cutoff = now_ms(cutoff);
        let mut deleted = 0;
        loop {
            let batch = DB::cleanup_batch(pool, cutoff, CLEANUP_BATCH).await?;
            deleted += batch;
            if batch == 0 {
                return Ok(deleted);
            }
        }
    }
}

fn now_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A row the barrier just saw conflict must exist; if it does not, a cleanup
/// deleted it under our feet (a horizon far too short).
fn found(row: Option<StoredRow>, key: Key<'_>) -> Result<StoredRow, BarrierError> {
    row.ok_or_else(|| {
        BarrierError::Corrupt(format!(
            "the row of {}/{}/{} vanished while in use; is the cleanup horizon too short?",
            key.gid, key.branch_id, key.op
        ))
    })
}

fn recorded(row: StoredRow, key: Key<'_>) -> Result<Recorded, BarrierError> {
    match row.outcome.as_str() {
        SUCCEEDED => Ok(Recorded::Succeeded(
            row.detail.and_then(|d| serde_json::from_str(&d).ok()),
        )),
        REFUSED => Ok(Recorded::Refused(row.detail.unwrap_or_default())),
        other => Err(BarrierError::Corrupt(format!(
            "row {}/{}/{} (written by `{}`) has outcome `{other}`",
            key.gid, key.branch_id, key.op, row.origin_op
        ))),
    }
}

/// Keeps `BranchOp` and the stored names in one place for `work`.
fn stored_key<'a>(gid: &'a str, branch_id: &'a str, op: BranchOp) -> Key<'a> {
    Key {
        gid,
        branch_id,
        op: op.as_str(),
    }
}
