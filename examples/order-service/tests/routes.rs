//! Every branch route of the order service is bound to its operation: a
//! well-formed call for another operation of the same mode (two URLs
//! swapped at registration, a forged call) is answered 400 with what is
//! wrong, and leaves the order as it was. The inventory's routes have the
//! same test (`examples/inventory-service/tests/routes.rs`).

use axum::body::Body;
use axum::http::Request;
use dtx_sdk::{Client, SignatureKeys, TxOptions};
use order_service::{AppState, app};
use serde_json::{Value, json};
use std::time::Duration;

/// An order service on a fresh SQLite file, with one order `o1` in status
/// `new`. Its client names a coordinator nobody listens on: branch calls
/// never reach the coordinator.
async fn service_with_one_order(dir: &tempfile::TempDir) -> AppState {
    let db = format!("sqlite:{}", dir.path().join("orders.db").display());
    let state = AppState {
        db: order_service::store::Store::connect(&db)
            .await
            .expect("the store opens"),
        client: Client::new("http://127.0.0.1:9").expect("a client"),
        inventory_url: "http://127.0.0.1:9".to_owned(),
        public_url: "http://127.0.0.1:9".to_owned(),
        options: TxOptions::default(),
        wait: Duration::from_secs(1),
        signature_keys: SignatureKeys::disabled(),
        placing: Default::default(),
        plant: None,
    };
    state
        .db
        .insert("o1", "pear", 2, "saga")
        .await
        .expect("the order is stored");
    state
}

/// POSTs a branch call for order `o1` to `path` as operation `op` (the mode
/// is the route's first segment): the status, content type and body.
async fn call(state: &AppState, path: &str, op: &str) -> (u16, String, Value) {
    let mode = path.split('/').nth(1).expect("a branch route");
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("dtx-gid", "o1")
        .header("dtx-branch", "order")
        .header("dtx-op", op)
        .header("dtx-mode", mode)
        .body(Body::from(json!({"order_id": "o1"}).to_string()))
        .expect("a request");
    dtx_tests::in_process::send(app(state.clone()), request).await
}

async fn status_of_o1(state: &AppState) -> String {
    let order = state.db.get("o1").await.expect("read").expect("o1 exists");
    order.status
}

#[tokio::test]
async fn a_call_for_another_operation_is_refused_with_what_is_wrong_and_moves_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = service_with_one_order(&dir).await;
    for (path, op) in [
        // The action sent to the compensation's URL would cancel, not confirm.
        ("/saga/cancel-order", "action"),
        ("/saga/confirm-order", "compensate"),
        ("/tcc/cancel-order", "confirm"),
        ("/tcc/try-order", "cancel"),
        ("/2pc/commit-order", "rollback"),
        ("/3pc/abort-order", "do_commit"),
    ] {
        let (status, content_type, body) = call(&state, path, op).await;
        assert_eq!(status, 400, "{path} with {op}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(body["type"], "urn:dtx:problem:wrong-operation", "{path}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("`dtx-op` is `{op}`")),
            "{path}: {detail}"
        );
        assert_eq!(status_of_o1(&state).await, "new", "{path} moved the order");
    }

    // The right operation on the same route still works.
    let (status, _, body) = call(&state, "/saga/confirm-order", "action").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(status_of_o1(&state).await, "confirmed");
}
