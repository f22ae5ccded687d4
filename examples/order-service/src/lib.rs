//! The sample order service: creates orders in its own database and places
//! each through the dtx coordinator as one global transaction (gid = order
//! id), as a saga, TCC, 2PC or 3PC, with two branches: the inventory
//! service's stock and this service's own order row.
//!
//! | route | what |
//! |---|---|
//! | `POST /orders {sku, qty, mode}` | create and place an order (`mode`: `saga`, `tcc`, `2pc` or `3pc`), wait for the outcome, answer the order |
//! | `GET /orders`, `GET /orders/{id}` | the orders as the database holds them; read-only: a read asks no one and changes nothing |
//! | `POST /saga/confirm-order`, `/saga/cancel-order` | the order branch of a saga (action, compensation) |
//! | `POST /tcc/try-order`, `/tcc/confirm-order`, `/tcc/cancel-order` | the order branch of TCC |
//! | `POST /2pc/prepare-order`, `/2pc/commit-order`, `/2pc/rollback-order` | the order branch of 2PC: `new` → `pending` → `confirmed` or `cancelled` |
//! | `POST /3pc/can-commit-order`, `/3pc/pre-commit-order`, `/3pc/do-commit-order`, `/3pc/abort-order` | the order branch of 3PC: checks `new`, then as 2PC |
//!
//! `POST /orders` answers 201 once the order is settled (`confirmed` or
//! `cancelled`, with a `reason`), 202 while its transaction is still going.
//! An order left unsettled (202, a registration that never landed, a
//! restart) is settled in the background by the [reconciler](reconcile),
//! which asks the coordinator how its transaction ended, or places it again
//! when the coordinator never heard of it.
//!
//! The binary is a thin wrapper; tests start the service in-process with
//! [`AppState`], [`app`], [`run`] and [`reconcile::spawn`].

pub mod place;
pub mod plants;
pub mod reconcile;
pub mod store;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use dtx_sdk::{BranchContext, BranchOp, Client, SignatureKeys, SignedJson, TxOptions};
use place::Placed;
use plants::Plant;
use serde::Deserialize;
use std::future::Future;
use std::time::Duration;
use store::Store;
use tokio::net::TcpListener;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The order database.
    pub db: Store,
    /// The coordinator client.
    pub client: Client,
    /// Base URL of the inventory service, e.g. `http://127.0.0.1:7710`.
    pub inventory_url: String,
    /// Base URL the coordinator reaches this service at.
    pub public_url: String,
    /// The options of every order's transaction.
    pub options: TxOptions,
    /// How long `POST /orders` waits for the outcome.
    pub wait: Duration,
    /// The keys branch calls to this service must be signed with: the
    /// coordinator's, and this service's own initiator key (it Trys its own
    /// TCC branch). Disabled: calls are not checked.
    pub signature_keys: SignatureKeys,
    /// The orders this process is placing right now.
    pub placing: place::InFlight,
    /// The planted defect in force, if any (test-only; [`plants`]).
    pub plant: Option<Plant>,
}

impl FromRef<AppState> for SignatureKeys {
    fn from_ref(state: &AppState) -> Self {
        state.signature_keys.clone()
    }
}

/// The router with every route.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/orders", post(create).get(list))
        .route("/orders/{id}", get(show))
        .route("/saga/confirm-order", branch(BranchOp::Action))
        .route("/saga/cancel-order", branch(BranchOp::Compensate))
        .route("/tcc/try-order", branch(BranchOp::Try))
        .route("/tcc/confirm-order", branch(BranchOp::Confirm))
        .route("/tcc/cancel-order", branch(BranchOp::Cancel))
        .route("/2pc/prepare-order", branch(BranchOp::Prepare))
        .route("/2pc/commit-order", branch(BranchOp::Commit))
        .route("/2pc/rollback-order", branch(BranchOp::Rollback))
        .route("/3pc/can-commit-order", branch(BranchOp::CanCommit))
        .route("/3pc/pre-commit-order", branch(BranchOp::PreCommit))
        .route("/3pc/do-commit-order", branch(BranchOp::DoCommit))
        .route("/3pc/abort-order", branch(BranchOp::Abort))
        .with_state(state)
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, letting
/// requests in flight finish.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The body of `POST /orders`.
#[derive(Debug, Deserialize)]
struct NewOrder {
    sku: String,
    qty: i64,
    mode: String,
}

