//! The inventory's own database: products with their stock split into
//! `available`, `reserved` and `sold`, and a ledger of every stock movement
//! applied by a branch call, on SQLite or PostgreSQL.
//!
//! Every movement runs inside a local transaction that also records the
//! call (the SDK barrier's row, the XA helper's prepared transaction, or the
//! 3PC helper's state row), so the stock change, the ledger row and that
//! record commit together or not at all: a retried or duplicated call cannot
//! move stock twice. [`StockConn`] holds the statements every path shares.

use dtx_sdk::barrier::{BarrierError, Entry};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp};
use serde::{Deserialize, Serialize};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgPool, SqlitePool};
use std::future::Future;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

/// Stock statements on one connection (or local transaction) of either
/// backend, so that the barrier path, the XA prepare and the 3PC hooks
/// share them.
pub trait StockConn: Send {
    /// Moves `qty` units of `sku` and writes the ledger row (`op` under
    /// `gid`/`branch`); `false`, changing nothing, when the source column
    /// does not hold enough (or there is no such product).
    fn move_stock(
        &mut self,
        gid: &str,
        branch: &str,
        op: &str,
        movement: Movement,
        sku: &str,
        qty: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Whether `qty` units of `sku` are available now.
    fn has_available(
        &mut self,
        sku: &str,
        qty: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
}

const LEDGER: &str = "INSERT INTO ledger (gid, branch, op, sku, qty, moved_from, moved_to, at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
const HAS_AVAILABLE: &str =
    "SELECT EXISTS (SELECT 1 FROM products WHERE sku = $1 AND available >= $2)";

/// One implementation per backend: the statements are the same text, the
/// connection types are not.
macro_rules! stock_conn {
    ($conn:ty) => {
        impl StockConn for $conn {
            async fn move_stock(
                &mut self,
                gid: &str,
                branch: &str,
                op: &str,
                movement: Movement,
                sku: &str,
                qty: i64,
            ) -> Result<bool, sqlx::Error> {
                let (from, to, update) = movement.sql();
                let moved = sqlx::query(update)
                    .bind(qty)
                    .bind(sku)
                    .execute(&mut *self)
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
                    .execute(&mut *self)
                    .await?;
                tracing::info!(gid, op, sku, qty, "moved {from} -> {to}");
                Ok(true)
            }

            async fn has_available(&mut self, sku: &str, qty: i64) -> Result<bool, sqlx::Error> {
                sqlx::query_scalar(HAS_AVAILABLE)
                    .bind(sku)
                    .bind(qty)
                    .fetch_one(&mut *self)
                    .await
            }
        }
    };
}

stock_conn!(sqlx::SqliteConnection);
stock_conn!(sqlx::PgConnection);

const SQLITE_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    sold BIGINT NOT NULL CHECK (sold >= 0));
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    gid TEXT NOT NULL, branch TEXT NOT NULL, op TEXT NOT NULL,
    sku TEXT NOT NULL, qty BIGINT NOT NULL,
    moved_from TEXT NOT NULL, moved_to TEXT NOT NULL, at BIGINT NOT NULL);";

const POSTGRES_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS products (
    sku TEXT PRIMARY KEY,
    available BIGINT NOT NULL CHECK (available >= 0),
    reserved BIGINT NOT NULL CHECK (reserved >= 0),
    sold BIGINT NOT NULL CHECK (sold >= 0));
CREATE TABLE IF NOT EXISTS ledger (
    id BIGSERIAL PRIMARY KEY,
    gid TEXT NOT NULL, branch TEXT NOT NULL, op TEXT NOT NULL,
    sku TEXT NOT NULL, qty BIGINT NOT NULL,
    moved_from TEXT NOT NULL, moved_to TEXT NOT NULL, at BIGINT NOT NULL);";

/// The database, on either backend.
#[derive(Debug, Clone)]
pub enum Db {
    /// An SQLite file (the default).
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` (and `$barrier`) bound to the concrete pool of
/// whichever backend this is. The body is expanded once per backend, so it
/// is written once with concrete types instead of a wall of generic bounds.
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
    ($db:expr, |$pool:ident, $barrier:ident| $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => {
                let $barrier = ::dtx_sdk::barrier::Barrier::sqlite();
                $body
            }
            $crate::store::Db::Postgres($pool) => {
                let $barrier = ::dtx_sdk::barrier::Barrier::postgres();
                $body
            }
        }
    };
}
// The planted defects (`crate::plants`) run their own statements per backend.
pub(crate) use on_db;

impl Db {
    /// Connects to `url` (`sqlite:<file>` or `postgres://...`), creating an
    /// SQLite file if missing, and applies the schema and the barrier's
    /// migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let db = if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Db::Postgres(PgPool::connect(url).await?)
        } else {
            // WAL and a busy timeout: concurrent barrier transactions wait
            // for each other's write lock instead of failing at once.
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10));
            Db::Sqlite(SqlitePoolOptions::new().connect_with(options).await?)
        };
        on_db!(&db, |pool, barrier| barrier.migrate(pool).await?);
        match &db {
            Db::Sqlite(pool) => {
                sqlx::raw_sql(SQLITE_SCHEMA).execute(pool).await?;
            }
            Db::Postgres(pool) => {
                sqlx::raw_sql(POSTGRES_SCHEMA).execute(pool).await?;
            }
        }
        Ok(db)
    }

    /// Adds `qty` available units of `sku`, creating the product if new.
    pub async fn seed(&self, sku: &str, qty: i64) -> Result<Product, sqlx::Error> {
        const SQL: &str = "INSERT INTO products (sku, available, reserved, sold) \
             VALUES ($1, $2, 0, 0) \
             ON CONFLICT (sku) DO UPDATE SET available = products.available + excluded.available";
        on_db!(self, |pool| {
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
        on_db!(self, |pool| sqlx::query_as(SQL)
            .bind(sku)
            .fetch_optional(pool)
            .await)
    }

    /// Every product, by sku.
    pub async fn products(&self) -> Result<Vec<Product>, sqlx::Error> {
        const SQL: &str = "SELECT sku, available, reserved, sold FROM products ORDER BY sku";
        on_db!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
    }

    /// The ledger, oldest first.
    pub async fn ledger(&self) -> Result<Vec<LedgerEntry>, sqlx::Error> {
        const SQL: &str = "SELECT id, gid, branch, op, sku, qty, moved_from, moved_to, at FROM ledger ORDER BY id";
        on_db!(self, |pool| sqlx::query_as(SQL).fetch_all(pool).await)
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
        on_db!(self, |pool, barrier| {
            let mut work = match barrier.begin(pool, ctx).await? {
                Entry::Proceed(work) => work,
                // A duplicate, a null compensation or a suspended forward
                // step: the barrier already knows the answer.
                Entry::Skip(skipped) => {
                    tracing::info!(gid = ctx.gid(), branch = ctx.branch_id(), op = %ctx.op(),
                        ?skipped, "barrier skipped the call");
                    return Ok(skipped.answer());
                }
            };
            let (gid, branch, op) = (ctx.gid(), ctx.branch_id(), ctx.op().as_str());
            if !work.move_stock(gid, branch, op, movement, sku, qty).await? {
                let from = movement.source();
                return work
                    .refuse(format!("not enough {sku} {from} for {qty} unit(s)"))
                    .await;
            }
            work.succeed().await
        })
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
