//! In-doubt recovery: resolves the branches this database holds prepared,
//! by asking the coordinator what it decided.

use super::{ROLLED_BACK, XID_PREFIX, XaError, XaParticipant, Xid, set_state};
use crate::client::{ClientError, Decision, DecisionSource};

/// A prepared branch found by [`XaParticipant::recover`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubt {
    /// The prepared transaction's identifier.
    pub xid: String,
    /// The global transaction.
    pub gid: String,
    /// The branch.
    pub branch_id: String,
}

/// What one [`XaParticipant::recover`] pass did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct RecoverySummary {
    /// Committed: the coordinator decided commit.
    pub committed: Vec<InDoubt>,
    /// Rolled back: the coordinator decided abort (or does not know the
    /// transaction: presumed abort).
    pub rolled_back: Vec<InDoubt>,
    /// Left prepared: no decision yet; the coordinator will send it.
    pub pending: Vec<InDoubt>,
    /// Left prepared: the decision could not be learnt or carried out.
    pub failed: Vec<RecoveryError>,
    /// `dtx-` prepared transactions with no row in `dtx_xa_branch`: not
    /// written by this helper (or their row was deleted). Left alone; an
    /// operator must look.
    pub unmapped: Vec<String>,
}

/// A branch recovery left prepared because something failed.
#[derive(Debug)]
pub struct RecoveryError {
    /// The branch.
    pub branch: InDoubt,
    /// What failed.
    pub error: String,
}

const IN_DOUBT: &str = "SELECT p.gid, b.gid, b.branch_id FROM pg_prepared_xacts p \
     LEFT JOIN dtx_xa_branch b ON b.xid = p.gid \
     WHERE p.database = current_database() AND starts_with(p.gid, $1) \
     ORDER BY p.prepared";

impl XaParticipant {
    /// Resolves every prepared branch of this database (transactions named
    /// `dtx-…` in `pg_prepared_xacts`): asks `source` for each decision and
    /// runs `COMMIT PREPARED` (commit), `ROLLBACK PREPARED` (abort, and the
    /// rollback is remembered as [`rollback`](Self::rollback) does), or
    /// leaves it (pending, or the coordinator could not be asked, or its
    /// answer failed verification against the coordinator's keys
    /// ([`ClientError::UnverifiedDecision`]): the coordinator will send the
    /// decision itself, since it retries phase two until acknowledged).
    ///
    /// Call it at service start, after [`migrate`](Self::migrate): branches
    /// prepared by the previous run hold locks until resolved. It is safe
    /// while calls are served: a commit or rollback that gets there first
    /// makes recovery's own statement a no-op.
    ///
    /// Fails only if the list of prepared transactions cannot be read; a
    /// branch that cannot be resolved goes to [`RecoverySummary::failed`].
    pub async fn recover(&self, source: &impl DecisionSource) -> Result<RecoverySummary, XaError> {
        let rows: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(IN_DOUBT)
            .bind(XID_PREFIX)
            .fetch_all(&self.decisions)
            .await?;
        let mut summary = RecoverySummary::default();
        for (xid_text, gid, branch_id) in rows {
            let (Some(xid), Some(gid), Some(branch_id)) = (Xid::parse(&xid_text), gid, branch_id)
            else {
                tracing::warn!(xid = %xid_text, "prepared transaction with no dtx mapping; left alone");
                summary.unmapped.push(xid_text);
                continue;
            };
            let branch = InDoubt {
                xid: xid_text,
                gid,
                branch_id,
            };
            match self.resolve(source, &xid, &branch).await {
                Ok(Decision::Commit) => summary.committed.push(branch),
                Ok(Decision::Abort) => summary.rolled_back.push(branch),
                Ok(Decision::Pending) => summary.pending.push(branch),
                Err(error) => {
                    tracing::warn!(gid = %branch.gid, branch = %branch.branch_id, %error,
                        "in-doubt 2PC branch left prepared");
                    summary.failed.push(RecoveryError { branch, error });
                }
            }
        }
        Ok(summary)
    }

    async fn resolve(
        &self,
        source: &impl DecisionSource,
        xid: &Xid,
        branch: &InDoubt,
    ) -> Result<Decision, String> {
        let answer = source
            .decision(&branch.gid)
            .await
            .map_err(|e: ClientError| format!("cannot learn the decision: {e}"))?;
        let db = |e: sqlx::Error| format!("database error: {e}");
        match answer.decision {
            Decision::Commit => {
                self.finish(xid, "COMMIT PREPARED").await.map_err(db)?;
            }
            Decision::Abort => {
                self.finish(xid, "ROLLBACK PREPARED").await.map_err(db)?;
                let mut conn = self.decisions.acquire().await.map_err(db)?;
                set_state(&mut conn, xid, ROLLED_BACK, None)
                    .await
                    .map_err(db)?;
            }
            Decision::Pending => {}
        }
        tracing::info!(gid = %branch.gid, branch = %branch.branch_id,
            decision = answer.decision.as_str(), "in-doubt 2PC branch resolved by the coordinator");
        Ok(answer.decision)
    }
}
