//! A prepared 2PC branch keeps its row locks until its decision; the
//! helpers must neither wait for such a row without bound nor let those
//! waits take the connection the decision needs (issue 16: the inventory's
//! whole pool waited on one prepared row, and the commit that would have
//! released it never got a connection). On a fresh database of the shared
//! test server; every test leaves nothing prepared.

use axum::response::IntoResponse;
use dtx_sdk::barrier::BarrierError;
use dtx_sdk::db::{Db, is_lock_timeout};
use dtx_sdk::xa::{XaError, XaParticipant, Xid};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, WorkError};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;

/// The service's pool size in these tests: small, so that a test can hold
/// all of it.
const POOL_SIZE: u32 = 2;

/// A bound on a wait that the helpers must end by themselves, so that a
/// regression fails the test instead of hanging it. Not a timing under
/// test: the lock timeout is far shorter.
const PATIENCE: Duration = Duration::from_secs(30);

/// Rolls back, when a test fails, what it left prepared in its database:
/// a prepared transaction outlives the test, holding one of the shared
/// server's slots and its locks.
struct CleanUpOnFailure(PgConnectOptions);

impl Drop for CleanUpOnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let options = self.0.clone();
        // The test's runtime is unwinding: clean up on a runtime of our own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let mut conn = PgConnection::connect_with(&options).await?;
                let left: Vec<String> = sqlx::query_scalar(
                    "SELECT gid FROM pg_prepared_xacts WHERE database = current_database()",
                )
                .fetch_all(&mut conn)
                .await?;
                for xid in left {
                    let sql = format!("ROLLBACK PREPARED '{xid}'");
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await?;
                }
                Ok::<(), sqlx::Error>(())
            })
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not roll back what the test left prepared: {e}");
        }
    }
}

/// A participant on a fresh database with the SDK's tables and one stock
/// row (`apple`, 10) that every test's work updates, and the guard that
/// cleans up after a failure (keep it to the end of the test).
async fn fresh() -> (XaParticipant, CleanUpOnFailure) {
    let url = dtx_tests::postgres::fresh_database()
        .await
        .expect("a fresh PostgreSQL database");
    let pool = PgPoolOptions::new()
        .max_connections(POOL_SIZE)
        // A decision stuck behind the pool fails the test in seconds.
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .expect("connect to PostgreSQL");
    let xa = XaParticipant::new(pool)
        .await
        .expect("prepared transactions are enabled");
    xa.migrate().await.expect("apply the SDK migrations");
    sqlx::raw_sql(
        "CREATE TABLE stock (sku TEXT PRIMARY KEY, qty BIGINT NOT NULL); \
         INSERT INTO stock VALUES ('apple', 10)",
    )
    .execute(xa.pool())
    .await
    .expect("create the business table");
    let guard = CleanUpOnFailure(xa.pool().connect_options().as_ref().clone());
    (xa, guard)
}

