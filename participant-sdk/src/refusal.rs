//! "The business says no", one type for every helper: [`Refusal`] (a reason
//! for the coordinator's history and the initiator), and [`WorkError`], what
//! a business step run by a helper (the barrier's closure form, the XA
//! prepare, the 3PC hooks) ends with when it does not succeed.

use crate::answer::BranchAnswer;
use std::fmt;

/// The business refuses the operation (out of stock, a limit exceeded),
/// with the reason people will read: the participant answers 409 with it as
/// the problem `detail`, the coordinator keeps it on the branch (`refusal`)
/// and in the history, and the initiator's abort cause carries it.
///
/// Refuse only when nothing was changed: every helper rolls the business
/// step back before it answers a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    reason: String,
}

impl Refusal {
    /// A refusal for this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The reason, by value.
    pub fn into_reason(self) -> String {
        self.reason
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Refusal {}

impl From<String> for Refusal {
    fn from(reason: String) -> Self {
        Refusal::new(reason)
    }
}

impl From<&str> for Refusal {
    fn from(reason: &str) -> Self {
        Refusal::new(reason)
    }
}

impl From<Refusal> for BranchAnswer {
    fn from(refusal: Refusal) -> Self {
        BranchAnswer::Refused(refusal.reason)
    }
}

/// What a business step run by a helper ends with when it does not succeed:
/// the work of [`Barrier::run`](crate::barrier::Barrier::run), of an XA
/// prepare ([`XaParticipant::prepare`](crate::xa::XaParticipant::prepare)) and
/// the hooks of a 3PC branch
/// ([`ThreePhaseHooks`](crate::three_phase::ThreePhaseHooks)).
///
/// `?` converts a [`Refusal`] and an `sqlx::Error`; [`WorkError::failed`]
/// wraps anything else.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkError {
    /// The business says no: the step's changes are undone and the call
    /// answers 409 with the reason. How each helper remembers it is in its
    /// own documentation.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A statement failed: everything is rolled back and the call answers
    /// 500; the coordinator retries, and the retry runs the step anew.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The step failed for another reason (a downstream call, a payload it
    /// cannot read): handled like a database error, rolled back and
    /// answered 500, so the retry runs anew.
    #[error("the business step failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl WorkError {
    /// A refusal for this reason ([`WorkError::Refused`]).
    pub fn refused(reason: impl Into<String>) -> Self {
        WorkError::Refused(Refusal::new(reason))
    }

    /// A failure that is neither a refusal nor a database error
    /// ([`WorkError::Failed`]); a `String`, a `&str` or any error will do.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        WorkError::Failed(error.into())
    }
}
