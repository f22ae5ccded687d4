//! The nemesis: faults drawn from a seed and carried out against a cluster.
//!
//! A schedule is a pure function of (seed, fault kinds, window): the same
//! seed gives the same faults at the same offsets against the same nodes, so
//! a failing run is replayed by giving its seed. Every fault ends by itself
//! after its hold time (the node is started again, resumed, reconnected or
//! sped up), and [`heal`] ends whatever a cut-short run left behind.
//!
//! The faults of the replicated PostgreSQL ([`FaultKind::REPLICATED`]) end
//! when a primary serves writes through the proxy again: that moment is
//! the fault's end in the record, with the time it took as `failover_ms`.
//! The former primary comes back as the synchronous standby by itself
//! meanwhile; the next such fault waits for it, so that every failover
//! starts from a replicated cluster.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::cluster::{Cluster, LEASE_MS, Node};
use super::postgres_ha::PostgresSetup;

/// A kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 a coordinator, start it again after the hold.
    KillCoordinator,
    /// Freeze a coordinator past its lease (a long GC-like stall), then
    /// resume it: its transactions are taken over and its late writes fenced.
    PauseCoordinator,
    /// kill -9 a participant service, start it again after the hold.
    KillParticipant,
    /// Cut a participant off the network, reconnect it after the hold.
    PartitionParticipant,
    /// Cut a coordinator off the network, reconnect it after the hold.
    PartitionCoordinator,
    /// kill -9 PostgreSQL and start it again (crash recovery of the database).
    RestartPostgres,
    /// Slow a participant down past the coordinator's request timeout.
    SlowParticipant,
    /// Replicated PostgreSQL only: kill -9 the primary's container
    /// (PostgreSQL and Patroni); the synchronous standby takes over once
    /// the leader key expires. The killed node is started again after the
    /// hold and comes back as the standby.
    KillPrimary,
    /// Replicated PostgreSQL only: a switchover to the synchronous standby
    /// through Patroni's REST API (the old primary shuts down cleanly and
    /// follows the new one).
    Switchover,
}

impl FaultKind {
    /// Every kind a cluster with one PostgreSQL server can take.
    pub const ALL: [FaultKind; 7] = [
        FaultKind::KillCoordinator,
        FaultKind::PauseCoordinator,
        FaultKind::KillParticipant,
        FaultKind::PartitionParticipant,
        FaultKind::PartitionCoordinator,
        FaultKind::RestartPostgres,
        FaultKind::SlowParticipant,
    ];

    /// The kinds that need the replicated PostgreSQL
    /// ([`PostgresSetup::Replicated`]).
    /// There, [`FaultKind::RestartPostgres`] restarts the proxy.
    pub const REPLICATED: [FaultKind; 2] = [FaultKind::KillPrimary, FaultKind::Switchover];

    /// The nodes this kind can hit.
    fn targets(self) -> &'static [Node] {
        match self {
            // The clients (the order service, the inventory's recovery)
            // know c1 only: a fault on c2 would hit only the work c2 took
            // over and say little. Until clients know several coordinators,
            // coordinator faults strike c1.
            FaultKind::KillCoordinator
            | FaultKind::PartitionCoordinator
            | FaultKind::PauseCoordinator => &[Node::Coordinator1],
            FaultKind::KillParticipant | FaultKind::PartitionParticipant => {
                &[Node::Inventory, Node::Orders]
            }
            // The node actually hit is the primary of the moment.
            FaultKind::RestartPostgres | FaultKind::KillPrimary | FaultKind::Switchover => {
                &[Node::Postgres]
            }
            FaultKind::SlowParticipant => &[Node::Inventory],
        }
    }

    /// How long the fault lasts, in milliseconds (a range to draw from).
    fn hold_ms(self) -> (u64, u64) {
        match self {
            // Past the lease, so that the other coordinator takes over.
            FaultKind::PauseCoordinator => (LEASE_MS + 1000, LEASE_MS + 4000),
            FaultKind::RestartPostgres => (500, 2000),
            // How long the killed node stays down once the standby serves.
            FaultKind::KillPrimary => (1000, 3000),
            FaultKind::Switchover => (0, 0),
            _ => (2000, 6000),
        }
    }
}

/// The PostgreSQL a cluster must run for `kinds`: replicated if any of them
/// needs it, else the single server (quicker to start).
pub fn postgres_setup(kinds: &[FaultKind]) -> PostgresSetup {
    if kinds.iter().any(|k| FaultKind::REPLICATED.contains(k)) {
        PostgresSetup::Replicated
    } else {
        PostgresSetup::Single
    }
}

