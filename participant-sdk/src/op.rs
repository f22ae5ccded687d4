//! [`BranchOp`]: the operations a participant is asked to carry out, with
//! what each belongs to (its mode), undoes, and whether it may be refused.
//! The coordinator's own [`Op`] lacks `try`, which only the initiator sends.

use dtx_protocol::{Mode, Op};
use std::fmt;
use std::str::FromStr;

/// An operation a participant is asked to carry out on a branch.
///
/// The coordinator sends every operation but `try`, which the initiator
/// client sends itself (TCC), with the same headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BranchOp {
    /// Saga forward step.
    Action,
    /// Saga undo of [`BranchOp::Action`]; must succeed eventually.
    Compensate,
    /// TCC reservation, called by the initiator.
    Try,
    /// TCC commit of a successful Try; must succeed eventually.
    Confirm,
    /// TCC release of a Try that may have run; must succeed eventually.
    Cancel,
    /// 2PC vote: do the work and hold it prepared, or refuse.
    Prepare,
    /// 2PC commit of a prepared branch; must succeed eventually.
    Commit,
    /// 2PC rollback of a branch that may have prepared; must succeed eventually.
    Rollback,
    /// 3PC vote: can this branch commit? No work yet.
    CanCommit,
    /// 3PC: everyone voted yes; do the work and hold it.
    PreCommit,
    /// 3PC: make the held work final; must succeed eventually.
    DoCommit,
    /// 3PC: undo whatever is held; must succeed eventually.
    Abort,
}

impl BranchOp {
    /// Every operation.
    pub const ALL: [BranchOp; 12] = [
        BranchOp::Action,
        BranchOp::Compensate,
        BranchOp::Try,
        BranchOp::Confirm,
        BranchOp::Cancel,
        BranchOp::Prepare,
        BranchOp::Commit,
        BranchOp::Rollback,
        BranchOp::CanCommit,
        BranchOp::PreCommit,
        BranchOp::DoCommit,
        BranchOp::Abort,
    ];

    /// The lowercase name used in the `dtx-op` header and in the barrier
    /// table: the coordinator's name ([`Op::as_str`]), and `try`.
    pub fn as_str(self) -> &'static str {
        self.coordinator_op().map_or("try", Op::as_str)
    }

    /// The protocol this operation belongs to.
    pub fn mode(self) -> Mode {
        match self {
            BranchOp::Action | BranchOp::Compensate => Mode::Saga,
            BranchOp::Try | BranchOp::Confirm | BranchOp::Cancel => Mode::Tcc,
            BranchOp::Prepare | BranchOp::Commit | BranchOp::Rollback => Mode::TwoPhase,
            BranchOp::CanCommit | BranchOp::PreCommit | BranchOp::DoCommit | BranchOp::Abort => {
                Mode::ThreePhase
            }
        }
    }

    /// For an undo (`compensate`, `cancel`, `rollback`, `abort`), the forward
    /// operation whose work it undoes (`action`, `try`, `prepare`,
    /// `pre_commit`); `None` for every other operation. A 3PC `can_commit`
    /// only votes and holds nothing, so `abort` undoes `pre_commit`.
    pub fn undoes(self) -> Option<BranchOp> {
        match self {
            BranchOp::Compensate => Some(BranchOp::Action),
            BranchOp::Cancel => Some(BranchOp::Try),
            BranchOp::Rollback => Some(BranchOp::Prepare),
            BranchOp::Abort => Some(BranchOp::PreCommit),
            BranchOp::Action
            | BranchOp::Try
            | BranchOp::Confirm
            | BranchOp::Prepare
            | BranchOp::Commit
            | BranchOp::CanCommit
            | BranchOp::PreCommit
            | BranchOp::DoCommit => None,
        }
    }

    /// Phase one (`action`, `try`, `prepare`, `can_commit`, `pre_commit`)
    /// may be refused and the refusal decides the transaction; every other
    /// operation carries out a decision already logged and is retried by the
    /// coordinator until it succeeds.
    pub fn is_phase_one(self) -> bool {
        matches!(
            self,
            BranchOp::Action
                | BranchOp::Try
                | BranchOp::Prepare
                | BranchOp::CanCommit
                | BranchOp::PreCommit
        )
    }
}

impl BranchOp {
    /// The coordinator's name for this operation; `None` for `try`, which
    /// only the initiator sends (the coordinator never calls it, so a TCC
    /// branch registers no Try URL).
    pub fn coordinator_op(self) -> Option<Op> {
        Op::ALL.into_iter().find(|op| BranchOp::from(*op) == self)
    }
}

impl fmt::Display for BranchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BranchOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BranchOp::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| format!("unknown operation `{s}`"))
    }
}

impl From<Op> for BranchOp {
    fn from(op: Op) -> Self {
        match op {
            Op::Action => BranchOp::Action,
            Op::Compensate => BranchOp::Compensate,
            Op::Confirm => BranchOp::Confirm,
            Op::Cancel => BranchOp::Cancel,
            Op::Prepare => BranchOp::Prepare,
            Op::Commit => BranchOp::Commit,
            Op::Rollback => BranchOp::Rollback,
            Op::CanCommit => BranchOp::CanCommit,
            Op::PreCommit => BranchOp::PreCommit,
            Op::DoCommit => BranchOp::DoCommit,
            Op::Abort => BranchOp::Abort,
        }
    }
}
