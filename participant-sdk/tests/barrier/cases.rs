//! The barrier's rules, each written once and run on every backend (see
//! `main.rs`). The business moves money on one account; a rule holds when
//! the balance and the answers say it does.

use crate::support::{Business, Handled, START_BALANCE, TestDb, handle};
use dtx_sdk::barrier::{Barrier, Recorded, Skipped};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp};
use std::sync::Arc;
use std::time::Duration;

fn ctx(gid: &str, op: BranchOp) -> BranchContext {
    BranchContext::new(gid, "b1", op)
}

pub async fn first_call_applies<D: TestDb>() {
    let db = D::fresh().await;
    let handled = handle(&db.pool, &ctx("g1", BranchOp::Try), Business::Add(-10))
        .await
        .unwrap();
    assert_eq!(handled, Handled::Applied(BranchAnswer::Success(None)));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE - 10);
    assert_eq!(D::rows(&db.pool).await, ["g1/b1/try try succeeded"]);
}

pub async fn repeated_success_answers_like_the_first<D: TestDb>() {
    let db = D::fresh().await;
    let body = serde_json::json!({"reservation": 7});
    let first = handle(
        &db.pool,
        &ctx("g1", BranchOp::Action),
        Business::AddWithBody(-10, body.clone()),
    )
    .await
    .unwrap();
    assert_eq!(first.answer(), BranchAnswer::Success(Some(body.clone())));
    for _ in 0..3 {
        let again = handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
            .await
            .unwrap();
        assert_eq!(
            again,
            Handled::Skipped(Skipped::Duplicate(Recorded::Succeeded(Some(body.clone()))))
        );
        assert_eq!(again.answer(), first.answer());
    }
    assert_eq!(
        D::balance(&db.pool).await,
        START_BALANCE - 10,
        "applied once"
    );
}

pub async fn repeated_refusal_answers_like_the_first_and_changes_nothing<D: TestDb>() {
    let db = D::fresh().await;
    let first = handle(
        &db.pool,
        &ctx("g1", BranchOp::Action),
        Business::AddThenRefuse(-10, "card declined"),
    )
    .await
    .unwrap();
    assert_eq!(first.answer(), BranchAnswer::refused("card declined"));
    assert_eq!(
        D::balance(&db.pool).await,
        START_BALANCE,
        "refusal undid the business"
    );

    let again = handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
        .await
        .unwrap();
    assert_eq!(
        again,
        Handled::Skipped(Skipped::Duplicate(Recorded::Refused(
            "card declined".into()
        )))
    );
    assert_eq!(again.answer(), first.answer());
    assert_eq!(D::balance(&db.pool).await, START_BALANCE);

    // The coordinator compensates a refused branch too; there is nothing to
    // undo, so the compensation must not touch the account.
    let compensate = handle(
        &db.pool,
        &ctx("g1", BranchOp::Compensate),
        Business::Add(10),
    )
    .await
    .unwrap();
    assert_eq!(compensate, Handled::Skipped(Skipped::NullCompensation));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE);
}

pub async fn refusal_after_a_failed_statement_is_recorded<D: TestDb>() {
    let db = D::fresh().await;
    // -1000 breaks the CHECK: on PostgreSQL this aborts the transaction,
    // which the refusal must recover from to record itself.
    let first = handle(
        &db.pool,
        &ctx("g1", BranchOp::Try),
        Business::AddThenRefuse(-1000, "insufficient funds"),
    )
    .await
    .unwrap();
    assert_eq!(first.answer(), BranchAnswer::refused("insufficient funds"));
    let again = handle(&db.pool, &ctx("g1", BranchOp::Try), Business::Add(-10))
        .await
        .unwrap();
    assert_eq!(again.answer(), BranchAnswer::refused("insufficient funds"));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE);
}

