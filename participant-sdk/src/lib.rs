//! The dtx participant SDK: what a service links to take part in global
//! transactions, or to start them.
//!
//! - **Initiator client** ([`Client`]): register a saga, run a TCC
//!   transaction as a scope (commit when the scope succeeds, abort when it
//!   fails or panics; when the commit's answer is lost, ask the coordinator
//!   and report what it did), read and wait for outcomes, with typed errors
//!   ([`ClientError`]).
//! - **Branch context** ([`BranchContext`]): an axum extractor for the
//!   `dtx-gid`, `dtx-branch`, `dtx-op` and `dtx-mode` headers of a call, and
//!   [`BranchAnswer`] for the answer (200 / 409 / 425 / 500), plus
//!   [`SignedJson`] to check the coordinator's signature.
//! - **Sub-transaction barrier** ([`barrier::Barrier`]) on SQLite and
//!   PostgreSQL: inside the handler's local transaction it makes a repeated
//!   call a no-op that answers as the first did, turns a compensation whose
//!   forward step never ran into a success that touches nothing (null
//!   compensation), and refuses a forward step that arrives after its
//!   compensation (suspension).
//!
//! # Layout
//! - [`client`]: the initiator client: [`Client`], sagas
//!   ([`client::SagaBuilder`]), TCC scopes ([`client::TccBuilder`]), the
//!   transaction view and [`ClientError`].
//! - [`context`]: [`BranchContext`] and its extractor, [`BranchOp`].
//! - [`answer`]: [`BranchAnswer`] and its status codes.
//! - [`signature`]: [`CallbackSecret`], [`SignedJson`] and [`signature::sign`].
//! - [`barrier`]: the barrier, its migrations (`migrations/sqlite`,
//!   `migrations/postgres`, applied by [`barrier::Barrier::migrate`]) and the
//!   cleanup of old rows.
//! - [`xa`]: the 2PC participant on PostgreSQL prepared transactions
//!   ([`xa::XaParticipant`]), with in-doubt recovery through the termination
//!   query ([`Client::decision`], [`client::DecisionSource`]).
//! - [`three_phase`]: the 3PC participant on SQLite and PostgreSQL
//!   ([`three_phase::ThreePhase`]), its watchdog, and the timeout rule as a
//!   pure function ([`three_phase::timeout_rule`]).
//!
//! # Example
//! A participant whose `reserve` handler is protected by the barrier, and an
//! initiator that runs a TCC transaction over it.
//!
//! ```no_run
//! use axum::{Router, extract::State, routing::post};
//! use dtx_sdk::barrier::{Barrier, BarrierError, Entry};
//! use dtx_sdk::client::TccBranch;
//! use dtx_sdk::{BranchAnswer, BranchContext, CallbackSecret, Client, ClientError, SignedJson};
//! use serde::Deserialize;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     db: sqlx::SqlitePool,
//!     secret: CallbackSecret,
//! }
//!
//! impl axum::extract::FromRef<AppState> for CallbackSecret {
//!     fn from_ref(state: &AppState) -> Self {
//!         state.secret.clone()
//!     }
//! }
//!
//! #[derive(Deserialize)]
//! struct Reserve {
//!     sku: String,
//!     qty: i64,
//! }
//!
//! /// The Try: hold `qty` units, or refuse when there are not enough.
//! async fn reserve(
//!     State(state): State<AppState>,
//!     ctx: BranchContext,
//!     SignedJson(req): SignedJson<Reserve>,
//! ) -> Result<BranchAnswer, BarrierError> {
//!     let mut work = match Barrier::sqlite().begin(&state.db, &ctx).await? {
//!         Entry::Proceed(work) => work,
//!         // A repeat, a null compensation or a suspended Try: answer as told.
//!         Entry::Skip(skipped) => return Ok(skipped.answer()),
//!     };
//!     let held = sqlx::query(
//!         "UPDATE stock SET available = available - $1, held = held + $1 \
//!          WHERE sku = $2 AND available >= $1",
//!     )
//!     .bind(req.qty)
//!     .bind(&req.sku)
//!     .execute(&mut *work)
//!     .await?;
//!     if held.rows_affected() == 0 {
//!         return work.refuse(format!("not enough {} in stock", req.sku)).await;
//!     }
//!     work.succeed().await
//! }
//!
//! fn app(state: AppState) -> Router {
//!     // confirm and cancel are written the same way.
//!     Router::new().route("/stock/reserve", post(reserve)).with_state(state)
//! }
//!
//! /// The initiator: one Try per service; commit if both hold.
//! async fn place_order(client: &Client) -> Result<(), ClientError> {
//!     client
//!         .tcc()
//!         .run(|scope| async move {
//!             let stock = "http://stock.internal/stock";
//!             scope
//!                 .try_branch(
//!                     TccBranch::new(
//!                         "stock",
//!                         format!("{stock}/reserve"),
//!                         format!("{stock}/confirm"),
//!                         format!("{stock}/cancel"),
//!                     )
//!                     .payload(serde_json::json!({"sku": "apple", "qty": 2})),
//!                 )
//!                 .await?;
//!             Ok::<_, ClientError>(())
//!         })
//!         .await
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let db = sqlx::SqlitePool::connect("sqlite:stock.db").await?;
//!     Barrier::sqlite().migrate(&db).await?;
//!     let state = AppState { db, secret: CallbackSecret::new("shared secret") };
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:9000").await?;
//!     tokio::spawn(async move { axum::serve(listener, app(state)).await });
//!
//!     let client = Client::builder("http://127.0.0.1:7707")
//!         .callback_secret(CallbackSecret::new("shared secret"))
//!         .build()?;
//!     place_order(&client).await?;
//!     Ok(())
//! }
//! ```

pub mod answer;
pub mod barrier;
pub mod client;
pub mod context;
mod problem;
pub mod signature;
pub mod three_phase;
pub mod xa;

pub use answer::BranchAnswer;
pub use client::{Client, ClientError};
pub use context::{BranchContext, BranchContextRejection, BranchOp};
pub use dtx_protocol::{Mode, RetryPolicy, Status, TxOptions};
pub use signature::{CallbackSecret, SignedJson};
