//! A phase-two call retried for days must not grow the coordinator: the
//! driver holds one task per call in flight (its `JoinSet` once kept two
//! entries per attempt, for ever) and the history stays short (a failure run
//! is logged at attempts 1, 2, 4, 8, …, not at every attempt).
//!
//! The engine runs over the real SQLite store and a fake transport (the one
//! seam of this test): the saga's action is refused, and its compensation
//! answers "unknown" every time, so it is retried as fast as the policy
//! allows. Memory is the process's resident set, from `/proc/self/statm`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dtx_coordinator::engine::{Engine, EngineSettings};
use dtx_coordinator::metrics::Metrics;
use dtx_coordinator::store::sqlite::SqliteStore;
use dtx_coordinator::store::{NewTransaction, Store};
use dtx_coordinator::transport::{CallOutcome, CallRequest, Transport};
use dtx_protocol::{BranchSpec, Mode, Op, Reply, RetryPolicy, Status, TxOptions};

/// The process's resident memory, in bytes (Linux).
fn resident_bytes() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: i64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Refuses every action and never learns the outcome of a compensation.
#[derive(Default)]
struct NeverCompensates {
    compensations: AtomicU64,
}

#[async_trait]
impl Transport for NeverCompensates {
    async fn call(&self, request: CallRequest<'_>) -> CallOutcome {
        if request.op == Op::Action {
            return CallOutcome {
                reply: Reply::Refused,
                http_status: Some(409),
                error: Some("HTTP 409: out of stock".into()),
                refusal: Some("out of stock".into()),
            };
        }
        self.compensations.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        CallOutcome {
            reply: Reply::Unknown,
            http_status: Some(503),
            error: Some("HTTP 503: try later".into()),
            refusal: None,
        }
    }
}

async fn wait_for(transport: &NeverCompensates, calls: u64) {
    while transport.compensations.load(Ordering::SeqCst) < calls {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_call_retried_100_000_times_keeps_memory_and_history_flat() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("dtx.db").display());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&url).await.unwrap());
    // Paused time from here: the backoff's timers fire at once, so days of
    // retries take seconds. (Opening the store needs real time: its pool's
    // timeouts would fire while SQLite's own thread works.)
    tokio::time::pause();
    let transport = Arc::new(NeverCompensates::default());
    let engine = Engine::new(
        store.clone(),
        transport.clone(),
        Arc::new(Metrics::default()),
        EngineSettings {
            node_id: "node-a".into(),
            lease: Duration::from_secs(600),
            claim_interval: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(1),
            seed: Some(7),
            max_history_events: dtx_coordinator::limits::Limits::default().max_history_events
                as usize,
        },
    );
    engine.start();
    let spec = BranchSpec {
        id: "a".into(),
        urls: BTreeMap::from([
            (Op::Action, "http://127.0.0.1:9/a".to_string()),
            (Op::Compensate, "http://127.0.0.1:9/undo-a".to_string()),
        ]),
        payload: serde_json::json!({}),
        headers: BTreeMap::new(),
        depends_on: None,
    };
    // The shortest backoff the policy allows: about a millisecond.
    let options = TxOptions {
        retry: RetryPolicy {
            initial_ms: 1,
            max_ms: 1,
            multiplier: 1.0,
        },
        ..TxOptions::default()
    };
    engine
        .register(NewTransaction {
            gid: "retried-for-days".into(),
            mode: Mode::Saga,
            status: Status::Running,
            request_hash: "h".into(),
            namespace: "default".into(),
            registered_by: None,
            options,
            branches: vec![spec],
            owner: String::new(),
            now_ms: 0,
            lease: Duration::ZERO,
            deadline_at_ms: 0,
        })
        .await
        .unwrap();

    // Warm up (the store's caches, the runtime's pools), then measure.
    wait_for(&transport, 10_000).await;
    let before = resident_bytes();
    wait_for(&transport, 100_000).await;
    let grown = resident_bytes() - before;
    // Two entries kept per attempt would be tens of megabytes here; the
    // margin is for the allocator's own bookkeeping.
    assert!(
        grown < 8 << 20,
        "90,000 more attempts grew resident memory by {} KiB",
        grown / 1024
    );

    tokio::time::resume(); // the reads below wait on SQLite's own threads
    let events = store.events("retried-for-days").await.unwrap();
    let failures = events.iter().filter(|e| e.kind == "call_failed").count();
    assert!(
        (10..=20).contains(&failures),
        "a failure run of 100,000 attempts is logged about log2(n) times, got {failures}"
    );
    let record = store.get("retried-for-days").await.unwrap().unwrap();
    assert_eq!(record.status, Status::Aborting, "still compensating");
    engine.shutdown().await;
}
