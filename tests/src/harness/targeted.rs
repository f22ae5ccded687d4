//! Targeted runs: instead of faults drawn from a seed, one fault placed at a
//! named protocol point, deterministically.
//!
//! - [`three_pc_partition`]: the inventory pre-commits a 3PC branch, its
//!   acknowledgement never arrives, and it is cut off the coordinators
//!   (but not its database); the
//!   coordinator reaches the deadline and aborts, while the inventory's
//!   timeout rule, unable to ask the coordinator, commits. The checker must
//!   report `three_pc_partition_divergence` for that gid.
//! - [`unprotected_participant`]: the inventory runs without the SDK
//!   barrier (`--unsafe-skip-barrier`) and loses its first answers after
//!   doing the work, so the retries apply the work again. The checker must
//!   report `applied_twice`. A check that could not fail would pass here.
//! - [`coordinator_killed_at`]: kill -9 of the coordinator the order service
//!   uses at a named [`ProtocolPoint`] (after the 2PC decision and before
//!   phase two, between a TCC Try and its Confirm, during a saga's
//!   compensation), while the inventory holds that point open with a slow
//!   answer. The other coordinator takes over; nothing may be violated.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::binaries::Binaries;
use super::checker::{self, Violation};
use super::cluster::{Cluster, ClusterOptions, Node};
use super::observe;
use crate::error::TestSupportError;

/// What a targeted run found.
#[derive(Debug, Clone)]
pub struct Targeted {
    /// The orders (= gids) it placed.
    pub gids: Vec<String>,
    /// Every violation the checker reported.
    pub violations: Vec<Violation>,
}

const SKU: &str = "widget";
const STOCK: i64 = 100;

/// `POST /faults` on the inventory: the next `count` calls of `path` fail
/// as `kind` says (`fail`, `fail_after`, `slow`).
async fn arm(
    cluster: &Cluster,
    path: &str,
    kind: &str,
    count: u32,
) -> Result<(), TestSupportError> {
    let body = json!({"path": path, "kind": kind, "count": count});
    let url = format!("{}/faults", cluster.url(Node::Inventory));
    match cluster.http().post(url).json(&body).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        other => Err(TestSupportError::Service {
            what: format!("arm {kind} on the inventory's {path}"),
            why: format!("{other:?}"),
        }),
    }
}

