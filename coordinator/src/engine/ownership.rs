//! The loops and steps that move ownership of transactions to this
//! coordinator or keep it here: lease renewal of what is driven here,
//! claiming of expired leases, restarting a driver that stopped on a store
//! failure, and taking over a transaction this coordinator owns but does
//! not drive.

use super::{Engine, EngineError, now_ms};
use crate::store::{Fence, StoreError, TransactionRecord};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first restart of a failed driver waits this long; each failure in a
/// row doubles it, up to [`MAX_RESTART_DELAY`].
const FIRST_RESTART_DELAY: Duration = Duration::from_secs(1);

/// The longest wait between restarts of a failing driver.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(300);

/// After this many failures in a row (the first driver and two restarts),
/// the transaction is flagged for an operator.
const FLAG_AFTER_FAILURES: u32 = 3;

/// How long to wait before the restart that follows the `failures`-th
/// failure in a row: 1 s, 2 s, 4 s, ... up to five minutes.
fn restart_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_RESTART_DELAY * 2_u32.pow(doublings)).min(MAX_RESTART_DELAY)
}

/// Failures in a row of the drivers of one transaction.
#[derive(Default)]
struct Failing {
    /// Drivers that stopped on a store failure since one wrote successfully
    /// or ended settled.
    in_a_row: u32,
    /// The epoch of the failed driver while its restart waits: renewal keeps
    /// this lease, and a renewal that loses it cancels the restart.
    waiting: Option<i64>,
    /// Whether the operator flag was written for this run of failures.
    flagged: bool,
}

/// The transactions whose drivers stopped on store failures, by gid.
#[derive(Default)]
pub(super) struct Restarts {
    map: Mutex<HashMap<String, Failing>>,
}

impl Restarts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Failing>> {
        self.map.lock().expect("restart map poisoned")
    }

    /// Records that the driver holding `fence` failed, after a successful
    /// write (`wrote`: a new run of failures begins) or not; returns the
    /// failures in a row. The restart now waits.
    fn failed(&self, fence: &Fence, wrote: bool) -> u32 {
        let mut map = self.lock();
        let failing = map.entry(fence.gid.clone()).or_default();
        if wrote {
            *failing = Failing::default();
        }
        failing.in_a_row += 1;
        failing.waiting = Some(fence.epoch);
        failing.in_a_row
    }

    /// A driver of `gid` ended settled (final, fenced out, shut down): the
    /// run of failures is over.
    pub(super) fn forget(&self, gid: &str) {
        self.lock().remove(gid);
    }

    fn flagged(&self, gid: &str) -> bool {
        self.lock().get(gid).is_some_and(|f| f.flagged)
    }

    fn mark_flagged(&self, gid: &str) {
        if let Some(failing) = self.lock().get_mut(gid) {
            failing.flagged = true;
        }
    }

    /// Whether the restart of `gid` after the failure at `epoch` still waits.
    fn is_waiting(&self, gid: &str, epoch: i64) -> bool {
        self.lock()
            .get(gid)
            .is_some_and(|f| f.waiting == Some(epoch))
    }

    /// Whether a restart of `gid` waits (then nothing else starts its driver).
    pub(super) fn waits(&self, gid: &str) -> bool {
        self.lock().get(gid).is_some_and(|f| f.waiting.is_some())
    }

    /// The restart after the failure at `epoch` is over. A newer failure
    /// (the restarted driver failed at once) keeps its own wait.
    fn stop_waiting(&self, gid: &str, epoch: i64) {
        if let Some(failing) = self.lock().get_mut(gid)
            && failing.waiting == Some(epoch)
        {
            failing.waiting = None;
        }
    }

    /// The transactions whose restart waits, with the epoch of the failed
    /// driver: their leases are renewed.
    fn waiting(&self) -> Vec<(String, i64)> {
        self.lock()
            .iter()
            .filter_map(|(gid, f)| Some((gid.clone(), f.waiting?)))
            .collect()
    }

    /// Renewal did not renew `gid`, named at `epoch`: if its restart still
    /// waits for that failure, another coordinator owns it now. Cancels it.
    fn lease_lost(&self, gid: &str, epoch: i64) {
        let mut map = self.lock();
        if map.get(gid).is_some_and(|f| f.waiting == Some(epoch)) {
            map.remove(gid);
        }
    }
}

