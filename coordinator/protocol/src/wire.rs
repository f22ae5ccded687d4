//! Names shared between the coordinator and participants: transaction modes,
//! branch operations, the headers on every participant call, the rule that
//! turns an HTTP status into a [`Reply`], and the bodies of the API requests
//! and answers that the coordinator and the SDK's client both handle
//! ([`RegisterRequest`], [`DecisionAnswer`]).

use crate::spec::{BranchSpec, TxOptions};
use crate::state::{Decision, Status};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Header carrying the global transaction id on every participant call.
pub const HEADER_GID: &str = "dtx-gid";
/// Header carrying the branch id on every participant call.
pub const HEADER_BRANCH: &str = "dtx-branch";
/// Header carrying the operation ([`Op`]) on every participant call.
pub const HEADER_OP: &str = "dtx-op";
/// Header carrying the mode ([`Mode`]) on every participant call.
pub const HEADER_MODE: &str = "dtx-mode";
/// Header carrying the signature of a call (version 2, see
/// [`crate::signature`]), when the signer has a key; also the signature of
/// the coordinator's answer to the termination query.
pub const HEADER_SIGNATURE: &str = "dtx-signature";
/// Response header with which a 2PC participant votes read-only on a 2xx
/// answer to `prepare` (value [`VOTE_READ_ONLY`]).
pub const HEADER_VOTE: &str = "dtx-vote";
/// The value of [`HEADER_VOTE`] for a read-only vote.
pub const VOTE_READ_ONLY: &str = "read-only";

/// The protocol a global transaction follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Actions in order (or as a dependency graph), compensations in reverse.
    Saga,
    /// Try by the initiator; Confirm or Cancel by the coordinator.
    Tcc,
    /// Two-phase commit: Prepare (a vote), then Commit or Rollback.
    #[serde(rename = "2pc")]
    TwoPhase,
    /// Three-phase commit: CanCommit (a vote), PreCommit, then DoCommit or Abort.
    #[serde(rename = "3pc")]
    ThreePhase,
}

impl Mode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [Mode; 4] = [Mode::Saga, Mode::Tcc, Mode::TwoPhase, Mode::ThreePhase];

    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Saga => "saga",
            Mode::Tcc => "tcc",
            Mode::TwoPhase => "2pc",
            Mode::ThreePhase => "3pc",
        }
    }

    /// The operations whose URLs a branch of this mode must register.
    pub fn required_ops(self) -> &'static [Op] {
        match self {
            Mode::Saga => &[Op::Action, Op::Compensate],
            Mode::Tcc => &[Op::Confirm, Op::Cancel],
            Mode::TwoPhase => &[Op::Prepare, Op::Commit, Op::Rollback],
            Mode::ThreePhase => &[Op::CanCommit, Op::PreCommit, Op::DoCommit, Op::Abort],
        }
    }

    /// Whether all branches are given at registration and driven by the
    /// coordinator from the start (saga, 2PC, 3PC), rather than registered one
    /// by one while the initiator works (TCC).
    pub fn registers_branches_upfront(self) -> bool {
        self != Mode::Tcc
    }
}

/// A call the coordinator makes on a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Saga forward step.
    Action,
    /// Saga undo step; must succeed eventually.
    Compensate,
    /// TCC commit of a successful Try; must succeed eventually.
    Confirm,
    /// TCC release of a Try that may have run; must succeed eventually.
    Cancel,
    /// 2PC vote request: the participant does the work and holds it prepared.
    Prepare,
    /// 2PC commit of a prepared branch; must succeed eventually.
    Commit,
    /// 2PC rollback of a branch that may have prepared; must succeed eventually.
    Rollback,
    /// 3PC vote request: can the participant commit? No work is done yet.
    CanCommit,
    /// 3PC: every branch voted yes; do the work and hold it.
    PreCommit,
    /// 3PC: every branch acknowledged PreCommit; make it final. Must succeed eventually.
    DoCommit,
    /// 3PC undo of whatever the branch holds; must succeed eventually.
    Abort,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 11] = [
        Op::Action,
        Op::Compensate,
        Op::Confirm,
        Op::Cancel,
        Op::Prepare,
        Op::Commit,
        Op::Rollback,
        Op::CanCommit,
        Op::PreCommit,
        Op::DoCommit,
        Op::Abort,
    ];

    /// The snake_case name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Action => "action",
            Op::Compensate => "compensate",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
            Op::Prepare => "prepare",
            Op::Commit => "commit",
            Op::Rollback => "rollback",
            Op::CanCommit => "can_commit",
            Op::PreCommit => "pre_commit",
            Op::DoCommit => "do_commit",
            Op::Abort => "abort",
        }
    }

    /// Phase-two operations carry out a decision already logged: they are
    /// retried until they succeed and a refusal is an operator's problem,
    /// never a new decision. The others (saga actions, votes, 3PC's
    /// PreCommit) are bounded by the transaction's deadline.
    pub fn is_phase_two(self) -> bool {
        !matches!(
            self,
            Op::Action | Op::Prepare | Op::CanCommit | Op::PreCommit
        )
    }
}

