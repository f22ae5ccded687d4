//! The replay cache of the signature verifier: the signatures accepted
//! within the time window, bounded in number.
//!
//! A signature is remembered with its timestamp and forgotten once that
//! timestamp has left the window, when a replay of it would be refused as
//! stale anyway. Entries are ordered by timestamp, so forgetting is taking
//! from the front. When the cache is full of entries still inside the
//! window, a new call is refused rather than an entry dropped: forgetting a
//! signature early would let its replay through.

use super::SignatureError;
use std::collections::BTreeSet;

/// An HMAC-SHA256 value.
type Mac = [u8; 32];

/// Accepted signatures by timestamp, at most `capacity`.
#[derive(Debug)]
pub(super) struct ReplayCache {
    seen: BTreeSet<(u64, Mac)>,
    capacity: usize,
}

impl ReplayCache {
    /// An empty cache of at most `capacity` entries (at least one).
    pub(super) fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Remembers the signature `mac` made at `timestamp`, unless it was seen
    /// before (a replay) or the cache is full of signatures that are still
    /// inside the window of `window` seconds around `now`.
    pub(super) fn admit(
        &mut self,
        timestamp: u64,
        mac: Mac,
        now: u64,
        window: u64,
    ) -> Result<(), SignatureError> {
        while let Some(&(oldest, _)) = self.seen.first() {
            if oldest.saturating_add(window) >= now {
                break;
            }
            self.seen.pop_first();
        }
        if self.seen.contains(&(timestamp, mac)) {
            return Err(SignatureError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            // The oldest entry leaves the window one second after
            // `oldest + window`; a call then finds room.
            let oldest = self.seen.first().map_or(now, |&(t, _)| t);
            return Err(SignatureError::ReplayCacheFull {
                retry_after: oldest
                    .saturating_add(window)
                    .saturating_add(1)
                    .saturating_sub(now)
                    .max(1),
            });
        }
        self.seen.insert((timestamp, mac));
        Ok(())
    }

    /// How many signatures are remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }
}
