//! The initiators: the services that start each transaction, through the
//! engine's public API of a live node drawn from the seed. A saga, 2PC or
//! 3PC initiator registers and waits; a TCC initiator opens, registers each
//! branch and calls its Try on the participant itself, then commits or
//! aborts through `Engine::decide` (or vanishes and leaves it to the
//! deadline); an abort or a deadline may meet a branch of the same
//! operation still being registered, through any node. A node that does
//! not answer in time (dead, stalled) is given up on and the request is
//! sent again, to whichever node is drawn.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dtx_coordinator::engine::{Asked, Engine, EngineError, Registered};
use dtx_coordinator::store::NewTransaction;
use dtx_protocol::{BranchSpec, Mode, Status};
use tokio::time::Instant;

use super::network::send;
use super::nodes::Cluster;
use super::participants::SimOp;
use super::plan::{BranchPlan, TccEnding, TxPlan};
use super::world::Sim;

/// How long an initiator waits for one answer of a node.
const PATIENCE: Duration = Duration::from_secs(3);
/// How many times it sends one request before it gives up.
const ATTEMPTS: usize = 4;
/// How long it waits for a Try's answer.
const TRY_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the initiator of `tx` to its end.
pub async fn run(sim: Arc<Sim>, cluster: Arc<Cluster>, tx: TxPlan) {
    tokio::time::sleep(tx.start).await;
    let new = NewTransaction {
        gid: tx.gid.clone(),
        mode: tx.mode,
        status: match tx.mode {
            Mode::Saga => Status::Running,
            Mode::Tcc => Status::Open,
            Mode::TwoPhase | Mode::ThreePhase => Status::Preparing,
        },
        request_hash: format!("request-of-{}", tx.gid),
        namespace: "default".into(),
        registered_by: None,
        options: tx.options.clone(),
        branches: if tx.mode == Mode::Tcc {
            vec![]
        } else {
            tx.branches.iter().map(|b| b.spec.clone()).collect()
        },
        owner: String::new(),
        now_ms: 0,
        lease: std::time::Duration::ZERO,
        deadline_at_ms: 0,
    };
    let registered = ask(&sim, &cluster, &tx.gid, "register", |engine: Engine| {
        let new = new.clone();
        async move {
            engine.register(new).await.map(|r| match r {
                Registered::Created(r) => format!("created {}", r.status),
                Registered::Existing(r) => format!("existing {}", r.status),
            })
        }
    })
    .await;
    if !matches!(registered, Some(Ok(_))) {
        return;
    }
    if tx.mode == Mode::Tcc {
        tcc(&sim, &cluster, &tx).await;
    } else {
        let gid = tx.gid.clone();
        ask(&sim, &cluster, &tx.gid, "wait", |engine: Engine| {
            let gid = gid.clone();
            async move {
                let record = engine.wait(&gid, Duration::from_secs(2)).await?;
                Ok(record.status.to_string())
            }
        })
        .await;
    }
}

/// The TCC initiator after the transaction is open.
async fn tcc(sim: &Arc<Sim>, cluster: &Arc<Cluster>, tx: &TxPlan) {
    let gid = &tx.gid;
    let mut all_tried = true;
    for branch in &tx.branches {
        if !register_and_try(sim, cluster, gid, &branch.spec, "register_branch").await {
            all_tried = false;
            break;
        }
    }
    let commit = match tx.ending {
        TccEnding::Vanish => {
            sim.trace(format!("initiator {gid}: vanishes"));
            if let Some(late) = &tx.late {
                // Aimed at the deadline's decision. The simulation reads
                // the deadline the engine stored; the service could not.
                let deadline = sim.store.get(gid).map(|record| {
                    let from_now = record.deadline_at_ms - dtx_coordinator::clock::now_ms();
                    Instant::now() + Duration::from_millis(from_now.max(0) as u64)
                });
                if let Some(deadline) = deadline {
                    late_branch(sim, cluster, gid, &late.branch, deadline + late.after).await;
                }
            }
            return;
        }
        TccEnding::Abort => false,
        TccEnding::CommitIfTried => all_tried,
    };
    let decide = ask(sim, cluster, gid, "decide", |engine: Engine| {
        let gid = gid.clone();
        async move {
            let verdict = if commit {
                dtx_coordinator::engine::Verdict::Commit
            } else {
                dtx_coordinator::engine::Verdict::Abort
            };
            let status = engine.decide(&gid, verdict, Asked::default()).await?;
            Ok(format!("commit={commit} -> {status}"))
        }
    });
    match tx.late.as_ref().filter(|_| !commit) {
        Some(late) => {
            let at = Instant::now() + late.after;
            tokio::join!(decide, late_branch(sim, cluster, gid, &late.branch, at));
        }
        None => {
            decide.await;
        }
    }
}

