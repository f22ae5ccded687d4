//! TCC rules: the initiator calls every Try itself while the transaction is
//! open; once the decision is logged the coordinator confirms or cancels every
//! registered branch, concurrently, until each acknowledges.
//!
//! Cancel goes to every registered branch, whether or not its Try ran: the
//! coordinator cannot know, and the barrier turns a cancel without a Try into
//! a no-op (null compensation).

use crate::branch::CallState;
use crate::machine::{Next, Outcome, Transaction};
use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

pub(crate) fn outcome(op: Op, reply: Reply) -> Outcome {
    match (op, reply) {
        (Op::Confirm, Reply::Success) => Outcome::Settled(BranchStatus::Committed),
        (_, Reply::Success) => Outcome::Settled(BranchStatus::RolledBack),
        // Phase two must go through; anything else is retried.
        (_, _) => Outcome::RetryLater,
    }
}

pub(crate) fn next(tx: &Transaction) -> Next {
    let (op, in_flight, done, final_status, reason) = match tx.status {
        Status::Committing => (
            Op::Confirm,
            BranchStatus::Committing,
            BranchStatus::Committed,
            Status::Committed,
            "every branch confirmed",
        ),
        Status::Aborting => (
            Op::Cancel,
            BranchStatus::RollingBack,
            BranchStatus::RolledBack,
            Status::Aborted,
            "every branch cancelled",
        ),
        Status::Open
        | Status::Running
        | Status::Preparing
        | Status::PreCommitting
        | Status::Committed
        | Status::Aborted => {
            return (vec![], None);
        }
    };
    let calls: Vec<_> = tx
        .branches
        .iter()
        .enumerate()
        .filter(|(_, b)| b.status != done && b.call == CallState::Idle)
        .map(|(i, _)| (i, op, in_flight))
        .collect();
    let finished = tx.branches.iter().all(|b| b.status == done);
    (calls, finished.then_some((final_status, reason)))
}
