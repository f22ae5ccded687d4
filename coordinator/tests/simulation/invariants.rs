//! The rules a run must keep, and the checks made at its end. Checks made
//! during the run live where the event happens: the fake transport checks
//! no phase-one call leaves after the decision, each store write checks a
//! status only moves forward, each participant checks what reaches it.
//!
//! Names shared with the container harness's checker
//! (`dtx_tests::harness::checker`) are its [`ViolationKind`]s, so that a
//! finding reads the same in both.

use std::collections::BTreeMap;

use dtx_coordinator::store::{Event, TransactionRecord};
use dtx_protocol::spec::saga_dependencies;
use dtx_protocol::{BranchStatus, Mode, Status, Transaction};
use dtx_tests::harness::checker::ViolationKind;

use super::participants::{Held, Participant, Participants};
use super::plan::TxPlan;

/// A broken rule (or a named finding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A rule of the harness's checker.
    Harness(ViolationKind),
    /// A coordinator that owns a transaction sent a phase-one call after
    /// its decision was durable.
    PhaseOneAfterDecision,
    /// A stored status moved backwards, or a final one changed.
    StatusWentBack,
    /// Saga: the participants' effects do not match the outcome.
    SagaOutcome,
    /// TCC: the participants' effects do not match the outcome.
    TccOutcome,
    /// 2PC: the participants' effects do not match the outcome.
    TwoPhaseOutcome,
    /// 3PC: participants decided differently, without any partition.
    MixedThreePhaseOutcome,
    /// TCC: one branch both confirmed and cancelled.
    ConfirmAndCancel,
    /// Saga: a branch compensated before a branch that depends on it.
    CompensationOrder,
    /// An operation the branch's mode does not have.
    WrongOperation,
    /// A participant still holds a prepared state after the end.
    InDoubtAtEnd,
    /// The transaction rebuilt from its stored record differs from it.
    RecordDisagreesWithRecovery,
    /// The stored history, replayed, does not give the stored record.
    HistoryDisagreesWithRecord,
    /// A participant acted for a transaction the store does not have.
    EffectWithoutTransaction,
}

impl Kind {
    /// The rule's snake_case name.
    pub fn name(self) -> String {
        match self {
            Kind::Harness(kind) => serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{kind:?}")),
            other => {
                let camel = format!("{other:?}");
                let mut snake = String::new();
                for (i, c) in camel.chars().enumerate() {
                    if c.is_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                }
                snake
            }
        }
    }
}

/// One broken rule, with the transaction it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub kind: Kind,
    /// The transaction, when one is concerned.
    pub gid: Option<String>,
    /// What was seen.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}]: {}",
            self.kind.name(),
            self.gid.as_deref().unwrap_or("-"),
            self.detail
        )
    }
}

/// The partition finding: named, expected where a partition was drawn.
pub const PARTITION_DIVERGENCE: Kind = Kind::Harness(ViolationKind::ThreePcPartitionDivergence);

/// Whether a 3PC transaction's participants contradict its coordinator's
/// durable decision, so that it can never finish (the participant refuses
/// the coordinator's phase-two call for ever).
pub fn three_pc_diverged(status: Status, participants: &[(&str, &Participant)]) -> bool {
    let decided_commit = matches!(status, Status::Committing | Status::Committed);
    let decided_abort = matches!(status, Status::Aborting | Status::Aborted);
    participants.iter().any(|(_, p)| {
        (decided_commit && p.held == Held::Undone) || (decided_abort && p.held == Held::Committed)
    })
}

