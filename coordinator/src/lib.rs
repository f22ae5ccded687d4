//! The dtx coordinator: a durable log of global transactions and the engine
//! that drives each one to the end, behind a JSON API.
//!
//! # Layout
//! - [`clock`]: Unix milliseconds for stored timestamps, on tokio's clock.
//! - [`config`]: the settings of `dtx serve`, from flags and `DTX_*` variables.
//! - [`store`]: the durable transaction log (trait, SQLite and PostgreSQL backends).
//! - [`engine`]: drives transactions; leases, recovery, retries.
//! - [`tls`]: TLS for dtx's own listener.
//! - [`transport`]: calls to participants over HTTP.
//! - [`outbound`]: which participant addresses dtx may call.
//! - [`auth`]: API tokens, roles and namespaces: who may do what.
//! - [`api`]: the HTTP API under `/v1`, health, readiness and metrics.
//! - [`limits`]: every bound on what a caller can make dtx hold or do.
//! - [`metrics`]: Prometheus metrics.
//! - [`http_server`]: the API's HTTP server: connection bound, read timeouts, graceful stop.
//! - [`server`]: wires the pieces together and runs until shutdown.
pub mod api;
pub mod auth;
pub mod clock;
pub mod config;
pub mod engine;
pub mod http_server;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod server;
pub mod store;
pub mod tls;
pub mod transport;
