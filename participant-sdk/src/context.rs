//! The branch context of a participant call: which transaction, which branch,
//! which operation and which protocol, read from the `dtx-*` headers by an
//! axum extractor that answers a clear 400 when they are missing or wrong,
//! and [`BranchContext::expect`], which binds a handler to its operation.

use crate::op::BranchOp;
use crate::problem::problem;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dtx_protocol::Mode;
use dtx_protocol::wire::{HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP};
use std::fmt;

/// The W3C trace context header the coordinator and the initiator client send.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// Who is calling and why: the `dtx-gid`, `dtx-branch`, `dtx-op` and
/// `dtx-mode` headers of a participant call, plus `traceparent` when sent.
///
/// As an axum extractor it rejects a request without them with
/// `400 application/problem+json` naming every missing or invalid header
/// ([`BranchContextRejection`]). It checks that the operation belongs to the
/// mode (`action`/`compensate` with `saga`, `try`/`confirm`/`cancel` with
/// `tcc`, `prepare`/`commit`/`rollback` with `2pc`, `can_commit`/`pre_commit`/
/// `do_commit`/`abort` with `3pc`), so a misrouted call is refused before
/// any business code runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BranchContext {
    gid: String,
    branch_id: String,
    op: BranchOp,
    mode: Mode,
    traceparent: Option<String>,
}

impl BranchContext {
    /// A context built by hand, for code that does not receive calls through
    /// axum, and for tests. The mode is the operation's.
    pub fn new(gid: impl Into<String>, branch_id: impl Into<String>, op: BranchOp) -> Self {
        BranchContext {
            gid: gid.into(),
            branch_id: branch_id.into(),
            op,
            mode: op.mode(),
            traceparent: None,
        }
    }

    /// Reads the context from request headers.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, BranchContextRejection> {
        let mut rejection = BranchContextRejection::default();
        let mut text = |name: &'static str| match headers.get(name).map(|v| v.to_str()) {
            None => {
                rejection.missing.push(name);
                None
            }
            Some(Ok(v)) if !v.trim().is_empty() => Some(v.to_owned()),
            Some(_) => {
                rejection
                    .invalid
                    .push((name, "is empty or not visible ASCII".to_owned()));
                None
            }
        };
        let gid = text(HEADER_GID);
        let branch_id = text(HEADER_BRANCH);
        let op = text(HEADER_OP);
        let mode = text(HEADER_MODE);
        let op = op.and_then(|op| match op.parse::<BranchOp>() {
            Ok(op) => Some(op),
            Err(_) => {
                let known: Vec<&str> = BranchOp::ALL.iter().map(|op| op.as_str()).collect();
                rejection.invalid.push((
                    HEADER_OP,
                    format!("is `{op}`; expected one of {}", known.join(", ")),
                ));
                None
            }
        });
        let mode = mode.and_then(|mode| match mode.parse::<Mode>() {
            Ok(mode) => Some(mode),
            Err(_) => {
                let known: Vec<&str> = Mode::ALL.iter().map(|mode| mode.as_str()).collect();
                rejection.invalid.push((
                    HEADER_MODE,
                    format!("is `{mode}`; expected one of {}", known.join(", ")),
                ));
                None
            }
        });
        if let (Some(op), Some(mode)) = (op, mode)
            && op.mode() != mode
        {
            rejection.invalid.push((
                HEADER_OP,
                format!("is `{op}`, which is not an operation of a {mode} transaction"),
            ));
        }
        match (gid, branch_id, op, mode) {
            (Some(gid), Some(branch_id), Some(op), Some(mode)) if rejection.is_empty() => {
                Ok(BranchContext {
                    gid,
                    branch_id,
                    op,
                    mode,
                    traceparent: headers
                        .get(HEADER_TRACEPARENT)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned),
                })
            }
            _ => Err(rejection),
        }
    }

    /// The global transaction id (`dtx-gid`).
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The branch id (`dtx-branch`), unique within the transaction.
    pub fn branch_id(&self) -> &str {
        &self.branch_id
    }

    /// The operation asked for (`dtx-op`).
    pub fn op(&self) -> BranchOp {
        self.op
    }

    /// The transaction's protocol (`dtx-mode`).
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The W3C trace context of the call, if one was sent; every call of one
    /// transaction carries the same trace id.
    pub fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    /// The same context with a trace context, for contexts built by hand.
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// Binds a handler to its operation: `Ok` when the call's `dtx-op` is
    /// `op`, else [`WrongOperation`], answered `400 application/problem+json`
    /// saying which operation this endpoint carries out and which one the
    /// call asked for. Call it first in every handler, so that a call meant
    /// for another URL (two URLs swapped at registration, a forged or
    /// misrouted call) changes nothing:
    ///
    /// ```
    /// # use dtx_sdk::{BranchAnswer, BranchContext, BranchOp};
    /// # use axum::response::{IntoResponse, Response};
    /// async fn refund(ctx: BranchContext) -> Response {
    ///     if let Err(wrong) = ctx.expect(BranchOp::Compensate) {
    ///         return wrong.into_response();
    ///     }
    ///     // ... the compensation, behind the barrier ...
    /// #   BranchAnswer::success().into_response()
    /// }
    /// ```
    ///
    /// [`BarrierError`](crate::barrier::BarrierError) converts it, so a
    /// handler returning `Result<BranchAnswer, BarrierError>` can write
    /// `ctx.expect(BranchOp::Compensate)?`.
    ///
    /// The coordinator reads a 400 as an unknown outcome: it retries, and
    /// flags the transaction for an operator once the retries have gone on
    /// for `attention_after_ms`, while someone fixes the URL.
    pub fn expect(&self, op: BranchOp) -> Result<(), WrongOperation> {
        if self.op == op {
            Ok(())
        } else {
            Err(WrongOperation {
                expected: op,
                got: self.op,
            })
        }
    }
}

