//! The 3PC helper (`dtx_sdk::three_phase`) against real databases: every
//! case runs on SQLite (a temp file) and on PostgreSQL (a fresh database on
//! the shared test server), and checks the state row and the business table
//! after each step. The watchdog is driven by `tick(now)`, with a fake
//! coordinator for decisions and a real client of a closed port for "the
//! coordinator cannot be reached".

use dtx_sdk::client::{ClientError, Decision, DecisionAnswer, DecisionSource};
use dtx_sdk::three_phase::{
    BranchState, DecidedBy, HookError, OnUnreachable, ThreePhase, ThreePhaseBranch,
    ThreePhaseConfig, ThreePhaseDatabase, WatchdogOutcome,
};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, CallbackSecret, Client};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{PgConnection, Pool, Postgres, Sqlite, SqliteConnection};
use std::future::Future;
use std::time::{Duration, SystemTime};

/// The business: `pre_commit` holds `amount` for the account, `do_commit`
/// moves it to the balance, `abort` releases it. `can_commit` refuses
/// amounts over 1000.
#[derive(Clone, Copy)]
struct Deposits;

const HOLD: &str = "UPDATE accounts SET held = held + $1 WHERE id = 'alice'";
const APPLY: &str =
    "UPDATE accounts SET held = held - $1, balance = balance + $1 WHERE id = 'alice'";
const RELEASE: &str = "UPDATE accounts SET held = held - $1 WHERE id = 'alice'";

fn amount(payload: &Value) -> i64 {
    payload["amount"].as_i64().unwrap_or(0)
}

macro_rules! hooks {
    ($db:ty, $conn:ty) => {
        impl ThreePhaseBranch<$db> for Deposits {
            async fn can_commit(
                &self,
                _conn: &mut $conn,
                _ctx: &BranchContext,
                payload: &Value,
            ) -> Result<(), HookError> {
                if amount(payload) > 1000 {
                    return Err(HookError::refused("deposit too large"));
                }
                Ok(())
            }

            async fn pre_commit(
                &self,
                conn: &mut $conn,
                _ctx: &BranchContext,
                payload: &Value,
            ) -> Result<(), HookError> {
                sqlx::query(HOLD)
                    .bind(amount(payload))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn do_commit(
                &self,
                conn: &mut $conn,
                _ctx: &BranchContext,
                payload: &Value,
            ) -> Result<(), HookError> {
                sqlx::query(APPLY)
                    .bind(amount(payload))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }

            async fn abort(
                &self,
                conn: &mut $conn,
                _ctx: &BranchContext,
                payload: &Value,
            ) -> Result<(), HookError> {
                sqlx::query(RELEASE)
                    .bind(amount(payload))
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            }
        }
    };
}
hooks!(Sqlite, SqliteConnection);
hooks!(Postgres, PgConnection);

/// A backend the cases run on.
trait TestDb: ThreePhaseDatabase + Sized
where
    Deposits: ThreePhaseBranch<Self>,
{
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

struct Fixture<D: TestDb>
where
    Deposits: ThreePhaseBranch<D>,
{
    participant: ThreePhase<D, Deposits>,
    _dir: Option<tempfile::TempDir>,
}

async fn fixture<D: TestDb>(config: ThreePhaseConfig) -> Fixture<D>
where
    Deposits: ThreePhaseBranch<D>,
    for<'c> &'c Pool<D>: sqlx::Executor<'c, Database = D>,
{
    let (pool, dir) = D::fresh().await;
    let participant = ThreePhase::with_config(pool, Deposits, config, CallbackSecret::disabled());
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

impl<D: TestDb> Fixture<D>
where
    Deposits: ThreePhaseBranch<D>,
{
    async fn call(&self, gid: &str, op: BranchOp) -> BranchAnswer {
        let ctx = BranchContext::new(gid, "b1", op);
        self.participant
            .handle(&ctx, &json!({"amount": 40}))
            .await
            .expect("the call is answered")
    }

    async fn state(&self, gid: &str) -> Option<(BranchState, Option<DecidedBy>)> {
        self.participant
            .record(gid, "b1")
            .await
            .expect("read the state row")
            .map(|r| (r.state, r.decided_by))
    }

    async fn account(&self) -> (i64, i64) {
        D::account(self.participant.pool()).await
    }
}

fn refused(answer: &BranchAnswer) -> bool {
    matches!(answer, BranchAnswer::Refused(_))
}

async fn happy_path_commits_and_records_the_coordinator<D: TestDb>()
where
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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

/// Answers every gid with one decision.
struct Says(Decision);

impl DecisionSource for Says {
    async fn decision(&self, _gid: &str) -> Result<DecisionAnswer, ClientError> {
        Ok(DecisionAnswer::new(self.0))
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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
    Deposits: ThreePhaseBranch<D>,
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

on_every_backend!(
    happy_path_commits_and_records_the_coordinator,
    repeated_calls_answer_as_the_first_and_run_hooks_once,
    null_abort_refuses_a_late_can_commit_and_pre_commit,
    do_commit_without_pre_commit_is_refused,
    can_commit_refusal_aborts_the_branch_here,
    watchdog_voted_yes_and_unreachable_aborts_by_the_timeout_rule,
    watchdog_pre_committed_and_unreachable_commits_by_the_timeout_rule,
    watchdog_pre_committed_and_unreachable_waits_when_configured,
    watchdog_pre_committed_and_coordinator_says_abort_aborts,
    watchdog_voted_yes_and_coordinator_says_commit_commits,
    watchdog_pending_decision_keeps_waiting,
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
    assert_eq!(wrong.status(), 500);
    assert_eq!(f.state("g1").await, None);
    let ok = router
        .oneshot(request("/can_commit", "can_commit"))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(f.state("g1").await, Some((BranchState::VotedYes, None)));
}

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