/// The end checks of one transaction: `record` is its stored state (if it
/// was ever registered) and `events` its stored history.
pub fn check_end(
    tx: &TxPlan,
    record: Option<&TransactionRecord>,
    events: &[Event],
    participants: &Participants,
) -> Vec<(Kind, String)> {
    let mut found = Vec::new();
    let mine: Vec<(&str, &Participant)> = participants.of(&tx.gid).collect();
    let Some(record) = record else {
        for (branch, p) in &mine {
            if !p.effects.is_empty() {
                found.push((
                    Kind::EffectWithoutTransaction,
                    format!("branch {branch} has effects {:?}", p.effects),
                ));
            }
        }
        return found;
    };
    let status = record.status;
    let diverged = tx.mode == Mode::ThreePhase && three_pc_diverged(status, &mine);
    if diverged {
        let decided: Vec<String> = mine
            .iter()
            .map(|(b, p)| format!("{b}: {:?} by {:?}", p.held, p.decided_by))
            .collect();
        let kind = if tx.partitioned() {
            PARTITION_DIVERGENCE
        } else {
            Kind::MixedThreePhaseOutcome
        };
        found.push((
            kind,
            format!("coordinator {status}, participants {decided:?}"),
        ));
        return found;
    }
    if !status.is_final() {
        found.push((
            Kind::Harness(ViolationKind::NotFinal),
            format!("the {} transaction is {status} after heal", tx.mode),
        ));
        return found;
    }
    // The harness checker's rule on the stored branch statuses.
    let stored = |s: BranchStatus| record.branches.iter().any(|b| b.status == s);
    if tx.mode == Mode::TwoPhase
        && stored(BranchStatus::Committed)
        && stored(BranchStatus::RolledBack)
    {
        found.push((
            Kind::Harness(ViolationKind::MixedTwoPhaseOutcome),
            "the store has committed and rolled-back branches".into(),
        ));
    }
    let registered: Vec<&str> = record.branches.iter().map(|b| b.spec.id.as_str()).collect();
    for (branch, p) in &mine {
        if !registered.contains(branch) && !p.effects.is_empty() {
            found.push((
                Kind::EffectWithoutTransaction,
                format!("unregistered branch {branch} has effects {:?}", p.effects),
            ));
        }
    }
    let committed = status == Status::Committed;
    for (branch, p) in mine.iter().filter(|(b, _)| registered.contains(b)) {
        let e = |op: &str| p.effect(op);
        let broken = match tx.mode {
            Mode::Saga => (if committed {
                e("action") != 1 || e("compensate") != 0
            } else {
                e("compensate") != e("action")
            })
            .then_some(Kind::SagaOutcome),
            Mode::Tcc => (if committed {
                e("try") != 1 || e("confirm") != 1 || e("cancel") != 0
            } else {
                e("confirm") != 0 || e("cancel") != e("try")
            })
            .then_some(Kind::TccOutcome),
            Mode::TwoPhase => (if committed {
                e("prepare") != e("commit") || e("rollback") != 0
            } else {
                e("commit") != 0 || e("rollback") != e("prepare")
            })
            .then_some(Kind::TwoPhaseOutcome),
            Mode::ThreePhase => (if committed {
                e("pre_commit") != 1 || e("do_commit") != 1 || e("abort") != 0
            } else {
                e("do_commit") != 0 || e("abort") != e("pre_commit")
            })
            .then_some(Kind::MixedThreePhaseOutcome),
        };
        if let Some(kind) = broken {
            found.push((
                kind,
                format!("{status} but branch {branch} has effects {:?}", p.effects),
            ));
        }
        let in_doubt = match tx.mode {
            Mode::TwoPhase => p.held == Held::Prepared,
            Mode::ThreePhase => matches!(p.held, Held::Prepared | Held::PreCommitted),
            Mode::Saga | Mode::Tcc => false,
        };
        if in_doubt {
            found.push((
                Kind::InDoubtAtEnd,
                format!("{status} but branch {branch} still holds {:?}", p.held),
            ));
        }
    }
    found.extend(check_record(record, events));
    found
}

/// The stored record agrees with itself: rebuilt through
/// `Transaction::recover` (as the driver's `load` does) it has the same
/// statuses, and its history, replayed, ends in them.
fn check_record(record: &TransactionRecord, events: &[Event]) -> Vec<(Kind, String)> {
    let mut found = Vec::new();
    let statuses: Vec<BranchStatus> = record.branches.iter().map(|b| b.status).collect();
    let deps = match record.mode {
        Mode::Saga => {
            let specs: Vec<_> = record.branches.iter().map(|b| b.spec.clone()).collect();
            match saga_dependencies(&specs) {
                Ok(deps) => deps,
                Err(e) => {
                    found.push((Kind::RecordDisagreesWithRecovery, e));
                    return found;
                }
            }
        }
        Mode::Tcc | Mode::TwoPhase | Mode::ThreePhase => vec![],
    };
    let recovered = Transaction::recover(record.mode, record.status, statuses.clone(), deps);
    let recovered_statuses: Vec<BranchStatus> = recovered.branch_statuses().collect();
    if recovered.status() != record.status || recovered_statuses != statuses {
        found.push((
            Kind::RecordDisagreesWithRecovery,
            format!(
                "stored {} {statuses:?}, recovered {} {recovered_statuses:?}",
                record.status,
                recovered.status()
            ),
        ));
    }
    // Replay: the last status change and each branch's last outcome.
    let mut replayed_status = None;
    let mut replayed_branches: BTreeMap<&str, BranchStatus> = BTreeMap::new();
    for event in events {
        match event.kind.as_str() {
            "status" => {
                let to = event.detail.split(':').next().unwrap_or_default();
                replayed_status = to.parse::<Status>().ok();
            }
            "branch" => {
                let to = event.detail.rsplit("→ ").next().unwrap_or_default();
                if let (Some(branch), Ok(to)) = (&event.branch_id, to.trim().parse()) {
                    replayed_branches.insert(branch, to);
                }
            }
            _ => {}
        }
    }
    if replayed_status != Some(record.status) {
        found.push((
            Kind::HistoryDisagreesWithRecord,
            format!(
                "the history ends in {replayed_status:?}, the record is {}",
                record.status
            ),
        ));
    }
    for branch in &record.branches {
        let replayed = replayed_branches
            .get(branch.spec.id.as_str())
            .copied()
            .unwrap_or(BranchStatus::Pending);
        if replayed != branch.status {
            found.push((
                Kind::HistoryDisagreesWithRecord,
                format!(
                    "branch {}: the history ends in {replayed}, the record is {}",
                    branch.spec.id, branch.status
                ),
            ));
        }
    }
    found
}
