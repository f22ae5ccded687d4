//! Availability under faults, measured from what the workload's clients were
//! told and when, against the faults the nemesis carried out: per fault, the
//! rate of completed orders during it against the healthy rate before the
//! first fault, the longest stretch without a completed order around it, and
//! how long after its end the full rate came back; per fault kind, the rate
//! over all its strikes and the worst of the other figures, judged against
//! the kind's target. Pure functions of those two
//! lists; `scenario` calls [`measure`] and the report shows the result.
//!
//! Definitions (the numbers in the report mean exactly this):
//! - **completed order**: an attempt whose client was told its order settled,
//!   confirmed or cancelled ([`completed`]). A cancellation (the scarce
//!   product ran out, or a branch refused) is the system working: the client
//!   got a final answer.
//! - **healthy rate**: completed orders per second from [`WARM_UP_MS`] (the
//!   clients' first requests open connections and warm caches) to the first
//!   fault's start. One reference for every strike of the run: later strikes
//!   may follow each other with no healthy stretch in between.
//! - **rate during**: completed orders per second from a fault's start to its
//!   end (the node back: started and answering, resumed, reconnected).
//! - **longest gap**: the longest time between two consecutive completed
//!   orders (or the workload's start or end) that overlaps the fault or the
//!   [`RECOVERY_GRACE_MS`] after it, since a restarted node can cost a stall
//!   of its own just after it is back.
//! - **time to full rate**: from the fault's end to the start of the first
//!   [`FULL_RATE_WINDOW_MS`] window whose rate is at least [`FULL_RATE`] of
//!   the healthy rate. The search runs to the end of the workload, across a
//!   later fault if one comes first: a figure that large says the system was
//!   not back before the next fault. `None`: not back within the run.
//! - **per kind**: the rate during the fault is the kind's completed orders
//!   over the total time its strikes lasted (a single strike of a few
//!   seconds loses the work in flight on the node struck, a fixed cost that
//!   a short strike cannot average out, and its rate is a count of a few
//!   dozen orders); the lowest strike's ratio is reported beside it. The
//!   gap and the return to full rate are the worst strike's, since those
//!   targets must hold for every strike.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::checker::OrderStatus;
use super::cluster::Node;
use super::nemesis::{AppliedFault, FaultKind};
use super::workload::{Attempt, Told};

/// The start of the workload left out of the healthy rate.
pub const WARM_UP_MS: u64 = 1000;
/// How long after a fault's end a gap still counts as the fault's.
pub const RECOVERY_GRACE_MS: u64 = 5000;
/// The width of the sliding window that decides the rate is back.
pub const FULL_RATE_WINDOW_MS: u64 = 2000;
/// The fraction of the healthy rate that counts as the full rate: the
/// closed-loop clients' rate varies by a few percent from second to second.
pub const FULL_RATE: f64 = 0.9;
/// How far the full-rate window slides at a time.
const STEP_MS: u64 = 50;

/// How long the SDK client takes to notice a coordinator that stopped
/// answering and send requests to another (a probe interval plus a probe
/// timeout; the order service keeps the SDK's defaults): the
/// coordinator-fault targets follow from it.
pub const CLIENT_FAILOVER: Duration = dtx_sdk::client::DEFAULT_FAILOVER_TIME;

/// Whether a client was told its order completed: settled either way.
pub fn completed(attempt: &Attempt) -> bool {
    matches!(
        attempt.told,
        Told::Settled(OrderStatus::Confirmed | OrderStatus::Cancelled)
    )
}

/// What one fault kind must keep; see the module's definitions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Target {
    /// During the fault, at least this fraction of the healthy rate.
    pub min_ratio: Option<f64>,
    /// No gap longer than this, in milliseconds.
    pub max_gap_ms: Option<u64>,
    /// The full rate comes back within the run.
    pub back_to_full_rate: bool,
}

impl Target {
    /// One coordinator of two killed, paused past its lease or cut off
    /// (issue 16): clients fail over to the other, so at most the work in
    /// flight on the lost one is delayed.
    pub fn coordinator_loss() -> Target {
        Target {
            min_ratio: Some(0.8),
            max_gap_ms: Some(CLIENT_FAILOVER.as_millis() as u64 + 1000),
            back_to_full_rate: false,
        }
    }

    /// The PostgreSQL primary lost, with `failover` the time the replicated
    /// setup takes to promote a replica (issue 16).
    pub fn primary_loss(failover: Duration) -> Target {
        Target {
            min_ratio: None,
            max_gap_ms: Some(failover.as_millis() as u64 + 5000),
            back_to_full_rate: true,
        }
    }

    /// The target of `kind`, where issue 16 sets one; other kinds' figures
    /// are reported only.
    pub fn for_kind(kind: FaultKind) -> Option<Target> {
        match kind {
            FaultKind::KillCoordinator
            | FaultKind::PauseCoordinator
            | FaultKind::PartitionCoordinator => Some(Target::coordinator_loss()),
            _ => None,
        }
    }

