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
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// TCC: accepting branch registrations while the initiator calls Try.
    Open,
    /// Saga: actions are being executed.
    Running,
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
    pub const ALL: [Status; 6] = [
        Status::Open,
        Status::Running,
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
    /// Saga: the action was refused (409).
    Refused,
    /// TCC: confirm sent, not yet acknowledged.
    Committing,
    /// TCC: confirm acknowledged.
    Committed,
    /// Compensate or cancel sent, not yet acknowledged.
    RollingBack,
    /// Compensate or cancel acknowledged.
    RolledBack,
}

impl BranchStatus {
    /// Every branch status.
    pub const ALL: [BranchStatus; 8] = [
        BranchStatus::Pending,
        BranchStatus::Running,
        BranchStatus::Succeeded,
        BranchStatus::Refused,
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
            BranchStatus::Committing => "committing",
            BranchStatus::Committed => "committed",
            BranchStatus::RollingBack => "rolling_back",
            BranchStatus::RolledBack => "rolled_back",
        }
    }
}

crate::wire::impl_names!(Status);
crate::wire::impl_names!(BranchStatus);
