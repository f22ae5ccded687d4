//! Helpers shared by the transition-table tests of every mode: a transaction
//! with a test clock ([`T`]), and readers of a step's history.
//!
//! Every input is handled at the test clock's instant. `deadline()` and
//! `retry_due()` move the clock to the moment the core asked to be woken, so
//! a table reads as the story it tells.

use crate::machine::Transaction;
use crate::state::{BranchStatus as B, Status as S};
use crate::step::{Action, HistoryRecord, Input, Step, Verdict};
use crate::timing::Now;
use crate::wire::{Op, Reply};

/// A transaction under test and the instant its inputs happen at.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct T {
    pub(crate) tx: Transaction,
    pub(crate) now_ms: i64,
}

impl T {
    /// `tx` with its default timing, at time zero.
    pub(crate) fn new(tx: Transaction) -> T {
        T { tx, now_ms: 0 }
    }
    fn now(&self) -> Now {
        Now::at(self.now_ms)
    }
    pub(crate) fn start(&mut self) -> Step {
        self.tx.start()
    }
    pub(crate) fn reply(&mut self, branch: usize, op: Op, reply: Reply) -> Step {
        let now = self.now();
        self.tx.handle(now, Input::Replied { branch, op, reply })
    }
    pub(crate) fn commit(&mut self) -> Step {
        let now = self.now();
        self.tx.handle(now, Input::Decide(Verdict::Commit))
    }
    pub(crate) fn abort(&mut self) -> Step {
        let now = self.now();
        self.tx.handle(now, Input::Decide(Verdict::Abort))
    }
    /// Moves the clock to the deadline and lets it pass.
    pub(crate) fn deadline(&mut self) -> Step {
        self.now_ms = self.now_ms.max(self.tx.deadline_at_ms());
        let now = self.now();
        self.tx.handle_timeout(now)
    }
    /// The operation `branch` waits to send again, if any.
    pub(crate) fn waits(&self, branch: usize) -> Option<Op> {
        match self.tx.branches[branch].call {
            crate::branch::CallState::Waiting { op, .. } => Some(op),
            _ => None,
        }
    }
    /// Moves the clock to the moment `branch`'s retry of `op` is due and
    /// lets time pass; asserts that retry was waiting.
    pub(crate) fn retry_due(&mut self, branch: usize, op: Op) -> Step {
        let due = match self.tx.branches[branch].call {
            crate::branch::CallState::Waiting {
                op: waiting,
                due_ms,
            } if waiting == op => due_ms,
            other => panic!("branch {branch} does not wait to send {op} again: {other:?}"),
        };
        self.now_ms = self.now_ms.max(due);
        let now = self.now();
        self.tx.handle_timeout(now)
    }
}

impl std::ops::Deref for T {
    type Target = Transaction;
    fn deref(&self) -> &Transaction {
        &self.tx
    }
}

impl std::ops::DerefMut for T {
    fn deref_mut(&mut self) -> &mut Transaction {
        &mut self.tx
    }
}

pub(crate) fn call(branch: usize, op: Op) -> Action {
    Action::Call { branch, op }
}
pub(crate) fn statuses(tx: &Transaction) -> Vec<B> {
    tx.branch_statuses().collect()
}
pub(crate) fn status_changes(step: &Step) -> Vec<S> {
    step.history
        .iter()
        .filter_map(|h| match h {
            HistoryRecord::Status { to, .. } => Some(*to),
            _ => None,
        })
        .collect()
}
pub(crate) fn branch_outcomes(step: &Step) -> Vec<(usize, B)> {
    step.history
        .iter()
        .filter_map(|h| match h {
            HistoryRecord::Branch { branch, to, .. } => Some((*branch, *to)),
            _ => None,
        })
        .collect()
}