/// Places one order and answers its id (the order service answers once the
/// order settles, or with 202 when it does not in time).
async fn place(cluster: &Cluster, mode: &str, qty: i64) -> Result<String, TestSupportError> {
    let url = format!("{}/orders", cluster.url(Node::Orders));
    let failed = |why: String| TestSupportError::Service {
        what: format!("POST /orders ({mode})"),
        why,
    };
    let response = cluster
        .http()
        .post(url)
        .timeout(Duration::from_secs(60))
        .json(&json!({"sku": SKU, "qty": qty, "mode": mode}))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    let body: Value = response.json().await.map_err(|e| failed(e.to_string()))?;
    body["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| failed(format!("no order id in {body}")))
}

/// Reads everything back and checks it.
async fn verdict(cluster: &Cluster, gids: Vec<String>) -> Result<Targeted, TestSupportError> {
    let observed = observe::observe(cluster, BTreeMap::from([(SKU.to_owned(), STOCK)])).await?;
    Ok(Targeted {
        gids,
        violations: checker::check(&observed),
    })
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
    let cluster = Cluster::start(binaries, "3pc-partition", &options).await?;
    observe::seed(&cluster, SKU, STOCK).await?;
    // The inventory pre-commits, but every answer to PreCommit is lost.
    arm(&cluster, "/3pc/pre_commit", "fail_after", 1000).await?;
    let placing = {
        let (http, url) = (cluster.http().clone(), cluster.url(Node::Orders));
        tokio::spawn(async move {
            http.post(format!("{url}/orders"))
                .timeout(Duration::from_secs(60))
                .json(&json!({"sku": SKU, "qty": 2, "mode": "3pc"}))
                .send()
                .await
                .ok()?
                .json::<Value>()
                .await
                .ok()
        })
    };
    // Wait for the inventory's pre-commit, then cut it off at once.
    let started = Instant::now();
    let gid = loop {
        let ledger: Vec<checker::LedgerRow> = cluster
            .http()
            .get(format!("{}/ledger", cluster.url(Node::Inventory)))
            .send()
            .await
            .map_err(|e| TestSupportError::Service {
                what: "GET /ledger".into(),
                why: e.to_string(),
            })?
            .json()
            .await
            .unwrap_or_default();
        if let Some(row) = ledger.iter().find(|r| r.op == "pre_commit") {
            break row.gid.clone();
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(TestSupportError::Service {
                what: "3PC order".into(),
                why: "the inventory never pre-committed".into(),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A partition between the inventory and the coordinators alone: the
    // inventory keeps its database, without which its watchdog could not
    // even read its own state.
    const COORDINATORS: [Node; 2] = [Node::Coordinator1, Node::Coordinator2];
    cluster.cut_off(Node::Inventory, &COORDINATORS).await?;
    // The coordinator aborts at the deadline; the order service answers.
    let _ = placing.await;
    // The inventory's timeout rule fires (it cannot reach the coordinator)
    // and commits. Rejoined before that, it would ask the coordinator and
    // abort, and the divergence would not happen; so wait for the rule's
    // log line.
    let waiting = Instant::now();
    loop {
        let logs = cluster.logs(Node::Inventory).await;
        if logs
            .lines()
            .any(|line| line.contains(TIMEOUT_RULE_FIRED) && line.contains(&gid))
        {
            break;
        }
        if waiting.elapsed() > PARTICIPANT_TIMEOUT + Duration::from_secs(60) {
            return Err(TestSupportError::Service {
                what: "3PC partition".into(),
                why: format!(
                    "the inventory's timeout rule did not fire for {gid} in a minute; its log:\n{logs}"
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.rejoin(Node::Inventory, &COORDINATORS).await?;
    verdict(&cluster, vec![gid]).await
}

/// A participant without the barrier, caught; see the module docs.
pub async fn unprotected_participant(binaries: &Binaries) -> Result<Targeted, TestSupportError> {
    let options = ClusterOptions {
        inventory_args: vec!["--unsafe-skip-barrier".into()],
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(binaries, "no-barrier", &options).await?;
    observe::seed(&cluster, SKU, STOCK).await?;
    // The work is done, the answer lost: the retry does it again.
    arm(&cluster, "/saga/reserve", "fail_after", 1).await?;
    arm(&cluster, "/tcc/try", "fail_after", 1).await?;
    let gids = vec![
        place(&cluster, "saga", 2).await?,
        place(&cluster, "tcc", 3).await?,
    ];
    observe::wait_for_quiescence(&cluster, Duration::from_secs(60)).await;
    verdict(&cluster, gids).await
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
    fn plan(self) -> (&'static str, i64, &'static str, &'static str) {
        match self {
            ProtocolPoint::AfterDecisionBeforePhaseTwo => ("2pc", 2, "/2pc/commit", "committing"),
            ProtocolPoint::BetweenTryAndConfirm => ("tcc", 2, "/tcc/try", "open"),
            // More than the stock: the inventory refuses, and its own
            // release (a refused branch is compensated too) is held open.
            ProtocolPoint::DuringCompensation => ("saga", STOCK + 1, "/saga/release", "aborting"),
        }
    }
}

/// Kills the order service's coordinator at `point`; see the module docs.
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
    let cluster = Cluster::start(binaries, &format!("{point:?}"), &options).await?;
    observe::seed(&cluster, SKU, STOCK).await?;
    let slow = json!({"path": held_route, "kind": "slow", "count": 1, "delay_ms": 6000});
    cluster
        .http()
        .post(format!("{}/faults", cluster.url(Node::Inventory)))
        .json(&slow)
        .send()
        .await
        .map_err(|e| TestSupportError::Service {
            what: "arm a slow fault".into(),
            why: e.to_string(),
        })?;
    let placing = {
        let (http, url) = (cluster.http().clone(), cluster.url(Node::Orders));
        tokio::spawn(async move {
            let body = json!({"sku": SKU, "qty": qty, "mode": mode});
            let answer = http
                .post(format!("{url}/orders"))
                .json(&body)
                .send()
                .await
                .ok()?;
            answer.json::<Value>().await.ok()
        })
    };
    // Watch through the other coordinator until the point is reached.
    let started = Instant::now();
    let gid = loop {
        let txs = observe::transactions(&cluster, Node::Coordinator2, false)
            .await
            .unwrap_or_default();
        if let Some(tx) = txs.iter().find(|t| t.mode == mode && t.status == reached) {
            break tx.gid.clone();
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(TestSupportError::Service {
                what: format!("{point:?}"),
                why: format!("no {mode} transaction reached `{reached}` within 30 s"),
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The inventory's answer is held for 6 s: the call is in flight.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.kill(Node::Coordinator1).await?;
    tokio::time::sleep(Duration::from_millis(super::cluster::LEASE_MS + 2000)).await;
    cluster.start_again(Node::Coordinator1).await?;
    let _ = placing.await;
    observe::wait_for_quiescence(&cluster, Duration::from_secs(60)).await;
    verdict(&cluster, vec![gid]).await
}
