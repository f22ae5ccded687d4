//! [`BarrierError`]: what a handler behind the barrier can fail with, and
//! the answer each failure gets.

use crate::answer::BranchAnswer;
use crate::context::WrongOperation;
use axum::response::{IntoResponse, Response};

/// What a handler behind the barrier can fail with. As a response it is an
/// unknown outcome (500), except [`WrongOperation`](Self::WrongOperation)
/// (400): the coordinator retries, and the retry finds the barrier as the
/// failed attempt left it, which is as if it never happened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BarrierError {
    /// A statement failed: the barrier's own, or the business's when the
    /// handler converts its `sqlx::Error` with `?`.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The business step failed for a reason other than the database (a
    /// downstream call, a payload it cannot read): the work is rolled back,
    /// barrier row included, and the call answers 500, so the retry runs
    /// anew. Make one with [`BarrierError::failed`].
    #[error("the business step failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The call's operation is not the one the handler carries out
    /// ([`BranchContext::expect`](crate::BranchContext::expect)); answered 400 with what is wrong, and
    /// nothing ran.
    #[error(transparent)]
    WrongOperation(#[from] WrongOperation),
    /// The SDK's migrations could not be applied.
    #[error("cannot apply the barrier migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The barrier table holds something this SDK did not write.
    #[error("the barrier table is inconsistent: {0}")]
    Corrupt(String),
}

impl BarrierError {
    /// A failure that is neither a database error nor a refusal
    /// ([`BarrierError::Failed`]); a `String`, a `&str` or any error will do.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        BarrierError::Failed(error.into())
    }
}

impl IntoResponse for BarrierError {
    fn into_response(self) -> Response {
        let reason = match self {
            BarrierError::WrongOperation(wrong) => return wrong.into_response(),
            BarrierError::Failed(_) => {
                "the participant's business step failed; nothing was changed, the call will be \
                 retried"
            }
            _ => "the participant's database failed; nothing was changed, the call will be retried",
        };
        // Details stay in this service's log; the coordinator only needs to
        // know that the outcome is unknown and that it should retry.
        tracing::error!(error = %self, "participant call failed; answering 500");
        BranchAnswer::unknown(reason).into_response()
    }
}
