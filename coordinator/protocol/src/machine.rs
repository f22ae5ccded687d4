//! The state machine of one global transaction: inputs in, a [`Step`] out.
//!
//! The rules shared by every mode live here (bookkeeping of calls, retries,
//! replies to stale calls); what to call next is asked of the mode's module.
//!
//! Durability contract: a [`Step`]'s `history` must be written to the log
//! before any of its `actions` is carried out. The core emits history only for
//! facts that recovery needs (a decision, an outcome of a call). Sending a call
//! is not logged: after a crash the call may be sent again, which participants
//! absorb through the sub-transaction barrier.

use crate::state::{BranchStatus, Status};
use crate::wire::{Mode, Op, Reply};
use crate::{saga, tcc, three_phase, two_phase};

/// Something that happened to a transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The initiator asked to commit (TCC).
    Commit,
    /// The initiator asked to abort (TCC).
    Abort,
    /// The transaction's deadline passed.
    DeadlinePassed,
    /// A call finished: the participant answered, or the transport gave up
    /// (then `reply` is [`Reply::Unknown`]).
    Replied {
        /// Index of the branch called.
        branch: usize,
        /// The operation that was called.
        op: Op,
        /// The classified answer.
        reply: Reply,
    },
    /// The backoff of an earlier [`Action::Retry`] elapsed.
    RetryDue {
        /// Index of the branch to call again.
        branch: usize,
        /// The operation to call again.
        op: Op,
    },
}

/// A side effect the driver must carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call `op` on `branch` now.
    Call {
        /// Index of the branch.
        branch: usize,
        /// The operation.
        op: Op,
    },
    /// Wait for the backoff of the retry policy, then feed [`Input::RetryDue`].
    Retry {
        /// Index of the branch.
        branch: usize,
        /// The operation.
        op: Op,
    },
}

/// A fact to append to the transaction's durable history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryRecord {
    /// The transaction moved to `to`, for `reason`.
    Status {
        /// The new status.
        to: Status,
        /// Why, in words an operator understands.
        reason: &'static str,
        /// The branch whose answer caused the change, if one did.
        cause: Option<usize>,
    },
    /// A branch reached an outcome through `op`.
    Branch {
        /// Index of the branch.
        branch: usize,
        /// The operation whose answer decided it.
        op: Op,
        /// The new branch status.
        to: BranchStatus,
    },
}

/// What the driver must do after an input: log `history`, then carry out `actions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Facts to write durably before any action.
    pub history: Vec<HistoryRecord>,
    /// Calls to make once the history is durable.
    pub actions: Vec<Action>,
}

/// Whether a call on a branch is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallState {
    /// No call outstanding.
    Idle,
    /// A call of this operation was sent and has not finished.
    Outstanding(Op),
    /// A call of this operation failed with an unknown answer and waits for
    /// its backoff.
    Backoff(Op),
}

/// One branch as the state machine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BranchState {
    pub(crate) status: BranchStatus,
    /// Saga: indices of the branches whose actions must succeed first.
    pub(crate) depends_on: Vec<usize>,
    pub(crate) call: CallState,
}

/// The protocol state of one global transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    pub(crate) mode: Mode,
    pub(crate) status: Status,
    pub(crate) branches: Vec<BranchState>,
}

impl Transaction {
    /// A newly registered saga; `depends_on` comes from
    /// [`crate::spec::saga_dependencies`].
    pub fn new_saga(depends_on: Vec<Vec<usize>>) -> Transaction {
        let statuses = vec![BranchStatus::Pending; depends_on.len()];
        Transaction::recover(Mode::Saga, Status::Running, statuses, depends_on)
    }

    /// A newly opened TCC transaction, with no branches yet.
    pub fn new_tcc() -> Transaction {
        Transaction::recover(Mode::Tcc, Status::Open, vec![], vec![])
    }

    /// A newly registered 2PC transaction with `branches` branches.
    pub fn new_two_phase(branches: usize) -> Transaction {
        let statuses = vec![BranchStatus::Pending; branches];
        Transaction::recover(Mode::TwoPhase, Status::Preparing, statuses, vec![])
    }

