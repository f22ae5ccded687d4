//! A participant's database on SQLite or PostgreSQL, chosen by URL at start:
//! what every service supporting both would otherwise write itself.
//!
//! - [`Db`]: the pool of either backend, [`Db::connect`]ed from a URL
//!   (`sqlite:<file>` or `postgres://...`). SQLite is opened the way the
//!   barrier needs ([`sqlite_options`]): the file is created if missing, in
//!   WAL mode, with a busy timeout, so concurrent calls wait for each other's
//!   write lock instead of failing.
//! - [`Conn`]: one connection of either backend, what
//!   [`Db::barrier`] and the 3PC hooks hand the business step.
//! - [`on_db!`](crate::on_db) and [`on_conn!`](crate::on_conn): run code
//!   written once on whichever pool or connection it is. The body is
//!   expanded once per backend with concrete types (`&SqlitePool`,
//!   `&mut PgConnection`, ...), so plain `sqlx::query(...)` calls work in it
//!   without generic bounds. Only the backends whose feature is on are
//!   expanded.
//!
//! A service on one database needs none of this: use its pool and
//! [`Barrier::sqlite`](crate::barrier::Barrier::sqlite) (or `postgres`)
//! directly; [`sqlite_options`] still gives the right SQLite settings.
//!
//! # Lock waits on PostgreSQL
//! A business statement that waits for a row lock holds a pool connection
//! while it waits, and on PostgreSQL a lock can be held for as long as a
//! 2PC decision takes: a prepared branch ([`crate::xa`]) keeps its row
//! locks until `COMMIT PREPARED`. Waiting that long helps no one: the
//! caller gives up after its request timeout, and giving up does not end
//! the statement (sqlx takes the connection back only once it finishes).
//! So the SDK's helpers bound every lock wait of their business
//! transactions to [`POSTGRES_LOCK_TIMEOUT`] ([`Conn::bound_lock_waits`]):
//! [`Db::barrier`], the 3PC helper and the XA helper's prepare. A wait
//! given up fails with SQLSTATE 55P03 ([`is_lock_timeout`]), the local
//! transaction rolls back, and the call is answered as an unknown outcome
//! that the coordinator retries. Seen without it, in the fault-injection
//! harness: every connection of the inventory's pool waiting on one
//! prepared row, and the commit that would have released it unable to get
//! a connection, for good.

use crate::answer::BranchAnswer;
use crate::barrier::{Barrier, BarrierError, Entry};
use crate::context::BranchContext;
use crate::refusal::WorkError;
use futures_util::future::BoxFuture;
#[cfg(feature = "postgres")]
use sqlx::{PgConnection, PgPool};
#[cfg(feature = "sqlite")]
use sqlx::{
    SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions},
};
use std::time::Duration;

/// How long an SQLite connection waits for another's write lock before it
/// fails with "database is locked". Barrier transactions take the write lock
/// at their start (`BEGIN IMMEDIATE`), so concurrent calls queue here.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a statement of a business transaction run by the SDK's helpers
/// ([`Db::barrier`], the 3PC hooks, the XA prepare) waits for a lock on
/// PostgreSQL before it gives up (`lock_timeout`; see [Lock waits on
/// PostgreSQL](self#lock-waits-on-postgresql)). Ordinary row locks are held
/// for milliseconds; a wait longer than this is a wait on a transaction
/// that is itself waiting (a prepared 2PC branch awaiting its decision),
/// and the retry after it costs less than the connection it would hold.
/// Keep it below the callers' request timeout (the coordinator's
/// `request_timeout_ms`, 10 s by default; the samples use 2 s), so that the
/// answer reaches the caller before it gives up.
pub const POSTGRES_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// The options for an SQLite participant database at `url`
/// (`sqlite:<file>`): created if missing, WAL journal (readers do not block
/// the writer), and [`SQLITE_BUSY_TIMEOUT`]. Use them as they are
/// (`SqlitePool::connect_with`) or change what you need.
#[cfg(feature = "sqlite")]
pub fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, sqlx::Error> {
    use std::str::FromStr as _;
    Ok(SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(SQLITE_BUSY_TIMEOUT))
}

/// A participant's database: the pool of whichever backend its URL names.
/// Cheap to clone (pools are shared handles).
#[derive(Debug, Clone)]
pub enum Db {
    /// An SQLite file.
    #[cfg(feature = "sqlite")]
    Sqlite(SqlitePool),
    /// A PostgreSQL database.
    #[cfg(feature = "postgres")]
    Postgres(PgPool),
}

