//! The whole SDK together: a participant built on the extractor, the
//! signature check and the barrier (on SQLite), driven by a real coordinator
//! that signs its calls and by the initiator client that signs its Trys.

mod common;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::routing::post;
use common::Coordinator;
use dtx_sdk::barrier::{Barrier, BarrierError, Entry};
use dtx_sdk::client::TccBranch;
use dtx_sdk::{
    BranchAnswer, BranchContext, CallbackSecret, Client, ClientError, SignedJson, Status,
};
use serde::Deserialize;
use serde_json::json;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use std::time::Duration;

const SECRET: &str = "s3cret";
const WAIT: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct Stock {
    db: SqlitePool,
    secret: CallbackSecret,
}

impl FromRef<Stock> for CallbackSecret {
    fn from_ref(state: &Stock) -> Self {
        state.secret.clone()
    }
}

#[derive(Deserialize)]
struct Reserve {
    qty: i64,
}

/// The three handlers differ only in their SQL; the barrier does the rest.
async fn step(
    stock: &Stock,
    ctx: &BranchContext,
    sql: &'static str,
    qty: i64,
) -> Result<BranchAnswer, BarrierError> {
    let mut work = match Barrier::sqlite().begin(&stock.db, ctx).await? {
        Entry::Proceed(work) => work,
        Entry::Skip(skipped) => return Ok(skipped.answer()),
    };
    let changed = sqlx::query(sql).bind(qty).execute(&mut *work).await?;
    if changed.rows_affected() == 0 {
        return work.refuse(format!("cannot hold {qty} apples")).await;
    }
    work.succeed().await
}

async fn reserve(
    State(stock): State<Stock>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<Reserve>,
) -> Result<BranchAnswer, BarrierError> {
    let sql = "UPDATE stock SET available = available - $1, held = held + $1 WHERE available >= $1";
    step(&stock, &ctx, sql, req.qty).await
}

async fn confirm(
    State(stock): State<Stock>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<Reserve>,
) -> Result<BranchAnswer, BarrierError> {
    step(&stock, &ctx, "UPDATE stock SET held = held - $1", req.qty).await
}

async fn cancel(
    State(stock): State<Stock>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<Reserve>,
) -> Result<BranchAnswer, BarrierError> {
    let sql = "UPDATE stock SET available = available + $1, held = held - $1";
    step(&stock, &ctx, sql, req.qty).await
}

/// Starts the stock service on a free port; returns its base URL and pool.
async fn start_stock(dir: &tempfile::TempDir) -> (String, SqlitePool) {
    let options = SqliteConnectOptions::new()
        .filename(dir.path().join("stock.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .busy_timeout(Duration::from_secs(10));
    let db = SqlitePool::connect_with(options).await.unwrap();
    Barrier::sqlite().migrate(&db).await.unwrap();
    sqlx::raw_sql(
        "CREATE TABLE stock (available BIGINT NOT NULL, held BIGINT NOT NULL); \
         INSERT INTO stock VALUES (10, 0);",
    )
    .execute(&db)
    .await
    .unwrap();
    let state = Stock {
        db: db.clone(),
        secret: CallbackSecret::new(SECRET),
    };
    let app = Router::new()
        .route("/try", post(reserve))
        .route("/confirm", post(confirm))
        .route("/cancel", post(cancel))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, db)
}

async fn levels(db: &SqlitePool) -> (i64, i64) {
    sqlx::query_as("SELECT available, held FROM stock")
        .fetch_one(db)
        .await
        .unwrap()
}

fn branch(url: &str, qty: i64) -> TccBranch {
    TccBranch::new(
        "stock",
        format!("{url}/try"),
        format!("{url}/confirm"),
        format!("{url}/cancel"),
    )
    .payload(json!({"qty": qty}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tcc_through_a_barrier_participant() {
    let coordinator = Coordinator::start(&["--callback-secret", SECRET]).await;
    let dir = tempfile::tempdir().unwrap();
    let (url, db) = start_stock(&dir).await;
    let client = Client::builder(&coordinator.url())
        .callback_secret(CallbackSecret::new(SECRET))
        .build()
        .unwrap();

    // Committed: the Try holds 3, the coordinator's signed Confirm takes them.
    let url_ = url.clone();
    client
        .tcc()
        .wait_for_outcome(WAIT)
        .run(|scope| async move { scope.try_branch(branch(&url_, 3)).await })
        .await
        .unwrap();
    assert_eq!(levels(&db).await, (7, 0));

    // Refused: there are not 100 apples. The coordinator still cancels the
    // branch; the barrier makes that cancel a null compensation.
    let tcc = client.tcc();
    let gid = tcc.gid().to_owned();
    let url_ = url.clone();
    let err = tcc
        .run(|scope| async move { scope.try_branch(branch(&url_, 100)).await })
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Refused { .. }), "{err:?}");
    let tx = client.wait(&gid, WAIT).await.unwrap();
    assert_eq!(tx.status, Status::Aborted, "{tx:?}");
    assert_eq!(
        levels(&db).await,
        (7, 0),
        "the refused Try and its cancel changed nothing"
    );

    // An initiator without the secret cannot Try: the participant answers
    // 401, an unknown outcome, and the scope aborts.
    let unsigned = Client::new(&coordinator.url()).unwrap();
    let url_ = url.clone();
    let err = unsigned
        .tcc()
        .try_attempts(1)
        .run(|scope| async move { scope.try_branch(branch(&url_, 1)).await })
        .await
        .unwrap_err();
    match err {
        ClientError::TryUnknown { detail, .. } => {
            assert!(detail.contains("dtx-signature"), "{detail}")
        }
        other => panic!("expected TryUnknown, got {other:?}"),
    }
    assert_eq!(levels(&db).await, (7, 0));
}
