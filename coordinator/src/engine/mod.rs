//! The engine's public face: [`Engine`] (register, decide, wait, start and
//! shut down), its settings and its errors. The HTTP layer talks to the
//! engine only. Beneath it:
//! - [`live`]: the transactions driven here and the start of their drivers;
//! - [`driver`]: the driver of one transaction;
//! - [`ownership`]: the loops that move ownership (lease renewal, claims of
//!   expired leases, restarts of failed drivers, takeovers);
//! - [`lease`]: this coordinator's view of whether its leases still hold.

mod driver;
mod lease;
mod live;
mod ownership;

use crate::metrics::Metrics;
use crate::store::{
    BranchRegistered, Cause, Created, NewTransaction, Store, StoreError, TransactionRecord,
};
use crate::transport::Transport;
use driver::Mail;
use dtx_protocol::{BranchSpec, Status};
use lease::LeaseClock;
use live::LiveDrivers;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Engine settings, from the coordinator's configuration.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This coordinator's name in the store's `owner` column.
    pub node_id: String,
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// How often to look for transactions whose lease expired.
    pub claim_interval: Duration,
    /// How long shutdown waits for drivers before leaving them to recovery.
    pub shutdown_grace: Duration,
    /// Seed of the random numbers the engine draws (retry jitter); `None`
    /// draws one. The deterministic simulation sets it so that a seed
    /// replays a run exactly.
    pub seed: Option<u64>,
    /// Most events a transaction's history takes from its drivers, status
    /// changes aside (`--max-history-events`; see `driver::history_budget`).
    pub max_history_events: usize,
}

pub(crate) use crate::clock::now_ms;

/// What the engine's operations can fail with, free of HTTP.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// No such transaction.
    #[error("transaction `{0}` does not exist")]
    NotFound(String),
    /// The gid is taken by a different request.
    #[error("transaction `{0}` exists with a different request; choose another gid")]
    GidConflict(String),
    /// The transaction no longer accepts what was asked.
    #[error("transaction `{gid}` is {status}: {what}")]
    WrongStatus {
        /// The transaction.
        gid: String,
        /// Its status.
        status: Status,
        /// What cannot be done.
        what: &'static str,
    },
    /// A branch id is taken by another branch spec.
    #[error("branch `{branch}` of transaction `{gid}` exists with a different spec")]
    BranchConflict {
        /// The transaction.
        gid: String,
        /// The branch id.
        branch: String,
    },
    /// The request cannot be served as asked; the sentence says why.
    #[error("{0}")]
    BadRequest(String),
    /// The database is unavailable; try again later.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// Anything else: the store's error (a [`StoreError`] beneath), a task
    /// that failed.
    #[error("internal error: {0}")]
    Internal(#[source] Cause),
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(cause) => EngineError::Unavailable(cause),
            StoreError::InvalidInput(m) => EngineError::BadRequest(m),
            other => EngineError::Internal(Cause::of(other)),
        }
    }
}

/// What the initiator of a TCC transaction decided (the protocol core's
/// input, named here for the API's callers).
pub use dtx_protocol::Verdict;
pub use dtx_protocol::wire::RefusedTry;

/// Who asked for a TCC verdict (the token's name, for the history) and, for
/// an abort the initiator asks because a participant refused its Try, which
/// branch and why (kept on the branch as a refusal the coordinator received
/// itself would be).
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// The name of the token that asked.
    pub by: Option<String>,
    /// The refused Try behind an abort.
    pub refused_try: Option<RefusedTry>,
}

/// The answer to a registration.
#[derive(Debug)]
pub enum Registered {
    /// A new transaction; it is being driven.
    Created(Box<TransactionRecord>),
    /// The same request was registered before: this is that transaction.
    Existing(Box<TransactionRecord>),
}

/// What a driver tells waiters after each write: the status written, and
/// once it is final, the whole record as written, so that an answer to
/// `?wait_ms=` needs no read of the store.
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    status: Status,
    finished: Option<Arc<TransactionRecord>>,
}

