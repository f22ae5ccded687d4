//! The 2PC helper (`dtx_sdk::xa`) against a real PostgreSQL: each test gets
//! a fresh database on the shared test server (`dtx-postgres:15`, with
//! `max_prepared_transactions = 64`) and checks the business rows and
//! `pg_prepared_xacts` after each call. Every test leaves no prepared
//! transaction behind, since the shared server's 64 slots serve all tests.

mod common;

use common::fake_coordinator::{self, COORDINATOR_KEY, Forgery};
use dtx_sdk::Client;
use dtx_sdk::client::{ClientError, Decision, DecisionAnswer, DecisionSource};
use dtx_sdk::xa::{XaError, XaParticipant, Xid};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, WorkError};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A fresh database with the SDK's tables and a `ledger` of alice's
/// movements: her balance is 100 plus their sum. Each transaction writes a
/// row of its own, so prepared transactions of different gids do not wait
/// for each other's row locks (two prepares updating one row would: a
/// prepared transaction keeps its locks until the decision).
async fn fresh() -> (String, XaParticipant) {
    let url = dtx_tests::postgres::fresh_database()
        .await
        .expect("a fresh PostgreSQL database");
    let xa = participant(&url).await;
    xa.migrate().await.expect("apply the SDK migrations");
    sqlx::raw_sql("CREATE TABLE ledger (gid TEXT PRIMARY KEY, delta BIGINT NOT NULL)")
        .execute(xa.pool())
        .await
        .expect("create the business table");
    (url, xa)
}

async fn participant(url: &str) -> XaParticipant {
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .connect(url)
        .await
        .expect("connect to PostgreSQL");
    XaParticipant::new(pool)
        .await
        .expect("prepared transactions are enabled")
}

/// The branch id of this test's transactions. PostgreSQL names prepared
/// transactions server-wide, not per database, and the xid is made of the
/// gid and the branch id only: the tests here run at the same time against
/// one server with the same gids (`g1`, ...), so each test's branch id is
/// its own (tests run in processes of their own under nextest, in threads
/// of their own under `cargo test`), or two of them could prepare the same
/// xid and one would fail with "transaction identifier is already in use".
fn b1() -> &'static str {
    thread_local! {
        static BRANCH: &'static str = Box::leak(
            format!("b1-{}-{:?}", std::process::id(), std::thread::current().id())
                .into_boxed_str(),
        );
    }
    BRANCH.with(|b| *b)
}

fn ctx(gid: &str, branch: &str, op: BranchOp) -> BranchContext {
    BranchContext::new(gid, branch, op)
}

/// The business step: a ledger row of `delta`, counting how often it runs;
/// a balance that would go negative is refused.
async fn prepare_add(
    xa: &XaParticipant,
    gid: &str,
    delta: i64,
    runs: &Arc<AtomicUsize>,
) -> BranchAnswer {
    let runs = Arc::clone(runs);
    let gid_owned = gid.to_owned();
    xa.prepare(&ctx(gid, b1(), BranchOp::Prepare), move |conn| {
        Box::pin(async move {
            let gid = gid_owned.as_str();
            runs.fetch_add(1, Ordering::SeqCst);
            let balance: i64 = sqlx::query_scalar(BALANCE).fetch_one(&mut *conn).await?;
            if balance + delta < 0 {
                return Err(WorkError::refused("insufficient funds"));
            }
            sqlx::query("INSERT INTO ledger (gid, delta) VALUES ($1, $2)")
                .bind(gid)
                .bind(delta)
                .execute(&mut *conn)
                .await?;
            Ok(())
        })
    })
    .await
    .expect("prepare answers")
}

const BALANCE: &str = "SELECT 100 + COALESCE(SUM(delta), 0)::BIGINT FROM ledger";

async fn balance(pool: &PgPool) -> i64 {
    sqlx::query_scalar(BALANCE)
        .fetch_one(pool)
        .await
        .expect("read the balance")
}

async fn prepared(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
    )
    .fetch_all(pool)
    .await
    .expect("read pg_prepared_xacts")
}

fn is_refused(answer: &BranchAnswer) -> bool {
    matches!(answer, BranchAnswer::Refused(_))
}

