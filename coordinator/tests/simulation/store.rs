//! The store under simulation: the real [`SqliteStore`] on a thread of its
//! own ([`BlockingStore`]), and each coordinator node's view of it
//! ([`NodeStore`]), which dies or stalls with its node.
//!
//! Why a thread that the simulation thread blocks on: the SQLite store
//! answers from threads of its own (its writer, sqlx's workers). Had the
//! simulation awaited them, tokio's paused clock would have advanced while
//! it waited, by however long the threads took, and the order of events
//! would have followed thread timing. Blocking instead makes every store
//! operation atomic and instantaneous in virtual time. The time a call
//! takes on its way is the plan's instead: a drawn round trip of virtual
//! time before the operation, during which every other task runs.

use std::future::Future;
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;

use async_trait::async_trait;
use dtx_coordinator::store::sqlite::SqliteStore;
use dtx_coordinator::store::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update,
};
use dtx_protocol::{BranchSpec, Status};
use rand::Rng;
use std::time::Duration;

use super::invariants::Kind;
use super::nodes::{NodeLife, WriteFate};
use super::world::{Planted, Sim};

type Job = Box<dyn FnOnce(&tokio::runtime::Runtime, &SqliteStore) + Send>;

/// The real SQLite store, run to completion on its own thread per call.
pub struct BlockingStore {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl BlockingStore {
    /// Opens (creating) the SQLite database at `path` on a new thread.
    pub fn open(path: &std::path::Path) -> BlockingStore {
        let url = format!("sqlite:{}", path.display());
        let (jobs, inbox) = mpsc::channel::<Job>();
        let (ready_tx, ready) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sim-store".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the store thread's runtime");
                let store = runtime
                    .block_on(SqliteStore::open(&url))
                    .expect("the simulation's SQLite store opens");
                ready_tx
                    .send(())
                    .expect("the simulation waits for its store");
                while let Ok(job) = inbox.recv() {
                    job(&runtime, &store);
                }
            })
            .expect("the store thread starts");
        ready.recv().expect("the store thread opened the database");
        BlockingStore {
            jobs: Mutex::new(Some(jobs)),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Runs `call` on the store thread and blocks until it answers.
    pub fn run<T, F, Fut>(&self, call: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(SqliteStore) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let (answer_tx, answer) = mpsc::channel();
        // The store reads the coordinator's clock for leases; on its own
        // thread that clock must read the simulation's instant, not the
        // store runtime's.
        let now_ms = dtx_coordinator::clock::now_ms();
        let job: Job = Box::new(move |runtime, store| {
            let out = dtx_coordinator::clock::reading_as_of(now_ms, || {
                runtime.block_on(call(store.clone()))
            });
            let _ = answer_tx.send(out);
        });
        self.jobs
            .lock()
            .unwrap()
            .as_ref()
            .expect("the store is open")
            .send(job)
            .expect("the store thread runs");
        answer.recv().expect("the store thread answers")
    }

    /// Reads a transaction, for the simulation's own checks.
    pub fn get(&self, gid: &str) -> Option<TransactionRecord> {
        let gid = gid.to_owned();
        self.run(move |s| async move { s.get(&gid).await })
            .expect("the simulation reads its store")
    }

    /// Reads a transaction's history, for the simulation's own checks.
    pub fn events(&self, gid: &str) -> Vec<Event> {
        let gid = gid.to_owned();
        self.run(move |s| async move { s.events(&gid).await })
            .expect("the simulation reads its store")
    }

    /// Stops the store thread and waits for it.
    pub fn close(&self) {
        self.jobs.lock().unwrap().take();
        if let Some(thread) = self.thread.lock().unwrap().take() {
            thread.join().expect("the store thread ends cleanly");
        }
    }
}

/// One coordinator node's store: the shared [`BlockingStore`], through the
/// node's life. A dead node's calls never return (a crashed process does
/// nothing more); a paused node's calls wait until the pause ends.
pub struct NodeStore {
    pub(crate) sim: Arc<Sim>,
    pub(crate) life: Arc<NodeLife>,
}