pub async fn cancel_without_try_is_a_null_compensation<D: TestDb>() {
    let db = D::fresh().await;
    let cancel = handle(&db.pool, &ctx("g1", BranchOp::Cancel), Business::Add(10))
        .await
        .unwrap();
    assert_eq!(cancel, Handled::Skipped(Skipped::NullCompensation));
    assert_eq!(cancel.answer(), BranchAnswer::Success(None));
    assert_eq!(
        D::balance(&db.pool).await,
        START_BALANCE,
        "business untouched"
    );
    let again = handle(&db.pool, &ctx("g1", BranchOp::Cancel), Business::Add(10))
        .await
        .unwrap();
    assert_eq!(
        again,
        Handled::Skipped(Skipped::Duplicate(Recorded::Succeeded(None)))
    );
    assert_eq!(
        D::rows(&db.pool).await,
        [
            "g1/b1/cancel cancel succeeded",
            "g1/b1/try cancel never_ran"
        ]
    );
}

pub async fn try_after_cancel_is_suspended<D: TestDb>() {
    let db = D::fresh().await;
    handle(&db.pool, &ctx("g1", BranchOp::Cancel), Business::Add(10))
        .await
        .unwrap();
    for _ in 0..2 {
        let late = handle(&db.pool, &ctx("g1", BranchOp::Try), Business::Add(-10))
            .await
            .unwrap();
        assert_eq!(late, Handled::Skipped(Skipped::Suspended));
        assert!(matches!(late.answer(), BranchAnswer::Refused(_)));
    }
    assert_eq!(
        D::balance(&db.pool).await,
        START_BALANCE,
        "business untouched"
    );
}

pub async fn compensate_after_action_undoes_it_once<D: TestDb>() {
    let db = D::fresh().await;
    handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
        .await
        .unwrap();
    for expected in [
        Handled::Applied(BranchAnswer::Success(None)),
        Handled::Skipped(Skipped::Duplicate(Recorded::Succeeded(None))),
    ] {
        let undo = handle(
            &db.pool,
            &ctx("g1", BranchOp::Compensate),
            Business::Add(10),
        )
        .await
        .unwrap();
        assert_eq!(undo, expected);
    }
    assert_eq!(D::balance(&db.pool).await, START_BALANCE);
    // A late duplicate of the action is answered as before, not re-run.
    let late = handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
        .await
        .unwrap();
    assert_eq!(late.answer(), BranchAnswer::Success(None));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE);
}

pub async fn phase_two_refusal_is_not_remembered<D: TestDb>() {
    let db = D::fresh().await;
    let refused = handle(
        &db.pool,
        &ctx("g1", BranchOp::Confirm),
        Business::AddThenRefuse(1, "ledger locked"),
    )
    .await
    .unwrap();
    assert_eq!(refused.answer(), BranchAnswer::refused("ledger locked"));
    // The coordinator retries a confirm until it succeeds: the retry runs.
    let retry = handle(&db.pool, &ctx("g1", BranchOp::Confirm), Business::Add(1))
        .await
        .unwrap();
    assert_eq!(retry, Handled::Applied(BranchAnswer::Success(None)));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE + 1);
}

pub async fn error_rolls_back_and_the_retry_runs<D: TestDb>() {
    let db = D::fresh().await;
    // The handler fails (a CHECK violation it does not turn into a refusal):
    // the work is dropped, which must roll back the barrier row too.
    let failed = handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-1000)).await;
    assert!(failed.is_err(), "the business step fails");
    assert!(D::rows(&db.pool).await.is_empty(), "nothing recorded");
    let retry = handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
        .await
        .unwrap();
    assert_eq!(retry, Handled::Applied(BranchAnswer::Success(None)));
    assert_eq!(D::balance(&db.pool).await, START_BALANCE - 10);
}

/// How many copies of one call race in `identical_calls_race_and_one_applies`.
const RACERS: usize = 8;

pub async fn identical_calls_race_and_one_applies<D: TestDb>() {
    let db = D::fresh().await;
    for op in [BranchOp::Action, BranchOp::Try] {
        let gid = format!("race-{op}");
        let start = Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..RACERS {
            let (pool, start, context) = (db.pool.clone(), start.clone(), ctx(&gid, op));
            tasks.spawn(async move {
                start.wait().await;
                handle(&pool, &context, Business::Add(-10)).await
            });
        }
        let results: Vec<Handled> = tasks
            .join_all()
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let applied = results
            .iter()
            .filter(|h| matches!(h, Handled::Applied(_)))
            .count();
        assert_eq!(applied, 1, "exactly one applies: {results:?}");
        for handled in &results {
            assert_eq!(handled.answer(), BranchAnswer::Success(None), "{results:?}");
        }
    }
    assert_eq!(D::balance(&db.pool).await, START_BALANCE - 20);
}

