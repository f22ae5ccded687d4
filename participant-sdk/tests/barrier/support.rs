//! What the barrier cases need from a backend: a fresh migrated database with
//! a small business table, a business step, and ways to look inside.

use dtx_sdk::barrier::{Barrier, BarrierDatabase, BarrierError, BarrierWork, Entry, Skipped};
use dtx_sdk::db::Db;
use dtx_sdk::{BranchAnswer, BranchContext};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Pool, Postgres, SqlSafeStr as _, Sqlite};
use std::future::Future;
use std::time::Duration;

/// Connections per pool: more than the number of tasks that race, so they
/// really wait on the database and not on the pool.
const POOL_SIZE: u32 = 10;

/// The one account the business moves money on; it starts at this balance.
pub const START_BALANCE: i64 = 100;

/// A fresh database, kept alive (its temp directory, for SQLite) as long as
/// this value lives.
pub struct Fresh<D: sqlx::Database> {
    pub pool: Pool<D>,
    _dir: Option<tempfile::TempDir>,
}

/// A backend the cases run on.
pub trait TestDb: BarrierDatabase + Sized {
    /// A fresh, migrated database with `accounts` holding one account.
    fn fresh() -> impl Future<Output = Fresh<Self>> + Send;

    /// The business step: `balance += delta` on the work's connection. The
    /// table's CHECK makes a negative balance fail the statement.
    fn add<'a>(
        work: &'a mut BarrierWork<'_, Self>,
        delta: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// The pool as the SDK's backend-neutral [`Db`].
    fn db(pool: &Pool<Self>) -> Db;

    /// The account's balance.
    fn balance(pool: &Pool<Self>) -> impl Future<Output = i64> + Send + '_;

    /// Every barrier row as `gid/branch/op origin outcome`, sorted.
    fn rows(pool: &Pool<Self>) -> impl Future<Output = Vec<String>> + Send + '_;

    /// Applies a migration of the service's own, with sqlx's default
    /// migrations table, as a service that links the SDK would.
    fn service_migrations(pool: &Pool<Self>) -> impl Future<Output = ()> + Send + '_;

    /// Backdates every row of `gid` for operation `op` by `age`.
    fn backdate<'a>(
        pool: &'a Pool<Self>,
        gid: &'a str,
        op: &'a str,
        age: Duration,
    ) -> impl Future<Output = ()> + Send + 'a;
}

const CREATE_ACCOUNTS: &str =
    "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL CHECK (balance >= 0))";
const SEED_ACCOUNT: &str = "INSERT INTO accounts (id, balance) VALUES ('alice', 100)";
pub const ADD: &str = "UPDATE accounts SET balance = balance + $1 WHERE id = 'alice'";
const BALANCE: &str = "SELECT balance FROM accounts WHERE id = 'alice'";
const ROWS: &str = "SELECT gid || '/' || branch_id || '/' || op || ' ' || origin_op || ' ' || outcome \
                    FROM dtx_barrier ORDER BY 1";
const BACKDATE: &str =
    "UPDATE dtx_barrier SET created_at_ms = created_at_ms - $1 WHERE gid = $2 AND op = $3";

macro_rules! common {
    () => {
        fn add<'a>(
            work: &'a mut BarrierWork<'_, Self>,
            delta: i64,
        ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
            async move {
                sqlx::query(ADD).bind(delta).execute(&mut **work).await?;
                Ok(())
            }
        }

        fn balance(pool: &Pool<Self>) -> impl Future<Output = i64> + Send + '_ {
            async move {
                sqlx::query_scalar(BALANCE)
                    .fetch_one(pool)
                    .await
                    .expect("read the balance")
            }
        }

        fn rows(pool: &Pool<Self>) -> impl Future<Output = Vec<String>> + Send + '_ {
            async move {
                sqlx::query_scalar(ROWS)
                    .fetch_all(pool)
                    .await
                    .expect("read the barrier rows")
            }
        }

        fn service_migrations(pool: &Pool<Self>) -> impl Future<Output = ()> + Send + '_ {
            async move {
                let migration = Migration::new(
                    1,
                    "service schema".into(),
                    MigrationType::Simple,
                    "CREATE TABLE orders (id TEXT PRIMARY KEY)".into_sql_str(),
                    false,
                );
                Migrator::with_migrations(vec![migration])
                    .run(pool)
                    .await
                    .expect("the service's own migrations run beside the SDK's");
            }
        }

        fn backdate<'a>(
            pool: &'a Pool<Self>,
            gid: &'a str,
            op: &'a str,
            age: Duration,
        ) -> impl Future<Output = ()> + Send + 'a {
            async move {
                sqlx::query(BACKDATE)
                    .bind(age.as_millis() as i64)
                    .bind(gid)
                    .bind(op)
                    .execute(pool)
                    .await
                    .expect("backdate barrier rows");
            }
        }
    };
}

