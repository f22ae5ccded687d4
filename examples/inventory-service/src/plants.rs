//! Planted defects: deliberately wrong behaviours of this participant, one
//! chosen at start with `--unsafe-plant <NAME>` (env `INVENTORY_UNSAFE_PLANT`,
//! hidden from `--help`), so that the fault-injection harness can prove that
//! every rule of its checker fires on real data. Never set one in anything
//! real. Without a plant (the default) nothing in this module runs and every
//! route behaves as the crate documentation says.
//!
//! | plant | what the participant then does wrong | checker rule it must trip |
//! |---|---|---|
//! | `skip-barrier` | saga and TCC calls skip the barrier: a retried or duplicated call moves stock again and writes another ledger row | `applied_twice` |
//! | `unrecorded-sale` | the saga action (`/saga/reserve`) sells available → sold behind the barrier as usual but writes no ledger row | the ledger no longer adds up to the product's columns |
//! | `compensate-without-action` | a saga compensation (`/saga/release`) that the barrier skips as a null compensation (its action never applied here, e.g. refused for lack of stock) still moves sold → available and writes its `compensate` row; if too few are sold it is refused (the barrier has already recorded the null compensation, so the coordinator's retry is answered success and moves nothing) | `undo_without_do` |
//! | `confirm-without-try` | the TCC Try (`/tcc/try`) answers success having held nothing (recorded by the barrier, no ledger row); the Confirm (`/tcc/confirm`) sells available → sold with a `confirm` row (`moved_from` available). Stock is conserved and the net movement right; only the order is wrong | `confirm_without_try` |
//! | `cancel-keeps-hold` | the TCC Cancel (`/tcc/cancel`) answers success (recorded by the barrier) without releasing the hold and without a ledger row | units left `reserved` after quiescence |
//! | `refuse-confirm` | the TCC Confirm answers 409 (`planted: ...`) every time, changing nothing: the coordinator flags the transaction for an operator and it never finishes | `flagged_for_attention`, `not_final` |
//! | `commit-aborted-2pc` | a 2PC rollback of a prepared branch commits it. XA (PostgreSQL): `COMMIT PREPARED`, so the units stay sold and the `prepare` row becomes visible; a branch with nothing prepared is rolled back as usual. Reservation (SQLite): sells reserved → sold with a `rollback` row | `order_disagrees_with_ledger`, `mixed_two_phase_outcome` |
//! | `rollback-leaves-prepared` | a 2PC rollback answers success and touches nothing. XA: the transaction stays in `pg_prepared_xacts`. Reservation: the hold stays (recorded by the barrier, no ledger row) | `left_prepared` |
//! | `abort-sells-3pc` | the 3PC abort hook sells reserved → sold (`abort` row, `moved_from` reserved, `moved_to` sold) instead of releasing | `order_disagrees_with_ledger` |
//!
//! Each plant is confined: [`intercept`] takes over only the calls its plant
//! concerns and leaves every other call to the normal handler; the 3PC plant
//! is one movement choice in [`crate::three_phase`]'s abort hook.

use crate::AppState;
use crate::store::{CallRef, Movement, Store, move_stock, not_enough};
use crate::two_phase::TwoPhase;
use axum::response::{IntoResponse, Response};
use clap::ValueEnum;
use dtx_sdk::barrier::{BarrierError, Entry, Skipped};
use dtx_sdk::db::Conn;
use dtx_sdk::xa::{XaError, XaParticipant, Xid};
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, Mode, on_db};
use std::fmt;

/// A deliberate defect; see the module documentation for what each does
/// and which checker rule it must trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum Plant {
    /// Saga and TCC calls skip the barrier.
    #[value(name = "skip-barrier")]
    SkipBarrier,
    /// The saga action sells without a ledger row.
    #[value(name = "unrecorded-sale")]
    UnrecordedSale,
    /// A null saga compensation moves sold → available anyway.
    #[value(name = "compensate-without-action")]
    CompensateWithoutAction,
    /// TCC Try holds nothing; Confirm sells from available.
    #[value(name = "confirm-without-try")]
    ConfirmWithoutTry,
    /// TCC Cancel keeps the hold.
    #[value(name = "cancel-keeps-hold")]
    CancelKeepsHold,
    /// TCC Confirm is always refused.
    #[value(name = "refuse-confirm")]
    RefuseConfirm,
    /// A 2PC rollback commits a prepared branch.
    #[value(name = "commit-aborted-2pc")]
    CommitAborted2pc,
    /// A 2PC rollback leaves the branch prepared (or held).
    #[value(name = "rollback-leaves-prepared")]
    RollbackLeavesPrepared,
    /// The 3PC abort sells what pre-commit held.
    #[value(name = "abort-sells-3pc")]
    AbortSells3pc,
}

