//! Targeted runs: instead of faults drawn from a seed, one fault placed at a
//! named protocol point, deterministically. Each run records what its
//! client was told, waits for quiescence within a bound, reads the final
//! state twice and checks it, like a scenario.
//!
//! - [`three_pc_partition`]: the inventory pre-commits a 3PC branch, its
//!   acknowledgement never arrives, and it is cut off the coordinators
//!   (but not its database); the coordinator reaches the deadline and
//!   aborts, while the inventory's timeout rule, unable to ask the
//!   coordinator, commits. The checker must report
//!   `three_pc_partition_divergence` for that gid, on the evidence of the
//!   inventory's own record that its timeout rule decided.
//! - [`coordinator_killed_at`]: kill -9 of the coordinator that owns the
//!   order's transaction at a named [`ProtocolPoint`] (after the 2PC
//!   decision and before phase two, between a TCC Try and its Confirm,
//!   during a saga's compensation), while the inventory holds that point open with a slow
//!   answer. The other coordinator takes over; nothing may be violated.
//!
//! Runs against deliberately broken services are in [`super::plants`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dtx_protocol::{Mode, Op, Status};
use serde_json::{Value, json};

use super::binaries::Binaries;
use super::checker::{self, LedgerOp, Violation};
use super::cluster::{Cluster, ClusterOptions, Node};
use super::observe;
use super::workload::{self, Attempt};
use crate::error::TestSupportError;

/// What a targeted run found.
#[derive(Debug, Clone)]
pub struct Targeted {
    /// The orders (= gids) it placed.
    pub gids: Vec<String>,
    /// Every violation the checker reported, the comparison of the two
    /// final reads included.
    pub violations: Vec<Violation>,
    /// Whether everything was final within the run's bound.
    pub quiescent: bool,
}

/// Both coordinators.
const COORDINATORS: [Node; 2] = [Node::Coordinator1, Node::Coordinator2];

/// The product targeted runs order.
pub const SKU: &str = "widget";
/// Units of it seeded.
pub const STOCK: i64 = 100;

/// A cluster for one targeted run, with the record of every order attempt
/// and what its client was told (the checker's closed world needs it).
pub struct TargetedRun {
    /// The cluster.
    pub cluster: Cluster,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    started: Instant,
}

impl TargetedRun {
    /// Starts a cluster with `options` and seeds [`STOCK`] units of [`SKU`].
    pub async fn start(
        binaries: &Binaries,
        name: &str,
        options: &ClusterOptions,
    ) -> Result<TargetedRun, TestSupportError> {
        let cluster = Cluster::start(binaries, name, options).await?;
        observe::seed(&cluster, SKU, STOCK).await?;
        Ok(TargetedRun {
            cluster,
            attempts: Arc::default(),
            started: Instant::now(),
        })
    }

