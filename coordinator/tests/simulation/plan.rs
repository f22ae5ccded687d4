//! What one seed runs: the nodes, the transactions and their participants'
//! behaviour, and the faults, all drawn from the seed before the run
//! starts. (Faults of single calls are drawn during the run, in the order
//! the calls happen; see [`super::network`].)

use std::collections::BTreeMap;
use std::time::Duration;

use dtx_protocol::{BranchSpec, Mode, Op, RetryPolicy, TxOptions};
use rand::Rng;
use rand::rngs::StdRng;

use super::participants::Behaviour;

/// Probabilities of the faults of single calls, per call.
#[derive(Debug, Clone, Default)]
pub struct FaultRates {
    /// The request never reaches the participant.
    pub lost_request: f64,
    /// The participant acts; its answer never comes back.
    pub lost_reply: f64,
    /// The request reaches the participant twice.
    pub duplicate: f64,
    /// The request reaches the participant after the caller gave up.
    pub slow_request: f64,
    /// The answer comes back after the caller gave up.
    pub slow_reply: f64,
    /// The participant answers 500 (having acted or not).
    pub unknown_500: f64,
    /// The participant answers 425 (having started or not).
    pub still_working_425: f64,
    /// Something on the way answers a 3xx redirect.
    pub redirect_3xx: f64,
    /// The coordinator's decision endpoint answers 503.
    pub decision_503: f64,
    /// A driver's write fails as `Unavailable` (the engine retries it).
    pub store_unavailable: f64,
    /// A driver's write fails for good (the engine restarts the driver).
    pub store_error: f64,
}

/// Where a node crashes.
#[derive(Debug, Clone)]
pub enum CrashTrigger {
    /// At its k-th write from the start, before it commits or after.
    AtWrite { k: u64, after: bool },
    /// At this virtual time.
    AtTime(Duration),
}

/// A crash of one node, and what comes after.
#[derive(Debug, Clone)]
pub struct CrashPlan {
    /// Which node (index).
    pub node: usize,
    /// Where it dies.
    pub trigger: CrashTrigger,
    /// After how long it comes back, and whether under the same node id.
    pub restart: Option<(Duration, bool)>,
}

/// A stall of one node's I/O past its lease.
#[derive(Debug, Clone)]
pub struct PausePlan {
    /// Which node (index).
    pub node: usize,
    /// When it stalls.
    pub at: Duration,
    /// How long.
    pub length: Duration,
}

/// What a TCC initiator does once its Tries are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TccEnding {
    /// Commit when every Try succeeded, abort otherwise.
    CommitIfTried,
    /// Abort whatever happened.
    Abort,
    /// Vanish without a word: the deadline aborts.
    Vanish,
}

/// One branch and its participant.
#[derive(Debug, Clone)]
pub struct BranchPlan {
    /// The registered branch.
    pub spec: BranchSpec,
    /// How its participant behaves.
    pub behaviour: Behaviour,
}

/// A TCC branch of the same operation whose registration is still on its
/// way (a parallel request of the initiator's service, sent to whichever
/// node) when the transaction is decided.
///
/// Used only when the transaction ends in an abort or at its deadline: a
/// service that commits while one of its branches is still being registered
/// breaks TCC's own contract (the commit would confirm a branch whose Try may
/// not have run), so the simulation never does that.
#[derive(Debug, Clone)]
pub struct LateBranch {
    /// The branch and its participant.
    pub branch: BranchPlan,
    /// How long after the initiator asks for the abort (or after the
    /// deadline, when it vanished) the registration leaves.
    pub after: Duration,
}

/// One transaction.
#[derive(Debug, Clone)]
pub struct TxPlan {
    /// Its gid.
    pub gid: String,
    /// Its mode.
    pub mode: Mode,
    /// Its options.
    pub options: TxOptions,
    /// Its branches, in registration order.
    pub branches: Vec<BranchPlan>,
    /// When the initiator starts.
    pub start: Duration,
    /// TCC: how the initiator ends.
    pub ending: TccEnding,
    /// TCC: a branch registered while the transaction is decided.
    pub late: Option<LateBranch>,
}