    /// A newly registered 3PC transaction with `branches` branches.
    pub fn new_three_phase(branches: usize) -> Transaction {
        let statuses = vec![BranchStatus::Pending; branches];
        Transaction::recover(Mode::ThreePhase, Status::Preparing, statuses, vec![])
    }

    /// A transaction rebuilt from its log. `depends_on` is empty for modes
    /// without dependencies; otherwise one entry per branch.
    pub fn recover(
        mode: Mode,
        status: Status,
        statuses: Vec<BranchStatus>,
        mut depends_on: Vec<Vec<usize>>,
    ) -> Transaction {
        depends_on.resize(statuses.len(), Vec::new());
        let branches = statuses
            .into_iter()
            .zip(depends_on)
            .map(|(status, depends_on)| BranchState {
                status,
                depends_on,
                call: CallState::Idle,
            })
            .collect();
        let mut tx = Transaction {
            mode,
            status,
            branches,
        };
        if mode == Mode::Saga {
            saga::normalize_recovered(&mut tx);
        }
        tx
    }

    /// The protocol this transaction follows.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current status.
    pub fn status(&self) -> Status {
        self.status
    }

    /// The status of every branch, by index.
    pub fn branch_statuses(&self) -> impl Iterator<Item = BranchStatus> + '_ {
        self.branches.iter().map(|b| b.status)
    }

    /// Adds a TCC branch while the transaction is open; returns its index, or
    /// `None` when the transaction no longer accepts branches.
    pub fn add_branch(&mut self) -> Option<usize> {
        (self.mode == Mode::Tcc && self.status == Status::Open).then(|| {
            self.branches.push(BranchState {
                status: BranchStatus::Pending,
                depends_on: vec![],
                call: CallState::Idle,
            });
            self.branches.len() - 1
        })
    }

    /// Starts (or, after recovery, resumes) driving: the calls to make first.
    pub fn start(&mut self) -> Step {
        let mut step = Step::default();
        self.advance(&mut step);
        step
    }

    /// Applies one input.
    pub fn handle(&mut self, input: Input) -> Step {
        let mut step = Step::default();
        match input {
            Input::Commit => {
                self.on_decision_request(true, "the initiator asked to commit", &mut step)
            }
            Input::Abort => {
                self.on_decision_request(false, "the initiator asked to abort", &mut step)
            }
            Input::DeadlinePassed => self.on_deadline(&mut step),
            Input::Replied { branch, op, reply } => self.on_reply(branch, op, reply, &mut step),
            Input::RetryDue { branch, op } => self.on_retry_due(branch, op, &mut step),
        }
        step
    }

    fn on_decision_request(&mut self, commit: bool, reason: &'static str, step: &mut Step) {
        if self.mode == Mode::Tcc && self.status == Status::Open {
            let to = if commit {
                Status::Committing
            } else {
                Status::Aborting
            };
            self.set_status(to, reason, step);
            self.advance(step);
        }
    }

    fn on_deadline(&mut self, step: &mut Step) {
        // Only phase one has a deadline. Once a decision is logged, phase two
        // is carried out however long it takes: aborting a half-confirmed
        // transaction would break atomicity.
        if self.status.is_phase_one() {
            self.set_status(
                Status::Aborting,
                "the deadline passed before phase one finished",
                step,
            );
            for b in &mut self.branches {
                // A pending retry of phase one is abandoned; the branch is
                // rolled back instead.
                if matches!(b.call, CallState::Backoff(_)) {
                    b.call = CallState::Idle;
                }
            }
            self.advance(step);
        }
    }

    fn on_reply(&mut self, index: usize, op: Op, reply: Reply, step: &mut Step) {
        let Some(branch) = self.branches.get_mut(index) else {
            return;
        };
        if branch.call != CallState::Outstanding(op) {
            // A reply to a call this machine did not make (a duplicate, or a
            // call from before a recovery): it proves nothing new.
            return;
        }
        branch.call = CallState::Idle;
        // Only a 2PC vote can be read-only; anywhere else it is a success.
        let reply = match (self.mode, op, reply) {
            (Mode::TwoPhase, Op::Prepare, Reply::ReadOnly) => Reply::ReadOnly,
            (_, _, Reply::ReadOnly) => Reply::Success,
            (_, _, reply) => reply,
        };
        let outcome = match self.mode {
            Mode::Saga => saga::outcome(self.status, op, reply),
            Mode::Tcc => tcc::outcome(op, reply),
            Mode::TwoPhase => two_phase::outcome(self.status, op, reply),
            Mode::ThreePhase => three_phase::outcome(self.status, op, reply),
        };
        match outcome {
            Outcome::Settled(to) => {
                let branch = &mut self.branches[index];
                branch.status = to;
                step.history.push(HistoryRecord::Branch {
                    branch: index,
                    op,
                    to,
                });
                // A refusal in phase one decides: abort. (TCC and phase-two
                // refusals never settle as `refused`; they are retried.)
                if to == BranchStatus::Refused && self.status.is_phase_one() {
                    let reason = match op {
                        Op::Action => "a branch refused its action",
                        Op::PreCommit => "a branch refused to pre-commit",
                        _ => "a branch voted no",
                    };
                    self.set_status(Status::Aborting, reason, step);
                    if let Some(HistoryRecord::Status { cause, .. }) = step.history.last_mut() {
                        *cause = Some(index);
                    }
                }
            }
            Outcome::RetryLater => {
                self.branches[index].call = CallState::Backoff(op);
                step.actions.push(Action::Retry { branch: index, op });
            }
            Outcome::Abandoned => {}
        }
        self.advance(step);
    }

    fn on_retry_due(&mut self, index: usize, op: Op, step: &mut Step) {
        let Some(branch) = self.branches.get_mut(index) else {
            return;
        };
        if branch.call == CallState::Backoff(op) {
            branch.call = CallState::Outstanding(op);
            step.actions.push(Action::Call { branch: index, op });
        }
    }

    /// Issues every call the mode's rules allow now, and moves the
    /// transaction on when its phase is over: to its final status, or (2PC,
    /// 3PC) to the next phase, whose calls are then issued in the same step,
    /// after the decision in the step's history.
    fn advance(&mut self, step: &mut Step) {
        loop {
            let (calls, transition) = match self.mode {
                Mode::Saga => saga::next(self),
                Mode::Tcc => tcc::next(self),
                Mode::TwoPhase => two_phase::next(self),
                Mode::ThreePhase => three_phase::next(self),
            };
            for (index, op, status) in calls {
                let branch = &mut self.branches[index];
                branch.status = status;
                branch.call = CallState::Outstanding(op);
                step.actions.push(Action::Call { branch: index, op });
            }
            match transition {
                Some((to, reason)) => {
                    self.set_status(to, reason, step);
                    if to.is_final() {
                        return;
                    }
                }
                None => return,
            }
        }
    }

    fn set_status(&mut self, to: Status, reason: &'static str, step: &mut Step) {
        if self.status != to {
            self.status = to;
            step.history.push(HistoryRecord::Status {
                to,
                reason,
                cause: None,
            });
        }
    }

    pub(crate) fn any_call_under_way(&self) -> bool {
        self.branches.iter().any(|b| b.call != CallState::Idle)
    }
}

/// What a reply does to a branch, decided by the mode.
pub(crate) enum Outcome {
    /// The branch reached this status; log it.
    Settled(BranchStatus),
    /// The answer was unknown (or a phase-two call was refused): retry.
    RetryLater,
    /// The call no longer matters (a phase-one answer after an abort); the
    /// branch stays as it is and the mode decides what comes next.
    Abandoned,
}

/// Calls to start now (branch, operation, in-flight status) and, when the
/// phase is over, the status to move to with the reason: a final status, or
/// (2PC, 3PC) the decision that opens the next phase.
pub(crate) type Next = (
    Vec<(usize, Op, BranchStatus)>,
    Option<(Status, &'static str)>,
);

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