impl NodeStore {
    /// The call's way to the store: a round trip drawn from the plan (in
    /// whole milliseconds: the coordinator's clock then reads the same
    /// differences in every run), during which every other task runs, then
    /// the node's gate. Without it nothing could happen between two store
    /// calls of one task that await nothing else, such as a TCC decision's
    /// read of the branch list and its write.
    async fn arrive(&self) {
        let longest = self.sim.store_round_trip.as_millis() as u64;
        if longest > 0 {
            let ms = self.sim.draw(|rng| rng.random_range(0..=longest));
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
        self.life.gate().await;
    }

    /// Runs one write: on its way ([`Self::arrive`]), then see
    /// [`Self::write_arrived`].
    async fn write<T, F, Fut>(
        &self,
        what: String,
        call: F,
        summary: impl FnOnce(&T) -> Option<String>,
    ) -> T
    where
        T: Send + 'static,
        F: FnOnce(SqliteStore) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        self.arrive().await;
        self.write_arrived(what, call, summary).await
    }

    /// Runs one write that has arrived: the crash point the plan drew for
    /// this node (before or after its k-th write), then the write.
    ///
    /// The trace gets `what` and `summary` of the answer (nothing when it
    /// says `None`), never a whole record: records carry Unix timestamps,
    /// which differ between runs.
    async fn write_arrived<T, F, Fut>(
        &self,
        what: String,
        call: F,
        summary: impl FnOnce(&T) -> Option<String>,
    ) -> T
    where
        T: Send + 'static,
        F: FnOnce(SqliteStore) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        let fate = self.life.count_write();
        if fate == WriteFate::CrashBefore {
            self.crash(&format!("before its write {what}")).await;
        }
        let out = self.sim.store.run(call);
        if let Some(summary) = summary(&out) {
            self.sim
                .trace(format!("{} write {what} -> {summary}", self.life.name()));
        }
        if fate == WriteFate::CrashAfter {
            self.crash(&format!("after its write {what}")).await;
        }
        out
    }

    async fn read<T, F, Fut>(&self, call: F) -> T
    where
        T: Send + 'static,
        F: FnOnce(SqliteStore) -> Fut + Send + 'static,
        Fut: Future<Output = T>,
    {
        self.arrive().await;
        self.sim.store.run(call)
    }

    /// The node dies here: the caller's future never completes.
    async fn crash(&self, when: &str) -> ! {
        self.sim.trace(format!("{} CRASH {when}", self.life.name()));
        self.life.kill();
        std::future::pending::<()>().await;
        unreachable!("a dead node's store never answers")
    }

    /// A write error drawn at the seed's rates (before heal only); the
    /// write is not applied.
    fn injected_error(&self) -> Option<StoreError> {
        if !self.sim.faults_on() {
            return None;
        }
        let rates = &self.sim.rates;
        let (unavailable, failed) = self.sim.draw(|rng| {
            (
                rng.random_bool(rates.store_unavailable),
                rng.random_bool(rates.store_error),
            )
        });
        if unavailable {
            Some(StoreError::Unavailable("injected: connection lost".into()))
        } else if failed {
            Some(StoreError::Other("injected: the write failed".into()))
        } else {
            None
        }
    }

    /// After an accepted update: a status only moves forward (a final one
    /// never changes; a decision is never taken back).
    fn check_status_moves_forward(&self, gid: &str, to: Status) {
        let previous = self.sim.note_status(gid, to);
        let Some(from) = previous else { return };
        let rank = |s: Status| match s {
            Status::Open | Status::Running | Status::Preparing => 0,
            Status::PreCommitting => 1,
            Status::Committing | Status::Aborting => 2,
            Status::Committed | Status::Aborted => 3,
        };
        let turned = matches!(
            (from, to),
            (
                Status::Committing | Status::Committed,
                Status::Aborting | Status::Aborted
            ) | (
                Status::Aborting | Status::Aborted,
                Status::Committing | Status::Committed
            )
        );
        if rank(to) < rank(from) || turned || (from.is_final() && from != to) {
            self.sim.violation(
                Kind::StatusWentBack,
                Some(gid),
                format!("{} wrote {to} over {from}", self.life.name()),
            );
        }
    }
}

