//! The sample inventory service: a dtx participant that keeps products with
//! their stock (`available`, `reserved`, `sold`) in its own database and
//! moves units when the coordinator (or a TCC initiator) calls its branch
//! endpoints. Every branch handler runs through the SDK barrier, inside the
//! local transaction that changes the stock.
//!
//! | route | operation | stock movement |
//! |---|---|---|
//! | `POST /saga/reserve` | saga action | available → sold, 409 if not enough |
//! | `POST /saga/release` | saga compensation | sold → available |
//! | `POST /tcc/try` | TCC Try | available → reserved, 409 if not enough |
//! | `POST /tcc/confirm` | TCC Confirm | reserved → sold |
//! | `POST /tcc/cancel` | TCC Cancel | reserved → available |
//!
//! Read-only views for tests and people: `GET /products`,
//! `GET /products/{sku}`, `GET /ledger`. `POST /products {sku, qty}` seeds
//! stock. `POST /faults` and `GET /calls` are demo/test aids ([`faults`]).
//!
//! The binary is a thin wrapper; tests start the service in-process with
//! [`AppState::connect`], [`app`] and [`run`].

pub mod faults;
pub mod store;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router, middleware};
use dtx_sdk::barrier::BarrierError;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, CallbackSecret, SignedJson};
use faults::Faults;
use serde::Deserialize;
use std::future::Future;
use store::{Db, LedgerEntry, Product};
use tokio::net::TcpListener;

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The inventory's database.
    pub db: Db,
    /// The secret branch calls are signed with (disabled by default).
    pub secret: CallbackSecret,
    /// Injected faults and the call log (demo/test aid).
    pub faults: Faults,
}

impl AppState {
    /// Connects to `db_url` and prepares the schema; no secret, no faults.
    pub async fn connect(db_url: &str) -> anyhow::Result<AppState> {
        Ok(AppState {
            db: Db::connect(db_url).await?,
            secret: CallbackSecret::disabled(),
            faults: Faults::default(),
        })
    }
}

impl FromRef<AppState> for CallbackSecret {
    fn from_ref(state: &AppState) -> Self {
        state.secret.clone()
    }
}

impl FromRef<AppState> for Faults {
    fn from_ref(state: &AppState) -> Self {
        state.faults.clone()
    }
}

/// The body of every branch call: which product and how many units.
#[derive(Debug, Deserialize)]
struct StockRequest {
    sku: String,
    qty: i64,
}

/// The router with every route.
pub fn app(state: AppState) -> Router {
    let branches = Router::new()
        .route("/saga/reserve", branch(BranchOp::Action))
        .route("/saga/release", branch(BranchOp::Compensate))
        .route("/tcc/try", branch(BranchOp::Try))
        .route("/tcc/confirm", branch(BranchOp::Confirm))
        .route("/tcc/cancel", branch(BranchOp::Cancel))
        .layer(middleware::from_fn_with_state(
            state.faults.clone(),
            faults::inject,
        ));
    Router::new()
        .merge(branches)
        .route("/products", get(products).post(seed))
        .route("/products/{sku}", get(product))
        .route("/ledger", get(ledger))
        .route("/faults", post(faults::arm))
        .route("/calls", get(faults::calls))
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

/// The route of a branch operation: the handler knows which operation it
/// carries out, so a misrouted call cannot move stock the wrong way.
fn branch(expected: BranchOp) -> MethodRouter<AppState> {
    post(
        move |state: State<AppState>, ctx: BranchContext, body: SignedJson<StockRequest>| {
            handle(expected, state, ctx, body)
        },
    )
}

/// Checks the call, then applies the movement behind the barrier.
async fn handle(
    expected: BranchOp,
    State(state): State<AppState>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<StockRequest>,
) -> Response {
    if ctx.op() != expected {
        let detail = format!("this route carries out `{expected}`, not `{}`", ctx.op());
        return (StatusCode::BAD_REQUEST, detail).into_response();
    }
    if req.qty <= 0 {
        return (StatusCode::BAD_REQUEST, "qty must be positive").into_response();
    }
    let answer: Result<BranchAnswer, BarrierError> = state.db.apply(&ctx, &req.sku, req.qty).await;
    answer.into_response()
}

/// A JSON answer, or 500 with the database error (logged).
fn answer<T: serde::Serialize>(result: Result<T, sqlx::Error>) -> Response {
    match result {
        Ok(value) => Json(value).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "database error");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
}

async fn products(State(state): State<AppState>) -> Response {
    answer::<Vec<Product>>(state.db.products().await)
}

async fn product(State(state): State<AppState>, Path(sku): Path<String>) -> Response {
    match state.db.product(&sku).await {
        Ok(None) => (StatusCode::NOT_FOUND, format!("no product `{sku}`")).into_response(),
        other => answer(other),
    }
}

async fn ledger(State(state): State<AppState>) -> Response {
    answer::<Vec<LedgerEntry>>(state.db.ledger().await)
}

#[derive(Debug, Deserialize)]
struct Seed {
    sku: String,
    qty: i64,
}

/// `POST /products {sku, qty}`: adds available units.
async fn seed(State(state): State<AppState>, Json(seed): Json<Seed>) -> Response {
    if seed.qty < 0 {
        return (StatusCode::BAD_REQUEST, "qty must not be negative").into_response();
    }
    answer(state.db.seed(&seed.sku, seed.qty).await)
}