/// One fault of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedFault {
    /// Milliseconds from the start of the workload.
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// Against which node.
    pub target: Node,
    /// For how long, in milliseconds.
    pub hold_ms: u64,
}

/// A fault as it was carried out.
#[derive(Debug, Clone, Serialize)]
pub struct AppliedFault {
    /// The plan.
    #[serde(flatten)]
    pub planned: PlannedFault,
    /// When it began and ended, in milliseconds from the start.
    pub began_ms: u64,
    /// When the node was back; for the faults of the replicated
    /// PostgreSQL, when a primary served writes through the proxy again.
    pub ended_ms: u64,
    /// Replicated PostgreSQL: milliseconds from the fault's start until a
    /// primary served writes again (a failover's or a switchover's length).
    pub failover_ms: Option<u64>,
    /// How it was done, when there was a choice (e.g. the slow-down's means).
    pub note: Option<String>,
    /// What went wrong carrying it out, if anything.
    pub error: Option<String>,
}

/// Draws the schedule: each kind `per_kind` times, at offsets within the
/// first 60% of `window` (so faults end, and the system recovers, while the
/// workload still runs), sorted by time.
pub fn schedule(
    seed: u64,
    kinds: &[FaultKind],
    per_kind: usize,
    window: Duration,
) -> Vec<PlannedFault> {
    let mut rng = StdRng::seed_from_u64(seed);
    let span = (window.as_millis() as u64 * 6 / 10).max(1);
    let mut plan: Vec<PlannedFault> = kinds
        .iter()
        .flat_map(|&kind| std::iter::repeat_n(kind, per_kind))
        .map(|kind| {
            let (low, high) = kind.hold_ms();
            PlannedFault {
                at_ms: rng.random_range(span / 10..span),
                kind,
                target: *kind
                    .targets()
                    .choose(&mut rng)
                    .expect("every kind has a target"),
                hold_ms: rng.random_range(low..=high),
            }
        })
        .collect();
    plan.sort_by_key(|f| f.at_ms);
    plan
}

/// Carries out `plan` in order, relative to `started`. Faults do not
/// overlap: one that is due while another holds waits for it to end.
pub async fn run(
    cluster: &Cluster,
    plan: Vec<PlannedFault>,
    started: Instant,
) -> Vec<AppliedFault> {
    let mut applied = Vec::new();
    for planned in plan {
        let due = started + Duration::from_millis(planned.at_ms);
        tokio::time::sleep_until(due.into()).await;
        let called = Instant::now();
        let (note, window, error) = match apply(cluster, &planned).await {
            Ok(Outcome { note, window }) => (note, window, None),
            Err(e) => (None, None, Some(e)),
        };
        let ms = |t: Instant| t.saturating_duration_since(started).as_millis() as u64;
        let (began, ended) = window.unwrap_or((called, Instant::now()));
        applied.push(AppliedFault {
            planned,
            began_ms: ms(began),
            ended_ms: ms(ended),
            failover_ms: window.map(|(began, ended)| (ended - began).as_millis() as u64),
            note,
            error,
        });
    }
    applied
}

/// What carrying out a fault produced, besides its times.
#[derive(Default)]
struct Outcome {
    /// How it was done, when there was a choice.
    note: Option<String>,
    /// Replicated PostgreSQL: from the kill (or the switchover's request)
    /// until a primary served writes again. The fault began and ended then,
    /// not when it was called (it first waits for a synchronous standby)
    /// and returned (after the hold, the killed node is started again).
    window: Option<(Instant, Instant)>,
}

/// One fault, from its start to the node being back.
async fn apply(cluster: &Cluster, fault: &PlannedFault) -> Result<Outcome, String> {
    let node = fault.target;
    let hold = Duration::from_millis(fault.hold_ms);
    let e = |e: crate::TestSupportError| e.to_string();
    match fault.kind {
        FaultKind::KillCoordinator | FaultKind::KillParticipant | FaultKind::RestartPostgres => {
            cluster.kill(node).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.start_again(node).await.map_err(e)?;
        }
        FaultKind::PauseCoordinator => {
            cluster.pause(node).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.resume(node).await.map_err(e)?;
        }
        FaultKind::PartitionParticipant | FaultKind::PartitionCoordinator => {
            cluster.disconnect(node).await.map_err(e)?;
            tokio::time::sleep(hold).await;
            cluster.reconnect(node).await.map_err(e)?;
            cluster.wait_ready(node).await.map_err(e)?;
        }
        FaultKind::SlowParticipant => {
            let note = slow_down(cluster, node, hold).await?;
            return Ok(Outcome { note, window: None });
        }
        FaultKind::KillPrimary | FaultKind::Switchover => {
            return hand_over(cluster, fault.kind, hold).await;
        }
    }
    Ok(Outcome::default())
}

