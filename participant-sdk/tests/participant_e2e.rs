//! The whole SDK together: a participant built on the extractor, the
//! signature check and the barrier (on SQLite), driven by a real coordinator
//! that signs its calls and by the initiator client that signs its Trys.

//! The whole SDK together: a participant built on the extractor, the
//! signature check and the barrier (on SQLite), driven by a real coordinator
//! that signs its calls with its key and by the initiator client that signs
//! its Trys with its own; and what the signature check refuses of real
//! calls: a replay, a call re-sent to another path, a stale call, and what
//! it accepts during a key rotation.

mod common;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRef, Request, State};
use axum::http::HeaderMap;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::post;
use common::Coordinator;
use dtx_sdk::barrier::{Barrier, BarrierError, Entry};
use dtx_sdk::client::TccBranch;
use dtx_sdk::signature::SignedCall;
use dtx_sdk::{
    BranchAnswer, BranchContext, Client, ClientError, SignatureKeys, SignedJson, SigningKey, Status,
};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The coordinator's key (`dtx serve --signing-key`).
const COORDINATOR_KEY: &str = "dtx-2025:coordinator-secret-0123456789abcdef";
/// The key the coordinator signed with before the rotation.
const OLD_COORDINATOR_KEY: &str = "dtx-2024:old-coordinator-secret-0123456789abcdef";
/// The initiator's own key, for its Try calls.
const INITIATOR_KEY: &str = "orders:initiator-secret-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(20);

fn key(text: &str) -> SigningKey {
    text.parse().expect("a valid test key")
}

/// What the stock service accepts: the coordinator's and the initiator's
/// keys, and `more`.
fn stock_keys(more: &[&str]) -> SignatureKeys {
    let ring = [COORDINATOR_KEY, INITIATOR_KEY]
        .iter()
        .chain(more)
        .map(|k| key(k));
    SignatureKeys::new(ring).unwrap()
}

#[derive(Clone)]
struct Stock {
    db: SqlitePool,
    keys: SignatureKeys,
}

