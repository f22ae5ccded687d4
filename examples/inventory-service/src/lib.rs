//! The sample inventory service: a dtx participant that keeps products with
//! their stock (`available`, `reserved`, `sold`) in its own database and
//! moves units when the coordinator (or a TCC initiator) calls its branch
//! endpoints. Every branch handler changes the stock in the same local
//! transaction that records the call (the SDK barrier, XA helper or 3PC
//! helper), so a repeated call never moves stock twice.
//!
//! | route | operation | stock movement (ledger `op`) |
//! |---|---|---|
//! | `POST /saga/reserve` | saga action | available → sold, 409 if not enough |
//! | `POST /saga/release` | saga compensation | sold → available |
//! | `POST /tcc/try` | TCC Try | available → reserved, 409 if not enough |
//! | `POST /tcc/confirm` | TCC Confirm | reserved → sold |
//! | `POST /tcc/cancel` | TCC Cancel | reserved → available |
//! | `POST /2pc/prepare` | 2PC vote | PostgreSQL: available → sold inside a prepared transaction (invisible until commit); SQLite: available → reserved. 409 if not enough |
//! | `POST /2pc/commit` | 2PC commit | PostgreSQL: `COMMIT PREPARED` (no ledger row of its own); SQLite: reserved → sold |
//! | `POST /2pc/rollback` | 2PC rollback | PostgreSQL: `ROLLBACK PREPARED` (the `prepare` row vanishes with it); SQLite: reserved → available |
//! | `POST /3pc/can_commit` | 3PC vote | none; 409 if not enough available |
//! | `POST /3pc/pre_commit` | 3PC pre-commit | available → reserved |
//! | `POST /3pc/do_commit` | 3PC do-commit | reserved → sold |
//! | `POST /3pc/abort` | 3PC abort | reserved → available, if pre-committed |
//!
//! So on PostgreSQL a 2PC `prepare` ledger row means units sold (it is only
//! visible once committed); on SQLite it means units held, sold by the
//! `commit` row or released by the `rollback` row. See [`two_phase`] and
//! [`three_phase`].
//!
//! Read-only views for tests and people: `GET /products`,
//! `GET /products/{sku}`, `GET /ledger`. `POST /products {sku, qty}` seeds
//! stock. `POST /faults` and `GET /calls` are demo/test aids ([`faults`]);
//! the fault middleware wraps every branch route above.
//!
//! The binary is a thin wrapper; tests start the service in-process with
//! [`AppState::open`], [`AppState::recover`], [`AppState::spawn_watchdog`]
//! and [`run`].
//!
//! For the fault-injection harness only, the service can be started with
//! one deliberate defect ([`Settings::plant`], `--unsafe-plant <NAME>`): the
//! [`plants`] module lists them, what each does wrong and which checker rule
//! it must trip. Without one (the default) everything above holds.

pub mod faults;
pub mod plants;
pub mod store;
pub mod three_phase;
pub mod two_phase;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router, middleware};
use dtx_sdk::barrier::BarrierError;
use dtx_sdk::three_phase::{ThreePhaseConfig, Watchdog};
use dtx_sdk::xa::RecoverySummary;
use dtx_sdk::{BranchAnswer, BranchContext, BranchOp, Client, Mode, SignatureKeys, SignedJson};
use faults::Faults;
use plants::Plant;
use serde::Deserialize;
use serde_json::Value;
use std::future::Future;
use store::{LedgerEntry, Product, StockRequest, Store};
use three_phase::StockThreePhase;
use tokio::net::TcpListener;
use two_phase::TwoPhase;

/// What the service is started with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `sqlite:<file>` or `postgres://user:pass@host/db`.
    pub db: String,
    /// The keys branch calls must be signed with: the coordinator's and the
    /// order service's (its TCC Trys). Disabled by default.
    pub signature_keys: SignatureKeys,
    /// The 3PC watchdog's timeouts.
    pub three_phase: ThreePhaseConfig,
    /// A deliberate defect ([`plants`]), so that the fault-injection
    /// harness can prove its checker catches it. `None` (the default) in
    /// anything real.
    pub plant: Option<Plant>,
    /// Serve the fault-injection aids (`POST /faults`, `GET /calls`, see
    /// [`faults`]): for the demo and the harness only, since anyone who
    /// reaches the port could then make the service fail or read its calls.
    pub fault_injection: bool,
}

impl Settings {
    /// On `db`, with no signature check and the SDK's default 3PC settings.
    pub fn new(db: impl Into<String>) -> Settings {
        Settings {
            db: db.into(),
            signature_keys: SignatureKeys::disabled(),
            three_phase: ThreePhaseConfig::default(),
            plant: None,
            fault_injection: false,
        }
    }
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The inventory's database.
    pub db: Store,
    /// The keys branch calls must be signed with. Set them through
    /// [`Settings`]: the 3PC participant keeps its own copy.
    pub signature_keys: SignatureKeys,
    /// Injected faults and the call log (demo/test aid).
    pub faults: Faults,
    /// How 2PC branches are prepared on this database.
    pub two_phase: TwoPhase,
    /// The 3PC participant.
    pub three_phase: StockThreePhase,
    /// See [`Settings::plant`].
    pub plant: Option<Plant>,
    /// See [`Settings::fault_injection`].
    pub fault_injection: bool,
}

impl AppState {
    /// Connects to `db_url` and prepares the schema; no signature check, no faults,
    /// default 3PC settings.
    pub async fn connect(db_url: &str) -> anyhow::Result<AppState> {
        AppState::open(Settings::new(db_url)).await
    }

