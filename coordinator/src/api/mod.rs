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
//! | `POST /v1/transactions/{gid}/abort` | abort an open TCC transaction; an optional body `{"refused_try": {"branch", "reason"}}` names the refused Try behind it |
//! | `GET /v1/transactions/{gid}/decision` | termination query: commit, abort or pending |
//!
//! Every call that can wait for the outcome takes `?wait_ms=`. With a
//! signing key (`--signing-key`), the answer to the termination query is
//! signed (`dtx-signature`, bound to the `?nonce=` of the question; see
//! `dtx_protocol::signature::DecisionVerifier`), since participants in doubt
//! commit or roll back on it.
//!
//! With API tokens (`crate::auth`), every `/v1` call and `/metrics` need
//! `Authorization: Bearer <token>`; health and readiness stay open.

mod handlers;
pub mod problem;
pub mod requests;

use crate::auth::Access;
use crate::engine::Engine;
use crate::limits::Limits;
use crate::outbound::OutboundPolicy;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use dtx_protocol::signature::SigningKey;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The engine behind the API.
    pub engine: Engine,
    /// The longest `wait_ms` honoured; longer waits are cut to this.
    pub max_wait: Duration,
    /// Which participant URLs may be registered.
    pub outbound: Arc<OutboundPolicy>,
    /// How callers are recognised: open, or by API token.
    pub access: Access,
    /// The bounds on what a request may ask for.
    pub limits: Arc<Limits>,
    /// One permit per request waiting for an outcome (`wait_ms`), at most
    /// `limits.max_waiters`.
    pub waiters: Arc<Semaphore>,
    /// The key participant calls are signed with (`--signing-key`); it
    /// signs the answers to the termination query too. `None`: unsigned.
    pub signing_key: Option<SigningKey>,
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

/// The router of `--metrics-listen`: `/metrics` only, without a token.
pub fn metrics_app(engine: Engine) -> Router {
    Router::new()
        .route("/metrics", get(handlers::open_metrics))
        .fallback(handlers::not_found)
        .with_state(engine)
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
