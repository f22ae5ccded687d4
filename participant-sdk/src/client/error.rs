//! [`ClientError`]: everything the initiator client can fail with, each
//! variant saying what went wrong and what to do.

use crate::op::BranchOp;
use crate::signature::DecisionSignatureError;
use dtx_protocol::Status;
use dtx_protocol::problem::detail_of;
use std::time::Duration;

/// What an initiator call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A TCC Try was refused (409) by its participant. The scope aborts the
    /// transaction; the coordinator cancels every branch registered so far.
    #[error("transaction `{gid}`: the Try of branch `{branch}` was refused: {detail}")]
    Refused {
        /// The transaction.
        gid: String,
        /// The branch whose Try refused.
        branch: String,
        /// The participant's reason.
        detail: String,
    },
    /// A TCC Try gave no clear answer (timeout, transport error, a status
    /// other than 2xx/409) after every attempt. It may have run; the abort
    /// that follows cancels it either way.
    #[error("transaction `{gid}`: the Try of branch `{branch}` has an unknown outcome: {detail}")]
    TryUnknown {
        /// The transaction.
        gid: String,
        /// The branch whose Try failed.
        branch: String,
        /// The last error.
        detail: String,
    },
    /// The TCC scope's transaction was aborted, not committed: the
    /// coordinator aborted it before the commit arrived (its deadline
    /// passed), or the commit request was lost before it reached the
    /// coordinator and the scope aborted it. Every Try is cancelled; nothing
    /// of the business operation stays. Starting it again is safe.
    #[error("transaction `{gid}` was aborted: {reason}{}", refused_by(.branch, .refusal))]
    Aborted {
        /// The transaction.
        gid: String,
        /// Why: the coordinator's reason, or the scope's.
        reason: String,
        /// The branch that caused the abort, if one did.
        branch: Option<String>,
        /// That branch's own reason (its participant's refusal), when the
        /// coordinator has one.
        refusal: Option<String>,
    },
    /// A branch lacks the URL of one of its mode's operations; nothing was
    /// sent. Set each with the builder method named in the message.
    #[error("branch `{branch}` has no URL for {}", setters(.missing))]
    IncompleteBranch {
        /// The branch.
        branch: String,
        /// The operations without a URL.
        missing: Vec<BranchOp>,
    },
    /// The answer to the TCC commit was lost and the coordinator could not
    /// be asked what became of it before the scope gave up. The transaction
    /// may have committed. Do **not** start the business operation again
    /// under a new gid: ask later with [`Client::wait`](crate::Client::wait)
    /// (`gid`) and act on what it reports.
    #[error(
        "transaction `{gid}`: the commit's answer was lost and its outcome is still unknown: {detail}"
    )]
    OutcomeUnknown {
        /// The transaction.
        gid: String,
        /// The last error asking for the outcome.
        detail: String,
    },
    /// The transaction was not final when the wait ended. It goes on: the
    /// coordinator finishes it; ask again later with [`Client::wait`](crate::Client::wait).
    #[error("transaction `{gid}` is still {status} after waiting {waited:?}")]
    TimedOut {
        /// The transaction.
        gid: String,
        /// How long the client waited.
        waited: Duration,
        /// Its status when the wait ended.
        status: Status,
    },
    /// The coordinator could not be reached or did not answer in time; with
    /// several coordinators, none of them could (every one was tried, and
    /// none answered at all). The request may or may not have taken effect:
    /// repeat it (every request is idempotent by gid).
    #[error("cannot reach the coordinator at {url}: {source}")]
    Unreachable {
        /// The URL that was called last.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The coordinator refused the request as malformed (400) or too large
    /// (413); `detail` is its explanation. Repeating it will not help.
    #[error("the coordinator rejected the request (HTTP {status}): {detail}")]
    BadRequest {
        /// 400 or 413.
        status: u16,
        /// The coordinator's problem detail.
        detail: String,
    },
    /// No such transaction (404).
    #[error("not found: {detail}")]
    NotFound {
        /// The coordinator's problem detail.
        detail: String,
    },
    /// The request conflicts with the transaction (409): the gid is taken by
    /// another request, or the transaction is in a status that does not allow
    /// it (e.g. committing an aborted one).
    #[error("conflict: {detail}")]
    Conflict {
        /// The coordinator's problem detail.
        detail: String,
    },
    /// The coordinator's database is unavailable (503); nothing was changed.
    /// Retry later. With several coordinators, every one was tried, and this
    /// is the 503 of one of them (the others answered 503 too, or not at
    /// all).
    #[error("the coordinator is unavailable: {detail}")]
    Unavailable {
        /// The coordinator's problem detail.
        detail: String,
    },
    /// An answer this client does not understand (another status, a body
    /// that is not a transaction).
    #[error("unexpected answer from the coordinator (HTTP {status}): {detail}")]
    Unexpected {
        /// The HTTP status, 0 when the status was fine but the body was not.
        status: u16,
        /// What was wrong.
        detail: String,
    },
    /// The answer to the termination query ([`Client::decision`](crate::Client::decision))
    /// did not verify against the coordinator's keys
    /// ([`ClientBuilder::coordinator_keys`](crate::client::ClientBuilder::coordinator_keys)):
    /// it is unsigned, signed with a key not among them, altered, stale, or
    /// made for another question. Do not act on it. Something answered, so
    /// this is not [`is_unreachable`](Self::is_unreachable) and the 3PC
    /// timeout rule does not fire on it: the 2PC recovery leaves the branch
    /// prepared and the 3PC watchdog waits, both asking again later. It
    /// lasts until the coordinator signs with a key the client has (`dtx
    /// serve --signing-key`) or whatever answers in its place is removed.
    #[error("the answer about `{gid}` cannot be trusted, so it is not acted on: {source}")]
    UnverifiedDecision {
        /// The transaction asked about.
        gid: String,
        /// Why the answer failed verification.
        #[source]
        source: DecisionSignatureError,
    },
    /// The client was configured with something unusable (e.g. a bad URL).
    #[error("invalid client configuration: {0}")]
    Config(String),
}

