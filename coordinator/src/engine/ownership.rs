//! The loops and steps that move ownership of transactions to this
//! coordinator or keep it here: lease renewal of what is driven here,
//! claiming of expired leases, restarting a driver that stopped on a store
//! failure, and taking over a transaction this coordinator owns but does
//! not drive.

use super::{Engine, EngineError};
use crate::store::{StoreError, TransactionRecord};
use std::collections::HashMap;
use std::time::Duration;

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
    /// stopped on a store failure. Its lease is no longer renewed, so the
    /// claim loop would recover it once the lease ran out; this resumes it
    /// sooner. Taking it over bumps the epoch, fencing out anything the
    /// failed driver left in flight.
    pub(super) async fn restart_failed(&self, gid: String) {
        let mut backoff = Duration::from_millis(500);
        loop {
            tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            if self.shared.live.mailbox(&gid).is_some() {
                return; // the claim loop got to it first
            }
            match self.take_over_and_drive(&gid).await {
                // Driving again, or final, or another coordinator has it.
                Ok(_) | Err(StoreError::NotFound) => return,
                Err(e) => {
                    tracing::warn!(gid, error = %e, "restarting a failed driver failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
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
            let driven: HashMap<String, i64> = self.shared.live.driven().into_iter().collect();
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
