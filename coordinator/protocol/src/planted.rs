//! Defects that were fixed, kept as switches that only test builds can turn
//! on, so that the simulation proves it would find each of them again.
//!
//! A production build has no way to turn one on: [`Planted`] exists only in
//! test builds, and without it every switch reads "off".

/// A defect the simulation must be able to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Bug {
    /// Issue 11, defect 1: a decision (a refusal, the deadline) leaves
    /// another branch's phase-one retry waiting, which then fires after the
    /// decision is logged.
    DecisionKeepsPhaseOneRetry,
    /// Issue 11, defect 9: a "still working" answer counts as a failure
    /// (growing backoff, the operator's window).
    StillWorkingIsAFailure,
    /// Issue 11, defect 9: the failures of an action carry over to its
    /// compensation, whose first retry then waits far too long.
    FailuresCarryOver,
    /// A saga recovered in `aborting` forgets that a pending branch whose
    /// dependencies succeeded may have been sent just before the crash, and
    /// never compensates it.
    ForgetMaybeSentOnRecovery,
}

/// The set of defects switched on for one transaction.
#[cfg(test)]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Planted(Vec<Bug>);

#[cfg(test)]
impl Planted {
    /// Exactly `bugs`.
    pub(crate) fn of(bugs: &[Bug]) -> Planted {
        Planted(bugs.to_vec())
    }

    /// Whether `bug` is switched on.
    pub(crate) fn has(&self, bug: Bug) -> bool {
        self.0.contains(&bug)
    }
}
