//! The 3PC watchdog (`ThreePhase::tick` and `spawn_watchdog`) against real
//! databases, driven by `tick(now)`: every case runs on SQLite and on
//! PostgreSQL. The coordinator is a fake `DecisionSource` for decisions, a
//! loopback stub server for answers without a decision (503, 425, 500,
//! `pending`), a real client of a closed port for "no answer at all", and
//! a fake coordinator whose signed answers are forged.

mod common;
#[macro_use]
mod three_phase_support;

use common::fake_coordinator::{self, COORDINATOR_KEY, Forgery};
use dtx_sdk::client::{ClientError, Decision, DecisionAnswer, DecisionSource};
use dtx_sdk::signature::Keyring;
use dtx_sdk::three_phase::{
    BranchState, CoordinatorTimings, DecidedBy, OnUnreachable, ThreePhaseConfig, WatchdogOutcome,
};
use dtx_sdk::{BranchOp, Client, TxOptions};
use dtx_tests::participant::{Answer, FakeParticipant};
use serde_json::json;
use sqlx::{Pool, Sqlite};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};
use three_phase_support::{TestDb, fixture};

/// Answers every gid with one decision.
struct Says(Decision);

impl DecisionSource for Says {
    async fn decision(&self, gid: &str) -> Result<DecisionAnswer, ClientError> {
        Ok(DecisionAnswer::new(gid, self.0))
    }
}

/// A real client of a port nothing listens on: every question fails with
/// `ClientError::Unreachable`.
fn unreachable() -> Client {
    Client::builder("http://127.0.0.1:1")
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client")
}

fn later() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

async fn watchdog_voted_yes_and_unreachable_aborts_by_the_timeout_rule<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    let early = f
        .participant
        .tick(&unreachable(), SystemTime::now())
        .await
        .unwrap();
    assert!(early.is_empty(), "not timed out yet: {early:?}");
    let actions = f.participant.tick(&unreachable(), later()).await.unwrap();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        actions[0].outcome,
        WatchdogOutcome::Aborted(DecidedBy::TimeoutRule)
    );
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Aborted, Some(DecidedBy::TimeoutRule)))
    );
    assert_eq!(f.account().await, (0, 0));
}

async fn watchdog_pre_committed_and_unreachable_commits_by_the_timeout_rule<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    f.call("g1", BranchOp::PreCommit).await;
    let actions = f.participant.tick(&unreachable(), later()).await.unwrap();
    assert_eq!(
        actions[0].outcome,
        WatchdogOutcome::Committed(DecidedBy::TimeoutRule)
    );
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Committed, Some(DecidedBy::TimeoutRule)))
    );
    assert_eq!(f.account().await, (40, 0));
    // Nothing is left in doubt.
    assert!(
        f.participant
            .tick(&unreachable(), later())
            .await
            .unwrap()
            .is_empty()
    );
}

async fn watchdog_pre_committed_and_unreachable_waits_when_configured<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let config = ThreePhaseConfig::default().on_unreachable(OnUnreachable::Wait);
    let f = fixture::<D>(config).await;
    f.call("g1", BranchOp::CanCommit).await;
    f.call("g1", BranchOp::PreCommit).await;
    let actions = f.participant.tick(&unreachable(), later()).await.unwrap();
    assert!(
        matches!(actions[0].outcome, WatchdogOutcome::Waiting(_)),
        "{actions:?}"
    );
    assert_eq!(f.state("g1").await, Some((BranchState::PreCommitted, None)));
    assert_eq!(f.account().await, (0, 40));
}

async fn watchdog_pre_committed_and_coordinator_says_abort_aborts<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    f.call("g1", BranchOp::PreCommit).await;
    let actions = f
        .participant
        .tick(&Says(Decision::Abort), later())
        .await
        .unwrap();
    assert_eq!(
        actions[0].outcome,
        WatchdogOutcome::Aborted(DecidedBy::Coordinator)
    );
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Aborted, Some(DecidedBy::Coordinator)))
    );
    assert_eq!(f.account().await, (0, 0), "the hold is released");
}

async fn watchdog_voted_yes_and_coordinator_says_commit_commits<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    let actions = f
        .participant
        .tick(&Says(Decision::Commit), later())
        .await
        .unwrap();
    assert_eq!(
        actions[0].outcome,
        WatchdogOutcome::Committed(DecidedBy::Coordinator)
    );
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Committed, Some(DecidedBy::Coordinator)))
    );
    assert_eq!(
        f.account().await,
        (40, 0),
        "pre_commit and do_commit both ran"
    );
}