impl TxPlan {
    /// Every branch the plan may register: in order, then the late one.
    pub fn all_branches(&self) -> impl Iterator<Item = &BranchPlan> {
        self.branches
            .iter()
            .chain(self.late.as_ref().map(|l| &l.branch))
    }

    /// Whether the plan cuts any of its participants off at some point.
    pub fn partitioned(&self) -> bool {
        self.all_branches().any(|b| b.behaviour.partition.is_some())
    }
}

/// Everything drawn for one seed before the run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How many coordinator nodes start.
    pub nodes: usize,
    /// Their lease.
    pub lease: Duration,
    /// Their claim interval.
    pub claim_interval: Duration,
    /// When faults stop.
    pub heal_at: Duration,
    /// Per-call fault probabilities (until heal).
    pub rates: FaultRates,
    /// The longest round trip of a store call: each takes from none to
    /// this, drawn per call, during which every other task runs (as they
    /// do while a real database answers). Zero: calls are instantaneous.
    pub store_round_trip: Duration,
    /// The transactions.
    pub txs: Vec<TxPlan>,
    /// A crash, if any.
    pub crash: Option<CrashPlan>,
    /// A stall, if any (two nodes only).
    pub pause: Option<PausePlan>,
}

fn ms(rng: &mut StdRng, range: std::ops::RangeInclusive<u64>) -> Duration {
    Duration::from_millis(rng.random_range(range))
}

impl Plan {
    /// Draws a plan from `rng`.
    pub fn draw(rng: &mut StdRng) -> Plan {
        let nodes = if rng.random_bool(0.5) { 2 } else { 1 };
        let lease = ms(rng, 1_500..=5_000);
        let claim_interval = ms(rng, 300..=1_500);
        let heal_at = ms(rng, 10_000..=40_000);
        // Some seeds are calm, most are stormy, a few are hurricanes.
        let intensity = match rng.random_range(0..10) {
            0 => 0.0,
            1 => 0.5,
            _ => rng.random_range(0.02..0.25),
        };
        let mut rate = |weight: f64| (intensity * weight * rng.random_range(0.0..2.0)).min(0.9);
        let rates = FaultRates {
            lost_request: rate(0.5),
            lost_reply: rate(0.5),
            duplicate: rate(0.5),
            slow_request: rate(0.3),
            slow_reply: rate(0.3),
            unknown_500: rate(0.5),
            still_working_425: rate(0.3),
            redirect_3xx: rate(0.2),
            decision_503: rate(1.0),
            store_unavailable: rate(0.2),
            store_error: rate(0.05),
        };
        let store_round_trip = if rng.random_bool(0.2) {
            Duration::ZERO
        } else {
            ms(rng, 1..=4)
        };
        let count = rng.random_range(1..=4);
        let txs = (0..count).map(|i| draw_tx(rng, i, heal_at)).collect();
        let crash = rng.random_bool(0.5).then(|| CrashPlan {
            node: rng.random_range(0..nodes),
            trigger: if rng.random_bool(0.7) {
                CrashTrigger::AtWrite {
                    k: rng.random_range(1..=30),
                    after: rng.random_bool(0.5),
                }
            } else {
                // While the transactions run (they start in the first 5 s).
                CrashTrigger::AtTime(ms(rng, 0..=8_000))
            },
            restart: rng
                .random_bool(0.7)
                .then(|| (ms(rng, 100..=10_000), rng.random_bool(0.5))),
        });
        let pause = (nodes == 2 && rng.random_bool(0.4)).then(|| PausePlan {
            node: rng.random_range(0..nodes),
            at: ms(rng, 0..=6_000),
            length: lease.mul_f64(rng.random_range(1.2..3.0)),
        });
        Plan {
            nodes,
            lease,
            claim_interval,
            heal_at,
            rates,
            store_round_trip,
            txs,
            crash,
            pause,
        }
    }
}

