//! The 3PC helper's state machine (`dtx_sdk::three_phase`) against real
//! databases: every case runs on SQLite and on PostgreSQL, and checks the
//! state row and the business table after each step. The watchdog has its
//! own file (`three_phase_watchdog.rs`).

#[macro_use]
mod three_phase_support;

use dtx_sdk::three_phase::{BranchState, DecidedBy, ThreePhaseConfig};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp};
use serde_json::json;
use sqlx::{Pool, Sqlite};
use three_phase_support::{TestDb, fixture, refused};

async fn happy_path_commits_and_records_the_coordinator<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    assert_eq!(
        f.call("g1", BranchOp::CanCommit).await,
        BranchAnswer::success()
    );
    assert_eq!(f.state("g1").await, Some((BranchState::VotedYes, None)));
    assert_eq!(f.account().await, (0, 0), "can_commit holds nothing");
    assert_eq!(
        f.call("g1", BranchOp::PreCommit).await,
        BranchAnswer::success()
    );
    assert_eq!(f.state("g1").await, Some((BranchState::PreCommitted, None)));
    assert_eq!(f.account().await, (0, 40));
    assert_eq!(
        f.call("g1", BranchOp::DoCommit).await,
        BranchAnswer::success()
    );
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Committed, Some(DecidedBy::Coordinator)))
    );
    assert_eq!(f.account().await, (40, 0));
}

async fn repeated_calls_answer_as_the_first_and_run_hooks_once<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    for op in [BranchOp::CanCommit, BranchOp::PreCommit, BranchOp::DoCommit] {
        for _ in 0..2 {
            assert_eq!(f.call("g1", op).await, BranchAnswer::success(), "{op}");
        }
    }
    assert_eq!(f.account().await, (40, 0), "each hook ran once");
    // A late duplicate of an earlier step after the commit still says yes.
    assert_eq!(
        f.call("g1", BranchOp::PreCommit).await,
        BranchAnswer::success()
    );
    // Abort after commit is a protocol violation: refused, nothing changes.
    assert!(refused(&f.call("g1", BranchOp::Abort).await));
    assert_eq!(f.account().await, (40, 0));

    // The same for an aborted branch: abort twice releases once.
    f.call("g2", BranchOp::CanCommit).await;
    f.call("g2", BranchOp::PreCommit).await;
    assert_eq!(f.account().await, (40, 40));
    for _ in 0..2 {
        assert_eq!(f.call("g2", BranchOp::Abort).await, BranchAnswer::success());
    }
    assert_eq!(f.account().await, (40, 0));
    assert!(
        refused(&f.call("g2", BranchOp::DoCommit).await),
        "commit after abort"
    );
}

async fn null_abort_refuses_a_late_can_commit_and_pre_commit<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    assert_eq!(f.call("g1", BranchOp::Abort).await, BranchAnswer::success());
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Aborted, Some(DecidedBy::Coordinator)))
    );
    assert!(refused(&f.call("g1", BranchOp::CanCommit).await));
    assert!(refused(&f.call("g1", BranchOp::PreCommit).await));
    assert_eq!(f.state("g1").await.unwrap().0, BranchState::Aborted);
    assert_eq!(f.account().await, (0, 0));
}

async fn do_commit_without_pre_commit_is_refused<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    assert!(refused(&f.call("g1", BranchOp::DoCommit).await));
    assert_eq!(f.state("g1").await, None, "nothing recorded");
    f.call("g2", BranchOp::CanCommit).await;
    assert!(refused(&f.call("g2", BranchOp::DoCommit).await));
    assert_eq!(f.state("g2").await, Some((BranchState::VotedYes, None)));
    assert_eq!(f.account().await, (0, 0));
}

async fn can_commit_refusal_aborts_the_branch_here<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    let ctx = BranchContext::new("g1", "b1", BranchOp::CanCommit);
    let no = f
        .participant
        .handle(&ctx, &json!({"amount": 5000}))
        .await
        .unwrap();
    assert_eq!(no, BranchAnswer::refused("deposit too large"));
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Aborted, Some(DecidedBy::Participant)))
    );
    // A repeat is refused with the same reason.
    let again = f
        .participant
        .handle(&ctx, &json!({"amount": 5000}))
        .await
        .unwrap();
    assert_eq!(again, no);
}

on_every_backend!(
    happy_path_commits_and_records_the_coordinator,
    repeated_calls_answer_as_the_first_and_run_hooks_once,
    null_abort_refuses_a_late_can_commit_and_pre_commit,
    do_commit_without_pre_commit_is_refused,
    can_commit_refusal_aborts_the_branch_here,
);

/// The ready router: a signed-off-by-default `can_commit` POST reaches the
/// helper, and a call sent to the wrong route is not carried out.
#[tokio::test]
async fn router_serves_each_operation_on_its_route() {
    use tower::ServiceExt;
    let f = fixture::<Sqlite>(ThreePhaseConfig::default()).await;
    let request = |path: &str, op: &str| {
        axum::http::Request::post(path)
            .header("dtx-gid", "g1")
            .header("dtx-branch", "b1")
            .header("dtx-op", op)
            .header("dtx-mode", "3pc")
            .header("content-type", "application/json")
            .body(axum::body::Body::from(r#"{"amount": 40}"#))
            .unwrap()
    };
    let router = f.participant.router();
    let wrong = router
        .clone()
        .oneshot(request("/pre_commit", "can_commit"))
        .await
        .unwrap();
    assert_eq!(wrong.status(), 400, "bound to its operation");
    assert_eq!(f.state("g1").await, None);
    let ok = router
        .oneshot(request("/can_commit", "can_commit"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(f.state("g1").await, Some((BranchState::VotedYes, None)));
}
