//! What a run is made of besides the actors: the faults drawn for it, the
//! events of its queue, and what the coordinator's log holds.

use crate::state::{BranchStatus, Status};
use crate::wire::{Op, Reply};

/// What may go wrong in one run, drawn from the seed.
#[derive(Debug, Clone)]
pub(super) struct Faults {
    pub(super) lose_request: f64,
    pub(super) lose_reply: f64,
    pub(super) duplicate: f64,
    pub(super) unknown: f64,
    pub(super) still_working: f64,
    pub(super) slow: f64,
    pub(super) crash_at_step: f64,
    /// 3PC: (participant, from, to) cut off from the coordinator.
    pub(super) partition: Option<(usize, i64, i64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Ev {
    /// A call reaches its participant; its answer comes back at `reply_at`
    /// (or is lost).
    Deliver {
        branch: usize,
        op: Op,
        incarnation: u32,
        reply_at: Option<i64>,
    },
    /// A call's outcome reaches the coordinator.
    Outcome {
        branch: usize,
        op: Op,
        reply: ReplyOrd,
        incarnation: u32,
    },
    /// The coordinator asked to be woken.
    Wake { incarnation: u32 },
    /// The coordinator restarts from its log.
    Recover,
    /// A 3PC participant's timer.
    ParticipantTimer { branch: usize },
    /// The TCC initiator's Try reaches a participant; answered in time or not.
    TryDelivered { branch: usize, answered: bool },
    /// The TCC initiator has every Try answer it will get.
    InitiatorDecides,
    /// Faults stop.
    Heal,
}

/// [`Reply`] with an order, for the event queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum ReplyOrd {
    Success,
    ReadOnly,
    Refused,
    StillWorking,
    Unknown,
}

impl ReplyOrd {
    pub(super) fn of(r: Reply) -> ReplyOrd {
        match r {
            Reply::Success => ReplyOrd::Success,
            Reply::ReadOnly => ReplyOrd::ReadOnly,
            Reply::Refused => ReplyOrd::Refused,
            Reply::StillWorking => ReplyOrd::StillWorking,
            Reply::Unknown => ReplyOrd::Unknown,
        }
    }
    pub(super) fn reply(self) -> Reply {
        match self {
            ReplyOrd::Success => Reply::Success,
            ReplyOrd::ReadOnly => Reply::ReadOnly,
            ReplyOrd::Refused => Reply::Refused,
            ReplyOrd::StillWorking => Reply::StillWorking,
            ReplyOrd::Unknown => Reply::Unknown,
        }
    }
}

/// What the log holds: what the driver wrote, nothing more.
#[derive(Debug, Clone)]
pub(super) struct Log {
    pub(super) status: Status,
    pub(super) statuses: Vec<BranchStatus>,
    pub(super) failing_since: Vec<Option<i64>>,
    pub(super) flagged: bool,
}