/// Error for a name that is not a known [`Mode`] or [`Op`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownName(pub String);

impl fmt::Display for UnknownName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown name `{}`", self.0)
    }
}

impl std::error::Error for UnknownName {}

/// Implements `Display` and `FromStr` through the type's `as_str` and `ALL`.
macro_rules! impl_names {
    ($ty:ty) => {
        impl ::std::fmt::Display for $ty {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $ty {
            type Err = $crate::wire::UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::wire::UnknownName(s.to_owned()))
            }
        }
    };
}
pub(crate) use impl_names;
impl_names!(Mode);
impl_names!(Op);

/// What a participant's answer means to the protocol. Every mode classifies
/// answers the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// 2xx: the operation is done (a vote: yes).
    Success,
    /// 2xx with `dtx-vote: read-only` on a 2PC prepare: yes, and the branch
    /// changed nothing, so it takes no part in phase two. Any other
    /// operation reads it as [`Reply::Success`].
    ReadOnly,
    /// 409: the business refuses (an action failed, a vote is no).
    Refused,
    /// 425: the participant is still working; ask again later.
    StillWorking,
    /// Any other status, a transport error or a timeout. The operation may or
    /// may not have happened, so it is retried and never read as a failure.
    Unknown,
}

impl Reply {
    /// Whether the operation is done (success, or a read-only vote).
    pub fn is_success(self) -> bool {
        matches!(self, Reply::Success | Reply::ReadOnly)
    }

    /// Classifies an HTTP status code and the `dtx-vote` header of the answer.
    pub fn from_answer(status: u16, vote: Option<&str>) -> Reply {
        match Reply::from_status(status) {
            Reply::Success if vote == Some(VOTE_READ_ONLY) => Reply::ReadOnly,
            reply => reply,
        }
    }

    /// Classifies an HTTP status code.
    pub fn from_status(status: u16) -> Reply {
        match status {
            200..=299 => Reply::Success,
            409 => Reply::Refused,
            425 => Reply::StillWorking,
            _ => Reply::Unknown,
        }
    }
}

/// The body of `POST /v1/transactions`: registers a saga, 2PC or 3PC
/// transaction with all its branches, or opens a TCC one (no branches).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// Client-chosen global id; the coordinator generates one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// `saga`, `tcc`, `2pc` or `3pc`.
    pub mode: Mode,
    /// Saga, 2PC, 3PC: every branch. TCC: none (each is registered on its
    /// own with `POST /v1/transactions/{gid}/branches`).
    #[serde(default)]
    pub branches: Vec<BranchSpec>,
    /// Options; defaults fill what is missing.
    #[serde(default)]
    pub options: TxOptions,
}

/// The body of `POST /v1/transactions/{gid}/abort`, all optional (an empty
/// body is an abort with nothing more to say): why the initiator aborts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbortRequest {
    /// The Try that a participant refused, when that is why: the initiator
    /// makes a TCC Try itself, so the coordinator learns the participant's
    /// reason only from it. It is kept on the branch and in the history, as
    /// the reasons of the refusals the coordinator receives itself are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_try: Option<RefusedTry>,
}

/// A TCC Try its participant refused (HTTP 409).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusedTry {
    /// The branch id, as registered.
    pub branch: String,
    /// The participant's reason (its problem `detail`); the coordinator
    /// keeps its first 300 characters.
    pub reason: String,
}