impl ClientError {
    /// Whether the coordinator may or may not have acted on the request
    /// that failed: no answer arrived ([`Unreachable`](Self::Unreachable)),
    /// or an answer that does not say (503, another 5xx, a body that is
    /// not what the API documents). Asking it again is the only way to know.
    pub(crate) fn leaves_outcome_open(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Unavailable { .. } => true,
            ClientError::Unexpected { status, .. } => !(400..500).contains(status),
            _ => false,
        }
    }

    /// Maps a coordinator answer that is not a success.
    pub(crate) fn from_answer(status: u16, body: &[u8]) -> ClientError {
        let detail = detail_of(body);
        match status {
            400 | 413 => ClientError::BadRequest { status, detail },
            404 => ClientError::NotFound { detail },
            409 => ClientError::Conflict { detail },
            503 => ClientError::Unavailable { detail },
            _ => ClientError::Unexpected { status, detail },
        }
    }
}

/// ` (branch: refusal)`, with what is known, for [`ClientError::Aborted`].
fn refused_by(branch: &Option<String>, refusal: &Option<String>) -> String {
    match (branch, refusal) {
        (Some(branch), Some(refusal)) => format!(" ({branch}: {refusal})"),
        (Some(branch), None) => format!(" ({branch})"),
        (None, _) => String::new(),
    }
}

/// `` `compensate` (set it with `.compensate(url)`) `` for each operation.
fn setters(missing: &[BranchOp]) -> String {
    let each: Vec<String> = missing
        .iter()
        .map(|&op| format!("`{op}` (set it with `.{}(url)`)", super::branch::setter(op)))
        .collect();
    format!("{}; nothing was sent", each.join(", "))
}
