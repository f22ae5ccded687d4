//! The planted defects (`--unsafe-plant`) on SQLite: each changes what the
//! inventory answers, moves or records for exactly the calls it concerns,
//! and the same calls without a plant behave correctly. Branch calls go
//! through the real router in-process, with the `dtx-*` headers the
//! coordinator sends.

mod support;

use clap::ValueEnum;
use inventory_service::plants::Plant;
use support::{INITIAL, Inventory, row};

#[test]
fn the_plants_have_exactly_these_command_line_names() {
    let names: Vec<String> = Plant::value_variants()
        .iter()
        .map(Plant::to_string)
        .collect();
    assert_eq!(
        names,
        [
            "skip-barrier",
            "unrecorded-sale",
            "compensate-without-action",
            "confirm-without-try",
            "cancel-keeps-hold",
            "refuse-confirm",
            "commit-aborted-2pc",
            "rollback-leaves-prepared",
            "abort-sells-3pc",
        ]
    );
    for plant in Plant::value_variants() {
        assert_eq!(Plant::from_str(&plant.to_string(), false), Ok(*plant));
    }
}

#[tokio::test]
async fn without_a_plant_every_protocol_moves_stock_correctly() {
    let inv = Inventory::start(None).await;

    // Saga: a retried action sells once, and is recorded.
    assert_eq!(inv.call("/saga/reserve", "saga", "action", 2).await, 200);
    assert_eq!(inv.call("/saga/reserve", "saga", "action", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert_eq!(
        inv.rows("saga").await,
        [row("action", "available", "sold", 2)]
    );

    // Saga: a compensation whose action never ran is a null compensation.
    assert_eq!(
        inv.call("/saga/release", "null", "compensate", 2).await,
        200
    );
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert!(inv.rows("null").await.is_empty());

    // TCC: try holds, confirm sells the hold.
    assert_eq!(inv.call("/tcc/try", "tcc", "try", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 1, 2));
    assert_eq!(inv.call("/tcc/confirm", "tcc", "confirm", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 0, 3));
    assert_eq!(
        inv.rows("tcc").await,
        [
            row("try", "available", "reserved", 1),
            row("confirm", "reserved", "sold", 1)
        ]
    );

    // TCC: cancel releases the hold.
    assert_eq!(inv.call("/tcc/try", "cancelled", "try", 1).await, 200);
    assert_eq!(inv.call("/tcc/cancel", "cancelled", "cancel", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 0, 3));
    assert_eq!(
        inv.rows("cancelled").await,
        [
            row("try", "available", "reserved", 1),
            row("cancel", "reserved", "available", 1)
        ]
    );

    // 2PC (reservation on SQLite): rollback releases the hold.
    assert_eq!(inv.call("/2pc/prepare", "2pc", "prepare", 1).await, 200);
    assert_eq!(inv.stock().await, (6, 1, 3));
    assert_eq!(inv.call("/2pc/rollback", "2pc", "rollback", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 0, 3));
    assert_eq!(
        inv.rows("2pc").await,
        [
            row("prepare", "available", "reserved", 1),
            row("rollback", "reserved", "available", 1)
        ]
    );

    // 3PC: abort releases what pre-commit held.
    pre_commit(&inv, "3pc", 1).await;
    assert_eq!(inv.call("/3pc/abort", "3pc", "abort", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 0, 3));
    assert_eq!(
        inv.rows("3pc").await,
        [
            row("pre_commit", "available", "reserved", 1),
            row("abort", "reserved", "available", 1)
        ]
    );
}

/// Votes and pre-commits a 3PC branch of `qty` apples.
async fn pre_commit(inv: &Inventory, gid: &str, qty: i64) {
    assert_eq!(
        inv.call("/3pc/can_commit", gid, "can_commit", qty).await,
        200
    );
    assert_eq!(
        inv.call("/3pc/pre_commit", gid, "pre_commit", qty).await,
        200
    );
}

#[tokio::test]
async fn skip_barrier_moves_stock_again_on_a_retried_call() {
    let inv = Inventory::start(Some(Plant::SkipBarrier)).await;
    assert_eq!(inv.call("/saga/reserve", "g", "action", 2).await, 200);
    assert_eq!(inv.call("/saga/reserve", "g", "action", 2).await, 200);
    assert_eq!(inv.stock().await, (6, 0, 4));
    assert_eq!(
        inv.rows("g").await,
        [
            row("action", "available", "sold", 2),
            row("action", "available", "sold", 2)
        ]
    );
    // TCC too: a retried try holds twice.
    assert_eq!(inv.call("/tcc/try", "t", "try", 1).await, 200);
    assert_eq!(inv.call("/tcc/try", "t", "try", 1).await, 200);
    assert_eq!(inv.stock().await, (4, 2, 4));
    assert_eq!(inv.rows("t").await.len(), 2);
}

#[tokio::test]
async fn unrecorded_sale_sells_without_a_ledger_row() {
    let inv = Inventory::start(Some(Plant::UnrecordedSale)).await;
    assert_eq!(inv.call("/saga/reserve", "g", "action", 2).await, 200);
    // Still behind the barrier: the retry sells nothing more.
    assert_eq!(inv.call("/saga/reserve", "g", "action", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert!(
        inv.rows("g").await.is_empty(),
        "the sale is not in the ledger"
    );
    // Short stock is still refused.
    assert_eq!(inv.call("/saga/reserve", "big", "action", 50).await, 409);
    assert_eq!(inv.stock().await, (8, 0, 2));
}

#[tokio::test]
async fn compensate_without_action_undoes_what_never_applied() {
    let inv = Inventory::start(Some(Plant::CompensateWithoutAction)).await;
    assert_eq!(inv.call("/saga/reserve", "sold", "action", 3).await, 200);
    assert_eq!(inv.stock().await, (7, 0, 3));

    // A compensation whose action never arrived puts sold units back.
    assert_eq!(
        inv.call("/saga/release", "never", "compensate", 2).await,
        200
    );
    assert_eq!(inv.stock().await, (9, 0, 1));
    assert_eq!(
        inv.rows("never").await,
        [row("compensate", "sold", "available", 2)]
    );

    // An action refused for lack of stock, then its compensation: too few
    // sold, so refused; the barrier recorded the null compensation, so the
    // retry is answered success and moves nothing.
    assert_eq!(inv.call("/saga/reserve", "short", "action", 5).await, 200);
    assert_eq!(inv.stock().await, (4, 0, 6));
    assert_eq!(inv.call("/saga/reserve", "refused", "action", 7).await, 409);
    assert_eq!(
        inv.call("/saga/release", "refused", "compensate", 7).await,
        409
    );
    assert_eq!(
        inv.call("/saga/release", "refused", "compensate", 7).await,
        200
    );
    assert_eq!(inv.stock().await, (4, 0, 6));
    assert!(inv.rows("refused").await.is_empty());

    // A compensation of an action that did apply is the normal one.
    assert_eq!(
        inv.call("/saga/release", "short", "compensate", 5).await,
        200
    );
    assert_eq!(
        inv.call("/saga/release", "short", "compensate", 5).await,
        200
    );
    assert_eq!(inv.stock().await, (9, 0, 1));
    assert_eq!(
        inv.rows("short").await,
        [
            row("action", "available", "sold", 5),
            row("compensate", "sold", "available", 5)
        ]
    );
}

#[tokio::test]
async fn confirm_without_try_sells_from_available_at_confirm() {
    let inv = Inventory::start(Some(Plant::ConfirmWithoutTry)).await;
    assert_eq!(inv.call("/tcc/try", "g", "try", 2).await, 200);
    assert_eq!(inv.stock().await, (INITIAL, 0, 0), "the try held nothing");
    assert!(inv.rows("g").await.is_empty());
    assert_eq!(inv.call("/tcc/confirm", "g", "confirm", 2).await, 200);
    assert_eq!(inv.call("/tcc/confirm", "g", "confirm", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert_eq!(
        inv.rows("g").await,
        [row("confirm", "available", "sold", 2)]
    );
}

#[tokio::test]
async fn cancel_keeps_hold_leaves_the_units_reserved() {
    let inv = Inventory::start(Some(Plant::CancelKeepsHold)).await;
    assert_eq!(inv.call("/tcc/try", "g", "try", 2).await, 200);
    assert_eq!(inv.call("/tcc/cancel", "g", "cancel", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 2, 0));
    assert_eq!(
        inv.rows("g").await,
        [row("try", "available", "reserved", 2)]
    );
    // A retried try is a duplicate: nothing more is held.
    assert_eq!(inv.call("/tcc/try", "g", "try", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 2, 0));
}

#[tokio::test]
async fn refuse_confirm_refuses_every_confirm() {
    let inv = Inventory::start(Some(Plant::RefuseConfirm)).await;
    assert_eq!(inv.call("/tcc/try", "g", "try", 2).await, 200);
    for _ in 0..3 {
        assert_eq!(inv.call("/tcc/confirm", "g", "confirm", 2).await, 409);
    }
    assert_eq!(inv.stock().await, (8, 2, 0));
    assert_eq!(
        inv.rows("g").await,
        [row("try", "available", "reserved", 2)]
    );
    // Cancel is untouched.
    assert_eq!(inv.call("/tcc/cancel", "g", "cancel", 2).await, 200);
    assert_eq!(inv.stock().await, (INITIAL, 0, 0));
}

#[tokio::test]
async fn commit_aborted_2pc_sells_on_rollback() {
    let inv = Inventory::start(Some(Plant::CommitAborted2pc)).await;
    assert_eq!(inv.call("/2pc/prepare", "g", "prepare", 2).await, 200);
    assert_eq!(inv.call("/2pc/rollback", "g", "rollback", 2).await, 200);
    assert_eq!(inv.call("/2pc/rollback", "g", "rollback", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert_eq!(
        inv.rows("g").await,
        [
            row("prepare", "available", "reserved", 2),
            row("rollback", "reserved", "sold", 2)
        ]
    );
    // Nothing prepared: a null rollback, nothing moves.
    assert_eq!(inv.call("/2pc/rollback", "none", "rollback", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert!(inv.rows("none").await.is_empty());
}

#[tokio::test]
async fn rollback_leaves_prepared_keeps_the_hold() {
    let inv = Inventory::start(Some(Plant::RollbackLeavesPrepared)).await;
    assert_eq!(inv.call("/2pc/prepare", "g", "prepare", 2).await, 200);
    assert_eq!(inv.call("/2pc/rollback", "g", "rollback", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 2, 0));
    assert_eq!(
        inv.rows("g").await,
        [row("prepare", "available", "reserved", 2)]
    );
    // Commit is untouched.
    assert_eq!(inv.call("/2pc/prepare", "c", "prepare", 1).await, 200);
    assert_eq!(inv.call("/2pc/commit", "c", "commit", 1).await, 200);
    assert_eq!(inv.stock().await, (7, 2, 1));
}

#[tokio::test]
async fn abort_sells_3pc_sells_the_hold_on_abort() {
    let inv = Inventory::start(Some(Plant::AbortSells3pc)).await;
    pre_commit(&inv, "g", 2).await;
    assert_eq!(inv.stock().await, (8, 2, 0));
    assert_eq!(inv.call("/3pc/abort", "g", "abort", 2).await, 200);
    assert_eq!(inv.call("/3pc/abort", "g", "abort", 2).await, 200);
    assert_eq!(inv.stock().await, (8, 0, 2));
    assert_eq!(
        inv.rows("g").await,
        [
            row("pre_commit", "available", "reserved", 2),
            row("abort", "reserved", "sold", 2)
        ]
    );
}

/// A plant touches only the calls it names: a saga order and its
/// compensation, retried, behave normally under every plant that is not
/// about sagas.
#[tokio::test]
async fn plants_leave_the_calls_they_do_not_concern_alone() {
    let saga_plants = [
        Plant::SkipBarrier,
        Plant::UnrecordedSale,
        Plant::CompensateWithoutAction,
    ];
    for plant in Plant::value_variants() {
        if saga_plants.contains(plant) {
            continue;
        }
        let inv = Inventory::start(Some(*plant)).await;
        for _ in 0..2 {
            assert_eq!(
                inv.call("/saga/reserve", "g", "action", 2).await,
                200,
                "{plant}"
            );
        }
        assert_eq!(inv.stock().await, (8, 0, 2), "{plant}");
        for _ in 0..2 {
            assert_eq!(
                inv.call("/saga/release", "g", "compensate", 2).await,
                200,
                "{plant}"
            );
        }
        assert_eq!(inv.stock().await, (INITIAL, 0, 0), "{plant}");
        assert_eq!(
            inv.rows("g").await,
            [
                row("action", "available", "sold", 2),
                row("compensate", "sold", "available", 2)
            ],
            "{plant}"
        );
    }
}
