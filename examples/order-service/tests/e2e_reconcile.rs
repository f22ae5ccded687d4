//! End to end: reads are passive, and the background reconciler repairs.
//! An order left unsettled in the order database (its transaction ended
//! without the order service recording it, or was never registered) stays
//! exactly as it is however often `GET /orders` and `GET /orders/{id}` read
//! it, while no reconciler runs; once one runs, it records the outcome, or
//! places the order again.
//!
//! Run with `cargo nextest run -p order-service`.

mod support;

use dtx_sdk::client::SagaBranch;
use serde_json::json;
use std::time::Duration;
use support::{INITIAL, Options, SKU, World};

fn without_reconciler() -> Options {
    Options {
        reconciler: false,
        ..Options::default()
    }
}

/// Reads the order twice each way and checks nothing moved it.
async fn assert_reads_change_nothing(
    world: &World,
    id: &str,
    stored: &order_service::store::Order,
) {
    for _ in 0..2 {
        assert_eq!(
            &world.shown(id).await,
            stored,
            "GET /orders/{id} changed it"
        );
        let listed = world.shown_orders().await;
        assert_eq!(
            listed,
            std::slice::from_ref(stored),
            "GET /orders changed it"
        );
    }
    let in_db = world
        .state
        .db
        .get(id)
        .await
        .expect("read")
        .expect("the row");
    assert_eq!(&in_db, stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_does_not_settle_an_order_whose_transaction_ended() {
    let mut world = World::start_with(without_reconciler()).await;
    let id = "order-ended-unrecorded";
    let stored = world
        .state
        .db
        .insert(id, SKU, INITIAL + 1, "saga")
        .await
        .expect("insert");
    // Its transaction runs and aborts (the inventory refuses) without the
    // order service recording it: the row stays `new`.
    let registered = world
        .state
        .client
        .saga()
        .with_gid(id)
        .branch(
            SagaBranch::new("inventory")
                .action(format!("{}/saga/reserve", world.inventory))
                .compensate(format!("{}/saga/release", world.inventory))
                .payload(json!({"sku": SKU, "qty": INITIAL + 1})),
        )
        .submit_and_wait(Duration::from_secs(20))
        .await;
    assert!(registered.is_ok(), "{registered:?}");
    world.wait_for_status(id, "aborted").await;

    assert_reads_change_nothing(&world, id, &stored).await;

    world.start_reconciler();
    let settled = world.wait_for_order(id, "cancelled").await;
    assert!(
        settled
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("inventory")),
        "the reconciler records why: {settled:?}"
    );
    world.check_invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_does_not_place_an_unregistered_order_the_reconciler_does() {
    let mut world = World::start_with(without_reconciler()).await;
    let id = "order-never-registered";
    let stored = world
        .state
        .db
        .insert(id, SKU, 2, "tcc")
        .await
        .expect("insert");
    let tx_path = format!("/v1/transactions/{id}");
    assert_eq!(world.get_any(&world.coordinator, &tx_path).await.0, 404);

    assert_reads_change_nothing(&world, id, &stored).await;
    assert_eq!(
        world.get_any(&world.coordinator, &tx_path).await.0,
        404,
        "reading the order registered nothing"
    );

    world.start_reconciler();
    let placed = world.wait_for_order(id, "confirmed").await;
    assert_eq!(placed.qty, 2);
    world.wait_for_status(id, "committed").await;
    let product = world.product().await;
    assert_eq!((product.available, product.sold), (INITIAL - 2, 2));
    world.check_invariants().await;
}