    /// Each way `figures` falls short of this target, in words; empty: met.
    pub fn misses(&self, figures: &KindAvailability) -> Vec<String> {
        let mut misses = Vec::new();
        if let Some(min) = self.min_ratio {
            match figures.ratio {
                Some(ratio) if ratio >= min => {}
                Some(ratio) => misses.push(format!(
                    "{:.0}% of the healthy rate during the fault, below {:.0}%",
                    ratio * 100.0,
                    min * 100.0
                )),
                None => misses.push("no healthy rate to compare with".into()),
            }
        }
        if let Some(max) = self.max_gap_ms
            && figures.longest_gap_ms > max
        {
            misses.push(format!(
                "a gap of {:.1} s without a completed order, over {:.1} s",
                figures.longest_gap_ms as f64 / 1000.0,
                max as f64 / 1000.0
            ));
        }
        if self.back_to_full_rate && figures.to_full_rate_ms.is_none() {
            misses.push("the full rate did not come back within the run".into());
        }
        misses
    }

    /// The target in words, for the report.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(min) = self.min_ratio {
            parts.push(format!("≥ {:.0}% of healthy", min * 100.0));
        }
        if let Some(max) = self.max_gap_ms {
            parts.push(format!("gap ≤ {:.1} s", max as f64 / 1000.0));
        }
        if self.back_to_full_rate {
            parts.push("then full rate".into());
        }
        parts.join(", ")
    }
}

/// The figures of one fault as it struck.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Strike {
    /// The fault's kind.
    pub kind: FaultKind,
    /// The node it hit.
    pub target: Node,
    /// When it began and ended, in milliseconds from the workload's start.
    pub began_ms: u64,
    /// See `began_ms`.
    pub ended_ms: u64,
    /// Orders completed from its start to its end.
    pub completed: usize,
    /// Those per second.
    pub rate: f64,
    /// `rate` over the healthy rate; `None` when there was no healthy rate.
    pub ratio: Option<f64>,
    /// The longest gap without a completed order overlapping the fault or
    /// the grace after it, in milliseconds.
    pub longest_gap_ms: u64,
    /// From its end to full rate, in milliseconds; `None`: not within the run.
    pub to_full_rate_ms: Option<u64>,
}

/// The figures of one fault kind: its rate over all its strikes, the worst
/// strike's other figures, and its target.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindAvailability {
    /// The kind.
    pub kind: FaultKind,
    /// How many times it struck.
    pub strikes: usize,
    /// Completed orders per second before the first fault (the run's).
    pub healthy_rate: f64,
    /// Completed orders per second during its strikes, all together.
    pub rate_during: f64,
    /// `rate_during` against the healthy rate.
    pub ratio: Option<f64>,
    /// The lowest ratio of a single strike's rate to the healthy rate.
    pub worst_strike_ratio: Option<f64>,
    /// The longest gap of any strike, in milliseconds.
    pub longest_gap_ms: u64,
    /// The slowest return to full rate; `None` when a strike's never came.
    pub to_full_rate_ms: Option<u64>,
    /// What the kind must keep, if issue 16 sets a target for it.
    pub target: Option<Target>,
    /// How the figures fall short of the target; empty: met, or no target.
    pub misses: Vec<String>,
}

impl KindAvailability {
    /// Whether the target was met; `None` when the kind has none.
    pub fn met(&self) -> Option<bool> {
        self.target.map(|_| self.misses.is_empty())
    }
}

/// A run's availability figures.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Availability {
    /// Where the healthy rate was measured, in milliseconds from the
    /// workload's start.
    pub healthy_from_ms: u64,
    /// See `healthy_from_ms`.
    pub healthy_to_ms: u64,
    /// Completed orders per second there.
    pub healthy_rate: f64,
    /// When the workload stopped, in milliseconds from its start.
    pub workload_ms: u64,
    /// Every fault, in order.
    pub strikes: Vec<Strike>,
    /// Per fault kind, its figures.
    pub kinds: Vec<KindAvailability>,
}

impl Availability {
    /// The figures of `kind`, if it struck.
    pub fn kind(&self, kind: FaultKind) -> Option<&KindAvailability> {
        self.kinds.iter().find(|k| k.kind == kind)
    }
}

/// Measures availability from `attempts` and `faults` (both timed from the
/// workload's start, faults in order) of a workload that ran `workload_ms`;
/// `target` gives each kind's target (normally [`Target::for_kind`]).
pub fn measure(
    attempts: &[Attempt],
    faults: &[AppliedFault],
    workload_ms: u64,
    target: impl Fn(FaultKind) -> Option<Target>,
) -> Availability {
    let mut done: Vec<u64> = attempts
        .iter()
        .filter(|a| completed(a))
        .map(|a| a.at_ms)
        .collect();
    done.sort_unstable();
    let healthy_to_ms = faults
        .iter()
        .map(|f| f.began_ms)
        .min()
        .unwrap_or(workload_ms);
    let healthy_from_ms = WARM_UP_MS.min(healthy_to_ms);
    let healthy_rate = rate(&done, healthy_from_ms, healthy_to_ms);
    let strikes: Vec<Strike> = faults
        .iter()
        .map(|f| strike(&done, f, healthy_rate, workload_ms))
        .collect();
    let mut by_kind: BTreeMap<FaultKind, Vec<&Strike>> = BTreeMap::new();
    for s in &strikes {
        by_kind.entry(s.kind).or_default().push(s);
    }
    let kinds = by_kind
        .into_iter()
        .map(|(kind, strikes)| per_kind(kind, &strikes, healthy_rate, target(kind)))
        .collect();
    Availability {
        healthy_from_ms,
        healthy_to_ms,
        healthy_rate,
        workload_ms,
        strikes,
        kinds,
    }
}