/// A call whose `dtx-op` is not the one its endpoint carries out; see
/// [`BranchContext::expect`]. Answered `400 application/problem+json` of
/// type `urn:dtx:problem:wrong-operation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this endpoint carries out `{expected}`, but the call's `dtx-op` is `{got}`; \
     check the URLs registered for the branch"
)]
pub struct WrongOperation {
    /// The operation the endpoint carries out.
    pub expected: BranchOp,
    /// The operation the call asked for.
    pub got: BranchOp,
}

impl IntoResponse for WrongOperation {
    fn into_response(self) -> Response {
        tracing::warn!(expected = %self.expected, got = %self.got, "call refused: wrong operation for this endpoint");
        problem(
            StatusCode::BAD_REQUEST,
            "wrong-operation",
            "Wrong operation",
            &self.to_string(),
        )
    }
}

impl<S: Send + Sync> FromRequestParts<S> for BranchContext {
    type Rejection = BranchContextRejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        BranchContext::from_headers(&parts.headers)
    }
}

/// Why a request carries no usable branch context. Answered as
/// `400 application/problem+json` whose `detail` names each header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BranchContextRejection {
    missing: Vec<&'static str>,
    invalid: Vec<(&'static str, String)>,
}

impl BranchContextRejection {
    fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.invalid.is_empty()
    }

    /// The headers that were absent.
    pub fn missing(&self) -> &[&'static str] {
        &self.missing
    }

    /// The headers that were present but unusable, each with the reason.
    pub fn invalid(&self) -> &[(&'static str, String)] {
        &self.invalid
    }
}

impl fmt::Display for BranchContextRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if !self.missing.is_empty() {
            let names: Vec<String> = self.missing.iter().map(|n| format!("`{n}`")).collect();
            parts.push(format!("missing header(s) {}", names.join(", ")));
        }
        for (name, why) in &self.invalid {
            parts.push(format!("header `{name}` {why}"));
        }
        write!(
            f,
            "{}; this endpoint takes part in dtx transactions and must be called by the dtx \
             coordinator or the dtx initiator client, which send the branch context headers",
            parts.join("; ")
        )
    }
}

impl std::error::Error for BranchContextRejection {}

impl IntoResponse for BranchContextRejection {
    /// Titled after what is wrong: headers missing, or all present and some
    /// unusable (an unknown `dtx-op`, an operation of another mode).
    fn into_response(self) -> Response {
        let (slug, title) = if self.missing.is_empty() {
            ("invalid-branch-context", "Invalid branch context")
        } else {
            ("missing-branch-context", "Missing branch context")
        };
        problem(StatusCode::BAD_REQUEST, slug, title, &self.to_string())
    }
}