/// Takes one apple in `gid`'s prepare.
async fn prepare_take(xa: &XaParticipant, gid: &str) -> Result<BranchAnswer, XaError> {
    let context = ctx(gid, BranchOp::Prepare);
    let call = xa.prepare(&context, move |conn| {
        Box::pin(async move {
            sqlx::query("UPDATE stock SET qty = qty - 1 WHERE sku = 'apple'")
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    });
    tokio::time::timeout(PATIENCE, call)
        .await
        .expect("the prepare ends by itself instead of waiting on the row")
}

/// The branch `lock-waits` of `gid`. Prepared transactions are named
/// server-wide, not per database, so every test here uses gids of its own.
fn ctx(gid: &str, op: BranchOp) -> BranchContext {
    BranchContext::new(gid, "lock-waits", op)
}

async fn apples(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT qty FROM stock WHERE sku = 'apple'")
        .fetch_one(pool)
        .await
        .expect("read the stock")
}

async fn prepared(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
    )
    .fetch_all(pool)
    .await
    .expect("read pg_prepared_xacts")
}

#[tokio::test]
async fn a_decision_gets_a_connection_while_the_pool_is_all_taken() {
    let (xa, _guard) = fresh().await;
    assert_eq!(
        prepare_take(&xa, "decision-1").await.unwrap(),
        BranchAnswer::success()
    );
    // Every connection of the service's pool busy elsewhere (in the
    // harness: waiting on the row decision-1 holds).
    let mut held = Vec::new();
    for _ in 0..POOL_SIZE {
        held.push(xa.pool().acquire().await.expect("a pooled connection"));
    }
    let commit = xa.commit(&ctx("decision-1", BranchOp::Commit)).await;
    assert_eq!(
        commit.expect("the commit gets a connection"),
        BranchAnswer::success()
    );
    let rollback = xa.rollback(&ctx("decision-2", BranchOp::Rollback)).await;
    assert_eq!(
        rollback.expect("so does a rollback"),
        BranchAnswer::success()
    );
    drop(held);
    assert!(prepared(xa.pool()).await.is_empty());
    assert_eq!(apples(xa.pool()).await, 9);
}

#[tokio::test]
async fn a_prepare_waiting_on_a_prepared_row_gives_up_and_asks_to_be_retried() {
    let (xa, _guard) = fresh().await;
    assert_eq!(
        prepare_take(&xa, "retried-1").await.unwrap(),
        BranchAnswer::success()
    );

    let error = prepare_take(&xa, "retried-2")
        .await
        .expect_err("the row is held by retried-1's prepared transaction");
    assert!(
        matches!(&error, XaError::Database(e) if is_lock_timeout(e)),
        "{error}"
    );
    let response = error.into_response();
    assert_eq!(response.status(), 503, "an unknown outcome: retried");
    assert_eq!(response.headers()["retry-after"], "1");
    // Nothing of retried-2 was prepared: no vote was given.
    assert_eq!(
        prepared(xa.pool()).await,
        [Xid::of("retried-1", "lock-waits").to_string()]
    );

    // Once retried-1 is decided, the coordinator's retry of retried-2's prepare votes.
    let commit = xa
        .commit(&ctx("retried-1", BranchOp::Commit))
        .await
        .unwrap();
    assert_eq!(commit, BranchAnswer::success());
    assert_eq!(
        prepare_take(&xa, "retried-2").await.unwrap(),
        BranchAnswer::success()
    );
    let commit = xa
        .commit(&ctx("retried-2", BranchOp::Commit))
        .await
        .unwrap();
    assert_eq!(commit, BranchAnswer::success());
    assert!(prepared(xa.pool()).await.is_empty());
    assert_eq!(apples(xa.pool()).await, 8);
}

#[tokio::test]
async fn a_barrier_step_waiting_on_a_prepared_row_gives_up_and_changes_nothing() {
    let (xa, _guard) = fresh().await;
    let db = Db::Postgres(xa.pool().clone());
    assert_eq!(
        prepare_take(&xa, "barrier-1").await.unwrap(),
        BranchAnswer::success()
    );

    let action = ctx("barrier-saga", BranchOp::Action);
    let take = || {
        db.barrier(&action, |conn| {
            Box::pin(async move {
                dtx_sdk::on_conn!(conn, |c| {
                    sqlx::query("UPDATE stock SET qty = qty - 1 WHERE sku = 'apple'")
                        .execute(&mut *c)
                        .await?;
                });
                Ok::<(), WorkError>(())
            })
        })
    };
    let error = tokio::time::timeout(PATIENCE, take())
        .await
        .expect("the step ends by itself instead of waiting on the row")
        .expect_err("the row is held by barrier-1's prepared transaction");
    assert!(
        matches!(&error, BarrierError::Database(e) if is_lock_timeout(e)),
        "{error}"
    );

    let commit = xa
        .commit(&ctx("barrier-1", BranchOp::Commit))
        .await
        .unwrap();
    assert_eq!(commit, BranchAnswer::success());
    // The barrier row went with the failed attempt: the retry runs anew.
    let retry = tokio::time::timeout(PATIENCE, take()).await.unwrap();
    assert_eq!(retry.unwrap(), BranchAnswer::success());
    assert_eq!(apples(xa.pool()).await, 8);
}