#[async_trait]
impl Store for NodeStore {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        let what = format!("create {}", new.gid);
        self.write(
            what,
            move |s| async move { s.create(new).await },
            |out| {
                Some(match out {
                    Ok(Created::Inserted(fence)) => format!("inserted@{}", fence.epoch),
                    Ok(Created::Exists {
                        same_request,
                        existing,
                    }) => format!("exists same_request={same_request} {}", existing.status),
                    Err(e) => format!("error: {e}"),
                })
            },
        )
        .await
    }

    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
        by: Option<&str>,
    ) -> Result<BranchRegistered, StoreError> {
        let what = format!("register_branch {gid}/{}", spec.id);
        let gid = gid.to_owned();
        let by = by.map(str::to_owned);
        self.write(
            what,
            move |s| async move { s.register_branch(&gid, spec, now_ms, by.as_deref()).await },
            |out| Some(format!("{out:?}")),
        )
        .await
    }

    async fn update(&self, mut update: Update) -> Result<(), StoreError> {
        self.arrive().await;
        if let Some(error) = self.injected_error() {
            self.sim.trace(format!(
                "{} write update {}@{} -> injected {error}",
                self.life.name(),
                update.fence.gid,
                update.fence.epoch
            ));
            return Err(error);
        }
        if self.sim.planted == Some(Planted::LostHistory) && update.status.is_some() {
            // The planted bug: the log drops the history of a status change.
            update.events.retain(|e| e.kind != "status");
        }
        let gid = update.fence.gid.clone();
        let status = update.status;
        let a_decision = update.expect_branch_count.is_some();
        let what = format!(
            "update {gid}@{} status={} branches={:?}",
            update.fence.epoch,
            status.map_or("-".into(), |s| s.to_string()),
            update
                .branches
                .iter()
                .map(|b| format!("{}:{}", b.index, b.status))
                .collect::<Vec<_>>()
        );
        let out = self
            .write_arrived(
                what,
                move |s| async move { s.update(update).await },
                |out| Some(format!("{out:?}")),
            )
            .await;
        match (&out, status) {
            (Ok(()), Some(to)) => self.check_status_moves_forward(&gid, to),
            (Err(StoreError::Conflict(_)), _) if a_decision => self.sim.note_decision_refused(),
            _ => {}
        }
        out
    }

    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let what = format!("set_attention {}@{}", fence.gid, fence.epoch);
        let (fence, reason) = (fence.clone(), reason.to_owned());
        self.write(
            what,
            move |s| async move { s.set_attention(&fence, &reason, now_ms).await },
            |out| Some(format!("{out:?}")),
        )
        .await
    }

    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let gid = gid.to_owned();
        self.read(move |s| async move { s.get(&gid).await }).await
    }

    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError> {
        let gid = gid.to_owned();
        self.read(move |s| async move { s.events(&gid).await })
            .await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        self.read(move |s| async move { s.list(query).await }).await
    }

    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let what = format!("take_over {gid}");
        let (gid, owner) = (gid.to_owned(), owner.to_owned());
        self.write(
            what,
            move |s| async move { s.take_over(&gid, &owner, lease).await },
            |out| {
                Some(match out {
                    Ok(Some((fence, record))) => {
                        format!("taken@{} {}", fence.epoch, record.status)
                    }
                    Ok(None) => "final already".into(),
                    Err(e) => format!("error: {e}"),
                })
            },
        )
        .await
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let owner = owner.to_owned();
        self.write(
            "claim_expired".into(),
            move |s| async move { s.claim_expired(&owner, lease, limit).await },
            // Claims run every interval and mostly find nothing: trace
            // only what they took.
            |out| match out {
                Ok(claimed) if claimed.is_empty() => None,
                Ok(claimed) => Some(format!(
                    "{:?}",
                    claimed
                        .iter()
                        .map(|(f, r)| format!("{}@{} {}", f.gid, f.epoch, r.status))
                        .collect::<Vec<_>>()
                )),
                Err(e) => Some(format!("error: {e}")),
            },
        )
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        // The engine lists the gids it drives from a HashMap; sorted, the
        // trace does not depend on its iteration order.
        let mut sorted = gids.to_vec();
        sorted.sort();
        let what = format!("renew_leases {sorted:?}");
        let owner = owner.to_owned();
        self.write(
            what,
            move |s| async move { s.renew_leases(&owner, &sorted, lease).await },
            |out| Some(format!("{out:?}")),
        )
        .await
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(
            "release_leases".into(),
            move |s| async move { s.release_leases(&owner).await },
            |out| Some(format!("{out:?}")),
        )
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|s| async move { s.ping().await }).await
    }
}
