//! End to end: a real coordinator process and both sample services over
//! HTTP, for saga and TCC: success, refusal with compensation, a participant
//! that fails twice then succeeds, duplicate delivery, and a cancel that
//! arrives before its Try. Every test ends with the stock and ledger
//! invariants ([`support::World::check_invariants`]).
//!
//! Run with `cargo nextest run -p order-service` (builds the coordinator), or
//! `cargo build -p dtx-coordinator && cargo test -p order-service`.

mod support;

use support::{INITIAL, World};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_order_succeeds() {
    let world = World::start().await;
    let order = world.order(3, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL - 3, 3));
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_order_succeeds() {
    let world = World::start().await;
    let order = world.order(4, "tcc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL - 4, 0, 4)
    );
    // Try then Confirm, each applied once.
    let ops: Vec<String> = world.ledger().await.into_iter().map(|e| e.op).collect();
    assert_eq!(ops, ["try", "confirm"]);
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_refusal_is_compensated() {
    let world = World::start().await;
    let ok = world.order(6, "saga").await;
    assert_eq!(ok.status, "confirmed");
    // Only 4 left: the inventory refuses, the saga aborts and compensates.
    let refused = world.order(5, "saga").await;
    assert_eq!(refused.status, "cancelled", "{refused:?}");
    assert!(refused.reason.is_some(), "a cancelled order says why");
    // The coordinator delivered the compensation; the barrier made it a
    // null compensation (the refused action changed nothing).
    assert_eq!(world.calls(&refused.id, "/saga/reserve").await, [409]);
    assert_eq!(world.calls(&refused.id, "/saga/release").await, [200]);
    // The order's own branch ran first and was compensated for real.
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("inventory"))
    );
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL - 6, 6));
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_refusal_is_cancelled() {
    let world = World::start().await;
    let refused = world.order(INITIAL + 1, "tcc").await;
    assert_eq!(refused.status, "cancelled", "{refused:?}");
    assert_eq!(world.calls(&refused.id, "/tcc/try").await, [409]);
    // The abort cancels every registered branch, the inventory's included.
    assert_eq!(world.calls(&refused.id, "/tcc/cancel").await, [200]);
    let product = world.product().await;
    assert_eq!((product.available, product.reserved), (INITIAL, 0));
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_participant_fails_twice_then_succeeds() {
    let world = World::start().await;
    world.fault("/saga/reserve", "fail", 2).await;
    let order = world.order(2, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    assert_eq!(
        world.calls(&order.id, "/saga/reserve").await,
        [500, 500, 200]
    );
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_participant_fails_twice_then_succeeds() {
    let world = World::start().await;
    // The Try is retried by the initiator client, the Confirm by the
    // coordinator.
    world.fault("/tcc/try", "fail", 2).await;
    world.fault("/tcc/confirm", "fail", 2).await;
    let order = world.order(2, "tcc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    assert_eq!(world.calls(&order.id, "/tcc/try").await, [500, 500, 200]);
    assert_eq!(
        world.calls(&order.id, "/tcc/confirm").await,
        [500, 500, 200]
    );
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_duplicate_delivery_is_a_no_op() {
    let world = World::start().await;
    // Straight to the endpoint, twice with the same headers.
    for _ in 0..2 {
        assert_eq!(
            world
                .branch_call("/saga/reserve", "dup-saga", "action", "saga", 3)
                .await,
            200
        );
    }
    assert_eq!(
        world.product().await.sold,
        3,
        "the second delivery changed nothing"
    );
    for _ in 0..2 {
        let status = world
            .branch_call("/saga/release", "dup-saga", "compensate", "saga", 3)
            .await;
        assert_eq!(status, 200);
    }
    assert_eq!(world.product().await.available, INITIAL);
    // Through the coordinator: the first answer is lost after the work was
    // done, so the coordinator delivers the action again.
    world.fault("/saga/reserve", "fail_after", 1).await;
    let order = world.order(2, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    assert_eq!(world.calls(&order.id, "/saga/reserve").await, [500, 200]);
    let actions = world
        .ledger()
        .await
        .into_iter()
        .filter(|e| e.gid == order.id)
        .count();
    assert_eq!(actions, 1, "the action was applied once");
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_duplicate_delivery_is_a_no_op() {
    let world = World::start().await;
    for _ in 0..2 {
        assert_eq!(
            world
                .branch_call("/tcc/try", "dup-tcc", "try", "tcc", 3)
                .await,
            200
        );
    }
    assert_eq!(
        world.product().await.reserved,
        3,
        "the second Try changed nothing"
    );
    for _ in 0..2 {
        assert_eq!(
            world
                .branch_call("/tcc/confirm", "dup-tcc", "confirm", "tcc", 3)
                .await,
            200
        );
    }
    let product = world.product().await;
    assert_eq!((product.reserved, product.sold), (0, 3));
    // The coordinator's Confirm answer is lost once: it confirms again.
    world.fault("/tcc/confirm", "fail_after", 1).await;
    let order = world.order(2, "tcc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    assert_eq!(world.calls(&order.id, "/tcc/confirm").await, [500, 200]);
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_cancel_before_try_refuses_the_try() {
    let world = World::start().await;
    // The Cancel overtakes its Try: a null compensation...
    assert_eq!(
        world
            .branch_call("/tcc/cancel", "late-try", "cancel", "tcc", 3)
            .await,
        200
    );
    // ...and the Try that arrives afterwards is refused (suspension).
    assert_eq!(
        world
            .branch_call("/tcc/try", "late-try", "try", "tcc", 3)
            .await,
        409
    );
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL, 0, 0)
    );
    assert!(world.ledger().await.is_empty(), "nothing was applied");
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_compensation_before_action_refuses_the_action() {
    let world = World::start().await;
    let status = world
        .branch_call("/saga/release", "late-action", "compensate", "saga", 3)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        world
            .branch_call("/saga/reserve", "late-action", "action", "saga", 3)
            .await,
        409
    );
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL, 0));
    assert!(world.ledger().await.is_empty(), "nothing was applied");
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_try_with_unknown_outcome_is_cancelled() {
    let world = World::start().await;
    // Every Try runs (the first holds the stock, the repeats are no-ops) but
    // every answer is lost: the initiator gives up after its 3 attempts and
    // aborts, and the coordinator's Cancel releases the held units.
    world.fault("/tcc/try", "fail_after", 3).await;
    let order = world.order(3, "tcc").await;
    assert_eq!(order.status, "cancelled", "{order:?}");
    assert_eq!(world.calls(&order.id, "/tcc/try").await, [500, 500, 500]);
    let ops: Vec<String> = world.ledger().await.into_iter().map(|e| e.op).collect();
    assert_eq!(ops, ["try", "cancel"], "held once, released once");
    let product = world.product().await;
    assert_eq!((product.available, product.reserved), (INITIAL, 0));
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_slow_participant_times_out_and_is_retried() {
    let world = World::start().await;
    // Slower than the 1 s request timeout: the coordinator reads the answer
    // as unknown and sends the action again, and the action is applied once.
    world
        .fault_with_delay("/saga/reserve", "slow", 1, 1500)
        .await;
    let order = world.order(2, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let actions = world
        .ledger()
        .await
        .into_iter()
        .filter(|e| e.op == "action")
        .count();
    assert_eq!(actions, 1, "the action was applied once");
    // The coordinator made two calls; the first was cut off by its timeout
    // (the server drops a request whose client went away, so the inventory
    // logs only the second).
    assert_eq!(world.attempts(&order.id, "inventory").await, 2);
    assert_eq!(world.calls(&order.id, "/saga/reserve").await, [200]);
    world.check_invariants().await;
}

/// The same services on PostgreSQL: success, refusal and duplicate delivery
/// in both modes, so the PostgreSQL statements and barrier run for real.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_saga_and_tcc() {
    let world = World::start_on_postgres().await;
    for mode in ["saga", "tcc"] {
        assert_eq!(world.order(2, mode).await.status, "confirmed");
        assert_eq!(world.order(INITIAL, mode).await.status, "cancelled");
    }
    for _ in 0..2 {
        assert_eq!(
            world
                .branch_call("/tcc/try", "pg-dup", "try", "tcc", 1)
                .await,
            200
        );
    }
    assert_eq!(world.product().await.reserved, 1);
    assert_eq!(
        world
            .branch_call("/tcc/cancel", "pg-dup", "cancel", "tcc", 1)
            .await,
        200
    );
    assert_eq!(
        world
            .branch_call("/tcc/cancel", "pg-late", "cancel", "tcc", 1)
            .await,
        200
    );
    assert_eq!(
        world
            .branch_call("/tcc/try", "pg-late", "try", "tcc", 1)
            .await,
        409
    );
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL - 4, 4));
    world.check_invariants().await;
}
