//! The state machine of one global transaction: inputs and the passing of
//! time in, a [`Step`] out.
//!
//! The rules shared by every mode live here: bookkeeping of calls, retries
//! with backoff, polling of "still working" answers, the phase-one deadline,
//! the operator flag, replies to stale calls. What to call next is asked of
//! the mode's module.
//!
//! Durability contract: a [`Step`]'s `history` must be written to the log
//! before any of its `actions` is carried out. The core emits history only for
//! facts that recovery or an operator needs (a decision, an outcome of a call,
//! a failure run, the flag). Sending a call is not logged: after a crash the
//! call may be sent again, which participants absorb through the
//! sub-transaction barrier.
//!
//! # Call order
//! 1. Build with `new_*` or [`Transaction::recover`], then
//!    [`Transaction::with_timing`] (and, when recovering, the flag and the
//!    failure windows the log holds).
//! 2. [`Transaction::start`] once; then [`Transaction::handle`] for every
//!    input and [`Transaction::handle_timeout`] whenever the instant
//!    [`Transaction::poll_timeout`] names has come.
//! 3. Carry out each step in order: history durably first, then the calls.
//! 4. Stop when [`Transaction::status`] is final.

use crate::branch::{BranchState, CallState};
use crate::planted::Bug;
use crate::state::{BranchStatus, Status};
use crate::step::{Action, HistoryRecord, Input, Step, Verdict};
use crate::timing::{Now, Timing};
use crate::wire::{Mode, Op, Reply};
use crate::{saga, tcc, three_phase, two_phase};

