//! One run of one seed: the shared simulation state ([`Sim`]), and
//! [`run_seed`], which draws the plan, starts the nodes and initiators on a
//! single-threaded runtime with tokio's paused clock, injects the planned
//! crash and stall, heals, runs virtual time on until every transaction is
//! final (or a bound passes), and checks the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtx_protocol::{Mode, Status};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::initiator;
use super::invariants::{self, Kind, PARTITION_DIVERGENCE, Violation};
use super::nodes::{Cluster, NodeTiming};
use super::participants::{Key, Participant, Participants, Problems};
use super::plan::{CrashTrigger, FaultRates, Plan, TxPlan};
use super::store::BlockingStore;
use super::trace::Trace;

/// Bugs planted on purpose, to prove the simulation finds what it claims
/// to. These are the simulated world's (its participants, network, store
/// wrapper). A planted bug of the protocol core or the engine (a test-only
/// switch there) gets a variant here too, which `run_seed` turns on for the
/// run, and a `planted_<name>_is_found` test in `simulation.rs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Planted {
    /// The transport follows a 3xx as if it were a 2xx (defect 2's effect).
    FollowRedirects,
    /// The 3PC participant takes a coordinator's 503 for "unreachable" and
    /// applies its timeout rule (the SDK's defect 7).
    ThreePcUnreachableOn503,
    /// Participants run the business again on a duplicate call.
    BarrierOff,
    /// Participants run a forward step that arrives after its undo.
    NoSuspension,
    /// The log loses the history entries of status changes.
    LostHistory,
}

impl Planted {
    /// Every planted bug.
    pub const ALL: [Planted; 5] = [
        Planted::FollowRedirects,
        Planted::ThreePcUnreachableOn503,
        Planted::BarrierOff,
        Planted::NoSuspension,
        Planted::LostHistory,
    ];

