//! The inventory's own database: products with their stock split into
//! `available`, `reserved` and `sold`, and a ledger of every stock movement
//! applied by a branch call, on SQLite or PostgreSQL (the SDK's [`Db`]).
//!
//! Every movement runs inside a local transaction that also records the
//! call (the SDK barrier's row, the XA helper's prepared transaction, or the
//! 3PC helper's state row), so the stock change, the ledger row and that
//! record commit together or not at all: a retried or duplicated call cannot
//! move stock twice. [`move_stock`] and [`has_available`] are the statements
//! every path shares, written once for both backends on the SDK's [`Conn`].

use dtx_sdk::barrier::BarrierError;
use dtx_sdk::db::{Conn, Db};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, WorkError, on_conn, on_db};
use serde::{Deserialize, Serialize};
use std::time::{SystemTime, UNIX_EPOCH};

/// A product and where its units are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Product {
    /// Stock keeping unit, the product's key.
    pub sku: String,
    /// Units free to sell.
    pub available: i64,
    /// Units held (TCC Try, SQLite 2PC prepare, 3PC pre-commit), waiting
    /// for the second phase to sell or release them.
    pub reserved: i64,
    /// Units gone for good.
    pub sold: i64,
}

/// One stock movement applied by a branch call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct LedgerEntry {
    /// Position in the ledger.
    pub id: i64,
    /// The global transaction.
    pub gid: String,
    /// The branch within it.
    pub branch: String,
    /// The operation (`dtx-op`) that moved the units: `action`,
    /// `compensate`, `try`, `confirm`, `cancel`, `prepare`, `commit`,
    /// `rollback`, `pre_commit`, `do_commit`, `abort`. Which columns each
    /// moved is in the crate documentation's table.
    pub op: String,
    /// The product moved.
    pub sku: String,
    /// How many units.
    pub qty: i64,
    /// The stock column the units left (`available`, `reserved`, `sold`).
    /// With the operation it makes the row self-describing: an XA
    /// `prepare` sells (its row is visible only once committed), a
    /// reservation `prepare` holds.
    pub moved_from: String,
    /// The stock column the units went to.
    pub moved_to: String,
    /// Unix milliseconds when it was applied.
    pub at: i64,
}

/// The body of every branch call: which product and how many units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockRequest {
    /// The product.
    pub sku: String,
    /// How many units.
    pub qty: i64,
}

/// A stock movement: which column units leave and which they join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Movement {
    /// available → sold: the saga action, and the PostgreSQL 2PC prepare
    /// (inside the prepared transaction, so invisible until it commits).
    Sell,
    /// sold → available: the saga compensation.
    Unsell,
    /// available → reserved: a hold (TCC Try, SQLite 2PC prepare, 3PC
    /// pre-commit).
    Hold,
    /// reserved → sold: a hold made final (TCC Confirm, SQLite 2PC commit,
    /// 3PC do-commit).
    Apply,
    /// reserved → available: a hold released (TCC Cancel, SQLite 2PC
    /// rollback, 3PC abort).
    Release,
}

impl Movement {
    /// The movement of a barrier-protected operation. The saga action sells
    /// directly (a saga has no second phase to turn a hold into a sale);
    /// every other forward step holds, and its phase two applies or releases.
    pub fn of(op: BranchOp) -> Movement {
        match op {
            BranchOp::Action => Movement::Sell,
            BranchOp::Compensate => Movement::Unsell,
            BranchOp::Try | BranchOp::Prepare | BranchOp::PreCommit => Movement::Hold,
            BranchOp::Confirm | BranchOp::Commit | BranchOp::DoCommit => Movement::Apply,
            // Cancel, Rollback, Abort; BranchOp is non-exhaustive, and
            // releasing is the harmless reading of anything newer (it
            // refuses unless units are held).
            _ => Movement::Release,
        }
    }

    /// The source and destination columns, and the statement. Placeholders
    /// appear in ascending order: SQLite numbers `$N` parameters by first
    /// appearance.
    pub(crate) fn sql(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Movement::Sell => (
                "available",
                "sold",
                "UPDATE products SET available = available - $1, sold = sold + $1 WHERE available >= $1 AND sku = $2",
            ),
            Movement::Unsell => (
                "sold",
                "available",
                "UPDATE products SET sold = sold - $1, available = available + $1 WHERE sold >= $1 AND sku = $2",
            ),
            Movement::Hold => (
                "available",
                "reserved",
                "UPDATE products SET available = available - $1, reserved = reserved + $1 WHERE available >= $1 AND sku = $2",
            ),
            Movement::Apply => (
                "reserved",
                "sold",
                "UPDATE products SET reserved = reserved - $1, sold = sold + $1 WHERE reserved >= $1 AND sku = $2",
            ),
            Movement::Release => (
                "reserved",
                "available",
                "UPDATE products SET reserved = reserved - $1, available = available + $1 WHERE reserved >= $1 AND sku = $2",
            ),
        }
    }

    /// The column units leave, for refusal messages.
    pub fn source(self) -> &'static str {
        self.sql().0
    }
}

const LEDGER: &str = "INSERT INTO ledger (gid, branch, op, sku, qty, moved_from, moved_to, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const HAS_AVAILABLE: &str =
    "SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1 AND available >= $2)";

/// Which call a ledger row records: the transaction, the branch and the
/// operation (`dtx-op`) that moved the units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRef {
    /// The global transaction.
    pub gid: String,
    /// The branch.
    pub branch: String,
    /// The operation, as the ledger names it.
    pub op: String,
}