    /// Connects with `settings` and applies the schema and the SDK's
    /// migrations (barrier, XA on PostgreSQL, 3PC state).
    pub async fn open(settings: Settings) -> anyhow::Result<AppState> {
        if let Some(plant) = settings.plant {
            tracing::warn!(
                %plant,
                "PLANTED DEFECT ACTIVE: this inventory is deliberately broken \
                 (--unsafe-plant {plant}) for the fault-injection harness; never run it for real"
            );
        }
        let db = Store::connect(&settings.db).await?;
        Ok(AppState {
            two_phase: TwoPhase::for_db(&db).await?,
            three_phase: StockThreePhase::new(
                &db,
                settings.three_phase,
                settings.signature_keys.clone(),
                settings.plant,
            )
            .await?,
            db,
            signature_keys: settings.signature_keys,
            faults: Faults::default(),
            plant: settings.plant,
            fault_injection: settings.fault_injection,
        })
    }

    /// Resolves 2PC branches a previous run left prepared (PostgreSQL XA)
    /// by asking the coordinator; run it at start. `None` when 2PC uses the
    /// reservation, which needs no recovery.
    pub async fn recover(&self, coordinator: &Client) -> anyhow::Result<Option<RecoverySummary>> {
        let summary = self.two_phase.recover(coordinator).await?;
        if let Some(summary) = &summary {
            tracing::info!(?summary, "2PC in-doubt recovery done");
        }
        Ok(summary)
    }

    /// Starts the 3PC watchdog (timeout rules, asking `coordinator`); keep
    /// the handle while serving.
    pub fn spawn_watchdog(&self, coordinator: Client) -> Watchdog {
        self.three_phase.spawn_watchdog(coordinator)
    }
}

impl FromRef<AppState> for SignatureKeys {
    fn from_ref(state: &AppState) -> Self {
        state.signature_keys.clone()
    }
}

impl FromRef<AppState> for Faults {
    fn from_ref(state: &AppState) -> Self {
        state.faults.clone()
    }
}

/// The router with every route.
pub fn app(state: AppState) -> Router {
    let branches = Router::new()
        .route("/saga/reserve", branch(BranchOp::Action))
        .route("/saga/release", branch(BranchOp::Compensate))
        .route("/tcc/try", branch(BranchOp::Try))
        .route("/tcc/confirm", branch(BranchOp::Confirm))
        .route("/tcc/cancel", branch(BranchOp::Cancel))
        .route("/2pc/prepare", branch(BranchOp::Prepare))
        .route("/2pc/commit", branch(BranchOp::Commit))
        .route("/2pc/rollback", branch(BranchOp::Rollback))
        .route("/3pc/can_commit", three_phase_branch(BranchOp::CanCommit))
        .route("/3pc/pre_commit", three_phase_branch(BranchOp::PreCommit))
        .route("/3pc/do_commit", three_phase_branch(BranchOp::DoCommit))
        .route("/3pc/abort", three_phase_branch(BranchOp::Abort));
    let mut router = Router::new()
        .route("/products", get(products).post(seed))
        .route("/products/{sku}", get(product))
        .route("/ledger", get(ledger));
    if state.fault_injection {
        let branches = branches.layer(middleware::from_fn_with_state(
            state.faults.clone(),
            faults::inject,
        ));
        router = router
            .merge(branches)
            .route("/faults", post(faults::arm))
            .route("/calls", get(faults::calls));
    } else {
        router = router.merge(branches);
    }
    router.with_state(state)
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

/// The route of a branch operation: the handler is bound to the operation
/// it carries out ([`BranchContext::expect`]), so a misrouted call (a
/// forged one, two URLs swapped at registration) is answered 400 and cannot
/// move stock the wrong way.
fn branch(expected: BranchOp) -> MethodRouter<AppState> {
    post(
        move |state: State<AppState>, ctx: BranchContext, body: SignedJson<StockRequest>| {
            handle(expected, state, ctx, body)
        },
    )
}

/// Checks the call, then applies the movement behind the barrier (or, when
/// a planted defect concerns the call, the wrong one: [`plants`]).
async fn handle(
    expected: BranchOp,
    State(state): State<AppState>,
    ctx: BranchContext,
    SignedJson(req): SignedJson<StockRequest>,
) -> Response {
    if let Err(wrong) = ctx.expect(expected) {
        return wrong.into_response();
    }
    if req.qty <= 0 {
        return (StatusCode::BAD_REQUEST, "qty must be positive").into_response();
    }
    if let Some(plant) = state.plant
        && let Some(planted) = plants::intercept(plant, &state, &ctx, &req.sku, req.qty).await
    {
        return planted;
    }
    if expected.mode() == Mode::TwoPhase {
        return two_phase::call(&state, &ctx, &req.sku, req.qty).await;
    }
    let answer: Result<BranchAnswer, BarrierError> = state.db.apply(&ctx, &req.sku, req.qty).await;
    answer.into_response()
}

/// The route of a 3PC operation: the payload goes to the SDK helper as
/// JSON (it stores it for the watchdog), the hooks read `{sku, qty}`.
fn three_phase_branch(expected: BranchOp) -> MethodRouter<AppState> {
    post(
        move |State(state): State<AppState>,
              ctx: BranchContext,
              SignedJson(payload): SignedJson<Value>| async move {
            if let Err(wrong) = ctx.expect(expected) {
                return wrong.into_response();
            }
            state
                .three_phase
                .handle(&ctx, &payload)
                .await
                .into_response()
        },
    )
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
