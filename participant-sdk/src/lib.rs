//! The dtx participant SDK: what a service links to take part in global
//! transactions, or to start them.
//!
//! - **Initiator client** ([`Client`]): register a saga, 2PC or 3PC
//!   transaction, run a TCC transaction as a scope (commit when the scope
//!   succeeds, abort when it fails or panics; when the commit's answer is
//!   lost, ask the coordinator and report what it did), read and wait for
//!   outcomes, with typed errors ([`ClientError`]). An aborted transaction
//!   says why, down to the refusing participant's own reason
//!   ([`client::TransactionView::abort_cause`]). A client may know several
//!   coordinators sharing one store, or a host name that resolves to
//!   several: it spreads registrations over the healthy ones and fails over
//!   on a connection error, a timeout or a 503, within
//!   [`Client::failover_time`] for one that stopped answering (see
//!   [`Client`]); the 2PC recovery and the 3PC watchdog ask through it and
//!   fail over too.
//! - **Branch context** ([`BranchContext`]): an axum extractor for the
//!   `dtx-gid`, `dtx-branch`, `dtx-op` and `dtx-mode` headers of a call, with
//!   [`BranchContext::expect`] to bind a handler to its operation (any other
//!   is answered 400); [`BranchAnswer`] for the answer (200 / 409 / 425 /
//!   500), [`Refusal`] for "the business says no", and [`SignedJson`] to
//!   check the signature of the coordinator (or of the initiator, for a TCC
//!   Try): stale, replayed and re-pathed calls are refused.
//! - **Sub-transaction barrier** ([`barrier::Barrier`]) on SQLite and
//!   PostgreSQL: inside the handler's local transaction it makes a repeated
//!   call a no-op that answers as the first did, turns a compensation whose
//!   forward step never ran into a success that touches nothing (null
//!   compensation), and refuses a forward step that arrives after its
//!   compensation (suspension). Its closure form ([`barrier::Barrier::run`])
//!   opens the transaction, runs your step and commits; the explicit form
//!   ([`barrier::Barrier::begin`]) hands you the steps.
//! - **2PC and 3PC participants**: [`xa::XaParticipant`] (PostgreSQL
//!   prepared transactions, with in-doubt recovery) and
//!   [`three_phase::ThreePhase`] (SQLite and PostgreSQL, with its watchdog).
//! - **Participant plumbing** ([`db`]): a database on SQLite or PostgreSQL
//!   chosen by URL ([`db::Db::connect`]: SQLite created if missing, in WAL
//!   mode, with a busy timeout), code written once for both backends
//!   ([`on_db!`], [`on_conn!`]), and [`shutdown_signal`] for a clean stop.
//!
//! # Names
//! One scheme for the four modes: [`Client::saga`], [`Client::tcc`],
//! [`Client::two_phase`] and [`Client::three_phase`] start a
//! [`client::SagaBuilder`], [`client::TccBuilder`],
//! [`client::TwoPhaseBuilder`] or [`client::ThreePhaseBuilder`], which take
//! [`client::SagaBranch`]es, [`client::TccBranch`]es,
//! [`client::TwoPhaseBranch`]es or [`client::ThreePhaseBranch`]es; each
//! branch URL is set by the method named after its operation
//! (`SagaBranch::new("stock").action(url).compensate(url)`), and a missing
//! one is [`ClientError::IncompleteBranch`] at submit. The coordinator's
//! answer is a [`client::TransactionView`] (a view of a global transaction,
//! not a database transaction). "The business refuses" is a [`Refusal`]
//! everywhere, carried by [`WorkError::Refused`] out of a closure-form
//! barrier step, an XA prepare or a 3PC hook.
//!
//! # Cargo features
//! | feature | default | what it adds |
//! |---|---|---|
//! | `sqlite` | yes | the barrier, [`db`] and (with `client`) the 3PC helper on SQLite |
//! | `postgres` | yes | the same on PostgreSQL, and (with `client`) the XA helper |
//! | `client` | yes | the initiator client (reqwest with rustls), which the 2PC recovery and the 3PC watchdog also use to ask the coordinator |
//!
//! The context, the answers, [`Refusal`] and the signature check need none.
//! A SQLite saga/TCC participant that starts no transaction itself depends
//! on `dtx-sdk = { default-features = false, features = ["sqlite"] }` and
//! compiles neither the PostgreSQL driver nor an HTTP client nor TLS.
//!
//! # Versions
//! The SDK's handlers, extractors and answers are axum 0.8 types, and the
//! barrier and the helpers work on sqlx 0.9 pools and connections: use those
//! major versions in the service. A SQLite service enables sqlx's
//! `sqlite` and `runtime-tokio` features.
//!
//! # What the service provides
//! - Keys: the SDK reads no environment variable. The service builds
//!   [`SignatureKeys`] from its own configuration (the example below parses
//!   `DTX_SIGNING_KEY`) and gives it to [`SignedJson`] through axum's
//!   `FromRef`.
//! - A log: the SDK reports through `tracing` (an unchecked call let through,
//!   decision answers not verified, shutting down); nothing shows until the
//!   service installs a subscriber, e.g. `tracing_subscriber::fmt().init()`.
//!
//! # Layout
//! - [`client`]: the initiator client: [`Client`] and its failover between
//!   coordinators, the builders and branch builders of every mode,
//!   [`client::TransactionView`] and [`ClientError`].
//! - [`context`]: [`BranchContext`] and its extractor; [`op`]: [`BranchOp`].
//! - [`answer`]: [`BranchAnswer`] and its status codes; [`refusal`]:
//!   [`Refusal`] and [`WorkError`].
//! - [`signature`]: [`SignatureKeys`] (the keyring a participant accepts),
//!   [`SigningKey`] and [`SignedJson`]; the header itself is
//!   `dtx_protocol::signature`'s.
//! - [`barrier`]: the barrier, its migrations (`migrations/sqlite`,
//!   `migrations/postgres`, applied by [`barrier::Barrier::migrate`]) and the
//!   cleanup of old rows.
//! - [`db`]: [`db::Db`], [`db::Conn`], [`on_db!`], [`on_conn!`].
//! - [`xa`]: the 2PC participant on PostgreSQL prepared transactions
//!   ([`xa::XaParticipant`]), with in-doubt recovery through the termination
//!   query ([`Client::decision`], [`client::DecisionSource`]).
//! - [`three_phase`]: the 3PC participant on SQLite and PostgreSQL
//!   ([`three_phase::ThreePhase`]), its watchdog, and the timeout rule as a
//!   pure function ([`three_phase::timeout_rule`]).
//!
//! # Example
//! Two programs that run as written, each a participant on SQLite and the
//! initiator that drives it: `examples/saga.rs` (below) and
//! `examples/tcc.rs`. Start a coordinator, then run one:
//!
//! ```sh
//! cargo run -p dtx-coordinator -- serve     # dtx on 127.0.0.1:7707, log in dtx.db
//! cargo run -p dtx-sdk --example saga       # or --example tcc
//! ```
//!
//! The saga example prints one committed saga, one aborted with the
//! refusing branch's reason, and the stock; a test runs both examples
//! against a real coordinator.
//!
#![doc = concat!("```no_run\n", include_str!("../examples/saga.rs"), "```")]

pub mod answer;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod barrier;
#[cfg(feature = "client")]
pub mod client;
pub mod context;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub mod db;
pub mod op;
mod problem;
pub mod refusal;
mod shutdown;
pub mod signature;
#[cfg(all(any(feature = "sqlite", feature = "postgres"), feature = "client"))]
pub mod three_phase;
#[cfg(all(feature = "postgres", feature = "client"))]
pub mod xa;

pub use answer::BranchAnswer;
#[cfg(feature = "client")]
pub use client::{Client, ClientError};
pub use context::{BranchContext, BranchContextRejection, WrongOperation};
pub use dtx_protocol::{Mode, RetryPolicy, Status, TxOptions};
pub use op::BranchOp;
pub use refusal::Refusal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use refusal::WorkError;
pub use shutdown::shutdown_signal;
pub use signature::{SignatureKeys, SignedJson, SigningKey};