async fn watchdog_pending_decision_keeps_waiting<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    let actions = f
        .participant
        .tick(&Says(Decision::Pending), later())
        .await
        .unwrap();
    assert!(
        matches!(actions[0].outcome, WatchdogOutcome::Waiting(_)),
        "{actions:?}"
    );
    assert_eq!(f.state("g1").await, Some((BranchState::VotedYes, None)));
}

/// The decision endpoint of the stub coordinator, for gid `g1`.
const DECISION: &str = "/v1/transactions/g1/decision";

/// A loopback stand-in for the coordinator whose answers the test scripts,
/// and a client of it that gives up quickly.
async fn stub_coordinator() -> (FakeParticipant, Client) {
    let stub = FakeParticipant::start().await;
    let client = Client::new(&stub.base_url()).expect("client");
    (stub, client)
}

/// The ways a coordinator answers "not yet": its database is down (503),
/// 425, a server error, and a decision still pending.
fn answers_without_a_decision() -> Vec<Answer> {
    vec![
        Answer::Json(
            503,
            json!({"title": "Service Unavailable", "status": 503,
                   "detail": "the transaction log is unavailable; retry later"}),
        ),
        Answer::Status(425),
        Answer::Status(500),
        Answer::Json(
            200,
            json!({"gid": "g1", "mode": "3pc", "status": "pre_committing", "decision": "pending"}),
        ),
    ]
}

fn decision(decision: &str, status: &str) -> Answer {
    Answer::Json(
        200,
        json!({"gid": "g1", "mode": "3pc", "status": status, "decision": decision}),
    )
}

/// A coordinator that answers, whatever it answers, is not unreachable:
/// the branch keeps waiting through every answer without a decision (a 503
/// once made it decide by the timeout rule), then follows the decision the
/// coordinator gives, here the opposite of what the rule would have done.
async fn watchdog_keeps_waiting_while_the_coordinator_answers_without_a_decision<D: TestDb>(
    from: BranchState,
) where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    if from == BranchState::PreCommitted {
        f.call("g1", BranchOp::PreCommit).await;
    }
    let held = f.account().await;
    let (stub, coordinator) = stub_coordinator().await;
    let not_yet = answers_without_a_decision();
    let asked = not_yet.len();
    for answer in not_yet {
        stub.script(DECISION, [answer.clone()]);
        let actions = f.participant.tick(&coordinator, later()).await.unwrap();
        assert_eq!(actions.len(), 1, "{actions:?}");
        assert!(
            matches!(actions[0].outcome, WatchdogOutcome::Waiting(_)),
            "after {answer:?} the branch must wait, not decide: {actions:?}"
        );
        assert_eq!(f.state("g1").await, Some((from, None)), "after {answer:?}");
        assert_eq!(f.account().await, held, "after {answer:?}");
    }
    let (real, expected, balance) = match from {
        // The rule would abort a voted_yes branch; the coordinator committed.
        BranchState::VotedYes => (
            decision("commit", "committing"),
            BranchState::Committed,
            (40, 0),
        ),
        // The rule would commit a pre_committed one; the coordinator aborted.
        _ => (decision("abort", "aborting"), BranchState::Aborted, (0, 0)),
    };
    stub.set_default(DECISION, real);
    let actions = f.participant.tick(&coordinator, later()).await.unwrap();
    let outcome = &actions[0].outcome;
    match expected {
        BranchState::Committed => {
            assert_eq!(*outcome, WatchdogOutcome::Committed(DecidedBy::Coordinator))
        }
        _ => assert_eq!(*outcome, WatchdogOutcome::Aborted(DecidedBy::Coordinator)),
    }
    assert_eq!(
        f.state("g1").await,
        Some((expected, Some(DecidedBy::Coordinator)))
    );
    assert_eq!(f.account().await, balance);
    assert_eq!(stub.count(DECISION), asked + 1, "one question per pass");
}

async fn watchdog_voted_yes_waits_through_503_then_follows_the_coordinator<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    watchdog_keeps_waiting_while_the_coordinator_answers_without_a_decision::<D>(
        BranchState::VotedYes,
    )
    .await;
}

async fn watchdog_pre_committed_waits_through_503_then_follows_the_coordinator<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    watchdog_keeps_waiting_while_the_coordinator_answers_without_a_decision::<D>(
        BranchState::PreCommitted,
    )
    .await;
}

