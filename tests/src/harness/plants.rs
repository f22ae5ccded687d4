//! Every checker rule shown to fire on real data: runs against sample
//! services started with a deliberately planted defect (`--unsafe-plant
//! NAME`, a hidden test-only flag of each sample), each placing the orders
//! that expose it. A run must report exactly the rules its defect breaks,
//! no fewer (the checker sees it) and no others (the checker says what went
//! wrong, not everything at once). The clean scenarios of `tests/harness.rs`
//! are the other half of the proof: the same checker on the same services
//! without a plant reports nothing.
//!
//! | plant (service) | what the service then does wrong | rules it must trip |
//! |---|---|---|
//! | `skip-barrier` (inventory) | saga and TCC calls skip the barrier; the first answers are lost, so the retries apply again | `applied_twice` and what the double work does to the order and the stock |
//! | `unrecorded-sale` (inventory) | the saga action sells without its ledger row | `ledger_disagrees_with_stock`, `order_disagrees_with_ledger` |
//! | `compensate-without-action` (inventory) | a null compensation gives back units its action never took | `undo_without_do`, `order_disagrees_with_ledger` |
//! | `confirm-without-try` (inventory) | the Try holds nothing; the Confirm sells from what is free | `confirm_without_try` alone: stock and order add up |
//! | `cancel-keeps-hold` (inventory) | the Cancel keeps the hold | `left_reserved`, `order_disagrees_with_ledger` |
//! | `refuse-confirm` (inventory) | the Confirm is refused for ever | `flagged_for_attention`, `not_final`, and no quiescence |
//! | `commit-aborted-2pc` (inventory) | a 2PC rollback commits the prepared transaction | `mixed_two_phase_outcome`, `order_disagrees_with_ledger` |
//! | `rollback-leaves-prepared` (inventory) | a 2PC rollback leaves the transaction prepared | `left_prepared` |
//! | `abort-sells-3pc` (inventory) | a 3PC abort sells the held units | `order_disagrees_with_ledger`, not the 3PC finding: the participant's record says the coordinator decided |
//! | `answer-before-outcome` (orders) | `POST /orders` answers `confirmed` before the outcome | `client_told_otherwise` |
//! | `place-under-new-gid` (orders) | the order's transaction runs under another gid | `orphan_gid`, and the order against its (missing) transaction and ledger |
//! | `double-insert` (orders) | one request creates two orders | `unrequested_order` |
//! | `compensation-keeps-order` (orders) | the order's saga compensation leaves it confirmed | `order_disagrees_with_coordinator`, `order_disagrees_with_ledger` |
//!
//! `unstable_observation` needs no broken service: [`unstable_reads`] reads
//! once while an order is under way and once after, on a healthy cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use dtx_protocol::Mode;

use super::binaries::Binaries;
use super::checker::{self, Violation, ViolationKind};
use super::cluster::{ClusterOptions, Node};
use super::observe;
use super::targeted::{SKU, STOCK, Targeted, TargetedRun};
use crate::error::TestSupportError;

/// A planted defect; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plant {
    /// Inventory: no barrier for saga and TCC.
    SkipBarrier,
    /// Inventory: the saga action writes no ledger row.
    UnrecordedSale,
    /// Inventory: a null compensation moves stock.
    CompensateWithoutAction,
    /// Inventory: an empty Try, a Confirm that sells from what is free.
    ConfirmWithoutTry,
    /// Inventory: the Cancel keeps the hold.
    CancelKeepsHold,
    /// Inventory: the Confirm is always refused.
    RefuseConfirm,
    /// Inventory: a 2PC rollback commits.
    CommitAborted2pc,
    /// Inventory: a 2PC rollback leaves the branch prepared.
    RollbackLeavesPrepared,
    /// Inventory: a 3PC abort sells.
    AbortSells3pc,
    /// Orders: answers before the outcome.
    AnswerBeforeOutcome,
    /// Orders: the transaction under another gid.
    PlaceUnderNewGid,
    /// Orders: two orders per request.
    DoubleInsert,
    /// Orders: the saga compensation keeps the order confirmed.
    CompensationKeepsOrder,
}

/// A deadline short enough that a run waits seconds, not a minute, for an
/// abort by deadline.
const SHORT_DEADLINE: [&str; 2] = ["--deadline-ms", "3000"];