impl TestDb for Sqlite {
    async fn fresh() -> Fresh<Sqlite> {
        let dir = tempfile::tempdir().expect("create a temp dir");
        // WAL and a long busy timeout: racing transactions queue for the
        // write lock (taken by BEGIN IMMEDIATE) instead of failing.
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("participant.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect_with(options)
            .await
            .expect("open the SQLite database");
        prepare(&pool).await;
        Fresh {
            pool,
            _dir: Some(dir),
        }
    }

    fn db(pool: &Pool<Sqlite>) -> Db {
        Db::Sqlite(pool.clone())
    }

    common!();
}

impl TestDb for Postgres {
    async fn fresh() -> Fresh<Postgres> {
        let url = dtx_tests::postgres::fresh_database()
            .await
            .expect("a fresh PostgreSQL database");
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .connect(&url)
            .await
            .expect("connect to PostgreSQL");
        prepare(&pool).await;
        Fresh { pool, _dir: None }
    }

    fn db(pool: &Pool<Postgres>) -> Db {
        Db::Postgres(pool.clone())
    }

    common!();
}

async fn prepare<D: TestDb>(pool: &Pool<D>)
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    Barrier::<D>::new()
        .migrate(pool)
        .await
        .expect("apply the barrier migrations");
    for sql in [CREATE_ACCOUNTS, SEED_ACCOUNT] {
        sqlx::raw_sql(sql)
            .execute(pool)
            .await
            .expect("create the business table");
    }
}

/// What a handler did with one call.
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// The business ran; this is what the handler answered.
    Applied(BranchAnswer),
    /// The barrier skipped the business.
    Skipped(Skipped),
}

impl Handled {
    /// The answer the participant gave.
    pub fn answer(&self) -> BranchAnswer {
        match self {
            Handled::Applied(answer) => answer.clone(),
            Handled::Skipped(skipped) => skipped.answer(),
        }
    }
}

/// What the business of a call does once it passes the barrier.
#[derive(Debug, Clone)]
pub enum Business {
    /// Add `delta` and succeed.
    Add(i64),
    /// Add `delta` and succeed with this body.
    AddWithBody(i64, serde_json::Value),
    /// Add `delta`, then refuse with this reason.
    AddThenRefuse(i64, &'static str),
}

/// A participant handler, as a service would write it.
pub async fn handle<D: TestDb>(
    pool: &Pool<D>,
    context: &BranchContext,
    business: Business,
) -> Result<Handled, BarrierError> {
    let mut work = match Barrier::<D>::new().begin(pool, context).await? {
        Entry::Proceed(work) => work,
        Entry::Skip(skipped) => return Ok(Handled::Skipped(skipped)),
    };
    // Yield between the barrier and the business, and between the business
    // and the commit, so racing tasks interleave at those points.
    tokio::task::yield_now().await;
    let answer = match business {
        Business::Add(delta) => {
            D::add(&mut work, delta).await?;
            tokio::task::yield_now().await;
            work.succeed().await?
        }
        Business::AddWithBody(delta, body) => {
            D::add(&mut work, delta).await?;
            work.succeed_with(body).await?
        }
        Business::AddThenRefuse(delta, reason) => {
            // The step may fail (CHECK) or succeed; the refusal undoes it
            // either way.
            let _ = D::add(&mut work, delta).await;
            work.refuse(reason).await?
        }
    };
    Ok(Handled::Applied(answer))
}
