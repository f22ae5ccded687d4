//! The 2PC participant helper on PostgreSQL: [`XaParticipant`] carries a
//! branch through `prepare`, `commit` and `rollback` with PostgreSQL's
//! prepared transactions, and recovers branches left in doubt.
//!
//! # The flow
//! - **prepare**: the business runs in a local transaction that ends with
//!   `PREPARE TRANSACTION '<xid>'` instead of `COMMIT`. Its changes are then
//!   durable (they survive a crash of the service *and* of PostgreSQL) but
//!   invisible, and its locks are held, until the decision comes. Success is a
//!   yes vote; a refusal by the business
//!   ([`WorkError::Refused`]) rolls the
//!   work back and votes no (409).
//! - **commit**: `COMMIT PREPARED '<xid>'`.
//! - **rollback**: `ROLLBACK PREPARED '<xid>'`, or, if nothing is prepared,
//!   a success that is remembered so that a prepare arriving later is
//!   refused (null rollback and suspension, as the barrier does for sagas).
//!
//! Every call may be repeated and answers as the first did: a prepare of a
//! prepared (or already committed) branch votes yes again without running
//! the work, a repeated commit or rollback succeeds.
//!
//! # What survives a prepare, and the two tables
//! Rows written inside the prepared transaction are invisible until
//! `COMMIT PREPARED`, so what other calls and recovery must see is written
//! elsewhere (migration `migrations/postgres/0002_xa.sql`):
//!
//! - `dtx_xa_branch`, committed *before* the prepare: xid → (gid, branch),
//!   and the branch's state (`open`, `refused`, `rolled_back`). The prepare's
//!   local transaction locks this row (`FOR UPDATE`); the lock is kept by the
//!   prepared transaction, so a rollback or a second prepare that finds the
//!   row locked knows a prepare is under way and answers 425 (ask again)
//!   instead of racing it.
//! - `dtx_xa_committed`, written *inside* the prepared transaction: its row
//!   becomes visible exactly when the branch commits, which tells a repeated
//!   `commit` (or a late `prepare`) that the branch was committed, without
//!   any write after `COMMIT PREPARED` that a crash could lose.
//!
//! # In-doubt recovery
//! A prepared transaction outlives the process that prepared it. If the
//! service restarts between prepare and decision, the coordinator still
//! sends `commit` or `rollback` (it retries until acknowledged), and those
//! work on any connection. [`XaParticipant::recover`] additionally resolves
//! every `dtx-` prepared transaction of this database by asking the
//! coordinator ([`DecisionSource`](crate::client::DecisionSource)): call it
//! at service start, so that held locks are released even when the
//! coordinator is slow to retry, and periodically if you like. It leaves
//! alone branches whose decision is still pending, and those whose answer
//! failed verification against the coordinator's keys
//! ([`ClientBuilder::coordinator_keys`](crate::client::ClientBuilder::coordinator_keys)).
//!
//! # Lock waits, and connections kept for the decisions
//! A prepared branch keeps the row locks of its work until its decision,
//! so every other transaction that changes those rows waits for the
//! decision, holding a pool connection while it waits. Seen in the
//! fault-injection harness (16 clients, one participant killed): all ten
//! connections of the inventory's pool waited on one prepared product
//! row, their callers gave up (which does not end a statement: sqlx takes
//! the connection back only when it finishes), and the `COMMIT PREPARED`
//! that would have let the row go waited for a connection, for good. Two
//! rules make that impossible:
//!
//! - The decisions have connections of their own. [`commit`],
//!   [`rollback`] and [`recover`] run on a second pool of
//!   [`DECISION_CONNECTIONS`] connections that the helper opens beside the
//!   service's pool (same connect options), and that no business work
//!   uses: however many calls wait on a prepared row, the call that
//!   releases it gets a connection. Count them in the server's
//!   `max_connections`.
//! - A prepare waits for a lock at most
//!   [`POSTGRES_LOCK_TIMEOUT`](crate::db::POSTGRES_LOCK_TIMEOUT)
//!   ([`Conn::bound_lock_waits`](crate::db::Conn::bound_lock_waits) on its
//!   local transaction). Past it the work is rolled back, nothing is
//!   prepared, and the call answers 503 (`Retry-After: 1`), an unknown
//!   outcome to the coordinator, which asks again: a vote comes later, and
//!   no vote is ever given that the branch could not keep. The service's
//!   other business transactions should bound their waits the same way
//!   (the SDK's barrier and 3PC helpers do).
//!
//! [`commit`]: XaParticipant::commit
//! [`rollback`]: XaParticipant::rollback
//! [`recover`]: XaParticipant::recover
//!
//! # Requirements
//! - `max_prepared_transactions > 0` on the server (0 is PostgreSQL's
//!   default); [`XaParticipant::new`] checks it and says how to fix it.
//! - Prepared transactions hold locks and block `VACUUM` from removing rows
//!   until resolved: keep them short-lived; recovery at start is part of that.
//! - `COMMIT PREPARED` must be run by the role that prepared (or a superuser):
//!   use the same database role for handlers and recovery.
//! - A prepared transaction cannot have used temporary tables, `LISTEN`/
//!   `NOTIFY` or session advisory locks: PostgreSQL refuses the prepare, and
//!   the call answers 500.
//!
//! # SQLite participants
//! SQLite has no prepared transactions; see [`sqlite`] for the
//! reservation-based prepare that gives the same contract.