    /// Its name, as `DTX_SIM_PLANTED` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Planted::FollowRedirects => "follow_redirects",
            Planted::ThreePcUnreachableOn503 => "three_pc_unreachable_on_503",
            Planted::BarrierOff => "barrier_off",
            Planted::NoSuspension => "no_suspension",
            Planted::LostHistory => "lost_history",
        }
    }

    /// The planted bug of this name.
    pub fn from_name(name: &str) -> Option<Planted> {
        Planted::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// How long after heal the run waits for every transaction to be final.
const BOUND_AFTER_HEAL: Duration = Duration::from_secs(600);
/// How long the run goes on once everything is final, so that requests
/// still on the wire (late, duplicated) and 3PC watchdogs land.
const SETTLE: Duration = Duration::from_secs(10);

/// State shared by everything in one run. One thread runs it all; the
/// mutexes are for `Send`, never contended.
pub struct Sim {
    /// The planted bug, if any.
    pub planted: Option<Planted>,
    /// The store, for the simulation's own reads.
    pub store: BlockingStore,
    /// Per-call fault probabilities.
    pub rates: FaultRates,
    /// The longest round trip of a store call.
    pub store_round_trip: Duration,
    /// The participants.
    pub participants: Mutex<Participants>,
    rng: Mutex<StdRng>,
    trace: Mutex<Trace>,
    violations: Mutex<Vec<Violation>>,
    faults_on: AtomicBool,
    /// The last status each transaction was written with.
    statuses: Mutex<BTreeMap<String, Status>>,
    /// TCC decisions whose write was refused because a branch arrived
    /// after their read.
    decisions_refused: AtomicUsize,
}

impl Sim {
    /// Appends a line to the trace.
    pub fn trace(&self, line: String) {
        self.trace.lock().unwrap().push(line);
    }

    /// Draws from the run's random numbers.
    pub fn draw<T>(&self, f: impl FnOnce(&mut StdRng) -> T) -> T {
        f(&mut self.rng.lock().unwrap())
    }

    /// Whether faults are still being injected (before heal).
    pub fn faults_on(&self) -> bool {
        self.faults_on.load(Ordering::SeqCst)
    }

    /// Records a broken rule.
    pub fn violation(&self, kind: Kind, gid: Option<&str>, detail: String) {
        let v = Violation {
            kind,
            gid: gid.map(str::to_owned),
            detail,
        };
        self.trace(format!("VIOLATION {v}"));
        self.violations.lock().unwrap().push(v);
    }

    /// Records what participant `key` saw wrong.
    pub fn report(&self, key: &Key, problems: Problems) {
        for (kind, detail) in problems {
            self.violation(kind, Some(&key.0), format!("branch {}: {detail}", key.1));
        }
    }

    /// Whether a partition cuts participant `key` off now.
    pub fn cut_off(&self, key: &Key) -> bool {
        let participants = self.participants.lock().unwrap();
        participants
            .get(key)
            .is_some_and(|p| p.cut_off(Instant::now()))
    }

    /// Notes that `gid` was written with status `to`; returns the status
    /// noted before.
    pub fn note_status(&self, gid: &str, to: Status) -> Option<Status> {
        self.statuses.lock().unwrap().insert(gid.to_owned(), to)
    }

    /// Notes a TCC decision's write refused because a branch arrived.
    pub fn note_decision_refused(&self) {
        self.decisions_refused.fetch_add(1, Ordering::SeqCst);
    }
}

/// What one seed's run came to.
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Named findings that are not failures (3PC's partition divergence).
    pub findings: Vec<Violation>,
    /// The final status of each transaction (`None`: never registered).
    pub finals: Vec<(Mode, Option<Status>)>,
    /// TCC decisions whose write a branch that arrived after their read
    /// refused (the race this counts must stay explored).
    pub decisions_refused: usize,
    /// What the plan drew, in one line.
    pub plan: String,
    /// The whole trace.
    pub trace: Trace,
}

/// Runs seed `seed`, with `planted` if given.
pub fn run_seed(seed: u64, planted: Option<Planted>) -> Outcome {
    // Memory-backed where the machine has it: no disk I/O per seed.
    let shm = std::path::Path::new("/dev/shm");
    let mut dir = tempfile::Builder::new();
    dir.prefix("dtx-sim-");
    let dir = if shm.is_dir() {
        dir.tempdir_in(shm)
    } else {
        dir.tempdir()
    }
    .expect("a temporary directory for the simulation's database");
    let store = BlockingStore::open(&dir.path().join("dtx.db"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("the simulation's runtime");
    let (sim, mut outcome) = runtime.block_on(run(seed, planted, store));
    // Dropping the runtime drops every task still blocked on a dead node.
    drop(runtime);
    outcome.trace = std::mem::replace(&mut *sim.trace.lock().unwrap(), Trace::new());
    sim.store.close();
    outcome
}

async fn run(seed: u64, planted: Option<Planted>, store: BlockingStore) -> (Arc<Sim>, Outcome) {
    let mut rng = StdRng::seed_from_u64(seed);
    let plan = Plan::draw(&mut rng);
    let mut participants = Participants::default();
    for tx in &plan.txs {
        add_participants(&mut participants, tx);
    }
    let sim = Arc::new(Sim {
        planted,
        store,
        rates: plan.rates.clone(),
        store_round_trip: plan.store_round_trip,
        participants: Mutex::new(participants),
        rng: Mutex::new(rng),
        trace: Mutex::new(Trace::new()),
        violations: Mutex::new(Vec::new()),
        faults_on: AtomicBool::new(true),
        statuses: Mutex::new(BTreeMap::new()),
        decisions_refused: AtomicUsize::new(0),
    });
    let summary = summarize(&plan);
    sim.trace(format!("PLAN seed={seed} planted={planted:?} {summary}"));
    let cluster = Arc::new(Cluster::new(
        sim.clone(),
        NodeTiming {
            lease: plan.lease,
            claim_interval: plan.claim_interval,
        },
    ));
    let node_ids: Vec<String> = (0..plan.nodes).map(|i| format!("n{i}")).collect();
    for id in &node_ids {
        cluster.start(id);
    }
    inject_faults(&sim, &cluster, &plan, &node_ids);
    let initiators = Arc::new(AtomicUsize::new(plan.txs.len()));
    for tx in &plan.txs {
        let (sim, cluster, tx, left) =
            (sim.clone(), cluster.clone(), tx.clone(), initiators.clone());
        tokio::spawn(async move {
            initiator::run(sim, cluster, tx).await;
            left.fetch_sub(1, Ordering::SeqCst);
        });
    }
    let start = Instant::now();
    tokio::time::sleep_until(start + plan.heal_at).await;
    heal(&sim, &cluster, &node_ids);
    let bound = Instant::now() + BOUND_AFTER_HEAL;
    loop {
        let settled =
            initiators.load(Ordering::SeqCst) == 0 && plan.txs.iter().all(|tx| settled(&sim, tx));
        if settled || Instant::now() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    tokio::time::sleep(SETTLE).await;
    let mut finals = Vec::new();
    let mut findings = Vec::new();
    for tx in &plan.txs {
        let record = sim.store.get(&tx.gid);
        let events = record
            .as_ref()
            .map(|_| sim.store.events(&tx.gid))
            .unwrap_or_default();
        finals.push((tx.mode, record.as_ref().map(|r| r.status)));
        let found = {
            let participants = sim.participants.lock().unwrap();
            invariants::check_end(tx, record.as_ref(), &events, &participants)
        };
        for (kind, detail) in found {
            if kind == PARTITION_DIVERGENCE {
                sim.trace(format!("FINDING {} [{}]: {detail}", kind.name(), tx.gid));
                findings.push(Violation {
                    kind,
                    gid: Some(tx.gid.clone()),
                    detail,
                });
            } else {
                sim.violation(kind, Some(&tx.gid), detail);
            }
        }
    }
    sim.trace(format!("END finals={finals:?}"));
    let violations = sim.violations.lock().unwrap().clone();
    let outcome = Outcome {
        seed,
        violations,
        findings,
        finals,
        decisions_refused: sim.decisions_refused.load(Ordering::SeqCst),
        plan: summary,
        trace: Trace::new(),
    };
    (sim, outcome)
}

/// Whether a transaction needs no more time: final, never registered, or
/// a 3PC transaction its participants contradict (it cannot finish).
fn settled(sim: &Sim, tx: &TxPlan) -> bool {
    let Some(record) = sim.store.get(&tx.gid) else {
        return true;
    };
    if record.status.is_final() {
        return true;
    }
    let participants = sim.participants.lock().unwrap();
    let mine: Vec<(&str, &Participant)> = participants.of(&tx.gid).collect();
    tx.mode == Mode::ThreePhase && invariants::three_pc_diverged(record.status, &mine)
}

fn add_participants(participants: &mut Participants, tx: &TxPlan) {
    let specs: Vec<_> = tx.branches.iter().map(|b| b.spec.clone()).collect();
    let deps = if tx.mode == Mode::Saga {
        dtx_protocol::spec::saga_dependencies(&specs).expect("the plan draws valid sagas")
    } else {
        vec![vec![]; specs.len()]
    };
    for (i, branch) in tx.branches.iter().enumerate() {
        let dependents = deps
            .iter()
            .enumerate()
            .filter(|(_, d)| d.contains(&i))
            .map(|(j, _)| specs[j].id.clone())
            .collect();
        participants.insert(
            (tx.gid.clone(), branch.spec.id.clone()),
            Participant::new(tx.mode, branch.behaviour.clone(), dependents),
        );
    }
    if let Some(late) = &tx.late {
        participants.insert(
            (tx.gid.clone(), late.branch.spec.id.clone()),
            Participant::new(tx.mode, late.branch.behaviour.clone(), vec![]),
        );
    }
}

/// Arms the plan's crash (and restart) and stall.
fn inject_faults(sim: &Arc<Sim>, cluster: &Arc<Cluster>, plan: &Plan, node_ids: &[String]) {
    if let Some(crash) = plan.crash.clone() {
        let id = node_ids[crash.node].clone();
        let life = cluster.life(&id).expect("the node just started");
        match crash.trigger {
            CrashTrigger::AtWrite { k, after } => life.crash_at_write(k, after),
            CrashTrigger::AtTime(at) => {
                let (sim, life) = (sim.clone(), life.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(at).await;
                    if sim.faults_on() && !life.is_dead() {
                        sim.trace(format!("{} CRASH at a drawn time", life.name()));
                        life.kill();
                    }
                });
            }
        }
        if let Some((after, same_id)) = crash.restart {
            let (sim, cluster) = (sim.clone(), cluster.clone());
            tokio::spawn(async move {
                life.died().await;
                tokio::time::sleep(after).await;
                if sim.faults_on() {
                    // Past heal, `heal` restarts what is needed.
                    cluster.start(&if same_id { id } else { format!("{id}b") });
                }
            });
        }
    }
    if let Some(pause) = plan.pause.clone() {
        let (sim, life) = (
            sim.clone(),
            cluster
                .life(&node_ids[pause.node])
                .expect("the node just started"),
        );
        tokio::spawn(async move {
            tokio::time::sleep(pause.at).await;
            if sim.faults_on() && !life.is_dead() {
                sim.trace(format!("{} PAUSE for {:?}", life.name(), pause.length));
                life.pause_until(Instant::now() + pause.length);
            }
        });
    }
}

/// Faults stop: no more drawn faults, crashes disarmed, stalls over, and a
/// node alive to finish the work.
fn heal(sim: &Sim, cluster: &Cluster, node_ids: &[String]) {
    sim.faults_on.store(false, Ordering::SeqCst);
    sim.trace("HEAL".into());
    for life in cluster.alive() {
        life.disarm();
        life.resume();
    }
    if cluster.alive().is_empty() {
        cluster.start(&node_ids[0]);
    }
}

fn summarize(plan: &Plan) -> String {
    let txs: Vec<String> = plan
        .txs
        .iter()
        .map(|t| {
            let deps = t.branches.iter().any(|b| b.spec.depends_on.is_some());
            format!(
                "{}({} branches{}{}{})",
                t.gid,
                t.branches.len(),
                if deps { ", graph" } else { "" },
                if t.partitioned() { ", partition" } else { "" },
                t.late
                    .as_ref()
                    .map_or(String::new(), |l| format!(", late +{:?}", l.after))
            )
        })
        .collect();
    format!(
        "nodes={} lease={:?} heal_at={:?} store_round_trip<={:?} txs={txs:?} crash={:?} pause={:?}",
        plan.nodes, plan.lease, plan.heal_at, plan.store_round_trip, plan.crash, plan.pause
    )
}