/// A failover (kill -9 of the primary) or a switchover of the replicated
/// PostgreSQL, timed until a primary serves writes through the proxy; a
/// killed primary is started again after the hold.
async fn hand_over(cluster: &Cluster, kind: FaultKind, hold: Duration) -> Result<Outcome, String> {
    let ha = cluster
        .postgres_ha()
        .ok_or_else(|| format!("{kind:?} needs the replicated PostgreSQL setup"))?;
    let e = |e: crate::TestSupportError| e.to_string();
    let handover = match kind {
        FaultKind::KillPrimary => ha.kill_primary().await.map_err(e)?,
        _ => ha.switchover().await.map_err(e)?,
    };
    let failover = ha.wait_serving(handover.at).await.map_err(e)?;
    let primary = ha.primary().await.map_err(e)?;
    // Synchronous mode's rule: only the synchronous standby may take over.
    if primary != handover.sync_standby {
        return Err(format!(
            "{primary} took over from {}, but the synchronous standby was {}",
            handover.from, handover.sync_standby
        ));
    }
    let verb = match kind {
        FaultKind::KillPrimary => {
            tokio::time::sleep(hold).await;
            ha.start_again(handover.from).await.map_err(e)?;
            "killed"
        }
        _ => "switched over",
    };
    Ok(Outcome {
        note: Some(format!(
            "{} {verb}; {primary}, its synchronous standby, served writes through the proxy \
             after {} ms",
            handover.from,
            failover.as_millis(),
        )),
        window: Some((handover.at, handover.at + failover)),
    })
}

/// Latency past the coordinator's request timeout: `tc netem` where the
/// kernel has it, else the inventory's own injected delay on its branch
/// routes for the calls of the hold.
async fn slow_down(
    cluster: &Cluster,
    node: Node,
    hold: Duration,
) -> Result<Option<String>, String> {
    const DELAY: Duration = Duration::from_millis(2500);
    if cluster
        .set_latency(node, Some(DELAY))
        .await
        .map_err(|e| e.to_string())?
    {
        tokio::time::sleep(hold).await;
        cluster
            .set_latency(node, None)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Some(format!("tc netem delay {} ms", DELAY.as_millis())));
    }
    let paths = [
        "/saga/reserve",
        "/saga/release",
        "/tcc/try",
        "/tcc/confirm",
        "/tcc/cancel",
        "/2pc/prepare",
        "/2pc/commit",
        "/2pc/rollback",
        "/3pc/can_commit",
        "/3pc/pre_commit",
        "/3pc/do_commit",
        "/3pc/abort",
    ];
    for path in paths {
        let body = serde_json::json!({"path": path, "kind": "slow", "count": 3, "delay_ms": DELAY.as_millis() as u64});
        let answer = cluster
            .http()
            .post(format!("{}/faults", cluster.url(node)))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("arm a slow fault on {node}{path}: {e}"))?;
        if !answer.status().is_success() {
            return Err(format!(
                "arm a slow fault on {node}{path}: HTTP {}",
                answer.status()
            ));
        }
    }
    tokio::time::sleep(hold).await;
    Ok(Some(format!(
        "no netem in this kernel: the next 3 calls of each branch route of {node} wait {} ms",
        DELAY.as_millis()
    )))
}

/// Ends whatever fault may still hold: every node resumed, connected and
/// started (and both PostgreSQL nodes of the replicated setup running,
/// one of them the synchronous standby). Errors are ignored: a node that
/// was fine refuses the undo.
pub async fn heal(cluster: &Cluster) {
    if let Some(ha) = cluster.postgres_ha() {
        let _ = ha.heal().await;
    }
    for node in Node::ALL {
        if !cluster.is_running(node).await {
            let _ = cluster.start_again(node).await;
            continue;
        }
        let _ = cluster.resume(node).await;
        let _ = cluster.reconnect(node).await;
        if node != Node::Postgres {
            let _ = cluster.set_latency(node, None).await;
        }
    }
}
