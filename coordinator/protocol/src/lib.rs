//! Sans-IO protocol core of dtx.
//!
//! This crate decides *what* happens to a global transaction and *when*; it
//! never does anything itself. It has no clock, no network and no database:
//! the engine in `dtx-coordinator` feeds it [`Input`]s (a participant
//! answered, the initiator asked for a verdict) and the passing of time
//! ([`Transaction::handle_timeout`]), each with the instant it happened
//! ([`Now`]), and carries out the [`Step`] it gets back (persist these history
//! records, then make these calls). Deadlines, retry backoff (the jitter is an
//! input), polling of "still working" answers and the operator flag are all
//! decided here; the core says when it next needs to be woken
//! ([`Transaction::poll_timeout`]). Because every decision lives here, every
//! decision can be tested table by table and run in a deterministic
//! simulation (`sim`, in test builds).
//!
//! # Layout
//! - [`wire`]: names shared with participants: modes, operations, headers,
//!   how an HTTP status is classified into a [`Reply`], and the API bodies
//!   both the coordinator and the SDK's client handle.
//! - [`problem`]: the `application/problem+json` document every dtx error is
//!   answered with, and how the `detail` of an error answer is read.
//! - [`spec`]: what a client registers: branches and per-transaction options.
//! - [`state`]: the status vocabulary of transactions and branches.
//! - [`step`]: inputs, history records and actions.
//! - [`timing`]: the instant of an input and the per-transaction timers.
//! - [`machine`]: the state machine, [`Transaction`], with the rules common to
//!   every mode; the per-mode rules live in `saga`, `tcc`, `two_phase` and
//!   `three_phase`, one branch's bookkeeping in `branch`.
//! - [`retry`]: the backoff policy, a pure function of the attempt number;
//!   `retrying`: what the core does with an answer that asks for another
//!   attempt (backoff, polling, the failure log, the operator flag).
//! - [`signature`]: signed participant calls (version 2 of `dtx-signature`):
//!   keys, keyrings, signing, and the verifier with its time window and
//!   replay cache; and signed answers to the termination query.
//! - `planted`: fixed defects kept as switches only test builds can turn on;
//!   `sim`: the deterministic simulation that must find each of them.
//!
//! # Call order
//! See [`machine`]: build, `start`, then `handle` each input and
//! `handle_timeout` whenever `poll_timeout` comes due; write each step's
//! history before its calls; stop when the status is final.

mod branch;
pub mod machine;
mod planted;
pub mod problem;
pub mod retry;
mod retrying;
mod saga;
pub mod signature;
#[cfg(test)]
mod sim;
pub mod spec;
pub mod state;
pub mod step;
mod tcc;
#[cfg(test)]
mod test_support;
mod three_phase;
pub mod timing;
mod two_phase;
pub mod wire;

pub use machine::Transaction;
pub use problem::Problem;
pub use retry::RetryPolicy;
pub use spec::{BranchSpec, TxOptions};
pub use state::{BranchStatus, Decision, Status};
pub use step::{Action, AttentionReason, HistoryRecord, Input, Step, Verdict};
pub use timing::{Now, Timing};
pub use wire::{DecisionAnswer, Mode, Op, RegisterRequest, Reply};