/// State shared by the engine and its drivers.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lease: LeaseClock,
    pub(crate) settings: EngineSettings,
    /// Cancelled when the coordinator shuts down; drivers and loops stop.
    pub(crate) shutdown: CancellationToken,
    /// Random numbers for retry jitter, seeded from the settings.
    pub(crate) rng: Mutex<rand::rngs::StdRng>,
    live: LiveDrivers,
    /// Transactions whose drivers stopped on store failures.
    restarts: ownership::Restarts,
    drivers: TaskTracker,
}

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
}

impl Engine {
    /// An engine over `store` and `transport`. Call [`Engine::start`] to run
    /// its background loops.
    pub fn new(
        store: Arc<dyn Store>,
        transport: Arc<dyn Transport>,
        metrics: Arc<Metrics>,
        settings: EngineSettings,
    ) -> Engine {
        let shared = Shared {
            store,
            transport,
            metrics,
            lease: LeaseClock::new(settings.lease),
            rng: Mutex::new(rand::SeedableRng::seed_from_u64(
                settings.seed.unwrap_or_else(rand::random),
            )),
            settings,
            shutdown: CancellationToken::new(),
            live: LiveDrivers::default(),
            restarts: ownership::Restarts::default(),
            drivers: TaskTracker::new(),
        };
        Engine {
            shared: Arc::new(shared),
        }
    }

    /// The store, for reads that need no engine logic.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// Starts lease renewal and the claim loop (which recovers, at once,
    /// whatever an earlier run left behind once its lease expired).
    pub fn start(&self) {
        let engine = self.clone();
        tokio::spawn(async move { engine.renew_loop().await });
        let engine = self.clone();
        tokio::spawn(async move { engine.claim_loop().await });
    }

    /// Tells drivers, loops and waiting requests to stop; returns at once.
    pub fn begin_shutdown(&self) {
        self.shared.shutdown.cancel();
    }

    /// Stops driving: no new calls start, drivers stop at their next step,
    /// and the leases are released so that another coordinator (or the next
    /// run) resumes at once.
    pub async fn shutdown(&self) {
        self.begin_shutdown();
        self.shared.drivers.close();
        if tokio::time::timeout(
            self.shared.settings.shutdown_grace,
            self.shared.drivers.wait(),
        )
        .await
        .is_err()
        {
            tracing::warn!("drivers did not stop in time; leaving them to recovery");
        }
        match self
            .shared
            .store
            .release_leases(&self.shared.settings.node_id)
            .await
        {
            Ok(n) => tracing::info!(released = n, "leases released"),
            Err(e) => tracing::warn!(error = %e, "could not release leases; they will expire"),
        }
    }

    /// Registers a transaction; a new one starts being driven at once.
    pub async fn register(&self, new: NewTransaction) -> Result<Registered, EngineError> {
        // The insert and the start of its driver must never be separated. In
        // the request's own future they could be: a client that hangs up
        // while the insert commits cancels the future in between, leaving a
        // transaction nobody drives whose lease its owner keeps renewing
        // (the harness saw it: kill -9 of the order service mid-registration
        // left a 2PC transaction `preparing` for ever). A task of its own
        // runs to the end whatever the client does.
        let engine = self.clone();
        tokio::spawn(async move { engine.register_and_drive(new).await })
            .await
            .map_err(|e| {
                EngineError::Internal(Cause::explained("the registration task failed", e))
            })?
    }

    async fn register_and_drive(&self, mut new: NewTransaction) -> Result<Registered, EngineError> {
        new.owner = self.shared.settings.node_id.clone();
        new.now_ms = now_ms();
        new.lease = self.shared.settings.lease;
        new.deadline_at_ms = new.now_ms + new.options.deadline_ms as i64;
        let gid = new.gid.clone();
        let mode = new.mode;
        match self.shared.store.create(new.clone()).await? {
            Created::Inserted(fence) => {
                self.shared.metrics.registered(mode);
                let record = record_of_new(&new, fence.epoch);
                self.spawn_driver(fence, record.clone());
                Ok(Registered::Created(Box::new(record)))
            }
            Created::Exists {
                same_request: true,
                existing,
            } => {
                self.drive_if_orphaned(&existing).await?;
                Ok(Registered::Existing(existing))
            }
            Created::Exists {
                same_request: false,
                ..
            } => Err(EngineError::GidConflict(gid)),
        }
    }