mod error;
mod recover;
pub mod sqlite;
mod xid;

pub use error::XaError;
pub use recover::{InDoubt, RecoveryError, RecoverySummary};
pub use xid::{XID_PREFIX, Xid};

use crate::answer::BranchAnswer;
use crate::context::BranchContext;
use crate::db::Conn;
use crate::refusal::WorkError;
use futures_util::future::BoxFuture;
use sqlx::postgres::PgPoolOptions;
use sqlx::{AssertSqlSafe, PgConnection, PgPool};
use std::time::{SystemTime, UNIX_EPOCH};

/// The business work of a prepare: runs on the local transaction that will
/// be prepared (do not commit or roll it back yourself; `begin` on it opens
/// a savepoint). Write it as `move |conn| Box::pin(async move { ... })`. It
/// ends with `Ok(())` (vote yes) or a [`WorkError`]: a refusal votes no.
pub trait PrepareWork:
    for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(), WorkError>> + Send
{
}

impl<F> PrepareWork for F where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<(), WorkError>> + Send
{
}

/// A 2PC participant on PostgreSQL; cheap to clone (it holds the pool).
///
/// ```no_run
/// use dtx_sdk::xa::XaParticipant;
/// use dtx_sdk::{BranchAnswer, BranchContext, Client, WorkError};
///
/// async fn prepare(xa: &XaParticipant, ctx: &BranchContext, qty: i64)
///     -> Result<BranchAnswer, dtx_sdk::xa::XaError> {
///     xa.prepare(ctx, move |conn| Box::pin(async move {
///         let done = sqlx::query("UPDATE stock SET qty = qty - $1 WHERE sku = 'apple' AND qty >= $1")
///             .bind(qty)
///             .execute(&mut *conn)
///             .await?;
///         if done.rows_affected() == 0 {
///             return Err(WorkError::refused("not enough apples"));
///         }
///         Ok(())
///     }))
///     .await
/// }
///
/// async fn start(pool: sqlx::PgPool, coordinator: &Client) -> Result<XaParticipant, Box<dyn std::error::Error>> {
///     let xa = XaParticipant::new(pool).await?;
///     xa.migrate().await?;
///     // Resolve branches left prepared by the previous run.
///     let summary = xa.recover(coordinator).await?;
///     tracing::info!(?summary, "2PC recovery done");
///     Ok(xa)
/// }
/// ```
#[derive(Debug, Clone)]
pub struct XaParticipant {
    /// The service's pool: prepares, and the service's own queries.
    pool: PgPool,
    /// Kept for the decisions (commit, rollback, recovery), so that they
    /// never wait behind calls that wait for the locks they release; see
    /// [the module documentation](self#lock-waits-and-connections-kept-for-the-decisions).
    decisions: PgPool,
}

/// How many connections [`XaParticipant`] keeps open for the decisions
/// (`COMMIT PREPARED`, `ROLLBACK PREPARED`, recovery), beside the service's
/// pool. Each decision holds one for a few milliseconds; two keep one free
/// while the other waits on a disk flush.
pub const DECISION_CONNECTIONS: u32 = 2;

