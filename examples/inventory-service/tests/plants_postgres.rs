//! The 2PC planted defects on PostgreSQL, where 2PC runs on prepared
//! transactions (the SDK's XA helper) as in the fault-injection harness:
//! `commit-aborted-2pc` commits a prepared branch on rollback,
//! `rollback-leaves-prepared` leaves it in `pg_prepared_xacts`; without a
//! plant the rollback removes it and nothing stays sold.
//!
//! PostgreSQL names prepared transactions server-wide, and these tests run
//! at the same time on one shared server: each uses a gid of its own, or
//! one's prepare could find the other's still prepared ("transaction
//! identifier is already in use").

mod support;

use dtx_sdk::db::Db;
use dtx_sdk::xa::Xid;
use dtx_sdk::{BranchContext, BranchOp};
use inventory_service::plants::Plant;
use inventory_service::two_phase::TwoPhase;
use support::{INITIAL, Inventory, row};

/// Whether `gid`'s inventory branch is a prepared transaction now.
async fn is_prepared(inv: &Inventory, gid: &str) -> bool {
    let Db::Postgres(pool) = inv.state.db.db() else {
        panic!("a PostgreSQL inventory");
    };
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts \
         WHERE gid = $1 AND database = current_database())",
    )
    .bind(Xid::of(gid, "inventory").as_str())
    .fetch_one(pool)
    .await
    .expect("read pg_prepared_xacts")
}

/// Rolls `gid`'s branch back through the XA helper itself (past any plant),
/// so that no prepared transaction outlives the test on the shared server.
async fn roll_back_for_real(inv: &Inventory, gid: &str) {
    let TwoPhase::Xa(xa) = &inv.state.two_phase else {
        panic!("2PC by XA on PostgreSQL");
    };
    xa.rollback(&BranchContext::new(gid, "inventory", BranchOp::Rollback))
        .await
        .expect("roll back");
}

#[tokio::test]
async fn without_a_plant_an_xa_rollback_removes_the_prepared_sale() {
    let inv = Inventory::start_on_postgres(None).await;
    assert_eq!(
        inv.call("/2pc/prepare", "g-no-plant", "prepare", 2).await,
        200
    );
    assert!(is_prepared(&inv, "g-no-plant").await);
    assert_eq!(
        inv.call("/2pc/rollback", "g-no-plant", "rollback", 2).await,
        200
    );
    assert!(!is_prepared(&inv, "g-no-plant").await);
    assert_eq!(inv.stock().await, (INITIAL, 0, 0));
    assert!(inv.rows("g-no-plant").await.is_empty());
}

#[tokio::test]
async fn commit_aborted_2pc_commits_the_prepared_sale_on_rollback() {
    let inv = Inventory::start_on_postgres(Some(Plant::CommitAborted2pc)).await;
    assert_eq!(
        inv.call("/2pc/prepare", "g-commit-aborted", "prepare", 2)
            .await,
        200
    );
    assert_eq!(
        inv.call("/2pc/rollback", "g-commit-aborted", "rollback", 2)
            .await,
        200
    );
    assert!(!is_prepared(&inv, "g-commit-aborted").await);
    assert_eq!(inv.stock().await, (8, 0, 2), "the units stay sold");
    assert_eq!(
        inv.rows("g-commit-aborted").await,
        [row("prepare", "available", "sold", 2)]
    );
    // A retry (its first answer lost) is answered success and moves nothing.
    assert_eq!(
        inv.call("/2pc/rollback", "g-commit-aborted", "rollback", 2)
            .await,
        200
    );
    assert_eq!(inv.stock().await, (8, 0, 2));
    // With nothing prepared, the rollback is the normal (null) one.
    assert_eq!(inv.call("/2pc/rollback", "none", "rollback", 2).await, 200);
    assert_eq!(inv.call("/2pc/prepare", "none", "prepare", 2).await, 409);
    assert_eq!(inv.stock().await, (8, 0, 2));
}

#[tokio::test]
async fn rollback_leaves_prepared_answers_success_and_keeps_the_transaction() {
    let inv = Inventory::start_on_postgres(Some(Plant::RollbackLeavesPrepared)).await;
    assert_eq!(
        inv.call("/2pc/prepare", "g-leaves-prepared", "prepare", 2)
            .await,
        200
    );
    assert_eq!(
        inv.call("/2pc/rollback", "g-leaves-prepared", "rollback", 2)
            .await,
        200
    );
    let left_prepared = is_prepared(&inv, "g-leaves-prepared").await;
    let stock = inv.stock().await;
    // Clean up before asserting: a prepared transaction holds its locks on
    // the shared server until it is finished.
    roll_back_for_real(&inv, "g-leaves-prepared").await;
    assert!(left_prepared, "the rollback left the branch prepared");
    assert_eq!(stock, (INITIAL, 0, 0), "a prepared sale is invisible");
    assert!(!is_prepared(&inv, "g-leaves-prepared").await);
}
