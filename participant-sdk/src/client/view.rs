//! A transaction as the coordinator reports it, read into plain types.

use dtx_protocol::{BranchSpec, BranchStatus, Mode, Status, TxOptions};
use serde::Deserialize;

/// A global transaction as the coordinator reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// The global id.
    pub gid: String,
    /// The protocol.
    pub mode: Mode,
    /// Where it stands; `committed` and `aborted` are final.
    pub status: Status,
    /// The options in force.
    #[serde(default)]
    pub options: TxOptions,
    /// Unix milliseconds of registration.
    #[serde(default)]
    pub created_at_ms: i64,
    /// Unix milliseconds of the last change.
    #[serde(default)]
    pub updated_at_ms: i64,
    /// Unix milliseconds when phase one must be over.
    #[serde(default)]
    pub deadline_at_ms: i64,
    /// Why an operator should look at it, if they should.
    #[serde(default)]
    pub attention: Option<String>,
    /// The branches, in registration order.
    #[serde(default)]
    pub branches: Vec<BranchView>,
    /// The history, oldest first; only [`Client::get`](crate::Client::get)
    /// and [`Client::wait`](crate::Client::wait) fill it.
    #[serde(default)]
    pub events: Vec<EventView>,
}

impl Transaction {
    /// Whether the transaction is final (committed or aborted).
    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// Whether every branch took effect.
    pub fn is_committed(&self) -> bool {
        self.status == Status::Committed
    }

    /// Whether it was aborted (and everything that may have run was undone,
    /// once it is final).
    pub fn is_aborted(&self) -> bool {
        matches!(self.status, Status::Aborting | Status::Aborted)
    }

    /// Why the transaction is aborting or aborted, read from its history:
    /// the coordinator's reason and the branch that caused it (the one that
    /// refused), if any. `None` if it was not aborted or the history is not
    /// loaded ([`Client::get`](crate::Client::get),
    /// [`Client::wait`](crate::Client::wait) and
    /// [`SagaBuilder::submit_and_wait`](crate::client::SagaBuilder::submit_and_wait)
    /// load it).
    ///
    /// Branch statuses cannot tell this after the fact: a refused saga
    /// branch is compensated too (an earlier attempt may have taken effect),
    /// so it ends `rolled_back` like the others.
    pub fn abort_cause(&self) -> Option<AbortCause<'_>> {
        self.events.iter().find_map(|event| {
            let reason = event.detail.strip_prefix("aborting: ")?;
            (event.kind == "status").then_some(AbortCause {
                reason,
                branch_id: event.branch_id.as_deref(),
            })
        })
    }
}

/// Why a transaction was aborted; see [`Transaction::abort_cause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortCause<'a> {
    /// The coordinator's reason, e.g. "a branch refused its action".
    pub reason: &'a str,
    /// The branch that caused the abort, if one did (not for a deadline or
    /// an explicit abort).
    pub branch_id: Option<&'a str>,
}

/// One branch of a [`Transaction`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct BranchView {
    /// Position in the transaction, from 0.
    pub index: u32,
    /// What was registered: id, URLs, payload, headers, dependencies.
    pub spec: BranchSpec,
    /// Where it stands.
    pub status: BranchStatus,
    /// Calls made on it so far.
    #[serde(default)]
    pub attempts: u32,
    /// The HTTP status of the last answer.
    #[serde(default)]
    pub last_http_status: Option<u16>,
    /// The last error.
    #[serde(default)]
    pub last_error: Option<String>,
}

impl BranchView {
    /// The branch id.
    pub fn id(&self) -> &str {
        &self.spec.id
    }
}

/// An entry of a transaction's history.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct EventView {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What happened (`status`, `branch`, `call_failed`, `attention`, ...).
    pub kind: String,
    /// The branch concerned, if any.
    #[serde(default)]
    pub branch_id: Option<String>,
    /// A sentence for people.
    pub detail: String,
}