#[tokio::test]
async fn prepare_holds_the_work_invisible_until_commit_prepared() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        prepare_add(&xa, "g1", -30, &runs).await,
        BranchAnswer::success()
    );
    assert_eq!(
        prepared(xa.pool()).await,
        vec![Xid::of("g1", b1()).to_string()]
    );
    assert_eq!(balance(xa.pool()).await, 100, "prepared work is invisible");

    let answer = xa.commit(&ctx("g1", b1(), BranchOp::Commit)).await.unwrap();
    assert_eq!(answer, BranchAnswer::success());
    assert_eq!(balance(xa.pool()).await, 70);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn rollback_prepared_undoes_the_work() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        prepare_add(&xa, "g1", -30, &runs).await,
        BranchAnswer::success()
    );
    let answer = xa
        .rollback(&ctx("g1", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    assert_eq!(answer, BranchAnswer::success());
    assert_eq!(balance(xa.pool()).await, 100);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn repeated_calls_answer_as_the_first_and_run_the_work_once() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        assert_eq!(
            prepare_add(&xa, "g1", -30, &runs).await,
            BranchAnswer::success()
        );
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a repeated prepare does not redo the work"
    );
    for _ in 0..2 {
        let answer = xa.commit(&ctx("g1", b1(), BranchOp::Commit)).await.unwrap();
        assert_eq!(answer, BranchAnswer::success());
    }
    // A prepare that arrives after the commit votes yes and changes nothing.
    assert_eq!(
        prepare_add(&xa, "g1", -30, &runs).await,
        BranchAnswer::success()
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(balance(xa.pool()).await, 70);

    assert_eq!(
        prepare_add(&xa, "g2", -10, &runs).await,
        BranchAnswer::success()
    );
    for _ in 0..2 {
        let answer = xa
            .rollback(&ctx("g2", b1(), BranchOp::Rollback))
            .await
            .unwrap();
        assert_eq!(answer, BranchAnswer::success());
    }
    assert_eq!(balance(xa.pool()).await, 70);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn rollback_before_prepare_refuses_the_late_prepare_and_changes_nothing() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let answer = xa
        .rollback(&ctx("g1", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    assert_eq!(answer, BranchAnswer::success(), "a null rollback succeeds");
    let late = prepare_add(&xa, "g1", -30, &runs).await;
    assert!(is_refused(&late), "suspension: {late:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the work never ran");
    assert_eq!(balance(xa.pool()).await, 100);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn business_refusal_votes_no_and_leaves_nothing_prepared() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let no = prepare_add(&xa, "g1", -500, &runs).await;
    assert_eq!(no, BranchAnswer::refused("insufficient funds"));
    assert!(prepared(xa.pool()).await.is_empty());
    // A repeat answers as the first, without running the work again.
    assert_eq!(prepare_add(&xa, "g1", -500, &runs).await, no);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // The coordinator rolls back a branch that said no: nothing to undo.
    let answer = xa
        .rollback(&ctx("g1", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    assert_eq!(answer, BranchAnswer::success());
    assert_eq!(balance(xa.pool()).await, 100);
}

#[tokio::test]
async fn commit_without_a_prepared_branch_is_a_protocol_violation() {
    let (_url, xa) = fresh().await;
    let never = xa.commit(&ctx("g1", b1(), BranchOp::Commit)).await.unwrap();
    assert!(is_refused(&never), "{never:?}");

    let runs = Arc::new(AtomicUsize::new(0));
    assert_eq!(
        prepare_add(&xa, "g2", -10, &runs).await,
        BranchAnswer::success()
    );
    xa.rollback(&ctx("g2", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    let after_rollback = xa.commit(&ctx("g2", b1(), BranchOp::Commit)).await.unwrap();
    assert!(is_refused(&after_rollback), "{after_rollback:?}");

    assert_eq!(
        prepare_add(&xa, "g3", -10, &runs).await,
        BranchAnswer::success()
    );
    xa.commit(&ctx("g3", b1(), BranchOp::Commit)).await.unwrap();
    let after_commit = xa
        .rollback(&ctx("g3", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    assert!(is_refused(&after_commit), "{after_commit:?}");
    assert_eq!(balance(xa.pool()).await, 90);
}

/// Answers from a table; a gid not in it gets a transport-free error that
/// counts as "coordinator unreachable".
struct FakeCoordinator(HashMap<&'static str, Decision>);

impl DecisionSource for FakeCoordinator {
    async fn decision(&self, gid: &str) -> Result<DecisionAnswer, ClientError> {
        self.0
            .get(gid)
            .map(|d| DecisionAnswer::new(gid, *d))
            .ok_or_else(|| ClientError::Unavailable {
                detail: "fake: coordinator down".into(),
            })
    }
}

#[tokio::test]
async fn recovery_after_a_restart_carries_out_the_coordinators_decisions() {
    let (url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    for (gid, delta) in [
        ("g-commit", -10),
        ("g-abort", -20),
        ("g-pending", -30),
        ("g-down", -5),
    ] {
        assert_eq!(
            prepare_add(&xa, gid, delta, &runs).await,
            BranchAnswer::success()
        );
    }
    // The participant goes away; its prepared transactions stay in PostgreSQL.
    xa.pool().close().await;
    drop(xa);

    let xa = participant(&url).await;
    assert_eq!(
        prepared(xa.pool()).await.len(),
        4,
        "prepared work survives the restart"
    );
    let coordinator = FakeCoordinator(HashMap::from([
        ("g-commit", Decision::Commit),
        ("g-abort", Decision::Abort),
        ("g-pending", Decision::Pending),
    ]));
    let summary = xa.recover(&coordinator).await.expect("recovery runs");
    let gids = |v: &[dtx_sdk::xa::InDoubt]| v.iter().map(|b| b.gid.clone()).collect::<Vec<_>>();
    assert_eq!(gids(&summary.committed), ["g-commit"]);
    assert_eq!(gids(&summary.rolled_back), ["g-abort"]);
    assert_eq!(gids(&summary.pending), ["g-pending"]);
    assert_eq!(summary.failed.len(), 1);
    assert_eq!(summary.failed[0].branch.gid, "g-down");
    assert_eq!(balance(xa.pool()).await, 90, "only g-commit took effect");
    assert_eq!(prepared(xa.pool()).await, {
        let mut left = vec![
            Xid::of("g-pending", b1()).to_string(),
            Xid::of("g-down", b1()).to_string(),
        ];
        left.sort();
        left
    });
    // The rollback recovery did is remembered: a late prepare is refused.
    assert!(is_refused(&prepare_add(&xa, "g-abort", -20, &runs).await));

    // The coordinator's own phase two finishes the rest (and frees the slots).
    xa.commit(&ctx("g-pending", b1(), BranchOp::Commit))
        .await
        .unwrap();
    xa.rollback(&ctx("g-down", b1(), BranchOp::Rollback))
        .await
        .unwrap();
    assert_eq!(balance(xa.pool()).await, 60);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn recovery_leaves_prepared_what_an_unverified_answer_decides() {
    let (_url, xa) = fresh().await;
    let runs = Arc::new(AtomicUsize::new(0));
    for (gid, delta) in [("g-commit", -10), ("g-abort", -20)] {
        assert_eq!(
            prepare_add(&xa, gid, delta, &runs).await,
            BranchAnswer::success()
        );
    }
    let decisions = HashMap::from([("g-commit", Decision::Commit), ("g-abort", Decision::Abort)]);
    let client_of = |url: &str| {
        Client::builder(url)
            .coordinator_keys(
                dtx_sdk::signature::Keyring::new([COORDINATOR_KEY.parse().unwrap()]).unwrap(),
            )
            .build()
            .unwrap()
    };

    // Something answers in the coordinator's place, each decision reversed
    // after signing: nothing is committed or rolled back on it.
    let forger = fake_coordinator::start(decisions.clone(), Forgery::DecisionAltered).await;
    let summary = xa
        .recover(&client_of(&forger))
        .await
        .expect("recovery runs");
    assert!(summary.committed.is_empty() && summary.rolled_back.is_empty());
    assert_eq!(summary.failed.len(), 2);
    for failed in &summary.failed {
        assert!(
            failed.error.contains("cannot be trusted"),
            "{}",
            failed.error
        );
    }
    assert_eq!(prepared(xa.pool()).await.len(), 2, "both left prepared");
    assert_eq!(balance(xa.pool()).await, 100);

    // The coordinator's own signed answers resolve them (and free the slots).
    let coordinator = fake_coordinator::start(decisions, Forgery::Honest).await;
    let summary = xa
        .recover(&client_of(&coordinator))
        .await
        .expect("recovery runs");
    let gids = |v: &[dtx_sdk::xa::InDoubt]| v.iter().map(|b| b.gid.clone()).collect::<Vec<_>>();
    assert_eq!(gids(&summary.committed), ["g-commit"]);
    assert_eq!(gids(&summary.rolled_back), ["g-abort"]);
    assert_eq!(balance(xa.pool()).await, 90);
    assert!(prepared(xa.pool()).await.is_empty());
}

#[tokio::test]
async fn xid_is_collision_free_hex_and_within_postgres_limit() {
    assert_ne!(Xid::of("a:b", "c"), Xid::of("a", "b:c"));
    let xid = Xid::of(&"g".repeat(5000), "branch");
    let text = xid.as_str();
    assert!(text.len() < 200, "{} bytes", text.len());
    let hex = text.strip_prefix("dtx-").expect("the dtx- prefix");
    assert!(
        hex.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
}

#[tokio::test]
async fn read_only_vote_is_a_200_with_the_vote_header() {
    use axum::response::IntoResponse;
    let response = BranchAnswer::read_only().into_response();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response
            .headers()
            .get(dtx_protocol::wire::HEADER_VOTE)
            .unwrap(),
        dtx_protocol::wire::VOTE_READ_ONLY
    );
    assert_eq!(
        BranchAnswer::read_only().reply(),
        dtx_protocol::Reply::ReadOnly
    );
}

/// A server of its own, switched to `max_prepared_transactions = 0` by
/// `ALTER SYSTEM` and a restart (the setting only changes at server start).
#[tokio::test]
async fn participant_refuses_to_start_when_prepared_transactions_are_disabled() {
    let server = dtx_tests::postgres::PostgresServer::start()
        .await
        .expect("a PostgreSQL server of its own");
    let pool = PgPool::connect(&server.url()).await.expect("connect");
    sqlx::query("ALTER SYSTEM SET max_prepared_transactions = 0")
        .execute(&pool)
        .await
        .expect("change the setting");
    pool.close().await;
    server.stop().await.expect("stop the server");
    server.start_again().await.expect("start it again");

    let pool = PgPool::connect(&server.url()).await.expect("connect again");
    let error = XaParticipant::new(pool).await.expect_err("must refuse");
    assert!(
        matches!(error, XaError::PreparedTransactionsDisabled(_)),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("max_prepared_transactions is 0"),
        "{message}"
    );
    assert!(message.contains("postgresql.conf"), "{message}");
}
