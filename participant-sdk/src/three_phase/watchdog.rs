//! The 3PC watchdog: one pass ([`ThreePhase::tick`]) finds the branches
//! that waited too long, asks the coordinator and carries out what the pure
//! [`timeout_rule`](super::timeout_rule) says; [`ThreePhase::spawn_watchdog`]
//! runs passes on a timer.

use super::rule::{CoordinatorReply, TimeoutVerdict, WaitReason, timeout_rule};
use super::transition::{Step, ms_of};
use super::{
    BranchState, DecidedBy, ThreePhase, ThreePhaseDatabase, ThreePhaseError, ThreePhaseHooks,
};
use crate::answer::BranchAnswer;
use crate::client::{ClientError, DecisionSource};
use crate::context::BranchContext;
use crate::op::BranchOp;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Branches looked at per state and pass; the next pass takes the rest.
const BATCH: i64 = 100;

/// What the watchdog did with one branch in doubt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogAction {
    /// The transaction.
    pub gid: String,
    /// The branch.
    pub branch_id: String,
    /// The state it had waited in.
    pub from: BranchState,
    /// What happened.
    pub outcome: WatchdogOutcome,
}

/// The outcome of a [`WatchdogAction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogOutcome {
    /// Committed, on this authority.
    Committed(DecidedBy),
    /// Aborted, on this authority.
    Aborted(DecidedBy),
    /// Left as it was, for this reason (pending decision, `Wait` rule, an
    /// error asking the coordinator).
    Waiting(String),
    /// A call changed the branch while the coordinator was being asked;
    /// nothing was done.
    Overtaken,
    /// The decision could not be carried out (a hook refused, a database
    /// error); the next pass tries again.
    Failed(String),
}

/// A running watchdog task. It stops when this is dropped, after the pass
/// in progress, if any; [`stop`](Self::stop) also waits for that.
#[derive(Debug)]
#[must_use = "the watchdog stops when this is dropped"]
pub struct Watchdog {
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Stops the watchdog and waits until its task has ended.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl<DB: ThreePhaseDatabase, B: ThreePhaseHooks> ThreePhase<DB, B> {
    /// Starts a task that runs [`tick`](Self::tick) every
    /// [`check_interval`](super::ThreePhaseConfig::check_interval), asking
    /// `source` (the service's [`Client`](crate::Client)). Errors of a pass
    /// are logged and the next pass tries again.
    pub fn spawn_watchdog<S: DecisionSource + 'static>(&self, source: S) -> Watchdog {
        let (stop, mut stopped) = watch::channel(false);
        let participant = self.clone();
        let task = tokio::spawn(async move {
            let mut timer = tokio::time::interval(participant.inner.config.check_interval);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stopped.changed() => break,
                    _ = timer.tick() => {}
                }
                if let Err(error) = participant.tick(&source, SystemTime::now()).await {
                    tracing::error!(%error, "3PC watchdog pass failed; trying again next time");
                }
            }
        });
        Watchdog {
            stop,
            task: Some(task),
        }
    }

    /// One watchdog pass at time `now`: every branch unchanged in
    /// `voted_yes` since `now - uncertain_timeout`, or in `pre_committed`
    /// since `now - precommit_timeout`, asks the coordinator and does what
    /// [`timeout_rule`] says (see the [module
    /// documentation](super)). Tests drive the clock through `now`.
    pub async fn tick<S: DecisionSource>(
        &self,
        source: &S,
        now: SystemTime,
    ) -> Result<Vec<WatchdogAction>, ThreePhaseError> {
        let config = &self.inner.config;
        let now_ms = ms_of(now);
        let mut actions = Vec::new();
        for (state, timeout) in [
            (BranchState::VotedYes, config.uncertain_timeout),
            (BranchState::PreCommitted, config.precommit_timeout),
        ] {
            let before = ms_of(now.checked_sub(timeout).unwrap_or(SystemTime::UNIX_EPOCH));
            let stuck = DB::stuck(&self.inner.pool, state.as_str(), before, BATCH).await?;
            for (gid, branch_id, updated_at_ms) in stuck {
                let waited =
                    Duration::from_millis(u64::try_from(now_ms - updated_at_ms).unwrap_or(0));
                let outcome = self.resolve(source, &gid, &branch_id, state, waited).await;
                actions.push(WatchdogAction {
                    gid,
                    branch_id,
                    from: state,
                    outcome,
                });
            }
        }
        Ok(actions)
    }

    async fn resolve<S: DecisionSource>(
        &self,
        source: &S,
        gid: &str,
        branch_id: &str,
        from: BranchState,
        waited: Duration,
    ) -> WatchdogOutcome {
        let answer = source.decision(gid).await;
        let reply = CoordinatorReply::of(&answer);
        let (step, by) = match timeout_rule(from, waited, &self.inner.config, reply) {
            TimeoutVerdict::Commit(by) => (Step::ResolveCommit, by),
            TimeoutVerdict::Abort(by) => (Step::Abort, by),
            TimeoutVerdict::Wait(reason) => {
                let why = match (&answer, reason) {
                    (Ok(_), _) => "the coordinator has not decided".to_owned(),
                    (Err(error), WaitReason::WaitRuleWhenUnreachable) => {
                        tracing::warn!(gid, branch = branch_id, %error,
                            "3PC branch pre-committed and the coordinator is unreachable; waiting");
                        format!("coordinator unreachable: {error}")
                    }
                    (Err(error), WaitReason::CoordinatorUndecided) => {
                        // 503 (its database is down), 425, 5xx: it is there
                        // and will decide; anything else (404, a bad URL, an
                        // answer that failed verification) needs a person,
                        // so say it louder.
                        if matches!(
                            error,
                            ClientError::Unavailable { .. } | ClientError::Unexpected { .. }
                        ) {
                            tracing::info!(gid, branch = branch_id, %error,
                                "3PC branch in doubt: the coordinator answered without a decision; asking again later");
                        } else {
                            tracing::error!(gid, branch = branch_id, %error,
                                "3PC watchdog cannot get a decision from the coordinator (not a network failure); waiting");
                        }
                        format!("the coordinator answered without a decision: {error}")
                    }
                    (Err(error), _) => format!("coordinator unreachable: {error}"),
                };
                return WatchdogOutcome::Waiting(why);
            }
        };
        let op = if step == Step::Abort {
            BranchOp::Abort
        } else {
            BranchOp::DoCommit
        };
        let ctx = BranchContext::new(gid, branch_id, op);
        match self.apply(step, &ctx, None, by, Some(from)).await {
            Ok(None) => WatchdogOutcome::Overtaken,
            Ok(Some(BranchAnswer::Success(_))) => {
                let outcome = if step == Step::Abort {
                    WatchdogOutcome::Aborted(by)
                } else {
                    WatchdogOutcome::Committed(by)
                };
                // The timeout rule decides alone: that is what a checker
                // must be able to find, so say it loudly.
                if by == DecidedBy::TimeoutRule {
                    tracing::warn!(
                        gid,
                        branch = branch_id,
                        from = from.as_str(),
                        ?outcome,
                        "3PC branch decided by the timeout rule (coordinator unreachable)"
                    );
                } else {
                    tracing::info!(
                        gid,
                        branch = branch_id,
                        from = from.as_str(),
                        ?outcome,
                        "3PC branch decided by the coordinator's answer"
                    );
                }
                outcome
            }
            Ok(Some(other)) => WatchdogOutcome::Failed(format!("{other:?}")),
            Err(error) => WatchdogOutcome::Failed(error.to_string()),
        }
    }
}