impl Db {
    /// Connects to `url`: `postgres://...` (or `postgresql://...`) opens a
    /// PostgreSQL pool, `sqlite:<file>` an SQLite pool with
    /// [`sqlite_options`]. A scheme whose backend is not compiled in (its
    /// cargo feature is off), or any other scheme, is a
    /// `sqlx::Error::Configuration` that says so. Does not create any table:
    /// see [`migrate`](Self::migrate).
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        let scheme = url.split(':').next().unwrap_or_default();
        match scheme {
            #[cfg(feature = "postgres")]
            "postgres" | "postgresql" => Ok(Db::Postgres(PgPool::connect(url).await?)),
            #[cfg(feature = "sqlite")]
            "sqlite" => {
                let pool = SqlitePoolOptions::new()
                    .connect_with(sqlite_options(url)?)
                    .await?;
                Ok(Db::Sqlite(pool))
            }
            _ => Err(sqlx::Error::Configuration(
                format!(
                    "database URL `{}`: expected {}",
                    redacted(url),
                    Db::SCHEMES.join(" or ")
                )
                .into(),
            )),
        }
    }

    /// The URL forms this build accepts.
    const SCHEMES: &[&str] = &[
        #[cfg(feature = "sqlite")]
        "sqlite:<file>",
        #[cfg(feature = "postgres")]
        "postgres://user:pass@host/db",
    ];

    /// Applies the SDK's migrations (the barrier's table, and the XA and
    /// 3PC helpers' tables): [`Barrier::migrate`] on whichever backend this
    /// is. Call it at start-up, beside your own schema.
    pub async fn migrate(&self) -> Result<(), BarrierError> {
        crate::on_db!(self, |pool, barrier| barrier.migrate(pool).await)
    }

    /// The barrier's closure form on whichever backend this is
    /// ([`Barrier::run`]): passes the barrier in a new local transaction,
    /// runs `work` on its connection, and commits with the barrier's record.
    /// On PostgreSQL its lock waits are bounded first
    /// ([`Conn::bound_lock_waits`]): a lock held past
    /// [`POSTGRES_LOCK_TIMEOUT`] fails the call with
    /// [`BarrierError::Database`] (500, retried), nothing changed.
    /// `work` is written once for both backends, with
    /// [`on_conn!`](crate::on_conn) where it runs statements:
    ///
    /// ```no_run
    /// use dtx_sdk::db::Db;
    /// use dtx_sdk::{BranchAnswer, BranchContext, WorkError, barrier::BarrierError, on_conn};
    ///
    /// async fn reserve(db: &Db, ctx: &BranchContext, sku: String, qty: i64)
    ///     -> Result<BranchAnswer, BarrierError> {
    ///     db.barrier(ctx, move |conn| Box::pin(async move {
    ///         let held = on_conn!(conn, |c| sqlx::query(
    ///             "UPDATE stock SET available = available - $1 WHERE sku = $2 AND available >= $1",
    ///         )
    ///         .bind(qty)
    ///         .bind(&sku)
    ///         .execute(&mut *c)
    ///         .await?
    ///         .rows_affected());
    ///         if held == 0 {
    ///             return Err(WorkError::refused(format!("not enough {sku} in stock")));
    ///         }
    ///         Ok(())
    ///     }))
    ///     .await
    /// }
    /// ```
    pub async fn barrier<W>(
        &self,
        ctx: &BranchContext,
        work: W,
    ) -> Result<BranchAnswer, BarrierError>
    where
        W: for<'c> FnOnce(Conn<'c>) -> BoxFuture<'c, Result<(), WorkError>> + Send,
    {
        // `Barrier::run` with one statement first, which its closure form
        // cannot take: a wrapper closure would have to own `work` for the
        // connection's lifetime.
        crate::on_db!(self, |pool, barrier| {
            let mut entered = match barrier.begin(pool, ctx).await? {
                Entry::Proceed(entered) => entered,
                Entry::Skip(skipped) => return Ok(skipped.answer()),
            };
            // See "Lock waits on PostgreSQL" above.
            Conn::from(&mut *entered).bound_lock_waits().await?;
            match work(Conn::from(&mut *entered)).await {
                Ok(()) => entered.succeed().await,
                Err(WorkError::Refused(refusal)) => entered.refuse(refusal).await,
                // Dropping `entered` rolls everything back.
                Err(WorkError::Database(e)) => Err(e.into()),
                Err(WorkError::Failed(e)) => Err(BarrierError::Failed(e)),
            }
        })
    }
}

