//! A driver that stops on a store failure is restarted from the log.
//!
//! Its coordinator renews the leases of all its transactions, so the lease
//! of a transaction whose driver died never runs out and no claim would
//! ever recover it; the engine must restart the driver itself. The store
//! here is the real SQLite store with one write refused (a fault seam for
//! this one piece); the participant is a real HTTP server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dtx_coordinator::engine::{Engine, EngineSettings, Registered};
use dtx_coordinator::metrics::Metrics;
use dtx_coordinator::store::sqlite::SqliteStore;
use dtx_coordinator::store::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update,
};
use dtx_coordinator::transport::HttpTransport;
use dtx_protocol::{BranchSpec, Mode, Op, Status, TxOptions};
use dtx_tests::participant::FakeParticipant;

/// The SQLite store, refusing the first `failures` updates with an error
/// that is neither `Unavailable` (retried in place) nor `Fenced`.
struct RefusesUpdates {
    inner: SqliteStore,
    failures: AtomicU32,
}

#[async_trait]
impl Store for RefusesUpdates {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        self.inner.create(new).await
    }
    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
    ) -> Result<BranchRegistered, StoreError> {
        self.inner.register_branch(gid, spec, now_ms).await
    }
    async fn update(&self, update: Update) -> Result<(), StoreError> {
        let left = self.failures.load(Ordering::SeqCst);
        if left > 0
            && self
                .failures
                .compare_exchange(left, left - 1, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return Err(StoreError::Other("injected: the write failed".into()));
        }
        self.inner.update(update).await
    }
    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError> {
        self.inner.get(gid).await
    }
    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError> {
        self.inner.events(gid).await
    }
    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.inner.list(query).await
    }
    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        now_ms: i64,
        lease: i64,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        self.inner.take_over(gid, owner, now_ms, lease).await
    }
    async fn claim_expired(
        &self,
        owner: &str,
        now_ms: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        self.inner.claim_expired(owner, now_ms, lease, limit).await
    }
    async fn renew_leases(&self, owner: &str, lease: i64) -> Result<u64, StoreError> {
        self.inner.renew_leases(owner, lease).await
    }
    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        self.inner.release_leases(owner, now_ms).await
    }
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

fn branch(p: &FakeParticipant, id: &str) -> BranchSpec {
    BranchSpec {
        id: id.into(),
        urls: BTreeMap::from([
            (Op::Action, p.url(&format!("/{id}/action"))),
            (Op::Compensate, p.url(&format!("/{id}/compensate"))),
        ]),
        payload: serde_json::json!({}),
        headers: BTreeMap::new(),
        depends_on: None,
    }
}

#[tokio::test]
async fn a_driver_stopped_by_a_store_failure_is_restarted_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("dtx.db").display());
    let store = RefusesUpdates {
        inner: SqliteStore::open(&url).await.unwrap(),
        failures: AtomicU32::new(1),
    };
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(HttpTransport::new(None).unwrap()),
        Arc::new(Metrics::default()),
        EngineSettings {
            node_id: "node-a".into(),
            // Long: the test must not pass by a lease running out.
            lease: Duration::from_secs(600),
            claim_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(1),
        },
    );
    engine.start();
    let p = FakeParticipant::start().await;
    let new = NewTransaction {
        gid: "fails-once".into(),
        mode: Mode::Saga,
        status: Status::Running,
        request_hash: "h".into(),
        options: TxOptions::default(),
        branches: vec![branch(&p, "a"), branch(&p, "b")],
        owner: String::new(),
        now_ms: 0,
        lease_expires_at_ms: 0,
        deadline_at_ms: 0,
    };
    assert!(matches!(
        engine.register(new).await.unwrap(),
        Registered::Created(_)
    ));
    let record = engine
        .wait("fails-once", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Committed, "{record:?}");
    // The write that failed was a's success: a is sent again (the
    // participant's barrier absorbs it), b once.
    assert_eq!(p.count("/a/action"), 2);
    assert_eq!(p.count("/b/action"), 1);
    assert_eq!(p.count("/a/compensate") + p.count("/b/compensate"), 0);
    engine.shutdown().await;
}
