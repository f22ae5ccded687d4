//! The order service's own database: one `orders` row per order, on SQLite
//! or PostgreSQL, whose status the order's own branch moves through the SDK
//! barrier.
//!
//! Order statuses: `new` (created; its branch has not run), `pending` (held:
//! by the TCC Try, the 2PC prepare or the 3PC pre-commit), `confirmed` (it
//! took effect everywhere), `cancelled` (undone or never done).
//!
//! For 2PC and 3PC the order row is prepared by reservation, the way the SDK
//! documents for SQLite participants (`dtx_sdk::xa::sqlite`), on both
//! backends: the `pending` status is the hold, behind the barrier, which
//! also makes a rollback or abort of a branch that never held anything a
//! success that changes nothing (the order is then cancelled when the
//! outcome is recorded, [`Db::settle`]).

use dtx_sdk::barrier::{BarrierError, Entry};
use dtx_sdk::db::Db;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, WorkError, on_conn, on_db};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Order {
    /// The order id, also the gid of its global transaction.
    pub id: String,
    /// The product ordered.
    pub sku: String,
    /// How many units.
    pub qty: i64,
    /// `saga`, `tcc`, `2pc` or `3pc`.
    pub mode: String,
    /// `new`, `pending`, `confirmed` or `cancelled`.
    pub status: String,
    /// Why it was cancelled or is not settled yet, when known.
    pub reason: Option<String>,
    /// Unix milliseconds of creation.
    pub created_at: i64,
    /// Unix milliseconds of the last change.
    pub updated_at: i64,
}

impl Order {
    /// Whether the order will not change any more.
    pub fn is_settled(&self) -> bool {
        matches!(self.status.as_str(), "confirmed" | "cancelled")
    }
}

/// The status an operation of the order's own branch moves the order from,
/// and to.
/// The 3PC `can_commit` "moves" `new` to `new`: a check that holds nothing.
fn transition(op: BranchOp) -> (&'static str, &'static str) {
    match op {
        BranchOp::Action => ("new", "confirmed"),
        BranchOp::Compensate => ("confirmed", "cancelled"),
        BranchOp::CanCommit => ("new", "new"),
        BranchOp::Try | BranchOp::Prepare | BranchOp::PreCommit => ("new", "pending"),
        BranchOp::Confirm | BranchOp::Commit | BranchOp::DoCommit => ("pending", "confirmed"),
        // Cancel, Rollback, Abort; BranchOp is non-exhaustive, and anything
        // newer can only release a hold.
        _ => ("pending", "cancelled"),
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL)";

/// The order database, on either backend (the SDK's [`Db`]).
#[derive(Debug, Clone)]
pub struct Store {
    db: Db,
}

impl Store {
    /// Connects to `url` (`sqlite:<file>`, created if missing, or
    /// `postgres://...`), and applies the SDK's migrations and the schema.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        let db = Db::connect(url).await?;
        db.migrate().await?;
        on_db!(&db, |pool| {
            sqlx::raw_sql(SCHEMA).execute(pool).await?;
        });
        Ok(Store { db })
    }

    /// The pool of whichever backend it is.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Stores a new order with status `new`.
    pub async fn insert(&self, id: &str, sku: &str, qty: i64, mode: &str) -> sqlx::Result<Order> {
        const SQL: &str = "INSERT INTO orders (id, sku, qty, mode, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'new', $5, $5)";
        on_db!(&self.db, |pool| {
            sqlx::query(SQL)
                .bind(id)
                .bind(sku)
                .bind(qty)
                .bind(mode)
                .bind(now_ms())
                .execute(pool)
                .await?;
        });
        Ok(self.get(id).await?.expect("the order was just written"))
    }

    /// One order.
    pub async fn get(&self, id: &str) -> sqlx::Result<Option<Order>> {
        const SQL: &str = "SELECT id, sku, qty, mode, status, reason, created_at, updated_at \
             FROM orders WHERE id = $1";
        on_db!(&self.db, |pool| sqlx::query_as(SQL)
            .bind(id)
            .fetch_optional(pool)
            .await)
    }

    /// Every order, oldest first.
    pub async fn list(&self) -> sqlx::Result<Vec<Order>> {
        const SQL: &str = "SELECT id, sku, qty, mode, status, reason, created_at, updated_at \
             FROM orders ORDER BY created_at, id";
        on_db!(&self.db, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
    }

    /// At most `limit` unsettled orders (neither `confirmed` nor
    /// `cancelled`) whose id sorts after `after` (`""`: from the first), in
    /// id order: the reconciler walks them a page at a time, so that orders
    /// it cannot settle yet do not starve the others.
    pub async fn unsettled_after(&self, after: &str, limit: u32) -> sqlx::Result<Vec<Order>> {
        const SQL: &str = "SELECT id, sku, qty, mode, status, reason, created_at, updated_at \
             FROM orders WHERE status NOT IN ('confirmed', 'cancelled') AND id > $1 \
             ORDER BY id LIMIT $2";
        on_db!(&self.db, |pool| sqlx::query_as(SQL)
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await)
    }

    /// Records the outcome of the order's transaction: `reason` (if any) and,
    /// once it is aborted, `cancelled` for an order whose own branch never
    /// ran (a branch that ran was cancelled or compensated by its own call).
    pub async fn settle(&self, id: &str, aborted: bool, reason: Option<&str>) -> sqlx::Result<()> {
        const SQL: &str = "UPDATE orders SET \
             status = CASE WHEN $1 AND status = 'new' THEN 'cancelled' ELSE status END, \
             reason = COALESCE($2, reason), updated_at = $3 WHERE id = $4";
        on_db!(&self.db, |pool| {
            sqlx::query(SQL)
                .bind(aborted)
                .bind(reason)
                .bind(now_ms())
                .bind(id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Carries out an operation of the order's own branch behind the
    /// barrier: moves the order from the status the operation expects to the
    /// next, or refuses when it is elsewhere.
    pub async fn apply(&self, ctx: &BranchContext, id: &str) -> Result<BranchAnswer, BarrierError> {
        const SQL: &str =
            "UPDATE orders SET status = $1, updated_at = $2 WHERE id = $3 AND status = $4";
        let (from, to) = transition(ctx.op());
        let (gid, op, id) = (ctx.gid().to_owned(), ctx.op(), id.to_owned());
        self.db
            .barrier(ctx, move |conn| {
                Box::pin(async move {
                    let moved = on_conn!(conn, |c| sqlx::query(SQL)
                        .bind(to)
                        .bind(now_ms())
                        .bind(&id)
                        .bind(from)
                        .execute(&mut *c)
                        .await?
                        .rows_affected());
                    if moved == 0 {
                        return Err(WorkError::refused(format!("order {id} is not {from}")));
                    }
                    tracing::info!(gid, %op, order = id, "order {from} -> {to}");
                    Ok(())
                })
            })
            .await
    }

    /// Passes a branch call through the barrier and answers success without
    /// touching the order: only the `compensation-keeps-order` planted
    /// defect ([`crate::plants`]) uses it, for the saga compensation.
    pub async fn succeed_without_change(
        &self,
        ctx: &BranchContext,
    ) -> Result<BranchAnswer, BarrierError> {
        on_db!(&self.db, |pool, barrier| {
            match barrier.begin(pool, ctx).await? {
                Entry::Proceed(work) => {
                    tracing::warn!(gid = ctx.gid(), op = %ctx.op(), "planted defect: the order is left as it is");
                    work.succeed().await
                }
                Entry::Skip(skipped) => Ok(skipped.answer()),
            }
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