/// Whether `error` is a lock wait given up: SQLSTATE 55P03
/// (`lock_not_available`), what a statement fails with past
/// [`POSTGRES_LOCK_TIMEOUT`] (or a `NOWAIT` lock that was held). Nothing
/// was changed, so the call can be repeated as it is.
pub fn is_lock_timeout(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|db| db.code())
        .is_some_and(|code| code == LOCK_NOT_AVAILABLE)
}

/// SQLSTATE `lock_not_available`.
const LOCK_NOT_AVAILABLE: &str = "55P03";

/// The answer to a call whose statement gave up waiting for a lock
/// ([`is_lock_timeout`]): 503 with `Retry-After: 1`, which the coordinator
/// reads as an unknown outcome and retries. The local transaction was
/// rolled back, so the retry runs anew; a warning, not an error, since
/// contention on a row is no fault of the database.
#[cfg(feature = "client")]
pub(crate) fn lock_timeout_answer(what: &str) -> axum::response::Response {
    use axum::http::{HeaderValue, StatusCode, header};
    tracing::warn!(
        "{what}: a row it needs stayed locked past the lock timeout; answering 503 (retry)"
    );
    let mut response = crate::problem::problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "row-locked",
        "Row locked",
        "a row this call changes is locked by another transaction (perhaps a prepared 2PC \
         branch awaiting its decision); nothing was changed, ask again later",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The URL without its password, for messages.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(start), Some(at)) if at > start => match url[start + 3..at].find(':') {
            Some(colon) => format!("{}:***{}", &url[..start + 3 + colon], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

impl<DB: crate::barrier::BarrierDatabase> Barrier<DB> {
    /// The barrier on `pool`'s backend, for code written once for several
    /// (what [`on_db!`](crate::on_db)'s `|pool, barrier|` form binds).
    pub fn for_pool(_pool: &sqlx::Pool<DB>) -> Self {
        Barrier::new()
    }
}

/// One connection (inside a local transaction) of either backend: what
/// [`Db::barrier`] and the 3PC hooks hand the business step. Run statements
/// on it with [`on_conn!`](crate::on_conn), which consumes it;
/// [`reborrow`](Self::reborrow) gives another for a second use.
#[derive(Debug)]
pub enum Conn<'c> {
    /// An SQLite connection.
    #[cfg(feature = "sqlite")]
    Sqlite(&'c mut SqliteConnection),
    /// A PostgreSQL connection.
    #[cfg(feature = "postgres")]
    Postgres(&'c mut PgConnection),
}

impl Conn<'_> {
    /// The same connection, borrowed for a shorter time, so this one can be
    /// used again afterwards.
    pub fn reborrow(&mut self) -> Conn<'_> {
        crate::on_conn!(self, |c| Conn::from(&mut **c))
    }

    /// On PostgreSQL, bounds every lock wait of the rest of the current
    /// transaction to [`POSTGRES_LOCK_TIMEOUT`] (`SET LOCAL lock_timeout`:
    /// it ends with the transaction, also with `PREPARE TRANSACTION`, and
    /// never reaches the pool's other users). Call it first in a business
    /// transaction of your own; the SDK's helpers call it for theirs. On
    /// SQLite it does nothing: there the wait is the busy timeout
    /// ([`SQLITE_BUSY_TIMEOUT`]), and SQLite has no lock that outlives a
    /// call.
    pub async fn bound_lock_waits(&mut self) -> Result<(), sqlx::Error> {
        match self {
            #[cfg(feature = "sqlite")]
            Conn::Sqlite(_) => Ok(()),
            #[cfg(feature = "postgres")]
            Conn::Postgres(c) => {
                sqlx::query("SELECT set_config('lock_timeout', $1, true)")
                    .bind(format!("{}ms", POSTGRES_LOCK_TIMEOUT.as_millis()))
                    .execute(&mut **c)
                    .await?;
                Ok(())
            }
        }
    }
}

#[cfg(feature = "sqlite")]
impl<'c> From<&'c mut SqliteConnection> for Conn<'c> {
    fn from(conn: &'c mut SqliteConnection) -> Self {
        Conn::Sqlite(conn)
    }
}

#[cfg(feature = "postgres")]
impl<'c> From<&'c mut PgConnection> for Conn<'c> {
    fn from(conn: &'c mut PgConnection) -> Self {
        Conn::Postgres(conn)
    }
}

/// Runs `$body` once per backend this build has, with `$bound` bound to the
/// variant's content; the one place the variants are listed (the public
/// macros below forward to it). Not part of the API.
#[cfg(all(feature = "sqlite", feature = "postgres"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __dtx_each_backend {
    ($value:expr, $enum:ident, |$bound:ident| $body:expr) => {
        match $value {
            $crate::db::$enum::Sqlite($bound) => $body,
            $crate::db::$enum::Postgres($bound) => $body,
        }
    };
}

