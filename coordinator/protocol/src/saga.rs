//! Saga rules: actions in dependency order; on a refusal or the deadline,
//! compensations in reverse dependency order for every branch whose action ran
//! or may have run.
//!
//! A refused branch is compensated too: 409 says this attempt changed nothing,
//! but an earlier attempt whose answer was lost may have. Compensations are
//! idempotent and accept a branch that never ran (the SDK's barrier makes them
//! so), so one extra compensation is cheap and a missing one is a lost update.

use crate::branch::CallState;
use crate::machine::{Next, Outcome, Transaction};
use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

pub(crate) fn outcome(status: Status, op: Op, reply: Reply) -> Outcome {
    match (op, reply) {
        (Op::Action, Reply::Success) => Outcome::Settled(BranchStatus::Succeeded),
        (Op::Action, Reply::Refused) => Outcome::Settled(BranchStatus::Refused),
        // An unknown action answer is retried only while the saga still goes
        // forward; after an abort the branch counts as "may have run".
        (Op::Action, _) if status == Status::Running => Outcome::RetryLater,
        (Op::Action, _) => Outcome::Abandoned,
        (_, Reply::Success) => Outcome::Settled(BranchStatus::RolledBack),
        (_, _) => Outcome::RetryLater,
    }
}

/// After a recovery in `aborting`, a pending branch whose dependencies all
/// succeeded may have been sent just before the crash (sending is not
/// logged): count it as running so that it is compensated.
pub(crate) fn normalize_recovered(tx: &mut Transaction) {
    if tx.status != Status::Aborting {
        return;
    }
    let may_have_started: Vec<bool> = tx
        .branches
        .iter()
        .map(|b| {
            b.status == BranchStatus::Pending
                && b.depends_on.iter().all(|&d| ran(tx.branches[d].status))
        })
        .collect();
    for (b, started) in tx.branches.iter_mut().zip(may_have_started) {
        if started {
            b.status = BranchStatus::Running;
        }
    }
}

/// Whether an action is known to have succeeded at some point.
fn ran(status: BranchStatus) -> bool {
    matches!(
        status,
        BranchStatus::Succeeded | BranchStatus::RollingBack | BranchStatus::RolledBack
    )
}

/// Whether a branch still owes a compensation.
fn owes_compensation(status: BranchStatus) -> bool {
    matches!(
        status,
        BranchStatus::Running
            | BranchStatus::Succeeded
            | BranchStatus::Refused
            | BranchStatus::RollingBack
    )
}

pub(crate) fn next(tx: &Transaction) -> Next {
    let mut calls = Vec::new();
    match tx.status {
        Status::Running => {
            if tx
                .branches
                .iter()
                .all(|b| b.status == BranchStatus::Succeeded)
            {
                return (calls, Some((Status::Committed, "every action succeeded")));
            }
            for (i, b) in tx.branches.iter().enumerate() {
                let ready = matches!(b.status, BranchStatus::Pending | BranchStatus::Running)
                    && b.call == CallState::Idle
                    && b.depends_on
                        .iter()
                        .all(|&d| tx.branches[d].status == BranchStatus::Succeeded);
                if ready {
                    calls.push((i, Op::Action, BranchStatus::Running));
                }
            }
        }
        Status::Aborting => {
            for (i, b) in tx.branches.iter().enumerate() {
                let dependents_undone = tx
                    .branches
                    .iter()
                    .filter(|d| d.depends_on.contains(&i))
                    .all(|d| !owes_compensation(d.status) && d.call == CallState::Idle);
                if owes_compensation(b.status) && b.call == CallState::Idle && dependents_undone {
                    calls.push((i, Op::Compensate, BranchStatus::RollingBack));
                }
            }
            let done = !tx.any_call_under_way()
                && !tx.branches.iter().any(|b| owes_compensation(b.status));
            if done && calls.is_empty() {
                return (
                    calls,
                    Some((
                        Status::Aborted,
                        "every branch that may have run was compensated",
                    )),
                );
            }
        }
        Status::Open
        | Status::Preparing
        | Status::PreCommitting
        | Status::Committing
        | Status::Committed
        | Status::Aborted => {}
    }
    (calls, None)
}
