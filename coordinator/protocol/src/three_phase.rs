//! 3PC rules: CanCommit to every branch at once; all yes → `pre_committing`
//! is logged, then PreCommit to every branch; all acknowledged →
//! `committing` is logged, then DoCommit to every branch. A no in CanCommit,
//! a refused PreCommit, or the deadline before every PreCommit is
//! acknowledged → `aborting` is logged, then Abort to every branch.
//!
//! The deadline bounds CanCommit *and* PreCommit: a PreCommit whose answer
//! stays unknown is retried only until then, and then the coordinator aborts
//! (the textbook rule for a missing ack). Once `committing` is logged,
//! DoCommit is retried until it succeeds, like every phase-two call. See
//! `docs/two-and-three-phase.md` for why this fails under partitions.

use crate::branch::CallState;
use crate::machine::{Next, Outcome, Transaction};
use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

pub(crate) fn outcome(status: Status, op: Op, reply: Reply) -> Outcome {
    match (op, reply) {
        (Op::CanCommit, Reply::Success) => Outcome::Settled(BranchStatus::Prepared),
        (Op::PreCommit, Reply::Success) => Outcome::Settled(BranchStatus::PreCommitted),
        // A participant may refuse PreCommit (it already aborted on its own
        // timeout); nobody has committed yet, so the coordinator aborts.
        (Op::CanCommit | Op::PreCommit, Reply::Refused) => Outcome::Settled(BranchStatus::Refused),
        (Op::CanCommit, _) if status == Status::Preparing => Outcome::RetryLater,
        (Op::PreCommit, _) if status == Status::PreCommitting => Outcome::RetryLater,
        // A late answer after the abort decision changes nothing: every
        // branch gets an Abort anyway.
        (Op::CanCommit | Op::PreCommit, _) => Outcome::Abandoned,
        (Op::DoCommit, Reply::Success) => Outcome::Settled(BranchStatus::Committed),
        (_, Reply::Success) => Outcome::Settled(BranchStatus::RolledBack),
        (_, _) => Outcome::RetryLater,
    }
}

pub(crate) fn next(tx: &Transaction) -> Next {
    let idle = |i: usize| tx.branches[i].call == CallState::Idle;
    let all = |s: BranchStatus| tx.branches.iter().all(|b| b.status == s);
    let mut calls = Vec::new();
    // (statuses that get the phase's call, the call, its in-flight status)
    let phase = match tx.status {
        Status::Preparing => {
            if all(BranchStatus::Prepared) {
                return (
                    calls,
                    Some((Status::PreCommitting, "every branch voted yes")),
                );
            }
            Some((
                [BranchStatus::Pending, BranchStatus::Preparing],
                Op::CanCommit,
                BranchStatus::Preparing,
            ))
        }
        Status::PreCommitting => {
            if all(BranchStatus::PreCommitted) {
                return (
                    calls,
                    Some((Status::Committing, "every branch acknowledged pre-commit")),
                );
            }
            Some((
                [BranchStatus::Prepared, BranchStatus::PreCommitting],
                Op::PreCommit,
                BranchStatus::PreCommitting,
            ))
        }
        Status::Committing => {
            if all(BranchStatus::Committed) {
                return (calls, Some((Status::Committed, "every branch committed")));
            }
            Some((
                [BranchStatus::PreCommitted, BranchStatus::Committing],
                Op::DoCommit,
                BranchStatus::Committing,
            ))
        }
        Status::Aborting => {
            // Every branch is told, whatever it voted: a no whose answer was
            // lost may hide a yes, and an abort of nothing succeeds.
            for (i, b) in tx.branches.iter().enumerate() {
                if b.status != BranchStatus::RolledBack && idle(i) {
                    calls.push((i, Op::Abort, BranchStatus::RollingBack));
                }
            }
            let done = !tx.any_call_under_way() && all(BranchStatus::RolledBack);
            if done && calls.is_empty() {
                return (calls, Some((Status::Aborted, "every branch aborted")));
            }
            None
        }
        Status::Open | Status::Running | Status::Committed | Status::Aborted => None,
    };
    if let Some((eligible, op, in_flight)) = phase {
        for (i, b) in tx.branches.iter().enumerate() {
            if eligible.contains(&b.status) && idle(i) {
                calls.push((i, op, in_flight));
            }
        }
    }
    (calls, None)
}

#[cfg(test)]
#[path = "three_phase_tests.rs"]
mod tests;