impl Plant {
    /// Every plant.
    pub const ALL: [Plant; 13] = [
        Plant::SkipBarrier,
        Plant::UnrecordedSale,
        Plant::CompensateWithoutAction,
        Plant::ConfirmWithoutTry,
        Plant::CancelKeepsHold,
        Plant::RefuseConfirm,
        Plant::CommitAborted2pc,
        Plant::RollbackLeavesPrepared,
        Plant::AbortSells3pc,
        Plant::AnswerBeforeOutcome,
        Plant::PlaceUnderNewGid,
        Plant::DoubleInsert,
        Plant::CompensationKeepsOrder,
    ];

    /// The flag's value, as the services spell it.
    pub fn name(self) -> &'static str {
        match self {
            Plant::SkipBarrier => "skip-barrier",
            Plant::UnrecordedSale => "unrecorded-sale",
            Plant::CompensateWithoutAction => "compensate-without-action",
            Plant::ConfirmWithoutTry => "confirm-without-try",
            Plant::CancelKeepsHold => "cancel-keeps-hold",
            Plant::RefuseConfirm => "refuse-confirm",
            Plant::CommitAborted2pc => "commit-aborted-2pc",
            Plant::RollbackLeavesPrepared => "rollback-leaves-prepared",
            Plant::AbortSells3pc => "abort-sells-3pc",
            Plant::AnswerBeforeOutcome => "answer-before-outcome",
            Plant::PlaceUnderNewGid => "place-under-new-gid",
            Plant::DoubleInsert => "double-insert",
            Plant::CompensationKeepsOrder => "compensation-keeps-order",
        }
    }

    /// The service the defect is planted in.
    fn service(self) -> Node {
        match self {
            Plant::AnswerBeforeOutcome
            | Plant::PlaceUnderNewGid
            | Plant::DoubleInsert
            | Plant::CompensationKeepsOrder => Node::Orders,
            _ => Node::Inventory,
        }
    }

    /// Exactly the rules a run with this plant must report.
    pub fn expects(self) -> &'static [ViolationKind] {
        use ViolationKind::*;
        match self {
            // The retried TCC Try holds twice and the Confirm sells one
            // hold: the other is left.
            Plant::SkipBarrier => &[AppliedTwice, OrderDisagreesWithLedger, LeftReserved],
            Plant::UnrecordedSale => &[LedgerDisagreesWithStock, OrderDisagreesWithLedger],
            Plant::CompensateWithoutAction => &[UndoWithoutDo, OrderDisagreesWithLedger],
            Plant::ConfirmWithoutTry => &[ConfirmWithoutTry],
            Plant::CancelKeepsHold => &[LeftReserved, OrderDisagreesWithLedger],
            // The order's own branch confirmed it; the stock stays held.
            Plant::RefuseConfirm => &[FlaggedForAttention, NotFinal, OrderDisagreesWithLedger],
            Plant::CommitAborted2pc => &[MixedTwoPhaseOutcome, OrderDisagreesWithLedger],
            Plant::RollbackLeavesPrepared => &[LeftPrepared],
            Plant::AbortSells3pc => &[OrderDisagreesWithLedger],
            Plant::AnswerBeforeOutcome => &[ClientToldOtherwise],
            Plant::PlaceUnderNewGid => &[
                OrphanGid,
                OrderDisagreesWithCoordinator,
                OrderDisagreesWithLedger,
            ],
            Plant::DoubleInsert => &[UnrequestedOrder],
            Plant::CompensationKeepsOrder => {
                &[OrderDisagreesWithCoordinator, OrderDisagreesWithLedger]
            }
        }
    }

    /// Whether the run reaches quiescence despite the defect.
    pub fn quiesces(self) -> bool {
        self != Plant::RefuseConfirm
    }

    /// The cluster: the plant on its service, and what the trigger needs.
    fn options(self) -> ClusterOptions {
        let plant = vec!["--unsafe-plant".to_owned(), self.name().to_owned()];
        let mut options = ClusterOptions::default();
        match self.service() {
            Node::Orders => options.orders_args = plant,
            _ => options.inventory_args = plant,
        }
        let short_deadline = matches!(
            self,
            Plant::CancelKeepsHold
                | Plant::CommitAborted2pc
                | Plant::RollbackLeavesPrepared
                | Plant::AbortSells3pc
        );
        if short_deadline {
            options
                .orders_args
                .extend(SHORT_DEADLINE.map(str::to_owned));
        }
        if self == Plant::RefuseConfirm {
            // The order never settles: answer the client soon.
            options
                .orders_args
                .extend(["--wait-ms".to_owned(), "3000".to_owned()]);
        }
        options
    }

    /// Places the orders that expose the defect; answers their ids.
    async fn trigger(self, run: &TargetedRun) -> Result<Vec<String>, TestSupportError> {
        Ok(match self {
            Plant::SkipBarrier => {
                // The work is done, the answer lost: the retry does it again.
                run.arm("/saga/reserve", "fail_after", 1, 0).await?;
                run.arm("/tcc/try", "fail_after", 1, 0).await?;
                vec![
                    run.place(Mode::Saga, 2).await?,
                    run.place(Mode::Tcc, 3).await?,
                ]
            }
            Plant::UnrecordedSale => vec![run.place(Mode::Saga, 2).await?],
            Plant::CompensateWithoutAction => {
                // Sold units to give back, then an order refused for stock,
                // whose inventory compensation is a null compensation.
                let sold = run.place(Mode::Saga, 60).await?;
                vec![sold, run.place(Mode::Saga, 60).await?]
            }
            Plant::ConfirmWithoutTry | Plant::RefuseConfirm => vec![run.place(Mode::Tcc, 3).await?],
            Plant::CancelKeepsHold => {
                // The Try holds, its answers are lost; the deadline aborts.
                run.arm("/tcc/try", "fail_after", 1000, 0).await?;
                vec![run.place(Mode::Tcc, 2).await?]
            }
            Plant::CommitAborted2pc | Plant::RollbackLeavesPrepared => {
                // Prepared, the votes lost; the deadline aborts.
                run.arm("/2pc/prepare", "fail_after", 1000, 0).await?;
                vec![run.place(Mode::TwoPhase, 2).await?]
            }
            Plant::AbortSells3pc => {
                run.arm("/3pc/pre_commit", "fail_after", 1000, 0).await?;
                vec![run.place(Mode::ThreePhase, 2).await?]
            }
            Plant::AnswerBeforeOutcome | Plant::CompensationKeepsOrder => {
                // More than the stock: refused, compensated, cancelled.
                vec![run.place(Mode::Saga, STOCK + 50).await?]
            }
            Plant::PlaceUnderNewGid | Plant::DoubleInsert => vec![run.place(Mode::Saga, 2).await?],
        })
    }
}

