//! [`XaError`]: what the XA helper can fail with, and the answer each
//! failure gets.

use crate::answer::BranchAnswer;

/// What the XA helper can fail with. As a response it is an unknown outcome
/// (500; 503 for a lock wait given up): the coordinator retries.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XaError {
    /// The server has prepared transactions disabled (or the setting could
    /// not be read); the message says how to enable them.
    #[error("PostgreSQL cannot prepare transactions: {0}")]
    PreparedTransactionsDisabled(String),
    /// A statement failed.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The business work of a prepare failed for a reason other than the
    /// database ([`WorkError::Failed`](crate::WorkError::Failed)); it was
    /// rolled back.
    #[error("the business work failed: {0}")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The SDK's migrations could not be applied.
    #[error("cannot apply the SDK migrations: {0}")]
    Migrate(#[from] crate::barrier::BarrierError),
    /// The helper's tables hold something this SDK did not write.
    #[error("the XA tables are inconsistent: {0}")]
    Corrupt(String),
}

impl axum::response::IntoResponse for XaError {
    fn into_response(self) -> axum::response::Response {
        if let XaError::Database(e) = &self
            && crate::db::is_lock_timeout(e)
        {
            return crate::db::lock_timeout_answer("2PC participant call");
        }
        tracing::error!(error = %self, "2PC participant call failed; answering 500");
        BranchAnswer::unknown("the participant's database failed; the call will be retried")
            .into_response()
    }
}