    /// Adds a branch to an open TCC transaction.
    pub async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        by: Option<&str>,
    ) -> Result<BranchRegistered, EngineError> {
        let branch = spec.id.clone();
        match self
            .shared
            .store
            .register_branch(gid, spec, now_ms(), by)
            .await
        {
            Err(StoreError::NotFound) => Err(EngineError::NotFound(gid.to_owned())),
            Err(e) => Err(e.into()),
            Ok(BranchRegistered::NotOpen(status)) => Err(EngineError::WrongStatus {
                gid: gid.to_owned(),
                status,
                what: "it no longer accepts branches",
            }),
            Ok(BranchRegistered::IdConflict) => Err(EngineError::BranchConflict {
                gid: gid.to_owned(),
                branch,
            }),
            Ok(other) => Ok(other),
        }
    }

    /// Commits or aborts an open TCC transaction, as `verdict` says. Asking
    /// again for the decision already taken is answered with the current
    /// status; asking for the opposite one is an error.
    pub async fn decide(
        &self,
        gid: &str,
        verdict: Verdict,
        asked: Asked,
    ) -> Result<Status, EngineError> {
        let Some(mail) = self.shared.live.mailbox(gid) else {
            return self.decide_without_driver(gid, verdict, asked).await;
        };
        match self.ask_driver(gid, &mail, verdict, asked.clone()).await {
            Some(answered) => answered,
            // The driver here was fenced out a moment ago by another
            // coordinator (which took the transaction over to decide it, or
            // claimed its lease) and learnt it only now: this request is
            // then like one arriving at any coordinator that does not drive
            // the transaction.
            None => self.decide_without_driver(gid, verdict, asked).await,
        }
    }

    /// Hands the decision to the driver of `gid` on this coordinator; `None`
    /// when that driver found itself fenced out instead of deciding.
    async fn ask_driver(
        &self,
        gid: &str,
        mail: &mpsc::UnboundedSender<Mail>,
        verdict: Verdict,
        asked: Asked,
    ) -> Option<Result<Status, EngineError>> {
        let (done, answer) = oneshot::channel();
        if mail
            .send(Mail::Decide {
                verdict,
                asked,
                done,
            })
            .is_err()
        {
            return Some(self.decide_after_race(gid, verdict).await);
        }
        Some(match answer.await {
            Ok(Ok(status)) => decision_answer(gid, status, verdict),
            Ok(Err(StoreError::Fenced)) => return None,
            Ok(Err(e)) => Err(e.into()),
            Err(_) => self.decide_after_race(gid, verdict).await,
        })
    }

    /// A decision for a transaction no driver on this coordinator holds:
    /// answered from the store when it is decided already, else taken over
    /// (which fences the other driver out) and handed to the new driver.
    async fn decide_without_driver(
        &self,
        gid: &str,
        verdict: Verdict,
        asked: Asked,
    ) -> Result<Status, EngineError> {
        let record = self.stored(gid).await?;
        if record.status != Status::Open {
            return decision_answer(gid, record.status, verdict);
        }
        // In a task of its own, for the reason given in `register`.
        let engine = self.clone();
        let owned_gid = gid.to_owned();
        let taken = tokio::spawn(async move { engine.take_over_and_drive(&owned_gid).await })
            .await
            .map_err(|e| EngineError::Internal(Cause::explained("the takeover task failed", e)))?;
        match taken {
            Ok(true) => {}
            Ok(false) => return self.decide_after_race(gid, verdict).await,
            Err(StoreError::NotFound) => return Err(EngineError::NotFound(gid.to_owned())),
            Err(e) => return Err(e.into()),
        };
        let mail = self
            .shared
            .live
            .mailbox(gid)
            .ok_or_else(|| EngineError::Internal("driver vanished".into()))?;
        // Fenced again at once: a third coordinator took it in between.
        // Answer from the store rather than chase it.
        match self.ask_driver(gid, &mail, verdict, asked).await {
            Some(answered) => answered,
            None => self.decide_after_race(gid, verdict).await,
        }
    }

    /// The driver finished or moved while we asked it: answer from the store.
    async fn decide_after_race(&self, gid: &str, verdict: Verdict) -> Result<Status, EngineError> {
        let record = self.stored(gid).await?;
        decision_answer(gid, record.status, verdict)
    }

    /// The transaction as the store has it; `NotFound` when it has none.
    async fn stored(&self, gid: &str) -> Result<TransactionRecord, EngineError> {
        self.shared
            .store
            .get(gid)
            .await?
            .ok_or_else(|| EngineError::NotFound(gid.to_owned()))
    }

    /// Waits until the transaction is final or `timeout` passes; returns it
    /// as it is then.
    pub async fn wait(
        &self,
        gid: &str,
        timeout: Duration,
    ) -> Result<TransactionRecord, EngineError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let watcher = self.shared.live.progress(gid);
            if let Some(mut progress) = watcher {
                // Driven here: wake up on every status change.
                tokio::select! {
                biased;
                    done = tokio::time::timeout_at(deadline, progress.wait_for(|p| p.status.is_final())) => {
                        if let Ok(Ok(progress)) = done
                            && let Some(record) = &progress.finished
                        {
                            return Ok(TransactionRecord::clone(record));
                        }
                    }
                    _ = self.shared.shutdown.cancelled() => {}
                }
            }
            let record = self
                .shared
                .store
                .get(gid)
                .await?
                .ok_or_else(|| EngineError::NotFound(gid.to_owned()))?;
            let now = tokio::time::Instant::now();
            if record.status.is_final() || now >= deadline || self.shared.shutdown.is_cancelled() {
                return Ok(record);
            }
            // Driven by another coordinator: poll the store.
            tokio::time::sleep_until(deadline.min(now + Duration::from_millis(100))).await;
        }
    }
}

