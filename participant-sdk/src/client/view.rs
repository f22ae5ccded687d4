//! A transaction as the coordinator reports it, read into plain types:
//! [`TransactionView`] (not a database transaction: a view of a global
//! one), its branches and its history, and why it was aborted.

use dtx_protocol::{BranchSpec, BranchStatus, Mode, Status, TxOptions};
use serde::Deserialize;

/// A global transaction as the coordinator reports it
/// (`GET /v1/transactions/{gid}`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[non_exhaustive]
pub struct TransactionView {
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

impl TransactionView {
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

    /// The branch with this id.
    pub fn branch(&self, id: &str) -> Option<&BranchView> {
        self.branches.iter().find(|b| b.id() == id)
    }

    /// Why the transaction is aborting or aborted, read from its history:
    /// the coordinator's reason, the branch that caused it (the one that
    /// refused), if any, and that branch's own reason, its
    /// [`refusal`](BranchView::refusal). `None` if it was not aborted or the
    /// history is not loaded ([`Client::get`](crate::Client::get),
    /// [`Client::wait`](crate::Client::wait) and
    /// [`submit_and_wait`](crate::client::TransactionBuilder::submit_and_wait)
    /// load it).
    ///
    /// Branch statuses cannot tell this after the fact: a refused saga
    /// branch is compensated too (an earlier attempt may have taken effect),
    /// so it ends `rolled_back` like the others.
    pub fn abort_cause(&self) -> Option<AbortCause<'_>> {
        self.events.iter().find_map(|event| {
            let reason = event.detail.strip_prefix("aborting: ")?;
            let branch_id = event.branch_id.as_deref();
            (event.kind == "status").then(|| AbortCause {
                reason,
                branch_id,
                refusal: branch_id
                    .and_then(|id| self.branch(id))
                    .and_then(|branch| branch.refusal.as_deref()),
            })
        })
    }
}

/// Why a transaction was aborted; see [`TransactionView::abort_cause`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AbortCause<'a> {
    /// The coordinator's reason, e.g. "a branch refused its action".
    pub reason: &'a str,
    /// The branch that caused the abort, if one did (not for a deadline or
    /// an explicit abort).
    pub branch_id: Option<&'a str>,
    /// Why that branch refused, in its participant's words (the `detail` of
    /// its 409), e.g. "not enough pear in stock"; `None` when no branch
    /// refused, the participant gave no reason, or the coordinator is older
    /// than the `refusal` field.
    pub refusal: Option<&'a str>,
}

impl std::fmt::Display for AbortCause<'_> {
    /// One line: `reason (branch: refusal)`, with what is known.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason)?;
        match (self.branch_id, self.refusal) {
            (Some(branch), Some(refusal)) => write!(f, " ({branch}: {refusal})"),
            (Some(branch), None) => write!(f, " ({branch})"),
            (None, _) => Ok(()),
        }
    }
}

/// One branch of a [`TransactionView`].
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
    /// Why the participant refused the branch's phase-one call (the
    /// `detail` of its 409), kept after later calls succeed; `None` when it
    /// never refused (or the coordinator predates this field).
    #[serde(default)]
    pub refusal: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn aborted(refusal: serde_json::Value) -> TransactionView {
        let mut branch = json!({
            "index": 1,
            "spec": {"id": "pears", "action": "http://s/a", "compensate": "http://s/c"},
            "status": "rolled_back",
            "attempts": 2,
            "last_error": null,
        });
        if !refusal.is_null() {
            branch["refusal"] = refusal;
        }
        serde_json::from_value(json!({
            "gid": "order-1",
            "mode": "saga",
            "status": "aborted",
            "branches": [branch],
            "events": [
                {"at_ms": 1, "kind": "branch", "branch_id": "pears", "detail": "action → refused"},
                {"at_ms": 2, "kind": "status", "branch_id": "pears",
                 "detail": "aborting: a branch refused its action"},
            ],
        }))
        .expect("a transaction view")
    }

    #[test]
    fn the_abort_cause_carries_the_refusing_branchs_reason() {
        let tx = aborted(json!("not enough pear in stock"));
        let cause = tx.abort_cause().expect("aborted");
        assert_eq!(cause.reason, "a branch refused its action");
        assert_eq!(cause.branch_id, Some("pears"));
        assert_eq!(cause.refusal, Some("not enough pear in stock"));
        assert_eq!(
            cause.to_string(),
            "a branch refused its action (pears: not enough pear in stock)"
        );
    }

    #[test]
    fn a_coordinator_without_the_refusal_field_still_parses() {
        let tx = aborted(serde_json::Value::Null);
        assert_eq!(tx.branch("pears").unwrap().refusal, None);
        let cause = tx.abort_cause().expect("aborted");
        assert_eq!(cause.refusal, None);
        assert_eq!(cause.to_string(), "a branch refused its action (pears)");
    }
}