/// The answer to the termination query (`GET /v1/transactions/{gid}/decision`):
/// what a participant in doubt must do. A coordinator with a signing key
/// signs every field of it in the answer's `dtx-signature` header
/// ([`crate::signature::DecisionVerifier`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionAnswer {
    /// The transaction asked about.
    #[serde(default)]
    pub gid: String,
    /// Its mode; `None` when the coordinator has no record of it.
    #[serde(default)]
    pub mode: Option<Mode>,
    /// Its status; `None` when the coordinator has no record of it (the
    /// decision is then [`Decision::Abort`]: presumed abort). A 3PC
    /// participant reads `pre_committing` as "the coordinator decided to
    /// pre-commit".
    #[serde(default)]
    pub status: Option<Status>,
    /// The decision.
    pub decision: Decision,
}

impl DecisionAnswer {
    /// An answer for `gid` with this decision and neither mode nor status,
    /// e.g. from a fake coordinator in tests.
    pub fn new(gid: impl Into<String>, decision: Decision) -> Self {
        DecisionAnswer {
            gid: gid.into(),
            mode: None,
            status: None,
            decision,
        }
    }

    /// The answer for `gid` in `status` (`None`: no record), with the
    /// decision that status implies ([`Decision::of`]).
    pub fn of(gid: impl Into<String>, mode: Option<Mode>, status: Option<Status>) -> Self {
        DecisionAnswer {
            gid: gid.into(),
            mode,
            status,
            decision: Decision::of(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_without_gid_omits_it_and_unknown_fields_are_refused() {
        let request = RegisterRequest {
            gid: None,
            mode: Mode::Tcc,
            branches: Vec::new(),
            options: TxOptions::default(),
        };
        let json = serde_json::to_value(&request).unwrap();
        assert!(json.get("gid").is_none(), "{json}");
        assert_eq!(json["mode"], "tcc");
        let back: RegisterRequest = serde_json::from_value(json).unwrap();
        assert_eq!(back, request);
        let typo = serde_json::json!({"mode": "saga", "branchs": []});
        assert!(serde_json::from_value::<RegisterRequest>(typo).is_err());
    }

    #[test]
    fn a_decision_answer_follows_the_status() {
        let known = DecisionAnswer::of("g1", Some(Mode::TwoPhase), Some(Status::Committing));
        assert_eq!(
            serde_json::to_value(&known).unwrap(),
            serde_json::json!({"gid": "g1", "mode": "2pc", "status": "committing", "decision": "commit"})
        );
        let unknown = DecisionAnswer::of("g2", None, None);
        assert_eq!(unknown.decision, Decision::Abort);
        let read: DecisionAnswer = serde_json::from_str(
            r#"{"gid": "g2", "mode": null, "status": null, "decision": "abort"}"#,
        )
        .unwrap();
        assert_eq!(read, unknown);
    }

    #[test]
    fn every_redirect_status_is_an_unknown_answer() {
        // A redirect is not the participant's answer: the call it points to
        // was never made with this body. Read as success, a 302 to a page
        // that answers 200 committed a saga whose action never ran.
        for status in 300..=399 {
            assert_eq!(Reply::from_status(status), Reply::Unknown, "{status}");
            assert_eq!(
                Reply::from_answer(status, Some(VOTE_READ_ONLY)),
                Reply::Unknown,
                "{status} with a read-only vote"
            );
        }
    }

    #[test]
    fn statuses_are_classified_the_same_for_every_code() {
        for status in 100..=599 {
            let expected = match status {
                200..=299 => Reply::Success,
                409 => Reply::Refused,
                425 => Reply::StillWorking,
                _ => Reply::Unknown,
            };
            assert_eq!(Reply::from_status(status), expected, "{status}");
        }
        assert_eq!(
            Reply::from_answer(200, Some(VOTE_READ_ONLY)),
            Reply::ReadOnly
        );
        assert_eq!(Reply::from_answer(200, Some("yes")), Reply::Success);
        assert_eq!(
            Reply::from_answer(409, Some(VOTE_READ_ONLY)),
            Reply::Refused
        );
    }
}
