//! What a participant answers, mapped to the status codes the coordinator
//! reads: 2xx success, 409 refused, 425 still working, anything else unknown.

use crate::problem::problem;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dtx_protocol::Reply;
use dtx_protocol::wire::{HEADER_VOTE, VOTE_READ_ONLY};

/// A participant's answer to one call. Return it from an axum handler.
///
/// | variant | HTTP | what the coordinator does |
/// |---|---|---|
/// | [`Success`](BranchAnswer::Success) | 200 | moves on |
/// | [`ReadOnly`](BranchAnswer::ReadOnly) | 200 + `dtx-vote: read-only` | 2PC prepare: a yes vote that leaves the branch out of phase two; elsewhere read as success |
/// | [`Refused`](BranchAnswer::Refused) | 409 | phase one: aborts the transaction; phase two: retries and flags it for an operator |
/// | [`StillWorking`](BranchAnswer::StillWorking) | 425 | asks again later |
/// | [`Unknown`](BranchAnswer::Unknown) | 500 | retries with backoff; never reads it as a refusal |
#[derive(Debug, Clone, PartialEq)]
pub enum BranchAnswer {
    /// Done. The JSON body, if any, is sent back (`{}` when `None`).
    Success(Option<serde_json::Value>),
    /// A 2PC `prepare` that changed nothing: yes, and no `commit` or
    /// `rollback` will follow for this branch. Sent as 200 with the header
    /// `dtx-vote: read-only`; the coordinator reads it as plain success for
    /// any other operation.
    ReadOnly,
    /// The business says no; the reason goes into a problem document. Refuse
    /// only when nothing was changed (roll the local transaction back).
    Refused(String),
    /// Accepted but not finished; the caller should ask again later.
    StillWorking,
    /// Something failed and the outcome is not known (a database error, a
    /// timeout downstream). The call will be repeated, so it must be
    /// idempotent: that is what the barrier is for.
    Unknown(String),
}

impl BranchAnswer {
    /// Success with an empty JSON object as the body.
    pub fn success() -> Self {
        BranchAnswer::Success(None)
    }

    /// A read-only vote ([`BranchAnswer::ReadOnly`]).
    pub fn read_only() -> Self {
        BranchAnswer::ReadOnly
    }

    /// A refusal with a reason for the people reading the coordinator's log.
    pub fn refused(reason: impl Into<String>) -> Self {
        BranchAnswer::Refused(reason.into())
    }

    /// An unknown outcome with a reason.
    pub fn unknown(reason: impl Into<String>) -> Self {
        BranchAnswer::Unknown(reason.into())
    }

    /// How the coordinator classifies this answer.
    pub fn reply(&self) -> Reply {
        match self {
            BranchAnswer::Success(_) => Reply::Success,
            BranchAnswer::ReadOnly => Reply::ReadOnly,
            BranchAnswer::Refused(_) => Reply::Refused,
            BranchAnswer::StillWorking => Reply::StillWorking,
            BranchAnswer::Unknown(_) => Reply::Unknown,
        }
    }

    /// The HTTP status this answer is sent with.
    pub fn status(&self) -> StatusCode {
        match self {
            BranchAnswer::Success(_) | BranchAnswer::ReadOnly => StatusCode::OK,
            BranchAnswer::Refused(_) => StatusCode::CONFLICT,
            BranchAnswer::StillWorking => StatusCode::TOO_EARLY,
            BranchAnswer::Unknown(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for BranchAnswer {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            BranchAnswer::Success(body) => {
                let body = body.unwrap_or_else(|| serde_json::json!({}));
                (status, axum::Json(body)).into_response()
            }
            BranchAnswer::ReadOnly => (
                status,
                [(HEADER_VOTE, VOTE_READ_ONLY)],
                axum::Json(serde_json::json!({})),
            )
                .into_response(),
            BranchAnswer::Refused(reason) => problem(status, "refused", "Refused", &reason),
            BranchAnswer::StillWorking => problem(
                status,
                "still-working",
                "Still working",
                "the operation has started but is not finished; ask again later",
            ),
            BranchAnswer::Unknown(reason) => {
                problem(status, "unknown-outcome", "Outcome unknown", &reason)
            }
        }
    }
}