const IS_PREPARED: &str = "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts \
     WHERE gid = $1 AND database = current_database())";
const IS_COMMITTED: &str = "SELECT EXISTS (SELECT 1 FROM dtx_xa_committed WHERE xid = $1)";
const INSERT_BRANCH: &str = "INSERT INTO dtx_xa_branch \
     (xid, gid, branch_id, state, detail, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, NULL, $5, $5) ON CONFLICT (xid) DO NOTHING";
/// NOWAIT: a lock held by a running or prepared prepare is an answer in
/// itself (425), not something to wait for: a prepared transaction keeps it
/// until the decision, which may be what the waiting call would deliver.
const LOCK_BRANCH: &str =
    "SELECT state, detail FROM dtx_xa_branch WHERE xid = $1 FOR UPDATE NOWAIT";
const SET_STATE: &str =
    "UPDATE dtx_xa_branch SET state = $2, detail = $3, updated_at_ms = $4 WHERE xid = $1";
const INSERT_COMMITTED: &str = "INSERT INTO dtx_xa_committed (xid, prepared_at_ms) VALUES ($1, $2)";
const SAVEPOINT: &str = "SAVEPOINT dtx_xa_work";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT dtx_xa_work";

const OPEN: &str = "open";
const REFUSED: &str = "refused";
const ROLLED_BACK: &str = "rolled_back";

/// SQLSTATE lock_not_available (a NOWAIT lock was held).
const LOCK_NOT_AVAILABLE: &str = "55P03";
/// SQLSTATE undefined_object (no prepared transaction with that xid).
const UNDEFINED_OBJECT: &str = "42704";

impl XaParticipant {
    /// A participant on `pool`, after checking that the server allows
    /// prepared transactions (`SHOW max_prepared_transactions` above 0).
    /// Fails with [`XaError::PreparedTransactionsDisabled`] otherwise, whose
    /// message says how to enable them.
    ///
    /// Also opens the [`DECISION_CONNECTIONS`] connections kept for the
    /// decisions, with `pool`'s connect options (its URL, TLS and startup
    /// `options`; hooks of its `PgPoolOptions`, such as `after_connect`,
    /// are not carried over).
    pub async fn new(pool: PgPool) -> Result<Self, XaError> {
        let value: String = sqlx::query_scalar("SHOW max_prepared_transactions")
            .fetch_one(&pool)
            .await?;
        xid::check_max_prepared(&value).map_err(XaError::PreparedTransactionsDisabled)?;
        // Open, not lazy: when the service's pool is exhausted the server
        // may be at its connection limit too, the worst moment to connect.
        let decisions = PgPoolOptions::new()
            .max_connections(DECISION_CONNECTIONS)
            .min_connections(DECISION_CONNECTIONS)
            .connect_with(pool.connect_options().as_ref().clone())
            .await?;
        Ok(XaParticipant { pool, decisions })
    }

    /// The pool, for the service's other queries.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the helper's tables by the SDK's versioned migrations (the
    /// same migrator as [`Barrier::migrate`](crate::barrier::Barrier::migrate),
    /// recorded in `_dtx_sdk_migrations`, never in the service's own
    /// migrations table). Call it at start-up.
    pub async fn migrate(&self) -> Result<(), XaError> {
        crate::barrier::Barrier::postgres()
            .migrate(&self.pool)
            .await
            .map_err(XaError::Migrate)
    }