impl Engine {
    /// Starts driving a transaction that this coordinator owns but does not
    /// drive. A registration is retried that way when the first one
    /// committed but its answer was lost (the database connection broke
    /// before the commit's answer came back): nothing drives it until its
    /// lease expires, which the retry need not wait for. An earlier run of
    /// this coordinator (same node id) leaves its transactions the same way.
    pub(super) async fn drive_if_orphaned(
        &self,
        existing: &TransactionRecord,
    ) -> Result<(), EngineError> {
        let node = &self.shared.settings.node_id;
        if existing.status.is_final()
            || existing.owner.as_deref() != Some(node.as_str())
            || self.shared.live.mailbox(&existing.gid).is_some()
            || self.shared.restarts.waits(&existing.gid)
        {
            return Ok(());
        }
        tracing::info!(
            gid = existing.gid,
            "driving a registered transaction nobody drove"
        );
        match self.take_over_and_drive(&existing.gid).await {
            Ok(_) | Err(StoreError::NotFound) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Takes the transaction over and starts its driver; `false` when
    /// another coordinator won the race for it.
    pub(super) async fn take_over_and_drive(&self, gid: &str) -> Result<bool, StoreError> {
        let taken = self
            .shared
            .store
            .take_over(
                gid,
                &self.shared.settings.node_id,
                self.shared.settings.lease,
            )
            .await?;
        Ok(match taken {
            Some((fence, record)) => {
                self.spawn_driver(fence, record);
                true
            }
            None => false,
        })
    }

    /// Starts a driver again, from the log, for a transaction whose driver
    /// stopped on a store failure (`error`) while holding `fence`; `wrote`
    /// tells whether that driver made a successful write first.
    ///
    /// A write error that recurs (the same row refused every time) must not
    /// become a takeover loop: each restart takes the transaction over
    /// (bumping the epoch, logging a `takeover`) and calls the participant
    /// again. So restarts back off (see [`restart_delay`]), the transaction
    /// is flagged for an operator after [`FLAG_AFTER_FAILURES`] failures in
    /// a row, and each restart is counted (`dtx_driver_restarts_total`).
    /// Meanwhile its lease is renewed as if it were driven, so that no claim
    /// starts it sooner.
    pub(super) async fn restart_failed(&self, fence: Fence, error: String, wrote: bool) {
        let gid = fence.gid.clone();
        let failures = self.shared.restarts.failed(&fence, wrote);
        if failures >= FLAG_AFTER_FAILURES && !self.flag_failing(&fence, failures, &error).await {
            return;
        }
        let mut delay = restart_delay(failures);
        tracing::warn!(
            gid,
            failures,
            delay_ms = delay.as_millis() as u64,
            error,
            "a store failure stopped the driver; restarting it"
        );
        loop {
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if !self.shared.restarts.is_waiting(&gid, fence.epoch) {
                return; // another coordinator took it over meanwhile
            }
            if self.shared.live.mailbox(&gid).is_some() {
                // A decision or a claim started a driver meanwhile.
                self.shared.restarts.stop_waiting(&gid, fence.epoch);
                return;
            }
            match self.take_over_and_drive(&gid).await {
                Ok(true) => {
                    self.shared.metrics.driver_restarted();
                    self.shared.restarts.stop_waiting(&gid, fence.epoch);
                    return;
                }
                // Final, or gone.
                Ok(false) | Err(StoreError::NotFound) => {
                    self.shared.restarts.forget(&gid);
                    return;
                }
                Err(e) => {
                    tracing::warn!(gid, error = %e, "restarting a failed driver failed; retrying");
                    delay = (delay * 2).min(MAX_RESTART_DELAY);
                }
            }
        }
    }

    /// Flags the transaction whose driver keeps failing, once per run of
    /// failures, with a write of its own (the driver's writes are the ones
    /// failing). `false` when another coordinator owns it now: stop.
    async fn flag_failing(&self, fence: &Fence, failures: u32, error: &str) -> bool {
        if self.shared.restarts.flagged(&fence.gid) {
            return true;
        }
        let reason = format!(
            "the driver stopped {failures} times in a row on a store error; dtx keeps \
             restarting it, at longer and longer intervals: {error}"
        );
        match self
            .shared
            .store
            .set_attention(fence, &reason, now_ms())
            .await
        {
            Ok(()) => {
                tracing::warn!(gid = fence.gid, reason, "transaction needs an operator");
                self.shared.metrics.flagged();
                self.shared.restarts.mark_flagged(&fence.gid);
                true
            }
            Err(StoreError::Fenced | StoreError::NotFound) => {
                self.shared.restarts.forget(&fence.gid);
                false
            }
            Err(e) => {
                // Flagged at the next failure, if this one passes.
                tracing::warn!(gid = fence.gid, error = %e, "could not flag the transaction");
                true
            }
        }
    }

    pub(super) async fn renew_loop(&self) {
        let every = self.shared.settings.lease / 3;
        loop {
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let sent_at = tokio::time::Instant::now();
            // Only what is driven here: a transaction this coordinator owns
            // without driving it (its registration committed but the answer
            // was lost, say) must expire, to be claimed and driven.
            // And what waits for a restart here (see `restart_failed`); a
            // driver's epoch prevails over a waiting restart's.
            let driven: HashMap<String, i64> = (self.shared.restarts.waiting().into_iter())
                .chain(self.shared.live.driven())
                .collect();
            if driven.is_empty() {
                self.shared.lease.renewed(sent_at);
                continue;
            }
            let gids: Vec<String> = driven.keys().cloned().collect();
            match self
                .shared
                .store
                .renew_leases(
                    &self.shared.settings.node_id,
                    &gids,
                    self.shared.settings.lease,
                )
                .await
            {
                Ok(lost) => {
                    self.shared.lease.renewed(sent_at);
                    // A driver whose lease is gone would learn it only at
                    // its next write (fenced out), and one waiting for a
                    // decision or a deadline makes none for hours: tell it
                    // now, so that it stops and no longer counts as driven.
                    for gid in lost {
                        tracing::info!(gid, "lease not renewed: another coordinator owns it now");
                        self.shared.live.lease_lost(&gid, driven[&gid]);
                        self.shared.restarts.lease_lost(&gid, driven[&gid]);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "lease renewal failed; calls pause if the lease lapses")
                }
            }
        }
    }

    pub(super) async fn claim_loop(&self) {
        loop {
            let node = &self.shared.settings.node_id;
            match self
                .shared
                .store
                .claim_expired(node, self.shared.settings.lease, 100)
                .await
            {
                Ok(claimed) => {
                    let full = claimed.len() == 100;
                    for (fence, record) in claimed {
                        tracing::info!(gid = fence.gid, status = %record.status, "recovering transaction");
                        self.spawn_driver(fence, record);
                    }
                    if full {
                        continue; // more are waiting
                    }
                }
                Err(e) => tracing::warn!(error = %e, "claiming expired transactions failed"),
            }
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.shared.settings.claim_interval) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_from_a_second_to_five_minutes() {
        let delays: Vec<u64> = (1..=12).map(|n| restart_delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(restart_delay(u32::MAX), MAX_RESTART_DELAY);
    }
}
