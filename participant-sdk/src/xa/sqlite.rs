//! 2PC on SQLite: SQLite has no prepared transactions (a transaction cannot
//! outlive its connection, let alone a restart), so a SQLite participant
//! prepares by *reservation*, the way a TCC Try does. Nothing here is code:
//! the [barrier](crate::barrier) already provides what it needs.
//!
//! - **prepare** = reserve and hold, in an ordinary local transaction that
//!   *commits*, behind the barrier: e.g. move `qty` from `available` to
//!   `held`, or insert the new row with `status = 'pending'`. The hold must
//!   make the commit certain (the stock is set aside, the constraints were
//!   checked) and must keep others from using what is held. A refusal rolls
//!   back and answers 409.
//! - **commit** = apply the hold (`held -= qty`, `status = 'active'`),
//!   behind the barrier; it must succeed.
//! - **rollback** = release the hold (`available += qty, held -= qty`, delete
//!   the pending row), behind the barrier, which turns a rollback of a
//!   prepare that never ran into a success that touches nothing (null
//!   rollback) and refuses that prepare if it arrives later (suspension).
//!
//! The barrier treats `rollback` as the undo of `prepare`
//! ([`BranchOp::undoes`](crate::BranchOp::undoes)), so
//! `Barrier::sqlite().begin(&pool, &ctx)` works unchanged for the three
//! operations. The difference from PostgreSQL's prepared transactions is
//! isolation: held work is visible to other readers as "held", so readers
//! must understand the hold columns. Recovery needs nothing special: the
//! holds are committed rows, and the coordinator retries `commit`/`rollback`
//! until acknowledged.
