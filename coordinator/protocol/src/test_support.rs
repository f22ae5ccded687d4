//! Helpers shared by the transition-table tests of every mode: build the
//! expected actions and inputs, and read a step's history.

use crate::machine::{Action, HistoryRecord, Input, Step, Transaction};
use crate::state::{BranchStatus as B, Status as S};
use crate::wire::{Op, Reply};

pub(crate) fn call(branch: usize, op: Op) -> Action {
    Action::Call { branch, op }
}
pub(crate) fn retry(branch: usize, op: Op) -> Action {
    Action::Retry { branch, op }
}
pub(crate) fn replied(branch: usize, op: Op, reply: Reply) -> Input {
    Input::Replied { branch, op, reply }
}
pub(crate) fn statuses(tx: &Transaction) -> Vec<B> {
    tx.branch_statuses().collect()
}
pub(crate) fn status_changes(step: &Step) -> Vec<S> {
    step.history
        .iter()
        .filter_map(|h| match h {
            HistoryRecord::Status { to, .. } => Some(*to),
            HistoryRecord::Branch { .. } => None,
        })
        .collect()
}
pub(crate) fn branch_outcomes(step: &Step) -> Vec<(usize, B)> {
    step.history
        .iter()
        .filter_map(|h| match h {
            HistoryRecord::Branch { branch, to, .. } => Some((*branch, *to)),
            HistoryRecord::Status { .. } => None,
        })
        .collect()
}