impl FromRef<Stock> for SignatureKeys {
    fn from_ref(state: &Stock) -> Self {
        state.keys.clone()
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

/// A call as the stock service received it.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// Every call the stock service received, in order.
type CallLog = Arc<Mutex<Vec<Received>>>;

/// Records each call before the handlers see it.
async fn record(State(log): State<CallLog>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    log.lock().unwrap().push(Received {
        path: parts.uri.path().to_owned(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    next.run(Request::from_parts(parts, Body::from(body))).await
}

/// The stock service, running.
struct StockService {
    url: String,
    db: SqlitePool,
    log: CallLog,
}

impl StockService {
    /// The calls received at `path` so far.
    fn calls_to(&self, path: &str) -> Vec<Received> {
        let log = self.log.lock().unwrap();
        log.iter().filter(|c| c.path == path).cloned().collect()
    }

    /// Sends `call` again, as received, to `path`: status and problem.
    async fn resend(&self, call: &Received, path: &str) -> (u16, Value) {
        let mut headers = call.headers.clone();
        headers.remove("host");
        headers.remove("content-length");
        let response = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .headers(headers)
            .body(call.body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// Starts the stock service on a free port, accepting calls signed with
/// one of `keys`.
async fn start_stock(dir: &tempfile::TempDir, keys: SignatureKeys) -> StockService {
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
    let log = CallLog::default();
    let state = Stock {
        db: db.clone(),
        keys,
    };
    let app = Router::new()
        .route("/try", post(reserve))
        .route("/confirm", post(confirm))
        .route("/cancel", post(cancel))
        .with_state(state)
        .layer(middleware::from_fn_with_state(log.clone(), record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    StockService { url, db, log }
}

/// An initiator client that signs its Trys with [`INITIATOR_KEY`].
fn initiator(coordinator: &Coordinator) -> Client {
    Client::builder(&coordinator.url())
        .signing_key(key(INITIATOR_KEY))
        .build()
        .unwrap()
}

/// Runs one TCC transaction holding `qty` and waits for its Confirm.
async fn commit_tcc(client: &Client, url: &str, qty: i64) {
    let url = url.to_owned();
    client
        .tcc()
        .wait_for_outcome(WAIT)
        .run(|scope| async move { scope.try_branch(branch(&url, qty)).await })
        .await
        .unwrap();
}

fn detail(problem: &Value) -> &str {
    problem["detail"].as_str().unwrap_or_default()
}

async fn levels(db: &SqlitePool) -> (i64, i64) {
    sqlx::query_as("SELECT available, held FROM stock")
        .fetch_one(db)
        .await
        .unwrap()
}

fn branch(url: &str, qty: i64) -> TccBranch {
    TccBranch::new("stock")
        .try_url(format!("{url}/try"))
        .confirm(format!("{url}/confirm"))
        .cancel(format!("{url}/cancel"))
        .payload(json!({"qty": qty}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_tcc_through_a_barrier_participant() {
    let coordinator = Coordinator::start(&["--signing-key", COORDINATOR_KEY]).await;
    let dir = tempfile::tempdir().unwrap();
    let stock = start_stock(&dir, stock_keys(&[])).await;
    let (url, db) = (stock.url.clone(), stock.db.clone());
    let client = initiator(&coordinator);

    // Committed: the Try (signed by the initiator) holds 3, the
    // coordinator's signed Confirm takes them.
    commit_tcc(&client, &url, 3).await;
    assert_eq!(levels(&db).await, (7, 0));
    let signer = |path: &str| {
        let calls = stock.calls_to(path);
        let header = calls[0].headers["dtx-signature"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(header.starts_with("v2; key="), "{header}");
        header
    };
    assert!(
        signer("/try").contains("key=orders;"),
        "the initiator's key"
    );
    assert!(
        signer("/confirm").contains("key=dtx-2025;"),
        "the coordinator's key"
    );

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

    // An initiator without a signing key cannot Try: the participant
    // answers 401, an unknown outcome, and the scope aborts.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_call_or_one_resent_to_another_path_is_a_401() {
    let coordinator = Coordinator::start(&["--signing-key", COORDINATOR_KEY]).await;
    let dir = tempfile::tempdir().unwrap();
    let stock = start_stock(&dir, stock_keys(&[])).await;
    commit_tcc(&initiator(&coordinator), &stock.url, 3).await;
    assert_eq!(levels(&stock.db).await, (7, 0));
    let confirm = stock.calls_to("/confirm").remove(0);
    let try_call = stock.calls_to("/try").remove(0);

    // The coordinator's Confirm and the initiator's Try, sent again as they
    // were: replays.
    for call in [&confirm, &try_call] {
        let (status, problem) = stock.resend(call, &call.path).await;
        assert_eq!(status, 401, "{problem}");
        assert_eq!(problem["type"], "urn:dtx:problem:bad-signature");
        assert!(detail(&problem).contains("already used"), "{problem}");
    }
    // The Confirm, and the Try, sent to the Cancel's path: the signature
    // covers the path, so neither runs there.
    for call in [&confirm, &try_call] {
        let (status, problem) = stock.resend(call, "/cancel").await;
        assert_eq!(status, 401, "{problem}");
        assert!(detail(&problem).contains("another path"), "{problem}");
    }
    assert_eq!(levels(&stock.db).await, (7, 0), "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_call_is_a_401() {
    let dir = tempfile::tempdir().unwrap();
    let stock = start_stock(&dir, stock_keys(&[])).await;
    let body = br#"{"qty":1}"#;
    let ten_minutes_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 600;
    let call = SignedCall {
        method: "POST",
        target: "/try",
        body,
        gid: "g-stale",
        branch: "stock",
        op: "try",
        mode: "tcc",
    };
    let signature = key(COORDINATOR_KEY).sign(&call, ten_minutes_ago, [3; 16]);
    let response = reqwest::Client::new()
        .post(format!("{}/try", stock.url))
        .header("dtx-gid", "g-stale")
        .header("dtx-branch", "stock")
        .header("dtx-op", "try")
        .header("dtx-mode", "tcc")
        .header("dtx-signature", signature)
        .body(&body[..])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    let problem: Value = response.json().await.unwrap();
    assert!(detail(&problem).contains("s ago"), "{problem}");
    assert_eq!(levels(&stock.db).await, (10, 0), "the stale Try never ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_key_rotation_calls_signed_with_either_key_are_accepted() {
    // The participant accepts the old key and the new one; one coordinator
    // still signs with the old key, one already with the new.
    let old = Coordinator::start(&["--signing-key", OLD_COORDINATOR_KEY]).await;
    let new = Coordinator::start(&["--signing-key", COORDINATOR_KEY]).await;
    let dir = tempfile::tempdir().unwrap();
    let stock = start_stock(&dir, stock_keys(&[OLD_COORDINATOR_KEY])).await;
    commit_tcc(&initiator(&old), &stock.url, 2).await;
    commit_tcc(&initiator(&new), &stock.url, 3).await;
    assert_eq!(levels(&stock.db).await, (5, 0), "both Confirms ran");
    let keys: Vec<String> = stock
        .calls_to("/confirm")
        .iter()
        .map(|c| c.headers["dtx-signature"].to_str().unwrap().to_owned())
        .collect();
    assert!(keys[0].contains("key=dtx-2024;"), "{keys:?}");
    assert!(keys[1].contains("key=dtx-2025;"), "{keys:?}");

    // Once the old key is dropped from the ring, a call signed with it is
    // refused, naming the key.
    let dir = tempfile::tempdir().unwrap();
    let rotated = start_stock(&dir, stock_keys(&[])).await;
    let url = rotated.url.clone();
    // Committed: the Try carries the initiator's key, which is still there.
    initiator(&old)
        .tcc()
        .run(|scope| async move { scope.try_branch(branch(&url, 1)).await })
        .await
        .unwrap();
    // The old coordinator's Confirm is refused (401, an unknown answer it
    // retries) and never runs.
    let started = tokio::time::Instant::now();
    while rotated.calls_to("/confirm").is_empty() {
        assert!(started.elapsed() < WAIT, "no Confirm arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let confirm = rotated.calls_to("/confirm").remove(0);
    let (status, problem) = rotated.resend(&confirm, "/confirm").await;
    assert_eq!(status, 401);
    assert!(detail(&problem).contains("`dtx-2024`"), "{problem}");
    assert_eq!(
        levels(&rotated.db).await,
        (9, 1),
        "held by the Try, not taken"
    );
}
