//! The engine recovers from store faults that leave a transaction without
//! a driver:
//! - a driver that stops on a failed write is restarted from the log;
//! - a write error that recurs does not become a takeover loop: restarts
//!   back off, the transaction is flagged for an operator with the error,
//!   and the restarts are counted;
//! - two identical registrations racing on one node leave one driver, the
//!   one lease renewal names;
//! - a registration that committed but whose answer was lost (the database
//!   connection broke before the commit's answer came back) is driven, at
//!   once when the client retries it, and through its lease's expiry when
//!   nobody does;
//! - a TCC commit whose write finds that a branch arrived since it read the
//!   branch list reads again and commits every branch.
//!
//! The store here is the real SQLite store with faults injected (a seam for
//! this one piece); the participant is a real HTTP server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use dtx_coordinator::engine::{Asked, Engine, EngineError, EngineSettings, Registered, Verdict};
use dtx_coordinator::metrics::Metrics;
use dtx_coordinator::store::sqlite::SqliteStore;
use dtx_coordinator::store::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update,
};
use dtx_coordinator::transport::HttpTransport;
use dtx_protocol::{BranchSpec, Mode, Op, Status, TxOptions};
use dtx_tests::participant::FakeParticipant;
use tokio::sync::oneshot;

/// Takes one from `left` unless it is zero; whether it took one.
fn take_one(left: &AtomicU32) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// The SQLite store with faults: two for their first few occurrences, one
/// for ever.
struct FaultyStore {
    inner: SqliteStore,
    /// Updates refused with an error that is neither `Unavailable`
    /// (retried in place) nor `Fenced`.
    refused_updates: AtomicU32,
    /// Every update of this transaction is refused that way.
    always_refused: Option<String>,
    /// The first create tells this sender once it committed, then holds its
    /// answer until the receiver hears.
    held_create: std::sync::Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
    /// Creates that commit and then answer `Unavailable`, as when the
    /// connection breaks after the commit was sent.
    lost_create_answers: AtomicU32,
    /// Registered (for real) just before the first write of a TCC decision,
    /// as a branch registered through another coordinator at that moment.
    branch_during_decision: std::sync::Mutex<Option<BranchSpec>>,
}

impl FaultyStore {
    async fn open(dir: &tempfile::TempDir, refused_updates: u32, lost_create_answers: u32) -> Self {
        let url = format!("sqlite:{}", dir.path().join("dtx.db").display());
        FaultyStore {
            inner: SqliteStore::open(&url).await.unwrap(),
            refused_updates: AtomicU32::new(refused_updates),
            lost_create_answers: AtomicU32::new(lost_create_answers),
            always_refused: None,
            held_create: std::sync::Mutex::new(None),
            branch_during_decision: std::sync::Mutex::new(None),
        }
    }

    /// Registers `branch` just before the first write of a TCC decision.
    fn registering_during_the_decision(self, branch: BranchSpec) -> Self {
        *self.branch_during_decision.lock().unwrap() = Some(branch);
        self
    }

    /// Holds the first create's answer: the first receiver hears once it
    /// committed; the answer goes back once the second sender is used.
    fn holding_the_first_create(self) -> (Self, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let (committed, heard_committed) = oneshot::channel();
        let (release, released) = oneshot::channel();
        *self.held_create.lock().unwrap() = Some((committed, released));
        (self, heard_committed, release)
    }

