//! Which coordinator a request goes to: the health of each endpoint (up, or
//! down and skipped until a probe finds it ready again), how long a down
//! one waits before it is probed again, and the order in which one request
//! tries the endpoints. Pure: time is an argument and nothing here does IO,
//! so every rule is unit-tested below.

use std::time::Duration;
use tokio::time::Instant;

/// How long a coordinator that failed is skipped before it is probed again:
/// `initial` after the first failure, doubling with every failed probe up
/// to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Backoff {
    pub(super) initial: Duration,
    pub(super) max: Duration,
}

impl Backoff {
    /// The pause after `failures` failures in a row (at least one).
    pub(super) fn after(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.initial
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// What the client believes of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// Answering: requests go here in turn.
    Up,
    /// Failed `failures` times in a row; skipped while there is an endpoint
    /// that is up, and probed again from `until` on.
    Down { failures: u32, until: Instant },
}

impl Health {
    pub(super) fn is_up(&self) -> bool {
        matches!(self, Health::Up)
    }

    /// A request to it got no answer or a 503. An endpoint already down
    /// keeps its backoff: requests that were in flight together and fail
    /// together are one failure, not many, and only the prober, which asks
    /// one question at a time, makes the backoff grow.
    pub(super) fn request_failed(self, now: Instant, backoff: Backoff) -> Health {
        match self {
            Health::Up => Health::Down {
                failures: 1,
                until: now + backoff.after(1),
            },
            down @ Health::Down { .. } => down,
        }
    }

    /// A readiness probe failed: down, and skipped twice as long as the
    /// last time if it was down already.
    pub(super) fn probe_failed(self, now: Instant, backoff: Backoff) -> Health {
        let failures = match self {
            Health::Up => 1,
            Health::Down { failures, .. } => failures.saturating_add(1),
        };
        Health::Down {
            failures,
            until: now + backoff.after(failures),
        }
    }

    /// Whether the prober should ask it now: an endpoint that is up, at every
    /// probe interval; one that is down, once its pause is over.
    pub(super) fn probe_due(&self, now: Instant) -> bool {
        match self {
            Health::Up => true,
            Health::Down { until, .. } => now >= *until,
        }
    }
}

/// The order in which one request tries the endpoints, as indices into
/// `health`: the `prefer`red endpoint first if it is up (the coordinator a
/// transaction was registered with, for the requests that follow), then
/// every endpoint that is up, in turn from `cursor` (round-robin, so
/// registrations spread over the healthy coordinators), then every endpoint
/// that is down, the one probed again soonest first. Each appears once: a
/// request never goes twice to the same coordinator, and every coordinator
/// gets its chance before the request fails.
pub(super) fn plan(health: &[Health], cursor: usize, prefer: Option<usize>) -> Vec<usize> {
    let prefer = prefer.filter(|&p| health.get(p).is_some_and(Health::is_up));
    let mut up: Vec<usize> = (0..health.len())
        .filter(|&i| health[i].is_up() && Some(i) != prefer)
        .collect();
    if !up.is_empty() {
        let turn = cursor % up.len();
        up.rotate_left(turn);
    }
    let mut down: Vec<(Instant, usize)> = health
        .iter()
        .enumerate()
        .filter_map(|(i, h)| match h {
            Health::Down { until, .. } => Some((*until, i)),
            Health::Up => None,
        })
        .collect();
    down.sort();
    prefer
        .into_iter()
        .chain(up)
        .chain(down.into_iter().map(|(_, i)| i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_secs(2),
        max: Duration::from_secs(10),
    };

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let pauses: Vec<Duration> = (1..=6).map(|n| BACKOFF.after(n)).collect();
        assert_eq!(
            pauses,
            [secs(2), secs(4), secs(8), secs(10), secs(10), secs(10)]
        );
        assert_eq!(BACKOFF.after(0), secs(2), "a zero count reads as the first");
        assert_eq!(BACKOFF.after(u32::MAX), secs(10), "no overflow");
    }

    #[test]
    fn a_failed_request_takes_an_endpoint_down_once() {
        let now = Instant::now();
        let down = Health::Up.request_failed(now, BACKOFF);
        assert_eq!(
            down,
            Health::Down {
                failures: 1,
                until: now + secs(2)
            }
        );
        // Its neighbours in flight failing a moment later change nothing.
        let later = now + Duration::from_millis(300);
        assert_eq!(down.request_failed(later, BACKOFF), down);
    }

    #[test]
    fn failed_probes_lengthen_the_pause_and_an_answer_ends_it() {
        let now = Instant::now();
        let first = Health::Up.probe_failed(now, BACKOFF);
        assert_eq!(
            first,
            Health::Down {
                failures: 1,
                until: now + secs(2)
            }
        );
        let t2 = now + secs(2);
        let second = first.probe_failed(t2, BACKOFF);
        assert_eq!(
            second,
            Health::Down {
                failures: 2,
                until: t2 + secs(4)
            }
        );
        assert!(!second.probe_due(t2 + secs(3)));
        assert!(second.probe_due(t2 + secs(4)));
        assert!(
            Health::Up.probe_due(now),
            "an endpoint that is up is probed at every tick"
        );
    }

    #[test]
    fn requests_take_the_healthy_endpoints_in_turn() {
        let all_up = [Health::Up; 3];
        let firsts: Vec<usize> = (0..6).map(|c| plan(&all_up, c, None)[0]).collect();
        assert_eq!(firsts, [0, 1, 2, 0, 1, 2]);
        assert_eq!(plan(&all_up, 1, None), [1, 2, 0], "every endpoint, once");
    }

    #[test]
    fn down_endpoints_come_last_soonest_probe_first() {
        let now = Instant::now();
        let health = [
            Health::Down {
                failures: 3,
                until: now + secs(8),
            },
            Health::Up,
            Health::Down {
                failures: 1,
                until: now + secs(2),
            },
            Health::Up,
        ];
        assert_eq!(plan(&health, 0, None), [1, 3, 2, 0]);
        assert_eq!(plan(&health, 1, None), [3, 1, 2, 0]);
        let all_down = [health[0], health[2]];
        assert_eq!(
            plan(&all_down, 7, None),
            [1, 0],
            "all down: all tried anyway"
        );
    }

    #[test]
    fn the_preferred_endpoint_goes_first_only_while_it_is_up() {
        let now = Instant::now();
        let down = Health::Down {
            failures: 1,
            until: now + secs(2),
        };
        let health = [Health::Up, Health::Up, down];
        assert_eq!(plan(&health, 0, Some(1)), [1, 0, 2]);
        assert_eq!(plan(&health, 1, Some(1)), [1, 0, 2]);
        assert_eq!(
            plan(&health, 0, Some(2)),
            [0, 1, 2],
            "a down preference is not honoured"
        );
        assert_eq!(
            plan(&health, 0, Some(9)),
            [0, 1, 2],
            "an index no longer there is ignored"
        );
    }

    #[test]
    fn no_endpoints_no_plan() {
        assert!(plan(&[], 3, Some(0)).is_empty());
    }
}
