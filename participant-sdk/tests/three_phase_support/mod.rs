//! What the 3PC helper's tests share: the business they run (`Deposits`,
//! an account whose deposits are held by `pre_commit`), a fresh database on
//! SQLite (a temp file) or PostgreSQL (a fresh database on the shared test
//! server), the fixture that wires them to a `ThreePhase`, and the macro
//! that runs a case on both backends.
// Each test binary uses part of it.
#![allow(dead_code)]

use dtx_sdk::db::Conn;
use dtx_sdk::three_phase::{
    BranchState, DecidedBy, ThreePhase, ThreePhaseConfig, ThreePhaseDatabase, ThreePhaseHooks,
};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, SignatureKeys, WorkError, on_conn};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Pool, Postgres, Sqlite};
use std::future::Future;
use std::time::Duration;

/// The business, written once for both backends: `pre_commit` holds `amount` for the account, `do_commit`
/// moves it to the balance, `abort` releases it. `can_commit` refuses
/// amounts over 1000.
#[derive(Clone, Copy)]
pub struct Deposits;

const HOLD: &str = "UPDATE accounts SET held = held + $1 WHERE id = 'alice'";
const APPLY: &str =
    "UPDATE accounts SET held = held - $1, balance = balance + $1 WHERE id = 'alice'";
const RELEASE: &str = "UPDATE accounts SET held = held - $1 WHERE id = 'alice'";

fn amount(payload: &Value) -> i64 {
    payload["amount"].as_i64().unwrap_or(0)
}

impl ThreePhaseHooks for Deposits {
    async fn can_commit(
        &self,
        _conn: Conn<'_>,
        _ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        if amount(payload) > 1000 {
            return Err(WorkError::refused("deposit too large"));
        }
        Ok(())
    }

    async fn pre_commit(
        &self,
        conn: Conn<'_>,
        _ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        change(conn, HOLD, amount(payload)).await
    }

    async fn do_commit(
        &self,
        conn: Conn<'_>,
        _ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        change(conn, APPLY, amount(payload)).await
    }

    async fn abort(
        &self,
        conn: Conn<'_>,
        _ctx: &BranchContext,
        payload: &Value,
    ) -> Result<(), WorkError> {
        change(conn, RELEASE, amount(payload)).await
    }
}

/// Runs one of the statements above on whichever backend `conn` is.
async fn change(conn: Conn<'_>, sql: &'static str, amount: i64) -> Result<(), WorkError> {
    on_conn!(conn, |c| {
        sqlx::query(sql).bind(amount).execute(&mut *c).await?;
    });
    Ok(())
}

/// A backend the cases run on.
pub trait TestDb: ThreePhaseDatabase + Sized {
    /// A fresh database (and what keeps it alive).
    fn fresh() -> impl Future<Output = (Pool<Self>, Option<tempfile::TempDir>)> + Send;
    /// (balance, held) of alice.
    fn account(pool: &Pool<Self>) -> impl Future<Output = (i64, i64)> + Send + '_;
}

impl TestDb for Sqlite {
    async fn fresh() -> (Pool<Sqlite>, Option<tempfile::TempDir>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("participant.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .expect("open SQLite");
        (pool, Some(dir))
    }

    async fn account(pool: &Pool<Sqlite>) -> (i64, i64) {
        sqlx::query_as(ACCOUNT)
            .fetch_one(pool)
            .await
            .expect("read the account")
    }
}

impl TestDb for Postgres {
    async fn fresh() -> (Pool<Postgres>, Option<tempfile::TempDir>) {
        let url = dtx_tests::postgres::fresh_database()
            .await
            .expect("a fresh database");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .expect("connect to PostgreSQL");
        (pool, None)
    }

    async fn account(pool: &Pool<Postgres>) -> (i64, i64) {
        sqlx::query_as(ACCOUNT)
            .fetch_one(pool)
            .await
            .expect("read the account")
    }
}

const ACCOUNT: &str = "SELECT balance, held FROM accounts WHERE id = 'alice'";

pub struct Fixture<D: TestDb> {
    pub participant: ThreePhase<D, Deposits>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn fixture<D: TestDb>(config: ThreePhaseConfig) -> Fixture<D>
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let (pool, dir) = D::fresh().await;
    let participant = ThreePhase::with_config(pool, Deposits, config, SignatureKeys::disabled());
    participant
        .migrate()
        .await
        .expect("apply the SDK migrations");
    for sql in [
        "CREATE TABLE accounts (id TEXT PRIMARY KEY, balance BIGINT NOT NULL, held BIGINT NOT NULL)",
        "INSERT INTO accounts (id, balance, held) VALUES ('alice', 0, 0)",
    ] {
        sqlx::raw_sql(sql)
            .execute(participant.pool())
            .await
            .expect("business table");
    }
    Fixture {
        participant,
        _dir: dir,
    }
}

impl<D: TestDb> Fixture<D> {
    pub async fn call(&self, gid: &str, op: BranchOp) -> BranchAnswer {
        let ctx = BranchContext::new(gid, "b1", op);
        self.participant
            .handle(&ctx, &json!({"amount": 40}))
            .await
            .expect("the call is answered")
    }

    pub async fn state(&self, gid: &str) -> Option<(BranchState, Option<DecidedBy>)> {
        self.participant
            .record(gid, "b1")
            .await
            .expect("read the state row")
            .map(|r| (r.state, r.decided_by))
    }

    pub async fn account(&self) -> (i64, i64) {
        D::account(self.participant.pool()).await
    }
}

pub fn refused(answer: &BranchAnswer) -> bool {
    matches!(answer, BranchAnswer::Refused(_))
}

/// Runs each generic case (a function `case::<D: TestDb>()` at the crate
/// root) as one test on SQLite and one on PostgreSQL.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::$case::<sqlx::Sqlite>().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    crate::$case::<sqlx::Postgres>().await;
                }
            )*
        }
    };
}
