//! The HTTP API: JSON under `/v1`, errors as `application/problem+json`,
//! plus `/healthz`, `/readyz` and `/metrics`.
//!
//! | method and path | what it does |
//! |---|---|
//! | `POST /v1/transactions` | register a saga, 2PC or 3PC transaction, or open a TCC one |
//! | `GET /v1/transactions` | list, newest first, with filters and a cursor |
//! | `GET /v1/transactions/{gid}` | one transaction with branches and history |
//! | `POST /v1/transactions/{gid}/branches` | register a TCC branch |
//! | `POST /v1/transactions/{gid}/commit` | commit an open TCC transaction |
//! | `POST /v1/transactions/{gid}/abort` | abort an open TCC transaction |
//! | `GET /v1/transactions/{gid}/decision` | termination query: commit, abort or pending |
//!
//! Every call that can wait for the outcome takes `?wait_ms=`.

mod handlers;
pub mod problem;
pub mod requests;

use crate::engine::Engine;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use std::time::Duration;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine behind the API.
    pub engine: Engine,
    /// The longest `wait_ms` honoured; longer waits are cut to this.
    pub max_wait: Duration,
}

/// Logs each request at debug level when it arrives and when it is
/// answered, so a slow or waiting call can be seen in the log.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    tracing::debug!(%method, path, "request received");
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    tracing::debug!(%method, path, status = response.status().as_u16(), took_ms = started.elapsed().as_millis() as u64, "request answered");
    response
}

/// The coordinator's router.
pub fn app(state: AppState, max_body_bytes: usize) -> Router {
    Router::new()
        .route(
            "/v1/transactions",
            post(handlers::register).get(handlers::list),
        )
        .route("/v1/transactions/{gid}", get(handlers::get_one))
        .route(
            "/v1/transactions/{gid}/branches",
            post(handlers::register_branch),
        )
        .route("/v1/transactions/{gid}/commit", post(handlers::commit))
        .route("/v1/transactions/{gid}/abort", post(handlers::abort))
        .route("/v1/transactions/{gid}/decision", get(handlers::decision))
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .fallback(handlers::not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(log_request))
        .with_state(state)
}
