//! Names shared between the coordinator and participants: transaction modes,
//! branch operations, the headers on every participant call, and the rule that
//! turns an HTTP status into a [`Reply`].

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
/// Header carrying the HMAC-SHA256 signature of a call, when a secret is set.
pub const HEADER_SIGNATURE: &str = "dtx-signature";

/// The protocol a global transaction follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Actions in order (or as a dependency graph), compensations in reverse.
    Saga,
    /// Try by the initiator; Confirm or Cancel by the coordinator.
    Tcc,
}

impl Mode {
    /// Every mode, in the order the documentation lists them.
    pub const ALL: [Mode; 2] = [Mode::Saga, Mode::Tcc];

    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Saga => "saga",
            Mode::Tcc => "tcc",
        }
    }

    /// The operations whose URLs a branch of this mode must register.
    pub fn required_ops(self) -> &'static [Op] {
        match self {
            Mode::Saga => &[Op::Action, Op::Compensate],
            Mode::Tcc => &[Op::Confirm, Op::Cancel],
        }
    }
}

/// A call the coordinator makes on a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Saga forward step.
    Action,
    /// Saga undo step; must succeed eventually.
    Compensate,
    /// TCC commit of a successful Try; must succeed eventually.
    Confirm,
    /// TCC release of a Try that may have run; must succeed eventually.
    Cancel,
}

impl Op {
    /// Every operation.
    pub const ALL: [Op; 4] = [Op::Action, Op::Compensate, Op::Confirm, Op::Cancel];

    /// The lowercase name used on the wire and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Action => "action",
            Op::Compensate => "compensate",
            Op::Confirm => "confirm",
            Op::Cancel => "cancel",
        }
    }

    /// Phase-two operations carry out a decision already logged: they are
    /// retried until they succeed and a refusal is an operator's problem,
    /// never a new decision.
    pub fn is_phase_two(self) -> bool {
        !matches!(self, Op::Action)
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// 2xx: the operation is done.
    Success,
    /// 409: the business refuses (an action failed, a vote is no).
    Refused,
    /// 425: the participant is still working; ask again later.
    StillWorking,
    /// Any other status, a transport error or a timeout. The operation may or
    /// may not have happened, so it is retried and never read as a failure.
    Unknown,
}

impl Reply {
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
