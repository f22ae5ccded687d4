//! Every branch route is bound to its operation: a well-formed call for
//! another operation of the same mode (two URLs swapped at registration, a
//! forged call) is answered 400 with what is wrong, and moves nothing. The
//! fault-injection aids exist only when the service is started for them.

mod support;

use support::{INITIAL, Inventory};

#[tokio::test]
async fn a_call_for_another_operation_is_refused_with_what_is_wrong_and_moves_nothing() {
    let inv = Inventory::start(None).await;
    for (path, op) in [
        // The action sent to the compensation's URL would sell, not put back.
        ("/saga/release", "action"),
        ("/saga/reserve", "compensate"),
        ("/tcc/cancel", "confirm"),
        ("/2pc/commit", "rollback"),
        ("/3pc/abort", "do_commit"),
    ] {
        let (status, content_type, body) = inv.answer(path, "g1", op, 2).await;
        assert_eq!(status, 400, "{path} with {op}: {body}");
        assert_eq!(content_type, "application/problem+json", "{path}");
        assert_eq!(body["type"], "urn:dtx:problem:wrong-operation", "{path}");
        let detail = body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&format!("`dtx-op` is `{op}`")),
            "{path}: {detail}"
        );
    }
    assert_eq!(inv.stock().await, (INITIAL, 0, 0), "nothing moved");
    assert!(inv.rows("g1").await.is_empty(), "nothing recorded");

    // The right operation on the same route still works.
    assert_eq!(inv.call("/saga/reserve", "g1", "action", 2).await, 200);
    assert_eq!(inv.stock().await, (INITIAL - 2, 0, 2));
}

/// The status of `method path` on an inventory opened with
/// `fault_injection`.
async fn status_of(fault_injection: bool, method: &str, path: &str) -> u16 {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = format!("sqlite:{}", dir.path().join("inventory.db").display());
    let mut settings = inventory_service::Settings::new(db);
    settings.fault_injection = fault_injection;
    let state = inventory_service::AppState::open(settings)
        .await
        .expect("the inventory opens");
    let body = r#"{"path": "/saga/reserve", "kind": "fail", "count": 1}"#;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a request");
    let response = inventory_service::app(state)
        .oneshot(request)
        .await
        .expect("served");
    response.status().as_u16()
}

#[tokio::test]
async fn the_fault_injection_routes_exist_only_when_asked_for() {
    assert_eq!(status_of(false, "POST", "/faults").await, 404);
    assert_eq!(status_of(false, "GET", "/calls").await, 404);
    assert_eq!(status_of(true, "POST", "/faults").await, 204);
    assert_eq!(status_of(true, "GET", "/calls").await, 200);
    assert_eq!(status_of(false, "GET", "/products").await, 200);
}