impl fmt::Display for Plant {
    /// The name given to `--unsafe-plant`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self
            .to_possible_value()
            .expect("every plant has a command-line name");
        f.write_str(value.get_name())
    }
}

/// Carries out `ctx`'s call (saga, TCC or 2PC; its operation and `qty`
/// already checked) the planted way if `plant` concerns it; `None` leaves
/// the call to the normal handler.
pub(crate) async fn intercept(
    plant: Plant,
    state: &AppState,
    ctx: &BranchContext,
    sku: &str,
    qty: i64,
) -> Option<Response> {
    let db = &state.db;
    let response = match (plant, ctx.op()) {
        (Plant::SkipBarrier, op) if matches!(op.mode(), Mode::Saga | Mode::Tcc) => {
            without_barrier(db, ctx, Movement::of(op), sku, qty)
                .await
                .into_response()
        }
        (Plant::UnrecordedSale, BranchOp::Action) => {
            behind_barrier(db, ctx, Business::MoveUnrecorded(Movement::Sell), sku, qty)
                .await
                .map(Passed::into_answer)
                .into_response()
        }
        (Plant::CompensateWithoutAction, BranchOp::Compensate) => {
            compensate_anyway(db, ctx, sku, qty).await.into_response()
        }
        (Plant::ConfirmWithoutTry, BranchOp::Try) => {
            behind_barrier(db, ctx, Business::Nothing, sku, qty)
                .await
                .map(Passed::into_answer)
                .into_response()
        }
        (Plant::ConfirmWithoutTry, BranchOp::Confirm) => {
            behind_barrier(db, ctx, Business::Move(Movement::Sell), sku, qty)
                .await
                .map(Passed::into_answer)
                .into_response()
        }
        (Plant::CancelKeepsHold, BranchOp::Cancel) => {
            behind_barrier(db, ctx, Business::Nothing, sku, qty)
                .await
                .map(Passed::into_answer)
                .into_response()
        }
        (Plant::RefuseConfirm, BranchOp::Confirm) => {
            BranchAnswer::refused("planted: this inventory refuses every TCC Confirm")
                .into_response()
        }
        (Plant::CommitAborted2pc, BranchOp::Rollback) => match &state.two_phase {
            TwoPhase::Xa(xa) => commit_instead_of_rollback(xa, ctx).await.into_response(),
            TwoPhase::Reservation => {
                behind_barrier(db, ctx, Business::Move(Movement::Apply), sku, qty)
                    .await
                    .map(Passed::into_answer)
                    .into_response()
            }
        },
        (Plant::RollbackLeavesPrepared, BranchOp::Rollback) => match &state.two_phase {
            TwoPhase::Xa(_) => BranchAnswer::success().into_response(),
            TwoPhase::Reservation => behind_barrier(db, ctx, Business::Nothing, sku, qty)
                .await
                .map(Passed::into_answer)
                .into_response(),
        },
        _ => return None,
    };
    tracing::warn!(gid = ctx.gid(), branch = ctx.branch_id(), op = %ctx.op(), %plant,
        status = response.status().as_u16(), "planted defect carried out this call");
    Some(response)
}

/// What a planted call does once the barrier lets it through.
#[derive(Debug, Clone, Copy)]
enum Business {
    /// Nothing at all: success, no stock moved, no ledger row.
    Nothing,
    /// This movement with its ledger row (named after the call's operation);
    /// refused if the source column is short.
    Move(Movement),
    /// This movement without a ledger row; refused if the source is short.
    MoveUnrecorded(Movement),
}

