//! Calling an axum router in-process, without a listener, and reading its
//! answer the way the samples' route tests compare it.

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use serde_json::Value;
use tower::ServiceExt;

/// Sends `request` to `router`: the answer's status, its content type
/// (empty when there is none) and its body as JSON (`Null` when it is not).
pub async fn send(router: Router, request: Request<Body>) -> (u16, String, Value) {
    let response = router.oneshot(request).await.expect("served");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (status, content_type, body)
}
