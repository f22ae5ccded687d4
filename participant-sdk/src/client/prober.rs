//! The prober: one background task per client that asks each coordinator's
//! `GET /readyz` (open, and it checks the coordinator's store) every probe
//! interval with a short timeout, marks endpoints up or down, and resolves
//! host names again when they are due.
//!
//! A coordinator that is paused (a long GC-like stall, SIGSTOP) or cut off
//! by a partition accepts connections, or lets them hang, and never
//! answers; requests to it would each wait for their whole timeout. The
//! prober notices within the probe interval plus the probe timeout, and a
//! probe that gets no answer abandons the requests in flight to that
//! coordinator (see `failover`), which is what bounds the client's failover
//! time ([`Client::failover_time`](super::Client::failover_time)). A
//! coordinator that answers its probe with another status than 200 (503:
//! its store is down) is skipped too, but the requests in flight to it are
//! left to get their own answer: it is there, and a 503 fails over anyway,
//! while abandoning them would hide that a coordinator answered (the 3PC
//! timeout rule acts only when none did).
//!
//! The task holds only a weak reference to the client's directory, so it
//! ends when the last clone of the [`Client`](super::Client) is dropped.

use super::endpoints::{Directory, Endpoint};
use super::health::Backoff;
use reqwest::StatusCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

/// Probes and resolves until the directory is gone.
pub(super) async fn run(directory: Weak<Directory>) {
    let Some(settings) = directory.upgrade().map(|d| d.settings) else {
        return;
    };
    let mut timer = tokio::time::interval(settings.probe_interval);
    timer.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Probes and lookups run beside the ticks, so that one coordinator that
    // hangs never delays the probes of the others.
    let mut tasks = JoinSet::new();
    loop {
        timer.tick().await;
        while tasks.try_join_next().is_some() {}
        let Some(directory) = directory.upgrade() else {
            break;
        };
        let now = Instant::now();
        if directory.resolution_due(now) && !directory.resolving.swap(true, Ordering::AcqRel) {
            let directory = directory.clone();
            tasks.spawn(async move {
                let _resolving = Busy(&directory.resolving);
                directory.resolve_due().await;
            });
        }
        let endpoints = directory.endpoints();
        // With one endpoint there is nothing to choose between: every
        // request goes to it whatever a probe says.
        if endpoints.len() > 1 {
            for endpoint in endpoints {
                if endpoint.health().probe_due(now)
                    && !endpoint.probing.swap(true, Ordering::AcqRel)
                {
                    tasks.spawn(probe(endpoint, settings.probe_timeout, settings.backoff));
                }
            }
        }
        // Not held across the wait: the client may be dropped meanwhile.
        drop(directory);
    }
}

/// Clears a flag when the work it marks ends, even when the task is
/// aborted (its runtime shut down), so that a later prober is not locked
/// out.
struct Busy<'a>(&'a AtomicBool);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// What a probe found.
enum Probe {
    /// `/readyz` answered 200.
    Ready,
    /// It answered something else (503: its store is down): not ready, but
    /// there, and it answers requests too (with a 503, which fails over).
    Answered(StatusCode),
    /// No answer in time, or no connection.
    Silent(String),
}

/// One probe of `endpoint`.
async fn probe(endpoint: Arc<Endpoint>, timeout: Duration, backoff: Backoff) {
    let _probing = Busy(&endpoint.probing);
    match ask(&endpoint, timeout).await {
        Probe::Ready => endpoint.answered(),
        Probe::Answered(status) => {
            endpoint.probe_failed(backoff, &format!("/readyz answered {status}"), false);
        }
        Probe::Silent(why) => endpoint.probe_failed(backoff, &why, true),
    }
}

/// Asks `GET /readyz`, waiting at most `timeout`.
async fn ask(endpoint: &Endpoint, timeout: Duration) -> Probe {
    let url = match endpoint.url("readyz") {
        Ok(url) => url,
        Err(e) => return Probe::Silent(e.to_string()),
    };
    let asked = async {
        let response = match endpoint.http.get(url).timeout(timeout).send().await {
            Ok(response) => response,
            Err(e) => return Probe::Silent(e.to_string()),
        };
        let status = response.status();
        // Read to the end, so the connection can be used again.
        let _ = response.bytes().await;
        if status == StatusCode::OK {
            Probe::Ready
        } else {
            Probe::Answered(status)
        }
    };
    // The request's own timeout covers the body too; this one also covers a
    // client whose connector ignores it.
    tokio::time::timeout(timeout, asked)
        .await
        .unwrap_or_else(|_| Probe::Silent(format!("/readyz gave no answer within {timeout:?}")))
}
