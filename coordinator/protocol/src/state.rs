//! The status vocabulary of transactions and branches, shared by the API, the
//! store and the state machine.

use serde::{Deserialize, Serialize};

/// Where a global transaction stands.
///
/// ```text
///  saga:  running ──────────────────────────▶ committed
///            └──(refusal | deadline)──▶ aborting ──▶ aborted
///  tcc:   open ──(commit)──▶ committing ──▶ committed
///            └──(abort | deadline)──▶ aborting ──▶ aborted
///  2pc:   preparing ──(all yes)──▶ committing ──▶ committed
///            └──(a no | deadline)──▶ aborting ──▶ aborted
///  3pc:   preparing ──(all yes)──▶ pre_committing ──(all acked)──▶ committing ──▶ committed
///            └──(a no | deadline)──▶ aborting ◀──(a refusal | deadline)──┘
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// TCC: accepting branch registrations while the initiator calls Try.
    Open,
    /// Saga: actions are being executed.
    Running,
    /// 2PC and 3PC: votes (prepare, can-commit) are being collected.
    Preparing,
    /// 3PC: every branch voted yes (logged); pre-commits are being delivered.
    PreCommitting,
    /// The commit decision is logged; confirmations are being delivered.
    Committing,
    /// The abort decision is logged; compensations or cancels are being delivered.
    Aborting,
    /// Final: every branch took effect.
    Committed,
    /// Final: every branch that may have taken effect was undone.
    Aborted,
}

impl Status {
    /// Every status, in lifecycle order.
    pub const ALL: [Status; 8] = [
        Status::Open,
        Status::Running,
        Status::Preparing,
        Status::PreCommitting,
        Status::Committing,
        Status::Aborting,
        Status::Committed,
        Status::Aborted,
    ];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Running => "running",
            Status::Preparing => "preparing",
            Status::PreCommitting => "pre_committing",
            Status::Committing => "committing",
            Status::Aborting => "aborting",
            Status::Committed => "committed",
            Status::Aborted => "aborted",
        }
    }

    /// A final transaction is never driven again.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Committed | Status::Aborted)
    }

    /// Phase one: no decision is logged yet, and the deadline applies.
    pub fn is_phase_one(self) -> bool {
        matches!(
            self,
            Status::Open | Status::Running | Status::Preparing | Status::PreCommitting
        )
    }
}

/// Where one branch stands. `running`, `committing` and `rolling_back` mean a
/// call was sent (or is being retried) and its outcome is not known yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchStatus {
    /// Saga: no action sent yet. TCC: registered; the initiator's Try may have run.
    Pending,
    /// Saga: the action was sent; its outcome is not known yet.
    Running,
    /// Saga: the action succeeded.
    Succeeded,
    /// Saga: the action was refused (409). 2PC, 3PC: voted no, or (3PC)
    /// refused to pre-commit.
    Refused,
    /// 2PC, 3PC: the vote was asked; no answer is known yet.
    Preparing,
    /// 2PC, 3PC: voted yes.
    Prepared,
    /// 2PC: voted read-only; takes no part in phase two.
    ReadOnly,
    /// 3PC: pre-commit sent, not yet acknowledged.
    PreCommitting,
    /// 3PC: pre-commit acknowledged.
    PreCommitted,
    /// TCC confirm, 2PC commit or 3PC do-commit sent, not yet acknowledged.
    Committing,
    /// TCC confirm, 2PC commit or 3PC do-commit acknowledged.
    Committed,
    /// Compensate, cancel, rollback or abort sent, not yet acknowledged.
    RollingBack,
    /// Compensate, cancel, rollback or abort acknowledged.
    RolledBack,
}

impl BranchStatus {
    /// Every branch status.
    pub const ALL: [BranchStatus; 13] = [
        BranchStatus::Pending,
        BranchStatus::Running,
        BranchStatus::Succeeded,
        BranchStatus::Refused,
        BranchStatus::Preparing,
        BranchStatus::Prepared,
        BranchStatus::ReadOnly,
        BranchStatus::PreCommitting,
        BranchStatus::PreCommitted,
        BranchStatus::Committing,
        BranchStatus::Committed,
        BranchStatus::RollingBack,
        BranchStatus::RolledBack,
    ];

    /// The name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchStatus::Pending => "pending",
            BranchStatus::Running => "running",
            BranchStatus::Succeeded => "succeeded",
            BranchStatus::Refused => "refused",
            BranchStatus::Preparing => "preparing",
            BranchStatus::Prepared => "prepared",
            BranchStatus::ReadOnly => "read_only",
            BranchStatus::PreCommitting => "pre_committing",
            BranchStatus::PreCommitted => "pre_committed",
            BranchStatus::Committing => "committing",
            BranchStatus::Committed => "committed",
            BranchStatus::RollingBack => "rolling_back",
            BranchStatus::RolledBack => "rolled_back",
        }
    }
}

/// What a participant in doubt learns from the termination query
/// (`GET /v1/transactions/{gid}/decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// The commit decision is logged: commit.
    Commit,
    /// The abort decision is logged, or the coordinator has no record of
    /// the transaction (presumed abort): abort.
    Abort,
    /// No decision yet: keep waiting (or ask again).
    Pending,
}

impl Decision {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Commit => "commit",
            Decision::Abort => "abort",
            Decision::Pending => "pending",
        }
    }

    /// The decision a transaction in `status` has taken; `None` is a
    /// transaction the coordinator has no record of (presumed abort).
    pub fn of(status: Option<Status>) -> Decision {
        match status {
            Some(Status::Committing | Status::Committed) => Decision::Commit,
            Some(Status::Aborting | Status::Aborted) | None => Decision::Abort,
            Some(Status::Open | Status::Running | Status::Preparing | Status::PreCommitting) => {
                Decision::Pending
            }
        }
    }
}

crate::wire::impl_names!(Status);
crate::wire::impl_names!(BranchStatus);
