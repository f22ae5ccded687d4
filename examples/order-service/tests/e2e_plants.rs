//! End to end: each planted defect ([`order_service::plants`]) really makes
//! the service wrong in the way the harness's checker must catch. These
//! worlds break the invariants on purpose, so they check the one wrong
//! thing instead of [`support::World::check_invariants`].
//!
//! Run with `cargo nextest run -p order-service`.

mod support;

use order_service::plants::Plant;
use order_service::store::Order;
use serde_json::json;
use support::{INITIAL, Options, SKU, World};

async fn world_with(plant: Plant) -> World {
    World::start_with(Options {
        plant: Some(plant),
        ..Options::default()
    })
    .await
}

/// The ledger rows (gid, op) of the inventory.
async fn ledger_gids(world: &World) -> Vec<(String, String)> {
    let ledger = world.ledger().await.into_iter();
    ledger.map(|e| (e.gid, e.op)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_before_outcome_tells_confirmed_then_cancels() {
    let world = world_with(Plant::AnswerBeforeOutcome).await;
    let body = json!({"sku": SKU, "qty": INITIAL + 1, "mode": "saga"});
    let (status, told) = world.post(&world.orders, "/orders", &body).await;
    assert_eq!(status, 201, "{told}");
    assert_eq!(told["status"], "confirmed", "the client is told confirmed");
    let id = told["id"].as_str().expect("an id");
    // Not enough stock: the placement in the background cancels it.
    world.wait_for_order(id, "cancelled").await;
    world.wait_for_status(id, "aborted").await;
    assert_eq!(world.product().await.sold, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compensation_keeps_order_leaves_an_aborted_saga_confirmed() {
    let world = world_with(Plant::CompensationKeepsOrder).await;
    let order = world.order(INITIAL + 1, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let tx = world.wait_for_status(&order.id, "aborted").await;
    assert_eq!(tx["status"], "aborted");
    // The compensation was delivered and answered success, yet moved
    // nothing; the inventory refused, so its ledger is empty.
    assert_eq!(world.calls(&order.id, "/saga/reserve").await, [409]);
    assert!(ledger_gids(&world).await.is_empty());
    // Settling (the placement, then the reconciler) keeps it confirmed.
    let orders = world.settled_orders().await;
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].status, "confirmed", "{orders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn place_under_new_gid_leaves_the_order_id_unknown() {
    let world = world_with(Plant::PlaceUnderNewGid).await;
    let order = world.order(2, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let own = format!("/v1/transactions/{}", order.id);
    assert_eq!(world.get_any(&world.coordinator, &own).await.0, 404);
    let other = format!("{}-again", order.id);
    world.wait_for_status(&other, "committed").await;
    assert_eq!(ledger_gids(&world).await, [(other, "action".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn double_insert_makes_two_orders_of_one_request() {
    let world = world_with(Plant::DoubleInsert).await;
    let order = world.order(2, "saga").await;
    assert_eq!(order.status, "confirmed", "{order:?}");
    let orders: Vec<Order> = world.settled_orders().await;
    assert_eq!(orders.len(), 2, "{orders:?}");
    assert!(orders.iter().any(|o| o.id == order.id));
    assert!(orders.iter().all(|o| o.qty == 2 && o.status == "confirmed"));
    // The saga confirms the order before it sells the stock, so the twin,
    // placed in the background, reads confirmed while its sale may still be
    // on its way: the stock is read once both transactions are committed.
    for o in &orders {
        world.wait_for_status(&o.id, "committed").await;
    }
    assert_eq!(world.product().await.sold, 4, "both were placed");
}