/// Runs the services with `plant` and checks what they did.
pub async fn run(binaries: &Binaries, plant: Plant) -> Result<Targeted, TestSupportError> {
    let run = TargetedRun::start(binaries, plant.name(), &plant.options()).await?;
    let gids = plant.trigger(&run).await?;
    let bound = if plant.quiesces() {
        Duration::from_secs(60)
    } else {
        Duration::from_secs(5)
    };
    run.verdict(gids, bound).await
}

/// Two reads of a healthy cluster, one while an order is under way (its
/// inventory call held for 3 s) and one after it settled: the comparison
/// must report them as different.
pub async fn unstable_reads(binaries: &Binaries) -> Result<Option<Violation>, TestSupportError> {
    let run = TargetedRun::start(binaries, "unstable-reads", &ClusterOptions::default()).await?;
    run.arm("/saga/reserve", "slow", 1, 3000).await?;
    let placing = run.place_in_background(Mode::Saga, 2);
    let seeded = BTreeMap::from([(SKU.to_owned(), STOCK)]);
    run.until("the order row", Duration::from_secs(30), || async {
        let orders = observe::orders(&run.cluster).await.ok()?;
        (!orders.is_empty()).then_some(())
    })
    .await?;
    let during = observe::observe_once(&run.cluster, &seeded, &[], false).await?;
    let _ = placing.await;
    observe::wait_for_quiescence(&run.cluster, Duration::from_secs(60)).await;
    let after = observe::observe_once(&run.cluster, &seeded, &[], true).await?;
    Ok(checker::compare_reads(&during, &after))
}