    /// `POST /faults` on the inventory: the next `count` calls of `path`
    /// fail as `kind` says (`fail`, `fail_after`, `slow` with `delay_ms`).
    /// The inventory must accept it.
    pub async fn arm(
        &self,
        path: &str,
        kind: &str,
        count: u32,
        delay_ms: u64,
    ) -> Result<(), TestSupportError> {
        let body = json!({"path": path, "kind": kind, "count": count, "delay_ms": delay_ms});
        let url = format!("{}/faults", self.cluster.url(Node::Inventory));
        match self.cluster.http().post(url).json(&body).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            other => Err(TestSupportError::Service {
                what: format!("arm {kind} on the inventory's {path}"),
                why: format!("{other:?}"),
            }),
        }
    }

    /// Places one order in the background and records what its client is
    /// told; the task answers the order id, when the answer carried one.
    pub fn place_in_background(
        &self,
        mode: Mode,
        qty: i64,
    ) -> tokio::task::JoinHandle<Option<String>> {
        let (http, url) = (self.cluster.http().clone(), self.cluster.url(Node::Orders));
        let (attempts, started) = (self.attempts.clone(), self.started);
        tokio::spawn(async move {
            let answer = http
                .post(format!("{url}/orders"))
                .timeout(Duration::from_secs(60))
                .json(&json!({"sku": SKU, "qty": qty, "mode": mode}))
                .send()
                .await;
            let (told, order) = workload::read_answer(answer).await;
            attempts
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(Attempt {
                    at_ms: started.elapsed().as_millis() as u64,
                    mode,
                    order: order.clone(),
                    told,
                });
            order
        })
    }

    /// Places one order, waits for the answer and answers its id; an
    /// answer without one is an error.
    pub async fn place(&self, mode: Mode, qty: i64) -> Result<String, TestSupportError> {
        let order = self.place_in_background(mode, qty).await.ok().flatten();
        order.ok_or_else(|| TestSupportError::Service {
            what: format!("POST /orders ({mode}, {qty} unit(s))"),
            why: format!("no order id in the answer: {:?}", self.attempts().last()),
        })
    }

    /// What clients were told so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits for quiescence within `bound`, reads everything back twice and
    /// checks it.
    pub async fn verdict(
        &self,
        gids: Vec<String>,
        bound: Duration,
    ) -> Result<Targeted, TestSupportError> {
        let quiescent = observe::wait_for_quiescence(&self.cluster, bound)
            .await
            .is_some();
        let seeded = BTreeMap::from([(SKU.to_owned(), STOCK)]);
        let (first, second) =
            observe::observe(&self.cluster, &seeded, &self.attempts(), quiescent).await?;
        Ok(Targeted {
            gids,
            violations: checker::check(&second)
                .into_iter()
                .chain(checker::compare_reads(&first, &second))
                .collect(),
            quiescent,
        })
    }

    /// Polls `probe` every 50 ms until it answers `Some`, for at most
    /// `bound`; `what` names the awaited condition in the error.
    pub async fn until<T, F: Future<Output = Option<T>>>(
        &self,
        what: &str,
        bound: Duration,
        mut probe: impl FnMut() -> F,
    ) -> Result<T, TestSupportError> {
        let started = Instant::now();
        loop {
            if let Some(found) = probe().await {
                return Ok(found);
            }
            if started.elapsed() > bound {
                return Err(TestSupportError::Service {
                    what: what.to_owned(),
                    why: format!("not within {bound:?}"),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The transaction `gid` as `coordinator` shows it.
    pub async fn transaction(&self, coordinator: Node, gid: &str) -> Option<Value> {
        let url = format!("{}/v1/transactions/{gid}", self.cluster.url(coordinator));
        let answer = self.cluster.http().get(url).send().await.ok()?;
        answer.json().await.ok()
    }
}

/// What the SDK's 3PC watchdog logs when it decides a branch alone.
const TIMEOUT_RULE_FIRED: &str = "decided by the timeout rule";

/// 3PC's known failure under a partition, reproduced; see the module docs.
pub async fn three_pc_partition(binaries: &Binaries) -> Result<Targeted, TestSupportError> {
    const PARTICIPANT_TIMEOUT: Duration = Duration::from_secs(3);
    let options = ClusterOptions {
        three_phase_timeout: PARTICIPANT_TIMEOUT,
        orders_args: vec!["--deadline-ms".into(), "5000".into()],
        ..ClusterOptions::default()
    };
    let run = TargetedRun::start(binaries, "3pc-partition", &options).await?;
    // The inventory pre-commits, but every answer to PreCommit is lost.
    run.arm("/3pc/pre_commit", "fail_after", 1000, 0).await?;
    let placing = run.place_in_background(Mode::ThreePhase, 2);
    // Wait for the inventory's pre-commit, then cut it off at once.
    let gid = run
        .until(
            "the inventory's pre-commit",
            Duration::from_secs(30),
            || async {
                let ledger: Vec<checker::LedgerRow> = run
                    .cluster
                    .http()
                    .get(format!("{}/ledger", run.cluster.url(Node::Inventory)))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                ledger
                    .into_iter()
                    .find(|r| r.op == LedgerOp::Coordinator(Op::PreCommit))
                    .map(|r| r.gid)
            },
        )
        .await?;
    // A partition between the inventory and the coordinators alone: the
    // inventory keeps its database, without which its watchdog could not
    // even read its own state.
    run.cluster.cut_off(Node::Inventory, &COORDINATORS).await?;
    // The coordinator aborts at the deadline; the order service answers.
    let _ = placing.await;
    // The inventory's timeout rule fires (it cannot reach the coordinator)
    // and commits. Rejoined before that, it would ask the coordinator and
    // abort, and the divergence would not happen; so wait for the rule's
    // log line.
    run.until(
        "the inventory's timeout rule",
        PARTICIPANT_TIMEOUT + Duration::from_secs(60),
        || async {
            let logs = run.cluster.logs(Node::Inventory).await;
            logs.lines()
                .any(|line| line.contains(TIMEOUT_RULE_FIRED) && line.contains(&gid))
                .then_some(())
        },
    )
    .await?;
    run.cluster.rejoin(Node::Inventory, &COORDINATORS).await?;
    // The transaction cannot finish (the participant refuses an abort
    // after its own commit): a short bound.
    run.verdict(vec![gid], Duration::from_secs(5)).await
}

/// A point in a protocol where the coordinator is killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolPoint {
    /// 2PC: the commit decision is logged; the commits are on their way.
    AfterDecisionBeforePhaseTwo,
    /// TCC: the Try is under way; no Confirm (nor commit request) yet.
    BetweenTryAndConfirm,
    /// Saga: the inventory refused (out of stock); compensations run.
    DuringCompensation,
}

impl ProtocolPoint {
    /// Every point.
    pub const ALL: [ProtocolPoint; 3] = [
        ProtocolPoint::AfterDecisionBeforePhaseTwo,
        ProtocolPoint::BetweenTryAndConfirm,
        ProtocolPoint::DuringCompensation,
    ];

    /// (mode, units ordered, inventory route held open, the transaction
    /// status that shows the point is reached).
    fn plan(self) -> (Mode, i64, &'static str, Status) {
        match self {
            ProtocolPoint::AfterDecisionBeforePhaseTwo => {
                (Mode::TwoPhase, 2, "/2pc/commit", Status::Committing)
            }
            ProtocolPoint::BetweenTryAndConfirm => (Mode::Tcc, 2, "/tcc/try", Status::Open),
            // More than the stock: the inventory refuses, and its own
            // release (a refused branch is compensated too) is held open.
            ProtocolPoint::DuringCompensation => {
                (Mode::Saga, STOCK + 1, "/saga/release", Status::Aborting)
            }
        }
    }
}

/// Kills the coordinator that owns the order's transaction at `point`; see
/// the module docs.
pub async fn coordinator_killed_at(
    binaries: &Binaries,
    point: ProtocolPoint,
) -> Result<Targeted, TestSupportError> {
    let (mode, qty, held_route, reached) = point.plan();
    let options = ClusterOptions {
        // An open TCC transaction whose initiator lost its coordinator is
        // aborted at the deadline: keep that short.
        orders_args: vec!["--deadline-ms".into(), "8000".into()],
        ..ClusterOptions::default()
    };
    let run = TargetedRun::start(binaries, &format!("{point:?}"), &options).await?;
    run.arm(held_route, "slow", 1, 6000).await?;
    let placing = run.place_in_background(mode, qty);
    // Watch through the other coordinator until the point is reached.
    let gid = run
        .until(
            &format!("a {mode} transaction `{}`", reached.as_str()),
            Duration::from_secs(30),
            || async {
                let txs = observe::transactions(&run.cluster, Node::Coordinator2, false)
                    .await
                    .ok()?;
                txs.into_iter()
                    .find(|t| t.mode == mode && t.status == reached)
                    .map(|t| t.gid)
            },
        )
        .await?;
    // The call is in flight once the inventory holds it: its fault
    // middleware logs the injected delay with the gid.
    run.until(
        &format!("the held call of {held_route}"),
        Duration::from_secs(30),
        || async {
            let logs = run.cluster.logs(Node::Inventory).await;
            logs.lines()
                .any(|line| line.contains("injected delay") && line.contains(&gid))
                .then_some(())
        },
    )
    .await?;
    // The order service spreads its transactions over both coordinators:
    // kill the one that owns this one.
    let owner = run
        .until(
            "the transaction's owner",
            Duration::from_secs(10),
            || async {
                let tx = run.transaction(Node::Coordinator2, &gid).await?;
                let owner = tx["owner"].as_str()?.to_owned();
                COORDINATORS.into_iter().find(|c| c.as_str() == owner)
            },
        )
        .await?;
    let survivor = if owner == Node::Coordinator1 {
        Node::Coordinator2
    } else {
        Node::Coordinator1
    };
    run.cluster.kill(owner).await?;
    // Started again only once the other coordinator owns the transaction
    // (or finished it): the takeover is what this run is about.
    run.until(
        &format!("the takeover by {survivor}"),
        Duration::from_secs(60),
        || async {
            let tx = run.transaction(survivor, &gid).await?;
            let finished = matches!(tx["status"].as_str(), Some("committed" | "aborted"));
            (tx["owner"].as_str() == Some(survivor.as_str()) || finished).then_some(())
        },
    )
    .await?;
    run.cluster.start_again(owner).await?;
    let _ = placing.await;
    run.verdict(vec![gid], Duration::from_secs(60)).await
}