#[cfg(all(feature = "sqlite", not(feature = "postgres")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __dtx_each_backend {
    ($value:expr, $enum:ident, |$bound:ident| $body:expr) => {
        match $value {
            $crate::db::$enum::Sqlite($bound) => $body,
        }
    };
}

#[cfg(all(feature = "postgres", not(feature = "sqlite")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __dtx_each_backend {
    ($value:expr, $enum:ident, |$bound:ident| $body:expr) => {
        match $value {
            $crate::db::$enum::Postgres($bound) => $body,
        }
    };
}

/// Runs code written once on whichever pool a [`Db`](crate::db::Db) holds:
/// `on_db!(&db, |pool| body)` binds `pool` to `&SqlitePool` or `&PgPool`
/// (the body is expanded once per backend, so it uses concrete types), and
/// `on_db!(&db, |pool, barrier| body)` also binds `barrier` to the
/// [`Barrier`](crate::barrier::Barrier) of that backend.
///
/// The expansions are the arms of one `match`, so they must have the same
/// type: a body whose value is backend-specific (sqlx's `QueryResult` of
/// `execute`) ends with `;` or maps it (`.rows_affected()`); rows read with
/// `query_as` into your own types are the same on both.
///
/// ```no_run
/// # async fn f(db: &dtx_sdk::db::Db) -> Result<(), sqlx::Error> {
/// let products: i64 = dtx_sdk::on_db!(db, |pool| {
///     sqlx::query_scalar("SELECT COUNT(*) FROM products").fetch_one(pool).await?
/// });
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! on_db {
    ($db:expr, |$pool:ident| $body:expr) => {
        $crate::__dtx_each_backend!($db, Db, |$pool| $body)
    };
    ($db:expr, |$pool:ident, $barrier:ident| $body:expr) => {
        $crate::__dtx_each_backend!($db, Db, |$pool| {
            let $barrier = $crate::barrier::Barrier::for_pool($pool);
            $body
        })
    };
}

/// Runs code written once on whichever connection a
/// [`Conn`](crate::db::Conn) holds: `on_conn!(conn, |c| body)` consumes
/// `conn` and binds `c` to `&mut SqliteConnection` or `&mut PgConnection`
/// (the body is expanded once per backend). Given a `&mut Conn`, `c` is a
/// `&mut &mut ...Connection`: write `&mut **c` where sqlx wants the
/// connection, or pass `conn.reborrow()` instead. As with
/// [`on_db!`](crate::on_db), the expansions must have the same type.
///
/// ```no_run
/// # async fn f(conn: dtx_sdk::db::Conn<'_>) -> Result<(), sqlx::Error> {
/// dtx_sdk::on_conn!(conn, |c| {
///     sqlx::query("UPDATE stock SET held = held + 1").execute(&mut *c).await?;
///     sqlx::query("INSERT INTO ledger (op) VALUES ('hold')").execute(&mut *c).await?;
/// });
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, |$c:ident| $body:expr) => {
        $crate::__dtx_each_backend!($conn, Conn, |$c| $body)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            redacted("postgres://dtx:s3cret@db.internal/orders"),
            "postgres://dtx:***@db.internal/orders"
        );
        assert_eq!(
            redacted("postgres://db.internal/orders"),
            "postgres://db.internal/orders"
        );
        assert_eq!(redacted("sqlite:orders.db"), "sqlite:orders.db");
    }

    #[tokio::test]
    async fn an_unknown_scheme_is_refused_with_the_accepted_ones() {
        let error = Db::connect("mysql://root:pw@localhost/shop")
            .await
            .expect_err("mysql is not a backend");
        let message = error.to_string();
        assert!(
            message.contains("mysql://root:***@localhost/shop"),
            "{message}"
        );
        assert!(message.contains("sqlite:<file>"), "{message}");
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn sqlite_is_created_in_wal_mode_with_a_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("fresh.db").display());
        let db = Db::connect(&url).await.expect("a missing file is created");
        let Db::Sqlite(pool) = &db else {
            panic!("an sqlite URL gives an SQLite pool")
        };
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let timeout_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(timeout_ms, SQLITE_BUSY_TIMEOUT.as_millis() as i64);
        db.migrate().await.expect("the SDK's tables");
        let barrier_rows: i64 = on_db!(&db, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM dtx_barrier"
        )
        .fetch_one(pool)
        .await
        .unwrap());
        assert_eq!(barrier_rows, 0);
    }
}