    /// Refuses every update of `gid`.
    fn refusing_every_update_of(self, gid: &str) -> Self {
        FaultyStore {
            always_refused: Some(gid.to_owned()),
            ..self
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        let held = self.held_create.lock().unwrap().take();
        let created = self.inner.create(new).await?;
        if let Some((committed, released)) = held {
            committed.send(()).unwrap();
            released.await.unwrap();
        }
        if take_one(&self.lost_create_answers) {
            return Err(StoreError::Unavailable(
                "injected: the answer was lost".into(),
            ));
        }
        Ok(created)
    }
    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
        by: Option<&str>,
    ) -> Result<BranchRegistered, StoreError> {
        self.inner.register_branch(gid, spec, now_ms, by).await
    }
    async fn update(&self, update: Update) -> Result<(), StoreError> {
        if self.always_refused.as_deref() == Some(update.fence.gid.as_str())
            || take_one(&self.refused_updates)
        {
            return Err(StoreError::Other("injected: the write failed".into()));
        }
        if update.expect_branch_count.is_some() {
            let arriving = self.branch_during_decision.lock().unwrap().take();
            if let Some(branch) = arriving {
                let gid = update.fence.gid.clone();
                self.inner.register_branch(&gid, branch, 0, None).await?;
            }
        }
        self.inner.update(update).await
    }
    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.set_attention(fence, reason, now_ms).await
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
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        self.inner.take_over(gid, owner, lease).await
    }
    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        self.inner.claim_expired(owner, lease, limit).await
    }
    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        self.inner.renew_leases(owner, gids, lease).await
    }
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        self.inner.release_leases(owner).await
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

/// An engine named `node-a` over `store`, already started.
fn engine(store: FaultyStore, lease: Duration) -> Engine {
    engine_over(Arc::new(store), lease)
}

/// An engine named `node-a` over `store`, already started.
fn engine_over(store: Arc<dyn Store>, lease: Duration) -> Engine {
    let engine = Engine::new(
        store,
        Arc::new(HttpTransport::new(None).unwrap()),
        Arc::new(Metrics::default()),
        EngineSettings {
            node_id: "node-a".into(),
            lease,
            claim_interval: Duration::from_millis(200),
            shutdown_grace: Duration::from_secs(1),
            seed: None,
            max_history_events: dtx_coordinator::limits::Limits::default().max_history_events
                as usize,
        },
    );
    engine.start();
    engine
}

/// A saga over branches `a` and `b` of `p`.
fn saga(gid: &str, p: &FakeParticipant) -> NewTransaction {
    NewTransaction {
        gid: gid.into(),
        mode: Mode::Saga,
        status: Status::Running,
        request_hash: "h".into(),
        namespace: "default".into(),
        registered_by: None,
        options: TxOptions::default(),
        branches: vec![branch(p, "a"), branch(p, "b")],
        owner: String::new(),
        now_ms: 0,
        lease: Duration::ZERO,
        deadline_at_ms: 0,
    }
}

/// Long: a test that must not pass by a lease running out.
const NEVER_EXPIRES: Duration = Duration::from_secs(600);

