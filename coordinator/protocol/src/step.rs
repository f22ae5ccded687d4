//! What goes into the state machine ([`Input`]) and what comes out of it
//! ([`Step`]: history records to log, then [`Action`]s to carry out).

use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

/// Something that happened to a transaction. The passing of time is not an
/// input: it is [`crate::Transaction::handle_timeout`].
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The initiator asked for a verdict (TCC).
    Decide(Verdict),
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
}

/// What the initiator of a TCC transaction asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Confirm every branch.
    Commit,
    /// Cancel every branch.
    Abort,
}

/// A side effect the driver must carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call `op` on `branch` now, and feed its outcome back as
    /// [`Input::Replied`].
    Call {
        /// Index of the branch.
        branch: usize,
        /// The operation.
        op: Op,
    },
}

/// Why a transaction needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionReason {
    /// The participant refused a phase-two operation (409), which must
    /// succeed: only a fix of the participant ends it.
    Refused,
    /// The phase-two operation has failed (unknown answers) for at least the
    /// transaction's attention window.
    FailingFor {
        /// How long, in milliseconds, when the flag was raised.
        ms: u64,
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
    /// A call did not succeed and will be sent again. Logged for the first
    /// failure of a run and then at the 2nd, 4th, 8th… so that the history of
    /// a call retried for days stays short; a "still working" answer is
    /// logged once per run of them.
    CallFailed {
        /// Index of the branch.
        branch: usize,
        /// The operation.
        op: Op,
        /// The answer (unknown, refused in phase two, or still working).
        reply: Reply,
        /// Unknown or refused answers in a row so far (0 while polling).
        failures: u32,
        /// Unix milliseconds when the call is sent again.
        retry_at_ms: i64,
    },
    /// The transaction needs an operator; retries go on.
    Attention {
        /// Index of the branch that fails.
        branch: usize,
        /// The operation that fails.
        op: Op,
        /// Why.
        reason: AttentionReason,
    },
}

/// What the driver must do after an input: log `history`, then carry out
/// `actions`, then sleep until [`crate::Transaction::poll_timeout`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Facts to write durably before any action.
    pub history: Vec<HistoryRecord>,
    /// Calls to make once the history is durable.
    pub actions: Vec<Action>,
}
