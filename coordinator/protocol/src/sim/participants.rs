//! Simulated participants: each keeps its own state the way a participant
//! behind the SDK's sub-transaction barrier does, counts how often each
//! operation took effect, and notes calls that no correct coordinator makes.

use crate::state::Decision;
use crate::wire::{Mode, Op, Reply};

/// What one participant did, and what its business says.
#[derive(Debug, Clone, Default, Hash)]
pub(super) struct Participant {
    /// The business refuses this branch (action, Try, vote).
    pub(super) refuses: bool,
    /// 2PC: the branch changes nothing and votes read-only.
    pub(super) read_only: bool,
    /// Phase one took effect (action applied, Try reserved, prepared,
    /// voted yes): how many times.
    pub(super) done: u32,
    /// The first operation was answered (the barrier's record).
    pub(super) first_answer: Option<Reply>,
    /// 3PC: pre-committed (held).
    pub(super) pre_committed: bool,
    /// Committed, confirmed, do-committed: how many times it took effect.
    pub(super) committed: u32,
    /// Compensated, cancelled, rolled back, aborted: the barrier's record.
    pub(super) undone: bool,
    /// How many times an undo changed something (undid an effect).
    pub(super) undo_effects: u32,
    /// 3PC: the outcome this participant reached by its own timeout rule.
    pub(super) decided_alone: Option<Decision>,
    /// Calls no correct coordinator makes, with the reason.
    pub(super) misuse: Vec<String>,
}

impl Participant {
    /// Handles one delivery of `op` and answers it.
    pub(super) fn handle(&mut self, mode: Mode, op: Op) -> Reply {
        match (mode, op) {
            (Mode::Saga, Op::Action) => self.phase_one(),
            (Mode::TwoPhase, Op::Prepare) => self.prepare(),
            (Mode::ThreePhase, Op::CanCommit) => self.phase_one(),
            (Mode::ThreePhase, Op::PreCommit) => self.pre_commit(),
            (_, Op::Confirm | Op::Commit | Op::DoCommit) => self.commit(op),
            (_, Op::Compensate | Op::Cancel | Op::Rollback | Op::Abort) => self.undo(op),
            (mode, op) => {
                self.misuse.push(format!("{op} in a {mode} transaction"));
                Reply::Unknown
            }
        }
    }

    /// The TCC initiator's Try, which the coordinator never sends.
    pub(super) fn try_reserve(&mut self) -> Reply {
        self.phase_one()
    }

    /// An action, Try or CanCommit vote behind the barrier: once only, and
    /// never after the undo (suspension).
    fn phase_one(&mut self) -> Reply {
        if let Some(answer) = self.first_answer {
            return answer; // a duplicate gets the first answer again
        }
        let answer = if self.undone || self.refuses {
            Reply::Refused
        } else {
            self.done += 1;
            Reply::Success
        };
        self.first_answer = Some(answer);
        answer
    }

    fn prepare(&mut self) -> Reply {
        if self.read_only && !self.refuses && !self.undone {
            self.first_answer.get_or_insert(Reply::ReadOnly);
            return Reply::ReadOnly;
        }
        self.phase_one()
    }

    fn pre_commit(&mut self) -> Reply {
        if self.undone || self.decided_alone == Some(Decision::Abort) {
            return Reply::Refused; // aborted already: too late to hold
        }
        if self.first_answer != Some(Reply::Success) {
            self.misuse.push("pre_commit without a yes vote".into());
            return Reply::Refused;
        }
        self.pre_committed = true;
        Reply::Success
    }

    fn commit(&mut self, op: Op) -> Reply {
        if self.committed > 0 {
            return Reply::Success;
        }
        if self.undone {
            // 3PC after the timeout rule aborted it: the split the docs
            // describe. Elsewhere a coordinator bug.
            if self.decided_alone.is_none() {
                self.misuse.push(format!("{op} after the undo"));
            }
            return Reply::Refused;
        }
        if self.first_answer != Some(Reply::Success) {
            self.misuse
                .push(format!("{op} of a branch that never said yes"));
            return Reply::Refused;
        }
        self.committed += 1;
        Reply::Success
    }

    fn undo(&mut self, op: Op) -> Reply {
        if self.committed > 0 {
            if self.decided_alone.is_none() {
                self.misuse.push(format!("{op} after the commit"));
            }
            return Reply::Refused;
        }
        if !self.undone {
            self.undone = true;
            if self.done > 0 {
                self.undo_effects += 1;
            }
        }
        Reply::Success
    }

    /// 3PC timeout rule: the participant voted yes or pre-committed and
    /// heard nothing; `answer` is what the coordinator said when asked, or
    /// `None` when it could not be reached (a partition).
    pub(super) fn three_phase_timeout(&mut self, answer: Option<Decision>) {
        if self.committed > 0 || self.undone || self.first_answer != Some(Reply::Success) {
            return;
        }
        let decision = match answer {
            Some(Decision::Pending) => return, // the coordinator is alive: wait
            Some(decision) => decision,
            None if self.pre_committed => Decision::Commit,
            None => Decision::Abort,
        };
        if answer.is_none() {
            self.decided_alone = Some(decision);
        }
        match decision {
            Decision::Commit => self.committed += 1,
            Decision::Abort | Decision::Pending => {
                self.undone = true;
                self.undo_effects += 1;
            }
        }
    }
}