/// How a call behind the barrier ended.
#[derive(Debug)]
enum Passed {
    /// The business ran and gave this answer.
    Answered(BranchAnswer),
    /// The barrier skipped the business (and committed its record).
    Skipped(Skipped),
}

impl Passed {
    fn into_answer(self) -> BranchAnswer {
        match self {
            Passed::Answered(answer) => answer,
            Passed::Skipped(skipped) => skipped.answer(),
        }
    }
}

/// Runs `business` behind the barrier, as [`Store::apply`] runs the normal
/// movement.
async fn behind_barrier(
    db: &Store,
    ctx: &BranchContext,
    business: Business,
    sku: &str,
    qty: i64,
) -> Result<Passed, BarrierError> {
    let call = CallRef::of(ctx);
    on_db!(db.db(), |pool, barrier| {
        let mut work = match barrier.begin(pool, ctx).await? {
            Entry::Proceed(work) => work,
            Entry::Skip(skipped) => return Ok(Passed::Skipped(skipped)),
        };
        // The movement that found its source column short, if any.
        let short = match business {
            Business::Nothing => None,
            Business::Move(movement) => {
                let moved = move_stock(Conn::from(&mut *work), &call, movement, sku, qty).await?;
                (!moved).then_some(movement)
            }
            Business::MoveUnrecorded(movement) => {
                let (_, _, update) = movement.sql();
                let updated = sqlx::query(update)
                    .bind(qty)
                    .bind(sku)
                    .execute(&mut *work)
                    .await?;
                (updated.rows_affected() == 0).then_some(movement)
            }
        };
        let answer = match short {
            Some(movement) => work.refuse(not_enough(sku, movement, qty)).await?,
            None => work.succeed().await?,
        };
        Ok(Passed::Answered(answer))
    })
}

/// Moves `movement` with its ledger row in a plain local transaction, no
/// barrier: a repeated call moves stock again.
async fn without_barrier(
    db: &Store,
    ctx: &BranchContext,
    movement: Movement,
    sku: &str,
    qty: i64,
) -> Result<BranchAnswer, BarrierError> {
    let call = CallRef::of(ctx);
    on_db!(db.db(), |pool| {
        let mut tx = pool.begin().await?;
        if !move_stock(Conn::from(&mut *tx), &call, movement, sku, qty).await? {
            return Ok(BranchAnswer::refused(not_enough(sku, movement, qty)));
        }
        tx.commit().await?;
        Ok(BranchAnswer::success())
    })
}

/// `compensate-without-action`: the normal compensation, except that a null
/// compensation still moves sold → available (with its ledger row).
async fn compensate_anyway(
    db: &Store,
    ctx: &BranchContext,
    sku: &str,
    qty: i64,
) -> Result<BranchAnswer, BarrierError> {
    match behind_barrier(db, ctx, Business::Move(Movement::Unsell), sku, qty).await? {
        Passed::Skipped(Skipped::NullCompensation) => {
            without_barrier(db, ctx, Movement::Unsell, sku, qty).await
        }
        passed => Ok(passed.into_answer()),
    }
}

/// `commit-aborted-2pc` on XA: a prepared branch is committed. One with
/// nothing prepared is rolled back as usual, unless this plant committed it
/// before (a retry whose first answer was lost): then the commit's answer,
/// success, so that the plant's only effect is the committed sale.
async fn commit_instead_of_rollback(
    xa: &XaParticipant,
    ctx: &BranchContext,
) -> Result<BranchAnswer, XaError> {
    const IS_PREPARED: &str = "SELECT EXISTS (SELECT 1 FROM pg_prepared_xacts \
         WHERE gid = $1 AND database = current_database())";
    let xid = Xid::of(ctx.gid(), ctx.branch_id());
    let prepared: bool = sqlx::query_scalar(IS_PREPARED)
        .bind(xid.as_str())
        .fetch_one(xa.pool())
        .await?;
    if prepared {
        return xa.commit(ctx).await;
    }
    match xa.rollback(ctx).await? {
        // The XA helper refuses to roll back only a branch committed here.
        BranchAnswer::Refused(_) => xa.commit(ctx).await,
        answer => Ok(answer),
    }
}