impl CallRef {
    /// The call `ctx` describes.
    pub fn of(ctx: &BranchContext) -> CallRef {
        CallRef {
            gid: ctx.gid().to_owned(),
            branch: ctx.branch_id().to_owned(),
            op: ctx.op().as_str().to_owned(),
        }
    }
}

/// Moves `qty` units of `sku` and writes the ledger row of `call`, on the
/// connection (or local transaction) of either backend; `false`, changing
/// nothing, when the source column does not hold enough (or there is no
/// such product).
pub async fn move_stock(
    conn: Conn<'_>,
    call: &CallRef,
    movement: Movement,
    sku: &str,
    qty: i64,
) -> Result<bool, sqlx::Error> {
    let (from, to, update) = movement.sql();
    let CallRef { gid, branch, op } = call;
    on_conn!(conn, |c| {
        let moved = sqlx::query(update)
            .bind(qty)
            .bind(sku)
            .execute(&mut *c)
            .await?;
        if moved.rows_affected() == 0 {
            tracing::info!(gid, op, sku, qty, "not enough {from}");
            return Ok(false);
        }
        sqlx::query(LEDGER)
            .bind(gid)
            .bind(branch)
            .bind(op)
            .bind(sku)
            .bind(qty)
            .bind(from)
            .bind(to)
            .bind(now_ms())
            .execute(&mut *c)
            .await?;
    });
    tracing::info!(gid, op, sku, qty, "moved {from} -> {to}");
    Ok(true)
}

/// Whether `qty` units of `sku` are available now.
pub async fn has_available(conn: Conn<'_>, sku: &str, qty: i64) -> Result<bool, sqlx::Error> {
    on_conn!(conn, |c| sqlx::query_scalar(HAS_AVAILABLE)
        .bind(sku)
        .bind(qty)
        .fetch_one(&mut *c)
        .await)
}

/// The refusal of a movement whose source column is short.
pub fn not_enough(sku: &str, movement: Movement, qty: i64) -> String {
    format!("not enough {sku} {} for {qty} unit(s)", movement.source())
}

/// The schema; only the ledger's id column is written differently on the
/// two backends (`ledger_id`).
fn schema(ledger_id: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS products (
            sku TEXT PRIMARY KEY,
            available BIGINT NOT NULL CHECK (available >= 0),
            reserved BIGINT NOT NULL CHECK (reserved >= 0),
            sold BIGINT NOT NULL CHECK (sold >= 0));
        CREATE TABLE IF NOT EXISTS ledger (
            id {ledger_id},
            gid TEXT NOT NULL, branch TEXT NOT NULL, op TEXT NOT NULL,
            sku TEXT NOT NULL, qty BIGINT NOT NULL,
            moved_from TEXT NOT NULL, moved_to TEXT NOT NULL, at BIGINT NOT NULL);"
    )
}

/// The inventory's database, on either backend.
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
        let schema = schema(match &db {
            Db::Sqlite(_) => "INTEGER PRIMARY KEY AUTOINCREMENT",
            Db::Postgres(_) => "BIGSERIAL PRIMARY KEY",
        });
        on_db!(&db, |pool| {
            sqlx::raw_sql(sqlx::AssertSqlSafe(schema))
                .execute(pool)
                .await?;
        });
        Ok(Store { db })
    }

    /// The pool of whichever backend it is.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Adds `qty` available units of `sku`, creating the product if new.
    pub async fn seed(&self, sku: &str, qty: i64) -> Result<Product, sqlx::Error> {
        const SQL: &str = "INSERT INTO products (sku, available, reserved, sold) \
             VALUES ($1, $2, 0, 0) \
             ON CONFLICT (sku) DO UPDATE SET available = products.available + excluded.available";
        on_db!(&self.db, |pool| {
            sqlx::query(SQL).bind(sku).bind(qty).execute(pool).await?;
        });
        Ok(self
            .product(sku)
            .await?
            .expect("the product was just written"))
    }

    /// One product.
    pub async fn product(&self, sku: &str) -> Result<Option<Product>, sqlx::Error> {
        const SQL: &str = "SELECT sku, available, reserved, sold FROM products WHERE sku = $1";
        on_db!(&self.db, |pool| sqlx::query_as(SQL)
            .bind(sku)
            .fetch_optional(pool)
            .await)
    }

    /// Every product, by sku.
    pub async fn products(&self) -> Result<Vec<Product>, sqlx::Error> {
        const SQL: &str = "SELECT sku, available, reserved, sold FROM products ORDER BY sku";
        on_db!(&self.db, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
    }

    /// The ledger, oldest first.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, sqlx::Error> {
        const SQL: &str = "SELECT id, gid, branch, op, sku, qty, moved_from, moved_to, at FROM ledger ORDER BY id";
        on_db!(&self.db, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
    }

    /// Applies the stock movement of `ctx`'s operation
    /// ([`Movement::of`]) behind the barrier: moves `qty` units of `sku` and
    /// writes the ledger row, or refuses when the source column does not
    /// hold enough (out of stock, or an unknown product).
    pub async fn apply(
        &self,
        ctx: &BranchContext,
        sku: &str,
        qty: i64,
    ) -> Result<BranchAnswer, BarrierError> {
        let movement = Movement::of(ctx.op());
        let (call, sku) = (CallRef::of(ctx), sku.to_owned());
        self.db
            .barrier(ctx, move |conn| {
                Box::pin(async move {
                    if move_stock(conn, &call, movement, &sku, qty).await? {
                        Ok(())
                    } else {
                        Err(WorkError::refused(not_enough(&sku, movement, qty)))
                    }
                })
            })
            .await
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