async fn create(State(state): State<AppState>, Json(req): Json<NewOrder>) -> Response {
    if req.qty <= 0 || req.sku.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            "sku and a positive qty are required",
        )
            .into_response();
    }
    if !matches!(req.mode.as_str(), "saga" | "tcc" | "2pc" | "3pc") {
        return (
            StatusCode::BAD_REQUEST,
            "mode must be `saga`, `tcc`, `2pc` or `3pc`",
        )
            .into_response();
    }
    // The order id is the gid.
    let id = new_order_id();
    // In flight from before its row exists: the reconciler never places an
    // order this request is about to place.
    let placing = state.placing.begin(&id);
    let order = match state.db.insert(&id, &req.sku, req.qty, &req.mode).await {
        Ok(order) => order,
        Err(e) => return internal(e),
    };
    if let Some(answer) = planted_before_placing(&state, &order).await {
        return answer;
    }
    tracing::info!(
        order = id,
        sku = req.sku,
        qty = req.qty,
        mode = req.mode,
        "placing order"
    );
    let placed = place::place(&state, &order).await;
    drop(placing);
    match placed {
        Ok(Placed::Settled(order)) => {
            tracing::info!(order = id, status = order.status, "order settled");
            (StatusCode::CREATED, Json(order)).into_response()
        }
        Ok(Placed::Unsettled(order, why)) => {
            tracing::warn!(order = id, why, "order not settled yet");
            (StatusCode::ACCEPTED, Json(order)).into_response()
        }
        Err(e) => internal(e),
    }
}

/// What the planted defects that act on `POST /orders` do once the order
/// row exists ([`plants`]): the answer to send at once, if any. Without
/// such a plant, nothing.
async fn planted_before_placing(state: &AppState, order: &store::Order) -> Option<Response> {
    match state.plant? {
        Plant::AnswerBeforeOutcome => {
            tracing::warn!(
                order = order.id,
                "planted defect: answering confirmed before the outcome"
            );
            tokio::spawn(place::in_background(state, order.clone()));
            let told = store::Order {
                status: "confirmed".to_owned(),
                ..order.clone()
            };
            Some((StatusCode::CREATED, Json(told)).into_response())
        }
        Plant::DoubleInsert => {
            let twin_id = new_order_id();
            let _twin_placing = state.placing.begin(&twin_id);
            let inserted = state
                .db
                .insert(&twin_id, &order.sku, order.qty, &order.mode)
                .await;
            match inserted {
                Ok(twin) => {
                    tracing::warn!(
                        order = order.id,
                        twin = twin_id,
                        "planted defect: a second order for the same request"
                    );
                    tokio::spawn(place::in_background(state, twin));
                    None
                }
                Err(e) => Some(internal(e)),
            }
        }
        Plant::PlaceUnderNewGid | Plant::CompensationKeepsOrder => None,
    }
}

/// A new order id: a UUIDv7, so orders sort by creation time.
fn new_order_id() -> String {
    format!("order-{}", uuid::Uuid::now_v7())
}

/// Every order, as stored: a read only reads (the reconciler settles).
async fn list(State(state): State<AppState>) -> Response {
    match state.db.list().await {
        Ok(orders) => Json(orders).into_response(),
        Err(e) => internal(e),
    }
}

/// One order, as stored.
async fn show(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match state.db.get(&id).await {
        Ok(Some(order)) => Json(order).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no order `{id}`")).into_response(),
        Err(e) => internal(e),
    }
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "request failed");
    (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
}

/// The body of the order branch's calls.
#[derive(Debug, Deserialize)]
struct OrderRef {
    order_id: String,
}

/// The route of an operation of the order's own branch: the handler is bound
/// to the operation it carries out ([`BranchContext::expect`]), so a
/// misrouted call is answered 400 and changes nothing.
fn branch(expected: BranchOp) -> MethodRouter<AppState> {
    post(
        move |state: State<AppState>, ctx: BranchContext, body: SignedJson<OrderRef>| {
            handle(expected, state, ctx, body)
        },
    )
}

async fn handle(
    expected: BranchOp,
    State(state): State<AppState>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<OrderRef>,
) -> Response {
    if let Err(wrong) = ctx.expect(expected) {
        return wrong.into_response();
    }
    if expected == BranchOp::Compensate && state.plant == Some(Plant::CompensationKeepsOrder) {
        return state.db.succeed_without_change(&ctx).await.into_response();
    }
    state.db.apply(&ctx, &req.order_id).await.into_response()
}