    /// Votes on a branch: runs `work` in a local transaction and prepares
    /// it. Answers [`BranchAnswer::Success`] (yes: prepared, or prepared or
    /// committed before), [`BranchAnswer::Refused`] (no: the business refused
    /// now or before, or the branch was rolled back before: suspension), or
    /// [`BranchAnswer::StillWorking`] (another call on this branch holds it
    /// right now). An error is an unknown outcome (500) and changed nothing.
    pub async fn prepare<W: PrepareWork>(
        &self,
        ctx: &BranchContext,
        work: W,
    ) -> Result<BranchAnswer, XaError> {
        let xid = Xid::of(ctx.gid(), ctx.branch_id());
        if is_prepared(&self.pool, &xid).await? {
            return Ok(BranchAnswer::success());
        }
        // The mapping is committed on its own, before the prepare: recovery
        // reads it while the prepared transaction is still invisible.
        sqlx::query(INSERT_BRANCH)
            .bind(xid.as_str())
            .bind(ctx.gid())
            .bind(ctx.branch_id())
            .bind(OPEN)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let mut tx = self.pool.begin().await?;
        // The work must not wait for a row held by another prepared branch
        // longer than this: see the module documentation.
        Conn::from(&mut *tx).bound_lock_waits().await?;
        let (state, detail) = match lock_branch(&mut tx, &xid).await {
            Ok(row) => row,
            Err(e) if has_code(&e, LOCK_NOT_AVAILABLE) => {
                drop(tx);
                // The holder may have just prepared: then this is a repeat.
                return Ok(if is_prepared(&self.pool, &xid).await? {
                    BranchAnswer::success()
                } else {
                    BranchAnswer::StillWorking
                });
            }
            Err(e) => return Err(e.into()),
        };
        match state.as_str() {
            OPEN => {}
            REFUSED => return Ok(BranchAnswer::Refused(detail.unwrap_or_default())),
            ROLLED_BACK => {
                return Ok(BranchAnswer::refused(
                    "this branch was rolled back here before its prepare arrived, so it must \
                     not prepare now (suspension)",
                ));
            }
            other => {
                return Err(XaError::Corrupt(format!(
                    "branch {xid} has state `{other}`"
                )));
            }
        }
        if committed(&mut tx, &xid).await? {
            // Prepared and committed before; the coordinator has its vote.
            return Ok(BranchAnswer::success());
        }
        // The savepoint comes before the commit marker, so a refusal drops
        // the marker with the work and keeps the row lock.
        sqlx::query(SAVEPOINT).execute(&mut *tx).await?;
        sqlx::query(INSERT_COMMITTED)
            .bind(xid.as_str())
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        match work(&mut tx).await {
            Ok(()) => {}
            Err(WorkError::Refused(refusal)) => {
                let reason = refusal.into_reason();
                sqlx::query(ROLLBACK_TO_SAVEPOINT).execute(&mut *tx).await?;
                set_state(&mut tx, &xid, REFUSED, Some(&reason)).await?;
                tx.commit().await?;
                tracing::info!(gid = ctx.gid(), branch = ctx.branch_id(), %reason, "2PC prepare refused");
                return Ok(BranchAnswer::Refused(reason));
            }
            // Dropping `tx` rolls everything back; the retry starts afresh.
            Err(WorkError::Database(e)) => return Err(e.into()),
            Err(WorkError::Failed(e)) => return Err(XaError::Failed(e)),
        }
        let prepare = format!("PREPARE TRANSACTION {}", xid.literal());
        sqlx::raw_sql(AssertSqlSafe(prepare))
            .execute(&mut *tx)
            .await?;
        // The session now has no transaction, but sqlx still counts one and
        // would end it with a COMMIT or ROLLBACK that PostgreSQL answers with
        // a warning. Opening an empty transaction for it to commit keeps the
        // log quiet and sqlx's bookkeeping right. The vote stands whatever
        // happens here: the prepared transaction is already durable.
        if sqlx::raw_sql("BEGIN").execute(&mut *tx).await.is_ok() {
            let _ = tx.commit().await;
        }
        tracing::debug!(gid = ctx.gid(), branch = ctx.branch_id(), %xid, "2PC branch prepared");
        Ok(BranchAnswer::success())
    }

