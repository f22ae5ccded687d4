//! The coordinator's wall clock: Unix milliseconds for every stored
//! timestamp (deadlines, leases, history), read off tokio's monotonic clock.
//!
//! The clock is anchored to the system's wall clock once per process and then
//! advances with the monotonic clock. Two things follow:
//! - a jump of the system clock (an NTP step, an operator's `date -s`) does
//!   not move deadlines or leases this process writes: a coordinator whose
//!   clock jumps forward cannot write leases far in the future;
//! - under tokio's paused time (the deterministic simulation, tests that
//!   advance time), stored timestamps follow the virtual clock, so a lease
//!   expires and a deadline passes exactly when the simulation says.
//!
//! One seam: [`reading_as_of`] makes the clock read a given instant on the
//! current thread while a closure runs. The engine-level simulation runs the
//! SQLite store (which reads this clock for leases) on a thread of its own,
//! where tokio's clock is not the simulation's; it lends the store thread
//! the simulation's instant for each call. Nothing in the coordinator uses
//! it.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall-clock reading the process took at its first use of this clock,
/// and the monotonic instant it took it at.
static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();

thread_local! {
    /// The instant lent to this thread by [`reading_as_of`], if any.
    static LENT: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's clock reading `now_ms` (see the module's doc).
pub fn reading_as_of<T>(now_ms: i64, f: impl FnOnce() -> T) -> T {
    let before = LENT.with(|lent| lent.replace(Some(now_ms)));
    let out = f();
    LENT.with(|lent| lent.set(before));
    out
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    if let Some(lent) = LENT.with(Cell::get) {
        return lent;
    }
    let (anchor_instant, anchor_ms) = *ANCHOR.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        (Instant::now(), wall)
    });
    let elapsed = tokio::time::Instant::now()
        .into_std()
        .saturating_duration_since(anchor_instant);
    anchor_ms + elapsed.as_millis() as i64
}