/// Completed orders in `[from, to)`; `done` is sorted.
fn count(done: &[u64], from: u64, to: u64) -> usize {
    done.partition_point(|&t| t < to)
        .saturating_sub(done.partition_point(|&t| t < from))
}

/// Completed orders per second in `[from, to)`; 0 for an empty span.
fn rate(done: &[u64], from: u64, to: u64) -> f64 {
    if to <= from {
        return 0.0;
    }
    count(done, from, to) as f64 * 1000.0 / (to - from) as f64
}

fn strike(done: &[u64], fault: &AppliedFault, healthy: f64, workload_ms: u64) -> Strike {
    let (began, ended) = (fault.began_ms, fault.ended_ms.max(fault.began_ms));
    // A fault that took no time (it failed at once) has no rate of its own.
    let during = rate(done, began, ended.max(began + 1));
    Strike {
        kind: fault.planned.kind,
        target: fault.planned.target,
        began_ms: began,
        ended_ms: ended,
        completed: count(done, began, ended),
        rate: during,
        ratio: (healthy > 0.0).then(|| during / healthy),
        longest_gap_ms: longest_gap(done, began, ended + RECOVERY_GRACE_MS, workload_ms),
        to_full_rate_ms: to_full_rate(done, ended, healthy, workload_ms),
    }
}

/// The longest stretch between consecutive completions (the workload's
/// start and end bound the first and last) that overlaps `[from, to]`.
pub fn longest_gap(done: &[u64], from: u64, to: u64, workload_ms: u64) -> u64 {
    let end = workload_ms.max(done.last().copied().unwrap_or(0));
    std::iter::once(0)
        .chain(done.iter().copied())
        .zip(done.iter().copied().chain(std::iter::once(end)))
        .filter(|&(a, b)| a <= to && b >= from)
        .map(|(a, b)| b - a)
        .max()
        .unwrap_or(0)
}

/// From `ended` to the start of the first full-rate window; see the module.
pub fn to_full_rate(done: &[u64], ended: u64, healthy: f64, workload_ms: u64) -> Option<u64> {
    let needed = FULL_RATE * healthy * FULL_RATE_WINDOW_MS as f64 / 1000.0;
    let mut start = ended;
    while start + FULL_RATE_WINDOW_MS <= workload_ms {
        if count(done, start, start + FULL_RATE_WINDOW_MS) as f64 >= needed {
            return Some(start - ended);
        }
        start += STEP_MS;
    }
    None
}

fn per_kind(
    kind: FaultKind,
    strikes: &[&Strike],
    healthy_rate: f64,
    target: Option<Target>,
) -> KindAvailability {
    let completed: usize = strikes.iter().map(|s| s.completed).sum();
    let lasted_ms: u64 = strikes
        .iter()
        .map(|s| s.ended_ms.saturating_sub(s.began_ms))
        .sum();
    let rate_during = if lasted_ms == 0 {
        0.0
    } else {
        completed as f64 * 1000.0 / lasted_ms as f64
    };
    let mut figures = KindAvailability {
        kind,
        strikes: strikes.len(),
        healthy_rate,
        rate_during,
        ratio: (healthy_rate > 0.0).then(|| rate_during / healthy_rate),
        worst_strike_ratio: strikes
            .iter()
            .map(|s| s.ratio)
            .collect::<Option<Vec<f64>>>()
            .map(|r| r.into_iter().fold(f64::INFINITY, f64::min)),
        longest_gap_ms: strikes.iter().map(|s| s.longest_gap_ms).max().unwrap_or(0),
        to_full_rate_ms: strikes
            .iter()
            .map(|s| s.to_full_rate_ms)
            .collect::<Option<Vec<u64>>>()
            .map(|t| t.into_iter().max().unwrap_or(0)),
        target,
        misses: Vec::new(),
    };
    figures.misses = target.map(|t| t.misses(&figures)).unwrap_or_default();
    figures
}

/// Completed orders in each second of the workload, for the timeline.
pub fn per_second(attempts: &[Attempt], workload_ms: u64) -> Vec<usize> {
    let mut seconds = vec![0; workload_ms.div_ceil(1000) as usize];
    for a in attempts.iter().filter(|a| completed(a)) {
        if let Some(n) = seconds.get_mut((a.at_ms / 1000) as usize) {
            *n += 1;
        }
    }
    seconds
}

#[cfg(test)]
#[path = "availability_tests.rs"]
mod tests;
