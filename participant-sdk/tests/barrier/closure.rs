//! The barrier's closure form (`Barrier::run`, here through the
//! backend-neutral `Db::barrier`): the same rules as the explicit form, the
//! business step written once for both backends.

use crate::support::{ADD, START_BALANCE, TestDb};
use dtx_sdk::barrier::BarrierError;
use dtx_sdk::db::Db;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, WorkError, on_conn};

/// What the step does after adding `delta`.
#[derive(Debug, Clone, Copy)]
enum Then {
    Succeed,
    Refuse(&'static str),
    Fail(&'static str),
}

/// A handler in the closure form: add `delta`, then end as told.
async fn call(
    db: &Db,
    gid: &str,
    op: BranchOp,
    delta: i64,
    then: Then,
) -> Result<BranchAnswer, BarrierError> {
    let ctx = BranchContext::new(gid, "b1", op);
    db.barrier(&ctx, move |conn| {
        Box::pin(async move {
            on_conn!(conn, |c| {
                sqlx::query(ADD).bind(delta).execute(&mut *c).await?;
            });
            match then {
                Then::Succeed => Ok(()),
                Then::Refuse(reason) => Err(WorkError::refused(reason)),
                Then::Fail(why) => Err(WorkError::failed(why)),
            }
        })
    })
    .await
}

pub async fn closure_form_commits_refuses_and_skips_like_the_explicit_one<D: TestDb>() {
    let fresh = D::fresh().await;
    let db = D::db(&fresh.pool);
    for _ in 0..2 {
        let answer = call(&db, "g1", BranchOp::Try, -10, Then::Succeed)
            .await
            .unwrap();
        assert_eq!(answer, BranchAnswer::Success(None));
    }
    assert_eq!(
        D::balance(&fresh.pool).await,
        START_BALANCE - 10,
        "applied once"
    );

    for _ in 0..2 {
        let answer = call(&db, "g2", BranchOp::Try, -10, Then::Refuse("card declined"))
            .await
            .unwrap();
        assert_eq!(answer, BranchAnswer::refused("card declined"), "remembered");
    }
    assert_eq!(
        D::balance(&fresh.pool).await,
        START_BALANCE - 10,
        "the refusal undid its step"
    );

    // The Cancel of the refused Try is a null compensation: its step (which
    // would add 10) does not run.
    let cancel = call(&db, "g2", BranchOp::Cancel, 10, Then::Succeed)
        .await
        .unwrap();
    assert_eq!(cancel, BranchAnswer::Success(None));
    assert_eq!(D::balance(&fresh.pool).await, START_BALANCE - 10);
    assert_eq!(
        D::rows(&fresh.pool).await,
        [
            "g1/b1/try try succeeded",
            "g2/b1/cancel cancel succeeded",
            "g2/b1/try try refused",
        ]
    );
}

pub async fn closure_form_failure_rolls_back_and_the_retry_runs<D: TestDb>() {
    let fresh = D::fresh().await;
    let db = D::db(&fresh.pool);
    let failed = call(
        &db,
        "g1",
        BranchOp::Action,
        -10,
        Then::Fail("the bank timed out"),
    )
    .await;
    match failed {
        Err(BarrierError::Failed(why)) => assert_eq!(why.to_string(), "the bank timed out"),
        other => panic!("expected BarrierError::Failed, got {other:?}"),
    }
    assert_eq!(D::balance(&fresh.pool).await, START_BALANCE, "rolled back");
    assert!(
        D::rows(&fresh.pool).await.is_empty(),
        "barrier row rolled back too"
    );

    // A statement that fails (the CHECK forbids a negative balance) is a
    // database error, rolled back the same way.
    let overdrawn = call(&db, "g1", BranchOp::Action, -1000, Then::Succeed).await;
    assert!(
        matches!(overdrawn, Err(BarrierError::Database(_))),
        "{overdrawn:?}"
    );
    assert!(D::rows(&fresh.pool).await.is_empty());

    let retried = call(&db, "g1", BranchOp::Action, -10, Then::Succeed)
        .await
        .unwrap();
    assert_eq!(retried, BranchAnswer::Success(None));
    assert_eq!(D::balance(&fresh.pool).await, START_BALANCE - 10);
}
