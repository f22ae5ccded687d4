//! The simulated 3PC participant: the SDK's state table (see
//! `participant-sdk/src/three_phase/mod.rs`) and its watchdog's timeout
//! rule. A branch that voted yes, or pre-committed, and then hears nothing
//! asks the coordinator for its decision (here: read from the store, as the
//! decision endpoint does) and follows it; only when the coordinator cannot
//! be reached (a partition the seed drew) does it decide alone: voted yes →
//! abort, pre-committed → commit.

use std::sync::Arc;
use std::time::Duration;

use dtx_protocol::{Decision, Op};
use dtx_tests::harness::checker::ViolationKind;
use rand::Rng;

use super::invariants::Kind;
use super::participants::{DecidedBy, Handled, Held, Key, Participant, Problems};
use super::world::{Planted, Sim};

/// How often a participant in doubt asks again after `pending` or a 503.
const ASK_AGAIN: Duration = Duration::from_secs(1);

impl Participant {
    /// One call of the coordinator, by the SDK's table.
    pub(crate) fn three_phase(
        &mut self,
        op: Op,
        barrier_off: bool,
        problems: &mut Problems,
    ) -> Handled {
        let doubt = |wait| Handled {
            in_doubt_for: Some(wait),
            ..Handled::status(200)
        };
        match (op, self.held) {
            (Op::CanCommit, Held::Nothing) => {
                if self.behaviour.refuses {
                    self.set_held(Held::Undone);
                    Handled::status(409)
                } else {
                    self.set_held(Held::Prepared);
                    doubt(self.behaviour.uncertain_timeout)
                }
            }
            (Op::CanCommit, Held::Prepared | Held::PreCommitted | Held::Committed) => {
                Handled::status(200)
            }
            (Op::CanCommit, _) => Handled::status(409),
            (Op::PreCommit, Held::Prepared) => {
                if self.behaviour.refuses_pre_commit {
                    self.set_held(Held::Undone);
                    Handled::status(409)
                } else {
                    self.set_held(Held::PreCommitted);
                    self.took_effect("pre_commit", problems);
                    doubt(self.behaviour.precommit_timeout)
                }
            }
            (Op::PreCommit, Held::PreCommitted) => {
                if barrier_off {
                    self.took_effect("pre_commit", problems);
                }
                Handled::status(200)
            }
            (Op::PreCommit, Held::Committed) => Handled::status(200),
            // Never voted here, or aborted already (suspension).
            (Op::PreCommit, _) => Handled::status(409),
            (Op::DoCommit, Held::PreCommitted) => {
                self.settle(true, DecidedBy::Coordinator, problems);
                Handled::status(200)
            }
            (Op::DoCommit, Held::Committed) => {
                if barrier_off {
                    self.took_effect("do_commit", problems);
                }
                Handled::status(200)
            }
            // Aborted by its own rule while the coordinator committed: the
            // end of the run judges it (a partition's divergence or not).
            (Op::DoCommit, Held::Undone) => Handled::status(409),
            (Op::DoCommit, _) => {
                problems.push((
                    Kind::Harness(ViolationKind::ConfirmWithoutTry),
                    format!("do_commit in state {:?}", self.held),
                ));
                Handled::status(409)
            }
            (Op::Abort, Held::Nothing | Held::Prepared | Held::PreCommitted) => {
                if self.held == Held::Nothing {
                    // A null abort: a can_commit arriving later is refused.
                    self.set_held(Held::Undone);
                    self.decided_by = Some(DecidedBy::Coordinator);
                } else {
                    self.settle(false, DecidedBy::Coordinator, problems);
                }
                Handled::status(200)
            }
            (Op::Abort, Held::Undone) => Handled::status(200),
            // Committed by its own rule while the coordinator aborted.
            (Op::Abort, Held::Committed) => Handled::status(409),
            (op, _) => {
                problems.push((
                    Kind::WrongOperation,
                    format!("{op} sent to a 3pc participant"),
                ));
                Handled::status(400)
            }
        }
    }

    /// Commits or aborts from a state in doubt, on `by`'s authority.
    pub(crate) fn settle(&mut self, commit: bool, by: DecidedBy, problems: &mut Problems) {
        match (commit, self.held) {
            (true, Held::Prepared) => {
                // From voted-yes the pre-commit's work runs first.
                self.took_effect("pre_commit", problems);
                self.took_effect("do_commit", problems);
                self.set_held(Held::Committed);
            }
            (true, Held::PreCommitted) => {
                self.took_effect("do_commit", problems);
                self.set_held(Held::Committed);
            }
            (false, Held::Prepared) => self.set_held(Held::Undone),
            (false, Held::PreCommitted) => {
                self.took_effect("abort", problems);
                self.set_held(Held::Undone);
            }
            _ => return,
        }
        self.decided_by = Some(by);
    }
}

/// What the termination query got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    /// The coordinator answered with its decision.
    Answered(Decision),
    /// The coordinator answered 503: its database is down.
    Unavailable,
    /// No answer: the participant is cut off.
    Unreachable,
}

/// Starts the watchdog of participant `key`, which went into doubt (its
/// state now has `version`) for `wait`.
pub fn arm_watchdog(sim: &Arc<Sim>, key: Key, version: u64, wait: Duration) {
    let sim = sim.clone();
    tokio::spawn(async move { watchdog(sim, key, version, wait).await });
}

async fn watchdog(sim: Arc<Sim>, key: Key, version: u64, wait: Duration) {
    tokio::time::sleep(wait).await;
    loop {
        let (held, cut_off) = {
            let participants = sim.participants.lock().unwrap();
            let Some(p) = participants.get(&key) else {
                return;
            };
            if p.version != version {
                return; // a call moved it on meanwhile
            }
            (p.held, p.cut_off(tokio::time::Instant::now()))
        };
        let asked = if cut_off {
            Asked::Unreachable
        } else if sim.faults_on() && sim.draw(|r| r.random_bool(sim.rates.decision_503)) {
            Asked::Unavailable
        } else {
            Asked::Answered(Decision::of(sim.store.get(&key.0).map(|r| r.status)))
        };
        // "The coordinator answered: not yet" is not "unreachable", and
        // neither is a 503; the planted bug (the SDK's defect 7) confuses
        // them.
        let unreachable = asked == Asked::Unreachable
            || (asked == Asked::Unavailable
                && sim.planted == Some(Planted::ThreePcUnreachableOn503));
        let verdict = if unreachable {
            match held {
                Held::Prepared => Some((false, DecidedBy::TimeoutRule)),
                Held::PreCommitted => Some((true, DecidedBy::TimeoutRule)),
                _ => return,
            }
        } else {
            match asked {
                Asked::Answered(Decision::Commit) => Some((true, DecidedBy::Coordinator)),
                Asked::Answered(Decision::Abort) => Some((false, DecidedBy::Coordinator)),
                _ => None,
            }
        };
        sim.trace(format!(
            "participant {}/{} in doubt ({held:?}) asked: {asked:?} -> {verdict:?}",
            key.0, key.1
        ));
        if let Some((commit, by)) = verdict {
            let mut problems = Vec::new();
            if let Some(p) = sim.participants.lock().unwrap().get_mut(&key) {
                p.settle(commit, by, &mut problems);
            }
            sim.report(&key, problems);
            return;
        }
        tokio::time::sleep(ASK_AGAIN).await;
    }
}