/// Rounds of `cancel_racing_its_try_never_leaves_a_try_uncancelled`.
const ROUNDS: usize = 60;

pub async fn cancel_racing_its_try_never_leaves_a_try_uncancelled<D: TestDb>() {
    let db = D::fresh().await;
    let (mut both_ran, mut suspended) = (0, 0);
    for round in 0..ROUNDS {
        let gid = format!("round-{round}");
        let start = Arc::new(tokio::sync::Barrier::new(2));
        let spawn = |op, delta| {
            let (pool, start, context) = (db.pool.clone(), start.clone(), ctx(&gid, op));
            tokio::spawn(async move {
                start.wait().await;
                handle(&pool, &context, Business::Add(delta)).await
            })
        };
        let try_task = spawn(BranchOp::Try, -10);
        let cancel_task = spawn(BranchOp::Cancel, 10);
        let tried = try_task.await.unwrap().unwrap();
        let cancelled = cancel_task.await.unwrap().unwrap();
        match (&tried, &cancelled) {
            (Handled::Applied(_), Handled::Applied(_)) => both_ran += 1,
            (Handled::Skipped(Skipped::Suspended), Handled::Skipped(Skipped::NullCompensation)) => {
                suspended += 1
            }
            other => panic!("round {round}: a try and its cancel ended as {other:?}"),
        }
        assert_eq!(
            D::balance(&db.pool).await,
            START_BALANCE,
            "round {round}: the business must net to zero ({tried:?}, {cancelled:?})"
        );
    }
    // Which side wins is up to the scheduler; both are fine. Printed so a
    // reader can see the race really went both ways.
    println!("try then cancel: {both_ran}, cancel first (try suspended): {suspended}");
}

pub async fn cleanup_removes_only_old_transactions<D: TestDb>() {
    let db = D::fresh().await;
    let day = Duration::from_secs(24 * 3600);
    for gid in ["old", "mixed", "new"] {
        handle(&db.pool, &ctx(gid, BranchOp::Try), Business::Add(-10))
            .await
            .unwrap();
        handle(&db.pool, &ctx(gid, BranchOp::Cancel), Business::Add(10))
            .await
            .unwrap();
    }
    D::backdate(&db.pool, "old", "try", 10 * day).await;
    D::backdate(&db.pool, "old", "cancel", 9 * day).await;
    // `mixed` has an old try but a recent cancel: its transaction may still
    // be in flight, so none of its rows may go.
    D::backdate(&db.pool, "mixed", "try", 10 * day).await;

    let deleted = Barrier::<D>::new()
        .cleanup_older_than(&db.pool, 7 * day)
        .await
        .unwrap();
    assert_eq!(deleted, 2);
    assert_eq!(
        D::rows(&db.pool).await,
        [
            "mixed/b1/cancel cancel succeeded",
            "mixed/b1/try try succeeded",
            "new/b1/cancel cancel succeeded",
            "new/b1/try try succeeded",
        ]
    );
    let again = Barrier::<D>::new()
        .cleanup_older_than(&db.pool, 7 * day)
        .await
        .unwrap();
    assert_eq!(again, 0);
}

pub async fn migrations_coexist_with_the_service_migrations<D: TestDb>() {
    // `fresh` applied the SDK's migrations; the service's own come next,
    // then the SDK's again (the next start-up), then the service's again.
    let db = D::fresh().await;
    D::service_migrations(&db.pool).await;
    Barrier::<D>::new().migrate(&db.pool).await.unwrap();
    D::service_migrations(&db.pool).await;
    handle(&db.pool, &ctx("g1", BranchOp::Action), Business::Add(-10))
        .await
        .unwrap();
}
