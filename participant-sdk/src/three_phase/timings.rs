//! [`CoordinatorTimings`]: the coordinator settings that bound how long it
//! may take to decide, which the 3PC participant's timeouts must outlast.

use std::time::Duration;

/// The coordinator settings a 3PC participant's timeouts depend on (see
/// [Choosing the timeouts](super#choosing-the-timeouts)). [`Default`] is the
/// coordinator's own defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorTimings {
    /// The transactions' `options.deadline_ms`: past it, a transaction still
    /// collecting votes or pre-commit acks is aborted.
    pub deadline: Duration,
    /// `dtx serve --lease-ms`: how long a crashed coordinator's transactions
    /// wait before another coordinator may take them over.
    pub lease: Duration,
    /// `dtx serve --claim-interval-ms`: how often coordinators look for
    /// such transactions.
    pub claim_interval: Duration,
}

impl Default for CoordinatorTimings {
    /// `deadline_ms` 60 000 ([`TxOptions::default`](crate::TxOptions)),
    /// `--lease-ms` 10 000, `--claim-interval-ms` 2 000.
    fn default() -> Self {
        CoordinatorTimings {
            deadline: Duration::from_secs(60),
            lease: Duration::from_secs(10),
            claim_interval: Duration::from_secs(2),
        }
    }
}

impl CoordinatorTimings {
    /// The longest a transaction may go without a logged decision, counted
    /// from its registration, when coordinators only crash: the deadline,
    /// plus the time to take over from a coordinator that crashed just
    /// before it (lease + claim interval).
    pub fn longest_decision_delay(&self) -> Duration {
        self.deadline + self.lease + self.claim_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::three_phase::ThreePhaseConfig;

    #[test]
    fn the_default_timeouts_outlast_the_coordinators_default_decision_delay() {
        let coordinator = CoordinatorTimings::default();
        assert_eq!(
            coordinator.longest_decision_delay(),
            Duration::from_secs(72)
        );
        assert!(ThreePhaseConfig::default().follows_rule(&coordinator));
        // Either timeout too short breaks the rule.
        let short = Duration::from_secs(72);
        assert!(
            !ThreePhaseConfig::default()
                .uncertain_timeout(short)
                .follows_rule(&coordinator)
        );
        assert!(
            !ThreePhaseConfig::default()
                .precommit_timeout(short)
                .follows_rule(&coordinator)
        );
    }
}
