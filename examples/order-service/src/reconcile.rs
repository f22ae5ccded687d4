//! The background reconciler: the service repairs its own unsettled orders,
//! so that reading them (`GET /orders`) never has to, and never changes
//! anything.
//!
//! Every interval (`--reconcile-interval-ms`, 1 s by default) one pass walks
//! a page of the orders that are neither `confirmed` nor `cancelled`, oldest
//! id first, continuing where the previous pass stopped (and from the start
//! again once it reached the end), so orders it cannot settle yet do not
//! starve the others. An order a placement in this process is working on
//! ([`InFlight`](crate::place::InFlight)) is left to it. For each other
//! order it asks the coordinator about the order's transaction, with a
//! timeout per call:
//!
//! - final (committed or aborted): records the outcome on the order, as the
//!   placement would have (an aborted order whose own branch never ran
//!   becomes `cancelled`);
//! - unknown to the coordinator, and the order is still `new`: its
//!   registration never landed (the coordinator answered 503, or the
//!   service stopped before it registered), so it places the order again, in
//!   the background (registration is idempotent by gid: the same request
//!   either creates the transaction now or finds the one a late original
//!   created). At most a few such placements run at once, so a pass never
//!   waits for an outcome;
//! - anything else (still running, the coordinator unreachable): nothing;
//!   the next pass asks again.
//!
//! [`spawn`] starts it; it stops when the returned [`Reconciler`] is dropped
//! (re-placements it started stop with it; the next reconciler finds their
//! orders again).

use crate::AppState;
use crate::place::{self, Placed};
use crate::plants::transaction_gid;
use crate::store::Order;
use dtx_sdk::ClientError;
use std::time::Duration;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;

/// How the reconciler paces itself.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between the starts of two passes (the first pass runs at once).
    pub interval: Duration,
    /// The most orders one pass looks at.
    pub batch: u32,
    /// How long one question to the coordinator may take.
    pub call_timeout: Duration,
    /// The most re-placements running at once.
    pub max_replacing: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            interval: Duration::from_millis(1000),
            batch: 32,
            call_timeout: Duration::from_secs(5),
            max_replacing: 8,
        }
    }
}

/// The running reconciler; dropping it stops it.
#[derive(Debug)]
#[must_use = "the reconciler stops when this is dropped"]
pub struct Reconciler {
    task: JoinHandle<()>,
}

impl Drop for Reconciler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the reconciler on `state` (a Tokio runtime must be running).
pub fn spawn(state: AppState, settings: Settings) -> Reconciler {
    tracing::info!(
        interval_ms = settings.interval.as_millis(),
        batch = settings.batch,
        "reconciler started"
    );
    let task = tokio::spawn(async move {
        let mut walker = Walker::default();
        let mut ticks = tokio::time::interval(settings.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            walker.pass(&state, &settings).await;
        }
    });
    Reconciler { task }
}

/// The reconciler between passes: where the walk through the unsettled
/// orders stands, and the re-placements it started.
#[derive(Default)]
struct Walker {
    /// The id the next page starts after (`""`: from the first).
    cursor: String,
    replacing: JoinSet<()>,
}

impl Walker {
    async fn pass(&mut self, state: &AppState, settings: &Settings) {
        while self.replacing.try_join_next().is_some() {}
        let page = match state.db.unsettled_after(&self.cursor, settings.batch).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: listing unsettled orders failed");
                return;
            }
        };
        // A short page reached the end: the next pass starts from the first.
        self.cursor = match page.last() {
            Some(last) if page.len() >= settings.batch as usize => last.id.clone(),
            _ => String::new(),
        };
        for order in page {
            if !state.placing.contains(&order.id) {
                self.repair(state, settings, order).await;
            }
        }
    }

    async fn repair(&mut self, state: &AppState, settings: &Settings, order: Order) {
        let gid = transaction_gid(state.plant, &order);
        let answer = tokio::time::timeout(settings.call_timeout, state.client.get(&gid)).await;
        match answer {
            Ok(Ok(tx)) if tx.is_final() => match place::settle(state, &order.id, &tx, None).await {
                Ok(Placed::Settled(now) | Placed::Unsettled(now, _)) => {
                    tracing::info!(
                        order = order.id,
                        transaction = %tx.status,
                        was = order.status,
                        now = now.status,
                        reason = now.reason,
                        "reconciler: recorded the transaction's outcome on the order"
                    );
                }
                Err(e) => {
                    tracing::warn!(order = order.id, error = %e, "reconciler: settling failed");
                }
            },
            Ok(Err(ClientError::NotFound { .. })) if order.status == "new" => {
                if self.replacing.len() >= settings.max_replacing {
                    tracing::debug!(order = order.id, "reconciler: re-placements busy; later");
                    return;
                }
                tracing::info!(
                    order = order.id,
                    "reconciler: the coordinator has no transaction for this order; placing it again"
                );
                self.replacing.spawn(place::in_background(state, order));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(order = order.id, error = %e, "reconciler: no outcome yet");
            }
            Err(_) => {
                tracing::debug!(
                    order = order.id,
                    "reconciler: the coordinator did not answer in time"
                );
            }
        }
    }
}