/// An answer that fails verification is an answer without a decision: a
/// pre-committed branch neither follows it nor applies the timeout rule,
/// and follows the coordinator's signed answer when it comes.
async fn watchdog_acts_only_on_a_verified_answer<D: TestDb>()
where
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let f = fixture::<D>(ThreePhaseConfig::default()).await;
    f.call("g1", BranchOp::CanCommit).await;
    f.call("g1", BranchOp::PreCommit).await;
    let client_of = |url: &str| {
        Client::builder(url)
            .coordinator_keys(Keyring::new([COORDINATOR_KEY.parse().unwrap()]).unwrap())
            .build()
            .unwrap()
    };
    let decisions = HashMap::from([("g1", Decision::Commit)]);
    // The forger turns the signed commit into an abort.
    let forger = fake_coordinator::start(decisions.clone(), Forgery::DecisionAltered).await;
    let actions = f
        .participant
        .tick(&client_of(&forger), later())
        .await
        .unwrap();
    assert!(
        matches!(&actions[0].outcome, WatchdogOutcome::Waiting(why) if why.contains("cannot be trusted")),
        "{actions:?}"
    );
    assert_eq!(f.state("g1").await, Some((BranchState::PreCommitted, None)));
    assert_eq!(f.account().await, (0, 40));
    let coordinator = fake_coordinator::start(decisions, Forgery::Honest).await;
    let actions = f
        .participant
        .tick(&client_of(&coordinator), later())
        .await
        .unwrap();
    assert_eq!(
        actions[0].outcome,
        WatchdogOutcome::Committed(DecidedBy::Coordinator)
    );
    assert_eq!(f.account().await, (40, 0));
}

on_every_backend!(
    watchdog_acts_only_on_a_verified_answer,
    watchdog_voted_yes_and_unreachable_aborts_by_the_timeout_rule,
    watchdog_pre_committed_and_unreachable_commits_by_the_timeout_rule,
    watchdog_pre_committed_and_unreachable_waits_when_configured,
    watchdog_pre_committed_and_coordinator_says_abort_aborts,
    watchdog_voted_yes_and_coordinator_says_commit_commits,
    watchdog_pending_decision_keeps_waiting,
    watchdog_voted_yes_waits_through_503_then_follows_the_coordinator,
    watchdog_pre_committed_waits_through_503_then_follows_the_coordinator,
);

/// The spawned watchdog applies the same rule as `tick`, on its own timer,
/// and stops when asked.
#[tokio::test]
async fn spawned_watchdog_aborts_an_uncertain_branch_on_its_timer() {
    let config = ThreePhaseConfig::default()
        .uncertain_timeout(Duration::ZERO)
        .check_interval(Duration::from_millis(50));
    let f = fixture::<Sqlite>(config).await;
    f.call("g1", BranchOp::CanCommit).await;
    let watchdog = f.participant.spawn_watchdog(unreachable());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while f.state("g1").await.unwrap().0 != BranchState::Aborted {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watchdog never acted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    watchdog.stop().await;
    assert_eq!(
        f.state("g1").await,
        Some((BranchState::Aborted, Some(DecidedBy::TimeoutRule)))
    );
}

/// The SDK's default timeouts follow its own rule for the coordinator's
/// defaults, and `CoordinatorTimings::default()` is what the real
/// coordinator uses: its transaction deadline (`TxOptions::default`) and
/// the `--lease-ms` and `--claim-interval-ms` defaults `dtx serve --help`
/// shows. A coordinator default that grows past the SDK's fails here.
#[test]
fn default_timeouts_follow_the_rule_for_the_real_coordinator_defaults() {
    let assumed = CoordinatorTimings::default();
    assert!(
        ThreePhaseConfig::default().follows_rule(&assumed),
        "{:?} against {assumed:?}",
        ThreePhaseConfig::default()
    );
    assert_eq!(
        assumed.deadline,
        Duration::from_millis(TxOptions::default().deadline_ms)
    );
    let help = std::process::Command::new(common::dtx_binary())
        .args(["serve", "--help"])
        .output()
        .expect("run dtx serve --help");
    assert!(help.status.success(), "{help:?}");
    let help = String::from_utf8(help.stdout).expect("UTF-8 help");
    let default_of = |flag: &str| -> Duration {
        let from = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in:\n{help}"));
        let rest = &help[from..];
        let start = rest.find("[default: ").expect("a default") + "[default: ".len();
        let digits = &rest[start..start + rest[start..].find(']').expect("]")];
        Duration::from_millis(digits.parse().expect("milliseconds"))
    };
    assert_eq!(assumed.lease, default_of("--lease-ms"));
    assert_eq!(assumed.claim_interval, default_of("--claim-interval-ms"));
}
