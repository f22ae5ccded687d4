//! Leases between coordinators sharing PostgreSQL are decided by the
//! database's clock, not by each coordinator's own:
//! - a coordinator whose clock reads an hour ahead does not claim a
//!   transaction another coordinator is driving;
//! - one whose clock jumped an hour forward renews no lease into the future;
//! - a driver whose transaction another coordinator took over stops at the
//!   next renewal, which names it among the leases not renewed.
//!
//! Real engines on a fresh database of the shared PostgreSQL test server.
//! "This coordinator's clock" is `dtx_coordinator::clock::now_ms`, which
//! follows tokio's clock; a test moves it ahead by pausing tokio's clock,
//! advancing it and resuming it, which leaves every later reading ahead by
//! that much (and the database's clock untouched).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dtx_coordinator::engine::{Asked, Engine, EngineSettings, Registered, Verdict};
use dtx_coordinator::metrics::Metrics;
use dtx_coordinator::store::{self, NewTransaction, Store, TransactionRecord};
use dtx_coordinator::transport::HttpTransport;
use dtx_protocol::{Mode, Status, TxOptions};

/// How long a test waits for what it expects before it fails.
const PATIENCE: Duration = Duration::from_secs(30);

/// A new, empty database of the shared PostgreSQL test server.
async fn database() -> String {
    dtx_tests::postgres::fresh_database()
        .await
        .expect("a fresh PostgreSQL database (run `bash tests/images/build-images.sh` once)")
}

/// An engine named `node` on the database at `url`, with its own store (a
/// coordinator of its own), not started.
async fn engine(url: &str, node: &str, lease: Duration) -> Engine {
    Engine::new(
        store::open(url).await.expect("open the PostgreSQL store"),
        Arc::new(HttpTransport::new(None).unwrap()),
        Arc::new(Metrics::default()),
        EngineSettings {
            node_id: node.into(),
            lease,
            claim_interval: Duration::from_millis(100),
            shutdown_grace: Duration::from_secs(1),
            seed: Some(7),
            max_history_events: dtx_coordinator::limits::Limits::default().max_history_events
                as usize,
        },
    )
}

/// An open TCC transaction: its driver makes no call and no write until a
/// decision or its deadline, which is far beyond any clock jump here.
fn open_tcc(gid: &str) -> NewTransaction {
    NewTransaction {
        gid: gid.into(),
        mode: Mode::Tcc,
        status: Status::Open,
        request_hash: format!("hash-of-{gid}"),
        namespace: "default".into(),
        registered_by: None,
        options: TxOptions {
            deadline_ms: 10 * 3_600_000,
            ..TxOptions::default()
        },
        branches: Vec::new(),
        owner: String::new(),
        now_ms: 0,
        lease: Duration::ZERO,
        deadline_at_ms: 0,
    }
}

async fn register(engine: &Engine, gid: &str) {
    let registered = engine.register(open_tcc(gid)).await.expect("register");
    assert!(
        matches!(registered, Registered::Created(_)),
        "{registered:?}"
    );
}

/// Moves this process's clock (tokio's, and so `clock::now_ms`) `by` ahead
/// for the rest of the test. Needs the current-thread runtime.
async fn move_clock_ahead(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// The system's wall clock in Unix milliseconds: the database server's clock
/// (the container shares the host's kernel clock).
fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads `gid` until `done` holds for it; fails after [`PATIENCE`].
async fn read_until(
    store: &dyn Store,
    gid: &str,
    what: &str,
    done: impl Fn(&TransactionRecord) -> bool,
) -> TransactionRecord {
    let give_up = tokio::time::Instant::now() + PATIENCE;
    loop {
        let record = store
            .get(gid)
            .await
            .unwrap()
            .expect("the transaction exists");
        if done(&record) {
            return record;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{what}: not within {PATIENCE:?}: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_coordinator_whose_clock_is_an_hour_ahead_does_not_claim_a_live_transaction() {
    let url = database().await;
    // node-a drives `live`, with a lease of a minute, renewed (it is not
    // started, so its lease simply stands: a minute is the whole test).
    let a = engine(&url, "node-a", Duration::from_secs(60)).await;
    register(&a, "live").await;
    // node-c registered `orphan` and died: its lease ran out a moment later.
    let c = engine(&url, "node-c", Duration::from_millis(1)).await;
    register(&c, "orphan").await;

    // node-b's clock reads an hour ahead of node-a's.
    move_clock_ahead(Duration::from_secs(3600)).await;
    let b = engine(&url, "node-b", Duration::from_secs(60)).await;
    b.start();
    // Once node-b has claimed the orphan, its claim has looked at `live` too.
    read_until(&**b.store(), "orphan", "node-b claims the orphan", |r| {
        r.owner.as_deref() == Some("node-b")
    })
    .await;
    let live = b.store().get("live").await.unwrap().unwrap();
    assert_eq!(
        (live.owner.as_deref(), live.epoch),
        (Some("node-a"), 1),
        "a transaction whose lease runs for a minute more was claimed: {live:?}"
    );
    b.shutdown().await;
}

#[tokio::test]
async fn a_coordinator_whose_clock_jumped_ahead_renews_no_lease_into_the_future() {
    let url = database().await;
    let lease = Duration::from_secs(3);
    let a = engine(&url, "node-a", lease).await;
    register(&a, "driven").await;
    let first = a.store().get("driven").await.unwrap().unwrap();

    move_clock_ahead(Duration::from_secs(3600)).await;
    a.start();
    let renewed = read_until(&**a.store(), "driven", "node-a renews its lease", |r| {
        r.lease_expires_at_ms != first.lease_expires_at_ms
    })
    .await;
    let read_at = wall_ms();
    assert!(
        renewed.lease_expires_at_ms <= read_at + lease.as_millis() as i64,
        "the lease runs until {} ms past the database's clock, more than the lease of {lease:?}",
        renewed.lease_expires_at_ms - read_at
    );
    a.shutdown().await;
}

#[tokio::test]
async fn a_driver_whose_transaction_was_taken_over_stops_at_the_next_renewal() {
    let url = database().await;
    let a = engine(&url, "node-a", Duration::from_secs(3)).await;
    a.start();
    register(&a, "taken").await;
    assert!(driving(&a) == 1, "{}", a.metrics().render());

    // A decision through node-b takes the transaction over there.
    let b = engine(&url, "node-b", Duration::from_secs(3)).await;
    b.start();
    let status = b
        .decide("taken", Verdict::Abort, Asked::default())
        .await
        .expect("node-b aborts it");
    assert!(matches!(status, Status::Aborting | Status::Aborted));

    // node-a's driver would wait for its deadline, hours away, without a
    // write that would find it fenced: renewal must tell it.
    let give_up = tokio::time::Instant::now() + PATIENCE;
    while driving(&a) != 0 {
        assert!(
            tokio::time::Instant::now() < give_up,
            "node-a still drives a transaction node-b took over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// How many transactions `engine` drives, from its metrics.
fn driving(engine: &Engine) -> i64 {
    let text = engine.metrics().render();
    text.lines()
        .find_map(|line| line.strip_prefix("dtx_transactions_driven "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no dtx_transactions_driven in {text}"))
}