    /// Commits a prepared branch (`COMMIT PREPARED`); a branch committed
    /// before answers success again.
    ///
    /// A branch that never prepared, or was rolled back, answers
    /// [`BranchAnswer::Refused`]: the coordinator only commits after this
    /// branch voted yes, so this is a protocol violation (a bug, or a
    /// branch's rows deleted by hand), and no answer can make it right. A
    /// 409 in phase two makes the coordinator retry and flag the
    /// transaction for an operator at once, which is what it needs.
    pub async fn commit(&self, ctx: &BranchContext) -> Result<BranchAnswer, XaError> {
        let xid = Xid::of(ctx.gid(), ctx.branch_id());
        if is_prepared(&self.decisions, &xid).await? && self.finish(&xid, "COMMIT PREPARED").await?
        {
            return Ok(BranchAnswer::success());
        }
        let mut conn = self.decisions.acquire().await?;
        if committed(&mut conn, &xid).await? {
            return Ok(BranchAnswer::success());
        }
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM dtx_xa_branch WHERE xid = $1")
                .bind(xid.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        let why = match state.as_deref() {
            Some(ROLLED_BACK) => "was rolled back here",
            _ => "never prepared here",
        };
        tracing::error!(
            gid = ctx.gid(),
            branch = ctx.branch_id(),
            "2PC commit of a branch that {why}: protocol violation, needs an operator"
        );
        Ok(BranchAnswer::Refused(format!(
            "commit of a branch that {why}: the coordinator must only commit branches that \
             voted yes (protocol violation)"
        )))
    }

    /// Rolls a branch back (`ROLLBACK PREPARED`). A branch that is not
    /// prepared answers success, and the rollback is remembered, so that a
    /// prepare arriving later is refused (null rollback, suspension).
    ///
    /// Answers [`BranchAnswer::StillWorking`] while a prepare of the branch
    /// is running (the coordinator asks again), and
    /// [`BranchAnswer::Refused`] for a branch that was committed: a protocol
    /// violation, see [`commit`](Self::commit).
    pub async fn rollback(&self, ctx: &BranchContext) -> Result<BranchAnswer, XaError> {
        let xid = Xid::of(ctx.gid(), ctx.branch_id());
        if is_prepared(&self.decisions, &xid).await? {
            self.finish(&xid, "ROLLBACK PREPARED").await?;
        }
        sqlx::query(INSERT_BRANCH)
            .bind(xid.as_str())
            .bind(ctx.gid())
            .bind(ctx.branch_id())
            .bind(ROLLED_BACK)
            .bind(now_ms())
            .execute(&self.decisions)
            .await?;
        let mut tx = self.decisions.begin().await?;
        match lock_branch(&mut tx, &xid).await {
            Ok(_) => {}
            // A prepare holds the row: it is running, or it prepared after
            // the check above. Either way the next attempt settles it.
            Err(e) if has_code(&e, LOCK_NOT_AVAILABLE) => return Ok(BranchAnswer::StillWorking),
            Err(e) => return Err(e.into()),
        }
        if committed(&mut tx, &xid).await? {
            tracing::error!(
                gid = ctx.gid(),
                branch = ctx.branch_id(),
                "2PC rollback of a committed branch: protocol violation, needs an operator"
            );
            return Ok(BranchAnswer::refused(
                "rollback of a branch that was committed here (protocol violation)",
            ));
        }
        set_state(&mut tx, &xid, ROLLED_BACK, None).await?;
        tx.commit().await?;
        Ok(BranchAnswer::success())
    }

    /// Runs `COMMIT PREPARED` or `ROLLBACK PREPARED` on a connection kept
    /// for the decisions, outside any transaction block (both refuse to run
    /// in one). `false` when the transaction is no longer prepared: a
    /// concurrent call finished it first.
    async fn finish(&self, xid: &Xid, verb: &str) -> Result<bool, sqlx::Error> {
        let sql = format!("{verb} {}", xid.literal());
        match sqlx::raw_sql(AssertSqlSafe(sql))
            .execute(&self.decisions)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if has_code(&e, UNDEFINED_OBJECT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Whether `xid` is a prepared transaction of this database, asked on
/// `pool` (the service's for a prepare, the decisions' for the rest).
async fn is_prepared(pool: &PgPool, xid: &Xid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(IS_PREPARED)
        .bind(xid.as_str())
        .fetch_one(pool)
        .await
}

async fn lock_branch(
    conn: &mut PgConnection,
    xid: &Xid,
) -> Result<(String, Option<String>), sqlx::Error> {
    sqlx::query_as(LOCK_BRANCH)
        .bind(xid.as_str())
        .fetch_one(conn)
        .await
}

async fn committed(conn: &mut PgConnection, xid: &Xid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(IS_COMMITTED)
        .bind(xid.as_str())
        .fetch_one(conn)
        .await
}

async fn set_state(
    conn: &mut PgConnection,
    xid: &Xid,
    state: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(SET_STATE)
        .bind(xid.as_str())
        .bind(state)
        .bind(detail)
        .bind(now_ms())
        .execute(conn)
        .await?;
    Ok(())
}

fn has_code(e: &sqlx::Error, code: &str) -> bool {
    e.as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|c| c == code)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
