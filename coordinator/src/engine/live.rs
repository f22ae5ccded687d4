//! The transactions this coordinator drives now: the live map (one mailbox
//! and one progress watcher per driven gid), and the start of a driver.

use super::driver::{Driver, Ended, Mail};
use super::{Engine, Progress};
use crate::store::{Fence, TransactionRecord};
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::sync::{mpsc, watch};

/// A transaction this coordinator drives.
struct Live {
    /// The epoch its driver holds.
    epoch: i64,
    mail: mpsc::UnboundedSender<Mail>,
    progress: watch::Receiver<Progress>,
}

/// The drivers running on this coordinator, by gid.
#[derive(Default)]
pub(super) struct LiveDrivers {
    map: Mutex<HashMap<String, Live>>,
}

impl LiveDrivers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Live>> {
        self.map.lock().expect("live map poisoned")
    }

    /// The mailbox of the driver of `gid`, if one runs and still reads it.
    pub(super) fn mailbox(&self, gid: &str) -> Option<mpsc::UnboundedSender<Mail>> {
        self.lock()
            .get(gid)
            .filter(|l| !l.mail.is_closed())
            .map(|l| l.mail.clone())
    }

    /// A watcher of the progress of `gid`, if it is driven here.
    pub(super) fn progress(&self, gid: &str) -> Option<watch::Receiver<Progress>> {
        self.lock().get(gid).map(|l| l.progress.clone())
    }

    /// The gids driven here, each with the epoch its driver holds.
    pub(super) fn driven(&self) -> Vec<(String, i64)> {
        self.lock()
            .iter()
            .map(|(gid, live)| (gid.clone(), live.epoch))
            .collect()
    }

    /// Tells the driver of `gid` that its lease is gone, if it is still the
    /// driver that held `epoch`: a renewal that named it at that epoch did
    /// not renew it, so another coordinator owns the transaction now (an
    /// owner change always bumps the epoch) or it is final. A newer driver of
    /// this coordinator (a takeover since) is left alone.
    pub(super) fn lease_lost(&self, gid: &str, epoch: i64) {
        if let Some(live) = self.lock().get(gid).filter(|l| l.epoch == epoch) {
            let _ = live.mail.send(Mail::LeaseLost);
        }
    }
}

impl Engine {
    /// Starts driving a transaction this coordinator owns under `fence`,
    /// unless a driver of a newer (or the same) epoch runs here already.
    ///
    /// Two identical registrations racing on one node showed why: the
    /// second one's insert found the transaction taken and, with no driver
    /// started yet, took it over (epoch 2) and drove it; then the first one
    /// got its answer and started a driver under epoch 1, which replaced the
    /// newer one in the live map, was fenced out at its first write and took
    /// the entry with it: the newer driver went on unnamed by renewal (its
    /// lease ran out while it drove) and unreachable by decisions. A driver
    /// under an older fence can only be fenced out, so it is not started.
    pub(super) fn spawn_driver(&self, fence: Fence, record: TransactionRecord) {
        let gid = fence.gid.clone();
        let epoch = fence.epoch;
        // Held from the check to the insert, so that two starts cannot both
        // pass the check.
        let mut live = self.shared.live.lock();
        if let Some(newer) = live.get(&gid).filter(|l| l.epoch >= epoch) {
            tracing::debug!(
                gid,
                epoch,
                running = newer.epoch,
                "a driver of a newer epoch runs here; not starting this one"
            );
            return;
        }
        let (mail_tx, mail_rx) = mpsc::unbounded_channel();
        let (status_tx, status_rx) = watch::channel(Progress {
            status: record.status,
            finished: None,
        });
        // Every successful write of the driver is announced on this channel:
        // whether one was, once it ends, tells a new run of failures from
        // the same one going on.
        let written = status_rx.clone();
        let failed_fence = fence.clone();
        let driver = Driver::new(
            self.shared.clone(),
            fence,
            record,
            (mail_tx.clone(), mail_rx),
            status_tx,
        );
        live.insert(
            gid.clone(),
            Live {
                epoch,
                mail: mail_tx.clone(),
                progress: status_rx,
            },
        );
        drop(live);
        let engine = self.clone();
        engine.shared.metrics.driving(1);
        self.shared.drivers.spawn(async move {
            let ended = driver.run().await;
            {
                let mut live = engine.shared.live.lock();
                // Remove our own entry only: a takeover may have replaced it.
                if live
                    .get(&gid)
                    .is_some_and(|l| l.mail.same_channel(&mail_tx))
                {
                    live.remove(&gid);
                }
            }
            engine.shared.metrics.driving(-1);
            match ended {
                Ended::Settled => engine.shared.restarts.forget(&gid),
                Ended::Failed(error) => {
                    let wrote = written.borrow().has_changed();
                    engine.restart_failed(failed_fence, error, wrote).await;
                }
            }
        });
    }
}