#[tokio::test]
async fn a_driver_stopped_by_a_store_failure_is_restarted_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(FaultyStore::open(&dir, 1, 0).await, NEVER_EXPIRES);
    let p = FakeParticipant::start().await;
    assert!(matches!(
        engine.register(saga("fails-once", &p)).await.unwrap(),
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

#[tokio::test]
async fn a_retried_registration_whose_first_answer_was_lost_is_driven_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(FaultyStore::open(&dir, 0, 1).await, NEVER_EXPIRES);
    let p = FakeParticipant::start().await;
    let lost = engine.register(saga("lost-answer", &p)).await;
    assert!(matches!(lost, Err(EngineError::Unavailable(_))), "{lost:?}");
    // The client retries, as a 503 tells it to: the same request.
    assert!(matches!(
        engine.register(saga("lost-answer", &p)).await.unwrap(),
        Registered::Existing(_)
    ));
    let record = engine
        .wait("lost-answer", Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Committed, "{record:?}");
    assert_eq!(p.count("/a/action"), 1);
    assert_eq!(p.count("/b/action"), 1);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_registration_whose_answer_was_lost_is_driven_when_its_lease_expires() {
    let dir = tempfile::tempdir().unwrap();
    // Short, so that the test waits for the expiry it is about.
    let engine = engine(FaultyStore::open(&dir, 0, 1).await, Duration::from_secs(2));
    let p = FakeParticipant::start().await;
    let lost = engine.register(saga("never-retried", &p)).await;
    // An open TCC transaction keeps a driver here, so that renewals run
    // while the orphan's lease should run out.
    let open = NewTransaction {
        gid: "stays-open".into(),
        mode: Mode::Tcc,
        status: Status::Open,
        branches: Vec::new(),
        ..saga("stays-open", &p)
    };
    assert!(matches!(
        engine.register(open).await.unwrap(),
        Registered::Created(_)
    ));
    assert!(matches!(lost, Err(EngineError::Unavailable(_))), "{lost:?}");
    // Nobody retries. Renewal keeps only the leases of what is driven here,
    // so this one expires and the claim loop drives it.
    let record = engine
        .wait("never-retried", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Committed, "{record:?}");
    assert!(record.epoch > 1, "it was claimed: {record:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_write_error_that_recurs_backs_off_flags_the_transaction_and_counts_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyStore::open(&dir, 0, 0)
        .await
        .refusing_every_update_of("stuck");
    let engine = engine(store, NEVER_EXPIRES);
    let p = FakeParticipant::start().await;
    let started = std::time::Instant::now();
    assert!(matches!(
        engine.register(saga("stuck", &p)).await.unwrap(),
        Registered::Created(_)
    ));
    // Every driver calls `a`, fails to write its success and stops; each
    // restart takes the transaction over (epoch + 1, a `takeover` event).
    // Wait for the third restart.
    let give_up = started + Duration::from_secs(60);
    let record = loop {
        let record = engine.store().get("stuck").await.unwrap().unwrap();
        if record.epoch >= 4 {
            break record;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "no third restart: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = started.elapsed();
    // The restarts wait 1 s, 2 s, 4 s: three of them take 7 s at least.
    assert!(
        elapsed >= Duration::from_secs(7),
        "three restarts within {elapsed:?}: they must back off"
    );
    let restarts = record.epoch - 1;
    let events = engine.store().events("stuck").await.unwrap();
    let takeovers = events.iter().filter(|e| e.kind == "takeover").count();
    assert_eq!(takeovers as i64, restarts, "{events:?}");
    // The participant is called once per driver, no more.
    assert!(
        p.count("/a/action") as i64 <= 1 + restarts,
        "{} calls for {restarts} restarts",
        p.count("/a/action")
    );
    let attention = record.attention.as_deref().unwrap_or_default();
    assert!(
        attention.contains("injected: the write failed"),
        "the operator flag gives the error: {record:?}"
    );
    // Counted once the new driver runs, a moment after the takeover; the
    // next restart is 8 s away.
    let give_up = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let metrics = engine.metrics().render();
        let counted = metric(&metrics, "dtx_driver_restarts_total");
        if counted == restarts {
            break;
        }
        assert!(
            counted < restarts && std::time::Instant::now() < give_up,
            "{counted} restarts counted, {restarts} made: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.shutdown().await;
}

/// The value of the metric `name` in Prometheus' text format.
fn metric(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

#[tokio::test]
async fn two_identical_registrations_racing_leave_one_driver_that_renewal_names() {
    let dir = tempfile::tempdir().unwrap();
    let (store, committed, release) = FaultyStore::open(&dir, 0, 0)
        .await
        .holding_the_first_create();
    let engine = engine(store, NEVER_EXPIRES);
    let p = FakeParticipant::start().await;
    let open = || NewTransaction {
        mode: Mode::Tcc,
        status: Status::Open,
        branches: Vec::new(),
        ..saga("raced", &p)
    };
    // The first registration inserts the transaction; its answer is held.
    let first = tokio::spawn({
        let (engine, new) = (engine.clone(), open());
        async move { engine.register(new).await }
    });
    committed.await.unwrap();
    // The second finds it owned here and driven by nobody yet: it takes it
    // over and drives it.
    let second = engine.register(open()).await.unwrap();
    assert!(matches!(second, Registered::Existing(_)), "{second:?}");
    // Only now does the first registration get its answer.
    release.send(()).unwrap();
    let first = first.await.unwrap().unwrap();
    assert!(matches!(first, Registered::Created(_)), "{first:?}");

    // One driver, the newest: the one the live map (and so renewal and
    // decisions) names. An older one would replace it there, be fenced out
    // at its first write and take the entry with it.
    let metrics = engine.metrics().render();
    assert_eq!(metric(&metrics, "dtx_transactions_driven"), 1, "{metrics}");
    let decided = engine
        .decide("raced", Verdict::Commit, Asked::default())
        .await;
    assert!(
        matches!(decided, Ok(Status::Committing | Status::Committed)),
        "{decided:?}"
    );
    let record = engine.wait("raced", Duration::from_secs(20)).await.unwrap();
    assert_eq!(record.status, Status::Committed, "{record:?}");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_saga_whose_stored_graph_cannot_be_read_is_never_driven_and_is_flagged() {
    // Registration validates the graph; a stored one that no longer forms a
    // graph is corruption. The driver once read it as "no dependencies" and
    // ran every action at once, `b` before the `a` it depends on.
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(FaultyStore::open(&dir, 0, 0).await, NEVER_EXPIRES);
    let p = FakeParticipant::start().await;
    let mut corrupt = saga("cyclic", &p);
    corrupt.branches[0].depends_on = Some(vec!["b".into()]);
    corrupt.branches[1].depends_on = Some(vec!["a".into()]);
    engine.register(corrupt).await.unwrap();
    // The driver stops loudly, its restarts back off, and after a few the
    // transaction is flagged with the reason.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let record = loop {
        let record = engine.store().get("cyclic").await.unwrap().unwrap();
        if record.attention.is_some() || tokio::time::Instant::now() > deadline {
            break record;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let reason = record.attention.as_deref().unwrap_or_default();
    assert!(reason.contains("cannot be driven"), "{record:?}");
    assert_eq!(record.status, Status::Running);
    assert_eq!(
        p.count("/a/action") + p.count("/b/action"),
        0,
        "no action ran"
    );
    engine.shutdown().await;
}

/// A TCC branch `id` of `p`.
fn tcc_branch(p: &FakeParticipant, id: &str) -> BranchSpec {
    BranchSpec {
        urls: BTreeMap::from([
            (Op::Confirm, p.url(&format!("/{id}/confirm"))),
            (Op::Cancel, p.url(&format!("/{id}/cancel"))),
        ]),
        ..branch(p, id)
    }
}

#[tokio::test]
async fn a_tcc_commit_that_finds_a_new_branch_at_its_write_reads_again_and_commits_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = FakeParticipant::start().await;
    let store = FaultyStore::open(&dir, 0, 0)
        .await
        .registering_during_the_decision(tcc_branch(&p, "late"));
    let engine = engine(store, NEVER_EXPIRES);
    let open = NewTransaction {
        mode: Mode::Tcc,
        status: Status::Open,
        branches: vec![],
        ..saga("tcc-race", &p)
    };
    engine.register(open).await.unwrap();
    engine
        .register_branch("tcc-race", tcc_branch(&p, "early"), None)
        .await
        .unwrap();
    let decided = tokio::time::timeout(
        Duration::from_secs(10),
        engine.decide("tcc-race", Verdict::Commit, Asked::default()),
    )
    .await
    .expect("the commit is answered");
    assert!(
        matches!(decided, Ok(Status::Committing | Status::Committed)),
        "{decided:?}"
    );
    let record = engine
        .wait("tcc-race", Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(record.status, Status::Committed, "{record:?}");
    assert_eq!(p.count("/early/confirm"), 1);
    assert_eq!(p.count("/late/confirm"), 1);
    engine.shutdown().await;
}
