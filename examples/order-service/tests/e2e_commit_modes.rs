//! End to end for the commit protocols: a real coordinator process and both
//! sample services over HTTP, placing orders as 2PC and 3PC: success, a
//! refusal (out of stock: cancelled, nothing held), a participant that fails
//! twice then succeeds, the same on PostgreSQL (where the inventory's 2PC
//! runs on prepared transactions, the SDK's XA helper), and an in-doubt XA
//! branch resolved by the inventory's start-up recovery. Every test ends
//! with the stock and ledger invariants ([`support::World::check_invariants`]).
//!
//! Run with `cargo nextest run -p order-service`.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{INITIAL, SKU, World};

/// The inventory's ledger ops under `gid`, in order.
async fn ops(world: &World, gid: &str) -> Vec<String> {
    world
        .ledger()
        .await
        .into_iter()
        .filter(|e| e.gid == gid)
        .map(|e| e.op)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_order_succeeds() {
    let world = World::start().await;
    let order = world.order(3, "2pc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL - 3, 0, 3)
    );
    // SQLite: the prepare held the units, the commit sold them.
    assert_eq!(ops(&world, &order.id).await, ["prepare", "commit"]);
    assert_eq!(world.calls(&order.id, "/2pc/prepare").await, [200]);
    assert_eq!(world.calls(&order.id, "/2pc/commit").await, [200]);
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phase_order_succeeds() {
    let world = World::start().await;
    let order = world.order(4, "3pc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL - 4, 0, 4)
    );
    // The vote moved nothing; the pre-commit held, the do-commit sold.
    assert_eq!(ops(&world, &order.id).await, ["pre_commit", "do_commit"]);
    for path in ["/3pc/can_commit", "/3pc/pre_commit", "/3pc/do_commit"] {
        assert_eq!(world.calls(&order.id, path).await, [200], "{path}");
    }
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_refusal_is_rolled_back() {
    let world = World::start().await;
    let refused = world.order(INITIAL + 1, "2pc").await;
    assert_eq!(refused.status, "cancelled", "{refused:?}");
    assert!(
        refused
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("inventory")),
        "the reason names the branch that voted no: {refused:?}"
    );
    assert_eq!(world.calls(&refused.id, "/2pc/prepare").await, [409]);
    // Every branch is rolled back, the one that voted no included (a lost
    // earlier answer might have prepared); here it is a null rollback.
    assert_eq!(world.calls(&refused.id, "/2pc/rollback").await, [200]);
    assert!(world.calls(&refused.id, "/2pc/commit").await.is_empty());
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL, 0, 0)
    );
    assert!(world.ledger().await.is_empty(), "nothing was held");
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phase_refusal_is_aborted() {
    let world = World::start().await;
    let refused = world.order(INITIAL + 1, "3pc").await;
    assert_eq!(refused.status, "cancelled", "{refused:?}");
    assert_eq!(world.calls(&refused.id, "/3pc/can_commit").await, [409]);
    assert!(world.calls(&refused.id, "/3pc/pre_commit").await.is_empty());
    assert!(world.calls(&refused.id, "/3pc/do_commit").await.is_empty());
    let aborts = world.calls(&refused.id, "/3pc/abort").await;
    assert!(aborts.iter().all(|s| *s == 200), "aborts: {aborts:?}");
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL, 0, 0)
    );
    assert!(world.ledger().await.is_empty(), "nothing was held");
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_participant_fails_twice_then_succeeds() {
    let world = World::start().await;
    // The vote is asked again until the deadline; the commit until acked.
    world.fault("/2pc/prepare", "fail", 2).await;
    world.fault("/2pc/commit", "fail", 2).await;
    let order = world.order(2, "2pc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    for path in ["/2pc/prepare", "/2pc/commit"] {
        assert_eq!(
            world.calls(&order.id, path).await,
            [500, 500, 200],
            "{path}"
        );
    }
    assert_eq!(ops(&world, &order.id).await, ["prepare", "commit"]);
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phase_participant_fails_twice_then_succeeds() {
    let world = World::start().await;
    for path in ["/3pc/can_commit", "/3pc/pre_commit", "/3pc/do_commit"] {
        world.fault(path, "fail", 2).await;
    }
    let order = world.order(2, "3pc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    for path in ["/3pc/can_commit", "/3pc/pre_commit", "/3pc/do_commit"] {
        assert_eq!(
            world.calls(&order.id, path).await,
            [500, 500, 200],
            "{path}"
        );
    }
    assert_eq!(ops(&world, &order.id).await, ["pre_commit", "do_commit"]);
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_phase_lost_answers_are_no_ops() {
    let world = World::start().await;
    // Each step's work is done but its first answer is lost: the repeats
    // answer as the first did and move nothing again.
    for path in ["/3pc/pre_commit", "/3pc/do_commit"] {
        world.fault(path, "fail_after", 1).await;
    }
    let order = world.order(3, "3pc").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    assert_eq!(world.calls(&order.id, "/3pc/pre_commit").await, [500, 200]);
    assert_eq!(world.calls(&order.id, "/3pc/do_commit").await, [500, 200]);
    assert_eq!(ops(&world, &order.id).await, ["pre_commit", "do_commit"]);
    world.check_invariants().await;
}

/// On PostgreSQL the inventory's 2PC branch is a real prepared
/// transaction: success, refusal and a commit that fails twice, next to 3PC
/// on the same database; no prepared transaction is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_and_three_phase() {
    let world = World::start_on_postgres().await;
    assert!(world.xa, "the inventory prepares with PostgreSQL XA");
    let two = world.order(2, "2pc").await;
    assert_eq!(two.status, "confirmed", "{two:?}");
    // The sale was made inside the prepared transaction: one row, no
    // separate commit movement.
    assert_eq!(ops(&world, &two.id).await, ["prepare"]);
    assert_eq!(world.order(INITIAL, "2pc").await.status, "cancelled");
    assert_eq!(world.order(2, "3pc").await.status, "confirmed");
    assert_eq!(world.order(INITIAL, "3pc").await.status, "cancelled");
    world.fault("/2pc/commit", "fail", 2).await;
    let retried = world.order(1, "2pc").await;
    assert_eq!(retried.status, "confirmed", "{retried:?}");
    assert_eq!(
        world.calls(&retried.id, "/2pc/commit").await,
        [500, 500, 200]
    );
    assert_eq!(world.prepared_transactions().await, 0);
    let product = world.product().await;
    assert_eq!(
        (product.available, product.reserved, product.sold),
        (INITIAL - 5, 0, 5)
    );
    world.check_invariants().await;
}

/// The inventory prepares, the coordinator decides commit, and every commit
/// call fails: the branch is in doubt, its sale invisible and its row
/// locked. The inventory is stopped and started again; its start-up
/// recovery asks the coordinator (the termination query), commits the
/// prepared transaction before serving any call, and the coordinator's
/// retried commit then finds it committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_in_doubt_branch_is_resolved_by_recovery_after_restart() {
    let mut world = World::start_on_postgres().await;
    world.fault("/2pc/commit", "fail", 1_000_000).await;
    let placing = {
        let (http, url) = (world.http.clone(), format!("{}/orders", world.orders));
        tokio::spawn(async move {
            let body = json!({"sku": SKU, "qty": 3, "mode": "2pc"});
            let response = http.post(url).json(&body).send().await.expect("POST");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        })
    };
    let gid = loop {
        let orders = world.get(&world.orders, "/orders").await;
        if let Some(id) = orders[0]["id"].as_str() {
            break id.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    world.wait_for_status(&gid, "committing").await;
    while world.calls(&gid, "/2pc/commit").await.is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        world.prepared_transactions().await,
        1,
        "the branch is in doubt"
    );
    let product = world.product().await;
    assert_eq!(
        (product.available, product.sold),
        (INITIAL, 0),
        "a prepared sale is invisible until it commits"
    );

    let summary = world
        .restart_inventory()
        .await
        .expect("recovery runs on PostgreSQL");
    let committed: Vec<_> = summary
        .committed
        .iter()
        .map(|b| (b.gid.as_str(), b.branch_id.as_str()))
        .collect();
    assert_eq!(committed, [(gid.as_str(), "inventory")], "{summary:?}");
    assert!(summary.rolled_back.is_empty() && summary.failed.is_empty());
    assert_eq!(world.prepared_transactions().await, 0);
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL - 3, 3));

    world.wait_for_status(&gid, "committed").await;
    // The order service waits a bounded time (20 s) for the outcome, and
    // the restart and the coordinator's next commit retry happen inside it;
    // on a loaded machine they may not (seen once in CI: 202, "still
    // committing"). Both answers are right, and the order is confirmed
    // either way once the decision is commit: the order's own commit moves
    // it, and the reconciler records the outcome. Reads are passive, so the
    // order is polled, not refreshed.
    let (status, body) = placing.await.expect("the order request");
    assert!(status == 201 || status == 202, "{status}: {body}");
    let order: serde_json::Value = serde_json::from_str(&body).expect("an order");
    assert_eq!(order["status"], "confirmed", "{order}");
    world.wait_for_order(&gid, "confirmed").await;
    world.check_invariants().await;
}
