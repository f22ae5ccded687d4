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

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The wall-clock reading the process took at its first use of this clock,
/// and the monotonic instant it took it at.
static ANCHOR: OnceLock<(Instant, i64)> = OnceLock::new();

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
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