fn draw_tx(rng: &mut StdRng, index: usize, heal_at: Duration) -> TxPlan {
    let mode = Mode::ALL[rng.random_range(0..Mode::ALL.len())];
    let gid = format!("g{index}-{mode}");
    let count = rng.random_range(1..=4);
    let ids: Vec<String> = (0..count).map(|i| format!("b{i}")).collect();
    // A saga is sequential, or (half the time) a graph: each branch
    // depends on a random subset of the ones before it.
    let dag = mode == Mode::Saga && rng.random_bool(0.5);
    let mut depends: Vec<Option<Vec<String>>> = vec![None; count];
    if dag {
        for (i, deps) in depends.iter_mut().enumerate() {
            *deps = Some(
                ids[..i]
                    .iter()
                    .filter(|_| rng.random_bool(0.4))
                    .cloned()
                    .collect(),
            );
        }
    }
    let refusal = rng.random_range(0.0..0.3);
    let branches = ids
        .iter()
        .zip(depends)
        .map(|(id, depends_on)| draw_branch(rng, mode, &gid, id, depends_on, refusal, heal_at))
        .collect();
    // Half the TCC transactions have a branch still on its way when they
    // are decided (used only by an abort or the deadline; see LateBranch).
    let late = (mode == Mode::Tcc && rng.random_bool(0.5)).then(|| LateBranch {
        branch: draw_branch(
            rng,
            mode,
            &gid,
            &format!("b{count}"),
            None,
            refusal,
            heal_at,
        ),
        // Within a few store round trips, where the decision reads and
        // writes.
        after: ms(rng, 0..=8),
    });
    let initial_ms = rng.random_range(20..=300);
    TxPlan {
        gid,
        mode,
        options: TxOptions {
            deadline_ms: rng.random_range(1_000..=15_000),
            request_timeout_ms: rng.random_range(100..=2_000),
            retry: RetryPolicy {
                initial_ms,
                max_ms: initial_ms * rng.random_range(2..=20),
                multiplier: 2.0,
            },
            poll_interval_ms: rng.random_range(100..=2_000),
            attention_after_ms: 60_000,
        },
        branches,
        start: ms(rng, 0..=5_000),
        ending: match rng.random_range(0..10) {
            0 => TccEnding::Vanish,
            1 => TccEnding::Abort,
            _ => TccEnding::CommitIfTried,
        },
        late,
    }
}

/// Branch `id` of `gid`, and how its participant behaves.
fn draw_branch(
    rng: &mut StdRng,
    mode: Mode,
    gid: &str,
    id: &str,
    depends_on: Option<Vec<String>>,
    refusal: f64,
    heal_at: Duration,
) -> BranchPlan {
    BranchPlan {
        spec: BranchSpec {
            id: id.to_owned(),
            urls: mode
                .required_ops()
                .iter()
                .map(|op| (*op, format!("sim://{gid}/{id}/{op}")))
                .collect::<BTreeMap<Op, String>>(),
            payload: serde_json::json!({ "branch": id }),
            headers: BTreeMap::new(),
            depends_on,
        },
        behaviour: Behaviour {
            refuses: rng.random_bool(refusal),
            read_only: mode == Mode::TwoPhase && rng.random_bool(0.2),
            refuses_pre_commit: mode == Mode::ThreePhase && rng.random_bool(0.1),
            uncertain_timeout: ms(rng, 1_000..=20_000),
            precommit_timeout: ms(rng, 1_000..=20_000),
            partition: rng.random_bool(0.1).then(|| {
                let from = ms(rng, 0..=heal_at.as_millis() as u64);
                (from, (from + ms(rng, 500..=15_000)).min(heal_at))
            }),
        },
    }
}
