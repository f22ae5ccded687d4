//! The coordinator's view of its own leases: until when they can be trusted,
//! and how many times they lapsed. The loops that renew and claim leases are
//! in `ownership`; this is what drivers consult before they act.
//!
//! Validity is tracked on the monotonic clock, which keeps running while the
//! process is stopped (SIGSTOP, a long pause): after such a stall the lease
//! reads as lapsed, drivers stop calling participants, and each driver checks
//! in the store that it still owns its transaction before it calls again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// When this coordinator's leases stop being trustworthy, and how many times
/// they have lapsed.
pub(crate) struct LeaseClock {
    valid_until: watch::Sender<Instant>,
    lapses: AtomicU64,
    /// Lease length.
    pub(crate) lease: Duration,
}

impl LeaseClock {
    pub(crate) fn new(lease: Duration) -> Self {
        LeaseClock {
            valid_until: watch::Sender::new(Instant::now() + Self::trusted(lease)),
            lapses: AtomicU64::new(0),
            lease,
        }
    }

    /// The part of a lease this coordinator relies on: a fifth is kept as a
    /// margin for clock drift between coordinators and for the renewal's own
    /// round trip.
    fn trusted(lease: Duration) -> Duration {
        lease - lease / 5
    }

    /// Records a successful renewal that was sent at `sent_at`.
    pub(crate) fn renewed(&self, sent_at: Instant) {
        let previous = *self.valid_until.borrow();
        if previous <= sent_at {
            self.lapses.fetch_add(1, Ordering::SeqCst);
        }
        self.valid_until
            .send_replace(sent_at + Self::trusted(self.lease));
    }

    /// How many times the leases lapsed; a driver that saw a smaller number
    /// must re-check its ownership before it acts.
    pub(crate) fn lapses(&self) -> u64 {
        self.lapses.load(Ordering::SeqCst)
    }

    /// Waits until the leases are valid; returns at once when they are.
    pub(crate) async fn wait_valid(&self) {
        let mut rx = self.valid_until.subscribe();
        loop {
            if *rx.borrow_and_update() > Instant::now() {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}