/// Registers a TCC branch and, once it is registered, calls its Try;
/// whether the Try succeeded.
async fn register_and_try(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    gid: &str,
    spec: &BranchSpec,
    what: &str,
) -> bool {
    let added = ask(sim, cluster, gid, what, |engine: Engine| {
        let (gid, spec) = (gid.to_owned(), spec.clone());
        async move {
            let added = engine.register_branch(&gid, spec, None).await?;
            Ok(format!("{added:?}"))
        }
    })
    .await;
    if !matches!(added, Some(Ok(_))) {
        return false;
    }
    let key = (gid.to_owned(), spec.id.clone());
    let answer = send(sim, key, SimOp::Try, TRY_TIMEOUT).await;
    sim.trace(format!(
        "initiator {gid}: try {} -> {:?}",
        spec.id,
        answer.map(|a| a.status)
    ));
    answer.map(|a| a.status) == Some(200)
}

/// The late branch (see [`super::plan::LateBranch`]): its registration
/// leaves at `at`, through whichever node is drawn, while the transaction is
/// being decided. It lands before the decision's read (and is cancelled with the rest),
/// between the read and the write (the write is refused; the decision is
/// read again and cancels it too), or after the write (refused: the
/// transaction no longer accepts branches, and its Try is never sent).
async fn late_branch(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    gid: &str,
    branch: &BranchPlan,
    at: Instant,
) {
    tokio::time::sleep_until(at).await;
    register_and_try(sim, cluster, gid, &branch.spec, "register_branch (late)").await;
}

/// Sends one request to a live node, again on no answer, up to
/// [`ATTEMPTS`] times; `None` when no node answered. Answers are traced by
/// their summary only (records carry Unix timestamps, which differ
/// between runs).
async fn ask<F, Fut>(
    sim: &Arc<Sim>,
    cluster: &Arc<Cluster>,
    gid: &str,
    what: &str,
    request: F,
) -> Option<Result<String, EngineError>>
where
    F: Fn(Engine) -> Fut,
    Fut: Future<Output = Result<String, EngineError>>,
{
    for _ in 0..ATTEMPTS {
        let Some((name, engine)) = cluster.pick() else {
            sim.trace(format!("initiator {gid}: {what}: no live node"));
            tokio::time::sleep(PATIENCE).await;
            continue;
        };
        match tokio::time::timeout(PATIENCE, request(engine)).await {
            Ok(Ok(summary)) => {
                sim.trace(format!("initiator {gid}: {what} via {name} -> {summary}"));
                return Some(Ok(summary));
            }
            Ok(Err(e @ (EngineError::Unavailable(_) | EngineError::Internal(_)))) => {
                sim.trace(format!("initiator {gid}: {what} via {name} failed: {e}"));
            }
            Ok(Err(e)) => {
                sim.trace(format!("initiator {gid}: {what} via {name} refused: {e}"));
                return Some(Err(e));
            }
            Err(_) => sim.trace(format!("initiator {gid}: {what} via {name}: no answer")),
        }
    }
    sim.trace(format!("initiator {gid}: {what}: gave up"));
    None
}