/// Maps the status after a decision request to the caller's answer.
fn decision_answer(gid: &str, status: Status, verdict: Verdict) -> Result<Status, EngineError> {
    let agrees = match status {
        Status::Committing | Status::Committed => verdict == Verdict::Commit,
        Status::Aborting | Status::Aborted => verdict == Verdict::Abort,
        Status::Open | Status::Running | Status::Preparing | Status::PreCommitting => false,
    };
    if agrees {
        Ok(status)
    } else {
        Err(EngineError::WrongStatus {
            gid: gid.to_owned(),
            status,
            what: match verdict {
                Verdict::Commit => "it cannot be committed",
                Verdict::Abort => "it cannot be aborted",
            },
        })
    }
}

/// The record of a transaction just inserted, built without reading it back.
/// Its lease expiry is this coordinator's reckoning; the store timed the
/// stored one by its own clock (on PostgreSQL, the server's), which a read
/// shows.
fn record_of_new(new: &NewTransaction, epoch: i64) -> TransactionRecord {
    TransactionRecord {
        gid: new.gid.clone(),
        mode: new.mode,
        status: new.status,
        options: new.options.clone(),
        created_at_ms: new.now_ms,
        updated_at_ms: new.now_ms,
        deadline_at_ms: new.deadline_at_ms,
        owner: Some(new.owner.clone()),
        lease_expires_at_ms: new.now_ms + crate::store::lease_ms(new.lease),
        epoch,
        attention: None,
        namespace: new.namespace.clone(),
        branches: new
            .branches
            .iter()
            .enumerate()
            .map(|(i, spec)| crate::store::BranchRecord {
                index: i as u32,
                spec: spec.clone(),
                status: dtx_protocol::BranchStatus::Pending,
                attempts: 0,
                last_http_status: None,
                last_error: None,
                refusal: None,
                failing_since_ms: None,
            })
            .collect(),
    }
}
