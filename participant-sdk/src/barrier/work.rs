//! [`BarrierWork`]: the local transaction handed to the business once the
//! barrier lets a call through, and the two ways to end it.

use super::backend::ROLLBACK_TO_SAVEPOINT;
use super::{BarrierDatabase, BarrierError, REFUSED, stored_key};
use crate::answer::BranchAnswer;
use crate::context::BranchContext;
use crate::op::BranchOp;
use crate::refusal::Refusal;
use sqlx::{Database, Transaction};
use std::ops::{Deref, DerefMut};

/// The business part of a call that passed the barrier.
///
/// Run the business statements on it (it dereferences to the connection:
/// `.execute(&mut *work)`), then end it with [`succeed`](Self::succeed),
/// [`succeed_with`](Self::succeed_with) or [`refuse`](Self::refuse), which
/// record the outcome, commit and return the answer to give. Dropping it, or
/// [`rollback`](Self::rollback), undoes everything including the barrier row,
/// so that the coordinator's retry runs anew: the right thing after an error
/// or to answer [`BranchAnswer::StillWorking`].
#[derive(Debug)]
#[must_use = "end the work with succeed or refuse, or it is rolled back"]
pub struct BarrierWork<'c, DB: Database> {
    tx: Transaction<'c, DB>,
    gid: String,
    branch_id: String,
    op: BranchOp,
}

impl<'c, DB: BarrierDatabase> BarrierWork<'c, DB> {
    pub(super) fn new(tx: Transaction<'c, DB>, context: &BranchContext) -> Self {
        BarrierWork {
            tx,
            gid: context.gid().to_owned(),
            branch_id: context.branch_id().to_owned(),
            op: context.op(),
        }
    }

    /// The operation being carried out.
    pub fn op(&self) -> BranchOp {
        self.op
    }

    /// The local transaction itself, e.g. to open a nested savepoint with
    /// `begin()`. Do not commit or roll it back through this reference's
    /// connection by hand: end the work instead.
    pub fn transaction(&mut self) -> &mut Transaction<'c, DB> {
        &mut self.tx
    }

    /// Commits the business changes; a repeat of this call will be answered
    /// with success (and no body).
    pub async fn succeed(self) -> Result<BranchAnswer, BarrierError> {
        self.tx.commit().await?;
        Ok(BranchAnswer::Success(None))
    }

    /// Commits the business changes and remembers `body`; a repeat of this
    /// call will be answered with success and the same body.
    pub async fn succeed_with(
        mut self,
        body: serde_json::Value,
    ) -> Result<BranchAnswer, BarrierError> {
        let key = stored_key(&self.gid, &self.branch_id, self.op);
        let text = body.to_string();
        DB::set_outcome(&mut *self.tx, key, super::SUCCEEDED, Some(&text)).await?;
        self.tx.commit().await?;
        Ok(BranchAnswer::Success(Some(body)))
    }

    /// Undoes the business changes and answers refused. This works even after
    /// a failed statement (PostgreSQL marks the transaction aborted; rolling
    /// back to the barrier's savepoint recovers it), so a constraint
    /// violation can be turned into a refusal.
    ///
    /// For `action` and `try` the refusal is remembered: a repeat is refused
    /// again with the same reason, and the later `compensate`/`cancel` is a
    /// null compensation. For phase-two operations it is not remembered, since
    /// the coordinator retries them until they succeed: the retry runs the
    /// business again.
    ///
    /// `reason` is a [`Refusal`], or a `String` or `&str` that becomes one.
    pub async fn refuse(
        mut self,
        reason: impl Into<Refusal>,
    ) -> Result<BranchAnswer, BarrierError> {
        let reason = reason.into().into_reason();
        DB::execute(&mut *self.tx, ROLLBACK_TO_SAVEPOINT).await?;
        let key = stored_key(&self.gid, &self.branch_id, self.op);
        if self.op.is_phase_one() {
            DB::set_outcome(&mut *self.tx, key, REFUSED, Some(&reason)).await?;
        } else {
            DB::delete(&mut *self.tx, key).await?;
        }
        self.tx.commit().await?;
        Ok(BranchAnswer::Refused(reason))
    }

    /// Rolls everything back, barrier row included: nothing happened, and a
    /// retry runs the business anew.
    pub async fn rollback(self) -> Result<(), BarrierError> {
        Ok(self.tx.rollback().await?)
    }
}

impl<DB: Database> Deref for BarrierWork<'_, DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<DB: Database> DerefMut for BarrierWork<'_, DB> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}