/// The protocol state of one global transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub(crate) mode: Mode,
    pub(crate) status: Status,
    pub(crate) branches: Vec<BranchState>,
    pub(crate) timing: Timing,
    /// The operator flag is raised (it is raised once).
    pub(crate) flagged: bool,
    /// Defects reintroduced on purpose, to prove the simulation finds them.
    #[cfg(test)]
    pub(crate) planted: crate::planted::Planted,
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

    /// A transaction rebuilt from its log, with the default [`Timing`].
    /// `depends_on` is empty for modes without dependencies; otherwise one
    /// entry per branch.
    pub fn recover(
        mode: Mode,
        status: Status,
        statuses: Vec<BranchStatus>,
        depends_on: Vec<Vec<usize>>,
    ) -> Transaction {
        let mut tx = Transaction::rebuild(mode, status, statuses, depends_on);
        if mode == Mode::Saga {
            saga::normalize_recovered(&mut tx);
        }
        tx
    }

    /// [`Transaction::recover`] with defects switched on.
    #[cfg(test)]
    pub(crate) fn recover_planted(
        mode: Mode,
        status: Status,
        statuses: Vec<BranchStatus>,
        depends_on: Vec<Vec<usize>>,
        planted: crate::planted::Planted,
    ) -> Transaction {
        let mut tx = Transaction::rebuild(mode, status, statuses, depends_on);
        tx.planted = planted;
        if mode == Mode::Saga && !tx.planted_bug(Bug::ForgetMaybeSentOnRecovery) {
            saga::normalize_recovered(&mut tx);
        }
        tx
    }

    fn rebuild(
        mode: Mode,
        status: Status,
        statuses: Vec<BranchStatus>,
        mut depends_on: Vec<Vec<usize>>,
    ) -> Transaction {
        depends_on.resize(statuses.len(), Vec::new());
        for deps in &depends_on {
            assert!(
                deps.iter().all(|&d| d < statuses.len()),
                "a dependency names a branch that does not exist"
            );
        }
        let branches = statuses
            .into_iter()
            .zip(depends_on)
            .map(|(status, depends_on)| BranchState::new(status, depends_on))
            .collect();
        Transaction {
            mode,
            status,
            branches,
            timing: Timing::default(),
            flagged: false,
            #[cfg(test)]
            planted: crate::planted::Planted::default(),
        }
    }

    /// Sets the deadline, retry policy, poll interval and attention window.
    pub fn with_timing(mut self, timing: Timing) -> Transaction {
        self.timing = timing;
        self
    }

    /// Restores the operator flag and each branch's failure window from the
    /// log (`failing_since_ms[i]` for branch `i`), so that a restart neither
    /// flags twice nor resets the window.
    pub fn with_attention_state(
        mut self,
        flagged: bool,
        failing_since_ms: &[Option<i64>],
    ) -> Transaction {
        self.flagged = flagged;
        for (branch, since) in self.branches.iter_mut().zip(failing_since_ms) {
            branch.failing_since_ms = *since;
        }
        self
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

    /// When each branch's current phase-two operation started failing, by
    /// index: what the log must keep for the operator's window.
    pub fn failing_since_ms(&self) -> impl Iterator<Item = Option<i64>> + '_ {
        self.branches.iter().map(|b| b.failing_since_ms)
    }

    /// Whether the operator flag is raised.
    pub fn flagged(&self) -> bool {
        self.flagged
    }

    /// Unix milliseconds by which phase one must end.
    pub fn deadline_at_ms(&self) -> i64 {
        self.timing.deadline_at_ms
    }

    /// Adds a TCC branch while the transaction is open; returns its index, or
    /// `None` when the transaction no longer accepts branches.
    pub fn add_branch(&mut self) -> Option<usize> {
        (self.mode == Mode::Tcc && self.status == Status::Open).then(|| {
            self.branches
                .push(BranchState::new(BranchStatus::Pending, vec![]));
            self.branches.len() - 1
        })
    }

    /// Starts (or, after recovery, resumes) driving: the calls to make first.
    pub fn start(&mut self) -> Step {
        let mut step = Step::default();
        self.advance(&mut step);
        step
    }

    /// Applies one input that happened at `now`.
    pub fn handle(&mut self, now: Now, input: Input) -> Step {
        let mut step = Step::default();
        match input {
            Input::Decide(verdict) => self.on_verdict(verdict, &mut step),
            Input::Replied { branch, op, reply } => {
                self.on_reply(now, branch, op, reply, &mut step)
            }
        }
        self.check_invariants();
        step
    }

    /// When the core next needs [`Transaction::handle_timeout`]: the earliest
    /// of the phase-one deadline and every retry or poll waiting; `None` when
    /// only an answer (or the initiator) can move the transaction.
    pub fn poll_timeout(&self) -> Option<i64> {
        if self.status.is_final() {
            return None;
        }
        let deadline = self
            .status
            .is_phase_one()
            .then_some(self.timing.deadline_at_ms);
        let waits = self.branches.iter().filter_map(|b| match b.call {
            CallState::Waiting { due_ms, .. } => Some(due_ms),
            CallState::Idle | CallState::Outstanding(_) => None,
        });
        deadline.into_iter().chain(waits).min()
    }

    /// Lets time pass up to `now`: the deadline decides when it has passed,
    /// and every retry or poll that is due is sent.
    pub fn handle_timeout(&mut self, now: Now) -> Step {
        let mut step = Step::default();
        if self.status.is_phase_one() && now.ms >= self.timing.deadline_at_ms {
            // Only phase one has a deadline. Once a decision is logged, phase
            // two is carried out however long it takes: aborting a
            // half-confirmed transaction would break atomicity.
            self.set_status(
                Status::Aborting,
                "the deadline passed before phase one finished",
                &mut step,
            );
        }
        for index in 0..self.branches.len() {
            let CallState::Waiting { op, due_ms } = self.branches[index].call else {
                continue;
            };
            if due_ms > now.ms {
                continue;
            }
            // A phase-one retry never outlives the decision (set_status
            // drops them); this is the guard behind that rule.
            assert!(
                op.is_phase_two()
                    || self.status.is_phase_one()
                    || self.planted_bug(Bug::DecisionKeepsPhaseOneRetry),
                "a phase-one retry survived the decision"
            );
            self.send(index, op);
            step.actions.push(Action::Call { branch: index, op });
        }
        self.advance(&mut step);
        self.check_invariants();
        step
    }

    fn on_verdict(&mut self, verdict: Verdict, step: &mut Step) {
        if self.mode == Mode::Tcc && self.status == Status::Open {
            let (to, reason) = match verdict {
                Verdict::Commit => (Status::Committing, "the initiator asked to commit"),
                Verdict::Abort => (Status::Aborting, "the initiator asked to abort"),
            };
            self.set_status(to, reason, step);
            self.advance(step);
        }
    }

    fn on_reply(&mut self, now: Now, index: usize, op: Op, reply: Reply, step: &mut Step) {
        let Some(branch) = self.branches.get_mut(index) else {
            // The driver only feeds answers to calls the core asked for.
            panic!("a reply names branch {index}, which does not exist");
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
                self.end_failure_run(index, reply.is_success());
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
            Outcome::RetryLater => self.schedule_retry(now, index, op, reply, step),
            Outcome::Abandoned => self.end_failure_run(index, false),
        }
        self.advance(step);
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
                assert!(
                    op.is_phase_two() || self.status.is_phase_one(),
                    "a phase-one call after the decision"
                );
                self.branches[index].status = status;
                self.send(index, op);
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
        if self.status == to {
            return;
        }
        assert!(!self.status.is_final(), "a final status never changes");
        let decided = self.status.is_phase_one() && !to.is_phase_one();
        self.status = to;
        step.history.push(HistoryRecord::Status {
            to,
            reason,
            cause: None,
        });
        if decided && !self.planted_bug(Bug::DecisionKeepsPhaseOneRetry) {
            // No phase-one call may leave after the decision is logged: a
            // retry waiting for its timer is dropped, and the branch is
            // undone like any other that may have run. (A PreCommit sent
            // after `aborting` could make a 3PC participant commit by its
            // timeout rule while the others abort.)
            for index in 0..self.branches.len() {
                if let CallState::Waiting { op, .. } = self.branches[index].call
                    && !op.is_phase_two()
                {
                    self.branches[index].call = CallState::Idle;
                    self.end_failure_run(index, false);
                }
            }
        }
    }

    /// Rules that hold after every input, whatever the mode.
    fn check_invariants(&self) {
        if self.status.is_final() {
            assert!(
                !self.any_call_under_way(),
                "a final transaction has a call under way"
            );
        }
        if !self.status.is_phase_one() && !self.planted_bug(Bug::DecisionKeepsPhaseOneRetry) {
            assert!(
                self.branches.iter().all(|b| !matches!(
                    b.call,
                    CallState::Waiting { op, .. } if !op.is_phase_two()
                )),
                "a phase-one retry is waiting after the decision"
            );
        }
    }

    /// A branch's operation is over (settled, abandoned, dropped by the
    /// decision): its failures say nothing about the next operation.
    fn end_failure_run(&mut self, index: usize, success: bool) {
        if success || !self.planted_bug(Bug::FailuresCarryOver) {
            self.branches[index].settled();
        }
    }

    /// Marks a call as sent.
    fn send(&mut self, index: usize, op: Op) {
        if self.planted_bug(Bug::FailuresCarryOver) {
            self.branches[index].counted_op = Some(op);
        }
        self.branches[index].send(op);
    }

    /// Feeds what decides the transaction's future (not its timing
    /// settings) to `state`: the exhaustive exploration's notion of "the
    /// same state".
    #[cfg(test)]
    pub(crate) fn hash_state<H: std::hash::Hasher>(&self, state: &mut H) {
        use std::hash::Hash;
        (self.mode, self.status, &self.branches, self.flagged).hash(state);
    }

    pub(crate) fn any_call_under_way(&self) -> bool {
        self.branches.iter().any(|b| b.call != CallState::Idle)
    }

    /// Whether a planted defect is switched on (test builds only).
    #[cfg(test)]
    pub(crate) fn planted_bug(&self, bug: Bug) -> bool {
        self.planted.has(bug)
    }

    #[cfg(not(test))]
    #[inline(always)]
    pub(crate) fn planted_bug(&self, _bug: Bug) -> bool {
        false
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

#[cfg(test)]
#[path = "machine_time_tests.rs"]
mod time_tests;
