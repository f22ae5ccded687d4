//! The dtx coordinator: a durable log of global transactions and the engine
//! that drives each one to the end, behind a JSON API.
//!
//! # Layout
//! - [`clock`]: Unix milliseconds for stored timestamps, on tokio's clock.
//! - [`config`]: the settings of `dtx serve`, from flags and `DTX_*` variables.
//! - [`store`]: the durable transaction log (trait, SQLite and PostgreSQL backends).
//! - [`engine`]: drives transactions; leases, recovery, retries.
//! - [`transport`]: calls to participants over HTTP.
//! - [`api`]: the HTTP API under `/v1`, health, readiness and metrics.
//! - [`metrics`]: Prometheus metrics.
//! - [`server`]: wires the pieces together and runs until shutdown.
pub mod api;
pub mod clock;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod server;
pub mod store;
pub mod transport;
