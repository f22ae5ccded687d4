//! Sans-IO protocol core of dtx.
//!
//! This crate decides *what* happens to a global transaction; it never does
//! anything itself. It has no clock, no network and no database: the engine in
//! `dtx-coordinator` feeds it [`Input`]s (a participant answered, the deadline
//! passed, the initiator asked to commit) and carries out the [`Step`] it gets
//! back (persist these history records, then make these calls). Because every
//! decision lives here, every decision can be tested table by table and run in a
//! deterministic simulation.
//!
//! # Layout
//! - [`wire`]: names shared with participants: modes, operations, headers, and
//!   how an HTTP status is classified into a [`Reply`].
//! - [`spec`]: what a client registers: branches and per-transaction options.
//! - [`state`]: the status vocabulary of transactions and branches.
//! - [`machine`]: the state machine, [`Transaction`], with the rules common to
//!   every mode; the per-mode rules live in `saga`, `tcc`, `two_phase` and
//!   `three_phase`.
//! - [`retry`]: the backoff policy, a pure function of the attempt number.
//!
//! # Call order
//! 1. Build a [`Transaction`] with [`Transaction::new`] (registration) or
//!    [`Transaction::recover`] (loaded from the log after a crash or takeover).
//! 2. Call [`Transaction::start`] once and carry out the step it returns.
//! 3. Feed every later input through [`Transaction::handle`]; carry out each step
//!    in order: write `step.history` durably first, then issue `step.actions`.
//! 4. Stop when [`Transaction::status`] is final.

pub mod machine;
pub mod retry;
mod saga;
pub mod spec;
pub mod state;
mod tcc;
#[cfg(test)]
mod test_support;
mod three_phase;
mod two_phase;
pub mod wire;

pub use machine::{Action, HistoryRecord, Input, Step, Transaction};
pub use retry::RetryPolicy;
pub use spec::{BranchSpec, TxOptions};
pub use state::{BranchStatus, Decision, Status};
pub use wire::{Mode, Op, Reply};
