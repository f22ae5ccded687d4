//! 2PC rules: Prepare to every branch at once; all yes (or read-only) →
//! the commit decision is logged, then Commit to every prepared branch; a no
//! or the deadline → the abort decision is logged, then Rollback to every
//! branch that may have prepared. Presumed abort: until a decision record
//! exists, the transaction has not committed.
//!
//! A branch that voted no is rolled back too: an earlier Prepare whose
//! answer was lost may have prepared it, and a rollback of nothing succeeds.
//! A read-only branch changed nothing and is never called again.

use crate::branch::CallState;
use crate::machine::{Next, Outcome, Transaction};
use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

pub(crate) fn outcome(status: Status, op: Op, reply: Reply) -> Outcome {
    match (op, reply) {
        (Op::Prepare, Reply::Success) => Outcome::Settled(BranchStatus::Prepared),
        (Op::Prepare, Reply::ReadOnly) => Outcome::Settled(BranchStatus::ReadOnly),
        (Op::Prepare, Reply::Refused) => Outcome::Settled(BranchStatus::Refused),
        // An unknown vote is asked again until the deadline; after the abort
        // decision the branch is rolled back whatever it would have said.
        (Op::Prepare, _) if status == Status::Preparing => Outcome::RetryLater,
        (Op::Prepare, _) => Outcome::Abandoned,
        (Op::Commit, Reply::Success) => Outcome::Settled(BranchStatus::Committed),
        (_, Reply::Success) => Outcome::Settled(BranchStatus::RolledBack),
        // Phase two must go through; anything else is retried.
        (_, _) => Outcome::RetryLater,
    }
}

/// Whether a branch may hold a prepared transaction that the abort must
/// undo: everything but a read-only vote and a finished rollback.
fn owes_rollback(status: BranchStatus) -> bool {
    !matches!(status, BranchStatus::ReadOnly | BranchStatus::RolledBack)
}

pub(crate) fn next(tx: &Transaction) -> Next {
    let idle = |i: usize| tx.branches[i].call == CallState::Idle;
    let mut calls = Vec::new();
    match tx.status {
        Status::Preparing => {
            let voted_yes = |s| matches!(s, BranchStatus::Prepared | BranchStatus::ReadOnly);
            if tx.branches.iter().all(|b| voted_yes(b.status)) {
                if tx
                    .branches
                    .iter()
                    .all(|b| b.status == BranchStatus::ReadOnly)
                {
                    return (
                        calls,
                        Some((Status::Committed, "every branch voted read-only")),
                    );
                }
                return (calls, Some((Status::Committing, "every branch voted yes")));
            }
            for (i, b) in tx.branches.iter().enumerate() {
                if matches!(b.status, BranchStatus::Pending | BranchStatus::Preparing) && idle(i) {
                    calls.push((i, Op::Prepare, BranchStatus::Preparing));
                }
            }
        }
        Status::Committing => {
            for (i, b) in tx.branches.iter().enumerate() {
                if matches!(b.status, BranchStatus::Prepared | BranchStatus::Committing) && idle(i)
                {
                    calls.push((i, Op::Commit, BranchStatus::Committing));
                }
            }
            let done = tx
                .branches
                .iter()
                .all(|b| matches!(b.status, BranchStatus::Committed | BranchStatus::ReadOnly));
            if done {
                return (
                    calls,
                    Some((Status::Committed, "every prepared branch committed")),
                );
            }
        }
        Status::Aborting => {
            for (i, b) in tx.branches.iter().enumerate() {
                if owes_rollback(b.status) && idle(i) {
                    calls.push((i, Op::Rollback, BranchStatus::RollingBack));
                }
            }
            let done =
                !tx.any_call_under_way() && !tx.branches.iter().any(|b| owes_rollback(b.status));
            if done && calls.is_empty() {
                return (
                    calls,
                    Some((
                        Status::Aborted,
                        "every branch that may have prepared rolled back",
                    )),
                );
            }
        }
        Status::Open
        | Status::Running
        | Status::PreCommitting
        | Status::Committed
        | Status::Aborted => {}
    }
    (calls, None)
}

#[cfg(test)]
#[path = "two_phase_tests.rs"]
mod tests;
