//! The branch context of a participant call: which transaction, which branch,
//! which operation and which protocol, read from the `dtx-*` headers by an
//! axum extractor that answers a clear 400 when they are missing.

use crate::problem::problem;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dtx_protocol::Mode;
use dtx_protocol::wire::{HEADER_BRANCH, HEADER_GID, HEADER_MODE, HEADER_OP};
use std::fmt;
use std::str::FromStr;

/// The W3C trace context header the coordinator and the initiator client send.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// An operation a participant is asked to carry out on a branch.
///
/// The coordinator sends every operation but `try`, which the initiator
/// client sends itself (TCC), with the same headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum BranchOp {
    /// Saga forward step.
    Action,
    /// Saga undo of [`BranchOp::Action`]; must succeed eventually.
    Compensate,
    /// TCC reservation, called by the initiator.
    Try,
    /// TCC commit of a successful Try; must succeed eventually.
    Confirm,
    /// TCC release of a Try that may have run; must succeed eventually.
    Cancel,
    /// 2PC vote: do the work and hold it prepared, or refuse.
    Prepare,
    /// 2PC commit of a prepared branch; must succeed eventually.
    Commit,
    /// 2PC rollback of a branch that may have prepared; must succeed eventually.
    Rollback,
    /// 3PC vote: can this branch commit? No work yet.
    CanCommit,
    /// 3PC: everyone voted yes; do the work and hold it.
    PreCommit,
    /// 3PC: make the held work final; must succeed eventually.
    DoCommit,
    /// 3PC: undo whatever is held; must succeed eventually.
    Abort,
}

impl BranchOp {
    /// Every operation.
    pub const ALL: [BranchOp; 12] = [
        BranchOp::Action,
        BranchOp::Compensate,
        BranchOp::Try,
        BranchOp::Confirm,
        BranchOp::Cancel,
        BranchOp::Prepare,
        BranchOp::Commit,
        BranchOp::Rollback,
        BranchOp::CanCommit,
        BranchOp::PreCommit,
        BranchOp::DoCommit,
        BranchOp::Abort,
    ];

    /// The lowercase name used in the `dtx-op` header and in the barrier table.
    pub fn as_str(self) -> &'static str {
        match self {
            BranchOp::Action => "action",
            BranchOp::Compensate => "compensate",
            BranchOp::Try => "try",
            BranchOp::Confirm => "confirm",
            BranchOp::Cancel => "cancel",
            BranchOp::Prepare => "prepare",
            BranchOp::Commit => "commit",
            BranchOp::Rollback => "rollback",
            BranchOp::CanCommit => "can_commit",
            BranchOp::PreCommit => "pre_commit",
            BranchOp::DoCommit => "do_commit",
            BranchOp::Abort => "abort",
        }
    }

    /// The protocol this operation belongs to.
    pub fn mode(self) -> Mode {
        match self {
            BranchOp::Action | BranchOp::Compensate => Mode::Saga,
            BranchOp::Try | BranchOp::Confirm | BranchOp::Cancel => Mode::Tcc,
            BranchOp::Prepare | BranchOp::Commit | BranchOp::Rollback => Mode::TwoPhase,
            BranchOp::CanCommit | BranchOp::PreCommit | BranchOp::DoCommit | BranchOp::Abort => {
                Mode::ThreePhase
            }
        }
    }

    /// For an undo (`compensate`, `cancel`, `rollback`, `abort`), the forward
    /// operation whose work it undoes (`action`, `try`, `prepare`,
    /// `pre_commit`); `None` for every other operation. A 3PC `can_commit`
    /// only votes and holds nothing, so `abort` undoes `pre_commit`.
    pub fn undoes(self) -> Option<BranchOp> {
        match self {
            BranchOp::Compensate => Some(BranchOp::Action),
            BranchOp::Cancel => Some(BranchOp::Try),
            BranchOp::Rollback => Some(BranchOp::Prepare),
            BranchOp::Abort => Some(BranchOp::PreCommit),
            BranchOp::Action
            | BranchOp::Try
            | BranchOp::Confirm
            | BranchOp::Prepare
            | BranchOp::Commit
            | BranchOp::CanCommit
            | BranchOp::PreCommit
            | BranchOp::DoCommit => None,
        }
    }

    /// Phase one (`action`, `try`, `prepare`, `can_commit`, `pre_commit`)
    /// may be refused and the refusal decides the transaction; every other
    /// operation carries out a decision already logged and is retried by the
    /// coordinator until it succeeds.
    pub fn is_phase_one(self) -> bool {
        matches!(
            self,
            BranchOp::Action
                | BranchOp::Try
                | BranchOp::Prepare
                | BranchOp::CanCommit
                | BranchOp::PreCommit
        )
    }
}

impl fmt::Display for BranchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BranchOp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BranchOp::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| format!("unknown operation `{s}`"))
    }
}

impl From<dtx_protocol::Op> for BranchOp {
    fn from(op: dtx_protocol::Op) -> Self {
        match op {
            dtx_protocol::Op::Action => BranchOp::Action,
            dtx_protocol::Op::Compensate => BranchOp::Compensate,
            dtx_protocol::Op::Confirm => BranchOp::Confirm,
            dtx_protocol::Op::Cancel => BranchOp::Cancel,
            dtx_protocol::Op::Prepare => BranchOp::Prepare,
            dtx_protocol::Op::Commit => BranchOp::Commit,
            dtx_protocol::Op::Rollback => BranchOp::Rollback,
            dtx_protocol::Op::CanCommit => BranchOp::CanCommit,
            dtx_protocol::Op::PreCommit => BranchOp::PreCommit,
            dtx_protocol::Op::DoCommit => BranchOp::DoCommit,
            dtx_protocol::Op::Abort => BranchOp::Abort,
        }
    }
}

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
                rejection.invalid.push((
                    HEADER_OP,
                    format!("is `{op}`; expected action, compensate, try, confirm or cancel"),
                ));
                None
            }
        });
        let mode = mode.and_then(|mode| match mode.parse::<Mode>() {
            Ok(mode) => Some(mode),
            Err(_) => {
                rejection
                    .invalid
                    .push((HEADER_MODE, format!("is `{mode}`; expected saga or tcc")));
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
    fn into_response(self) -> Response {
        problem(
            StatusCode::BAD_REQUEST,
            "missing-branch-context",
            "Missing branch context",
            &self.to_string(),
        )
    }
}
