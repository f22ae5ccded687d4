//! One branch as the state machine sees it: its status, the call under way
//! or waiting for its timer, and the failures of its current operation that
//! set the backoff and the operator flag.

use crate::state::BranchStatus;
use crate::wire::Op;

/// Whether a call on a branch is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum CallState {
    /// No call outstanding and none planned.
    Idle,
    /// A call of this operation was sent and has not finished.
    Outstanding(Op),
    /// A call of this operation failed (unknown answer) or was answered
    /// "still working"; it is sent again at `due_ms`.
    Waiting {
        /// The operation to send again.
        op: Op,
        /// Unix milliseconds when it is due.
        due_ms: i64,
    },
}

/// One branch of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct BranchState {
    pub(crate) status: BranchStatus,
    /// Saga: indices of the branches whose actions must succeed first.
    pub(crate) depends_on: Vec<usize>,
    pub(crate) call: CallState,
    /// The operation the failure count below belongs to; a new operation
    /// (an action's compensation, say) starts counting from zero.
    pub(crate) counted_op: Option<Op>,
    /// Unknown answers in a row of `counted_op`; sets the backoff.
    pub(crate) failures: u32,
    /// Unix milliseconds of the first of those failures, for a phase-two
    /// operation (phase one has its deadline instead). Logged with the
    /// branch, so that a restart does not reset the operator's window.
    pub(crate) failing_since_ms: Option<i64>,
    /// The last answer was "still working": the branch is being polled, and
    /// the poll is logged only once.
    pub(crate) polling: bool,
}

impl BranchState {
    /// A branch with no call under way and no failure run; a recovered
    /// failure window is restored by `Transaction::with_attention_state`.
    pub(crate) fn new(status: BranchStatus, depends_on: Vec<usize>) -> BranchState {
        BranchState {
            status,
            depends_on,
            call: CallState::Idle,
            counted_op: None,
            failures: 0,
            failing_since_ms: None,
            polling: false,
        }
    }

    /// Marks a call of `op` as sent. Failures of another operation no longer
    /// count: they said nothing about this one.
    pub(crate) fn send(&mut self, op: Op) {
        if self.counted_op.is_some_and(|counted| counted != op) {
            self.failures = 0;
            self.failing_since_ms = None;
            self.polling = false;
        }
        self.counted_op = Some(op);
        self.call = CallState::Outstanding(op);
    }

    /// The call succeeded or settled the branch: the failure run is over.
    pub(crate) fn settled(&mut self) {
        self.failures = 0;
        self.failing_since_ms = None;
        self.polling = false;
    }
}
