//! The 3PC participant's timeout rule as a pure function, [`timeout_rule`]:
//! what a branch in doubt does, given its state, how long it has waited and
//! what the coordinator answered. The watchdog applies it; the deterministic
//! simulation reuses it for its simulated participants.

use super::{BranchState, DecidedBy, OnUnreachable, ThreePhaseConfig};
use crate::client::{ClientError, Decision, DecisionAnswer};
use std::time::Duration;

/// What came back when the participant asked the coordinator for the
/// decision (the termination query).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordinatorReply {
    /// The coordinator decided commit.
    Commit,
    /// The coordinator decided abort (or has no record of the transaction:
    /// presumed abort).
    Abort,
    /// The coordinator answered, but not with a decision: `pending`, 503
    /// (its database is down), 425, any other HTTP status, a body this SDK
    /// cannot read, or an answer that failed verification against the
    /// coordinator's keys ([`ClientError::UnverifiedDecision`]). Something
    /// is there and has not told us anything we may act on: keep waiting
    /// and ask again. This is never "unreachable".
    NoDecision,
    /// No answer at all: connection refused, no answer in time, a name that
    /// does not resolve. Only this lets the timeout rule fire.
    NoAnswer,
}

impl CoordinatorReply {
    /// Classifies the result of [`DecisionSource::decision`](crate::client::DecisionSource::decision).
    ///
    /// An error counts as [`NoAnswer`](Self::NoAnswer) only when
    /// [`ClientError::is_unreachable`] says so; every other error (an HTTP
    /// error status, a bad URL in the configuration) is
    /// [`NoDecision`](Self::NoDecision): deciding alone needs proof that the
    /// coordinator is gone, and an answer proves the opposite.
    pub fn of(result: &Result<DecisionAnswer, ClientError>) -> CoordinatorReply {
        match result {
            Ok(answer) => match answer.decision {
                Decision::Commit => CoordinatorReply::Commit,
                Decision::Abort => CoordinatorReply::Abort,
                Decision::Pending => CoordinatorReply::NoDecision,
            },
            Err(error) if error.is_unreachable() => CoordinatorReply::NoAnswer,
            Err(_) => CoordinatorReply::NoDecision,
        }
    }
}

/// What [`timeout_rule`] tells a branch to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutVerdict {
    /// Commit (from `voted_yes`, run the pre-commit hook first), on this
    /// authority.
    Commit(DecidedBy),
    /// Abort, on this authority.
    Abort(DecidedBy),
    /// Change nothing, for this reason; ask again on a later pass.
    Wait(WaitReason),
}

/// Why [`timeout_rule`] says to wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WaitReason {
    /// The branch is final already: there is nothing to decide.
    Final,
    /// The coordinator answered without a decision (see
    /// [`CoordinatorReply::NoDecision`]).
    CoordinatorUndecided,
    /// The coordinator gave no answer, but the branch has not waited its
    /// timeout yet.
    NotTimedOut,
    /// The branch pre-committed, the coordinator gave no answer, and the
    /// configuration says [`OnUnreachable::Wait`].
    WaitRuleWhenUnreachable,
}

/// The 3PC participant's rule for a branch in `state` that has heard
/// nothing from the coordinator for `waited`, and just asked it for the
/// decision and got `reply`:
///
/// | `reply` | `voted_yes` | `pre_committed` |
/// |---|---|---|
/// | `Commit` | commit (coordinator) | commit (coordinator) |
/// | `Abort` | abort (coordinator) | abort (coordinator) |
/// | `NoDecision` | wait | wait |
/// | `NoAnswer`, `waited` < timeout | wait | wait |
/// | `NoAnswer`, `waited` ≥ timeout | **abort** (timeout rule) | **commit** (timeout rule), or wait with [`OnUnreachable::Wait`] |
///
/// The timeout is [`uncertain_timeout`](ThreePhaseConfig::uncertain_timeout)
/// in `voted_yes` and [`precommit_timeout`](ThreePhaseConfig::precommit_timeout)
/// in `pre_committed`. A final state (`committed`, `aborted`) always waits
/// ([`WaitReason::Final`]). The coordinator's decision is followed whatever
/// the time: it is the authority, and the timeout only bounds how long the
/// branch trusts silence.
pub fn timeout_rule(
    state: BranchState,
    waited: Duration,
    config: &ThreePhaseConfig,
    reply: CoordinatorReply,
) -> TimeoutVerdict {
    let timeout = match state {
        BranchState::VotedYes => config.uncertain_timeout,
        BranchState::PreCommitted => config.precommit_timeout,
        BranchState::Committed | BranchState::Aborted => {
            return TimeoutVerdict::Wait(WaitReason::Final);
        }
    };
    match reply {
        CoordinatorReply::Commit => TimeoutVerdict::Commit(DecidedBy::Coordinator),
        CoordinatorReply::Abort => TimeoutVerdict::Abort(DecidedBy::Coordinator),
        // A 503 means the coordinator's database is down: the decision may
        // be about to be logged, or already logged and unreadable. Deciding
        // alone here is how one participant commits while another aborts
        // with no partition at all, so an answer of any kind means wait.
        CoordinatorReply::NoDecision => TimeoutVerdict::Wait(WaitReason::CoordinatorUndecided),
        CoordinatorReply::NoAnswer if waited < timeout => {
            TimeoutVerdict::Wait(WaitReason::NotTimedOut)
        }
        CoordinatorReply::NoAnswer => match (state, config.on_unreachable) {
            // Nobody can have committed: the coordinator commits only after
            // every branch acknowledged its pre-commit, and this one did not.
            (BranchState::VotedYes, _) => TimeoutVerdict::Abort(DecidedBy::TimeoutRule),
            // Everyone voted yes; the classic rule commits.
            (_, OnUnreachable::Commit) => TimeoutVerdict::Commit(DecidedBy::TimeoutRule),
            (_, OnUnreachable::Wait) => TimeoutVerdict::Wait(WaitReason::WaitRuleWhenUnreachable),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use BranchState::{Aborted, Committed, PreCommitted, VotedYes};
    use CoordinatorReply::{Abort, Commit, NoAnswer, NoDecision};
    use DecidedBy::{Coordinator, TimeoutRule};
    use TimeoutVerdict as V;
    use WaitReason as W;

    #[test]
    fn the_rule_table() {
        let commit_rule = ThreePhaseConfig::default()
            .uncertain_timeout(Duration::from_secs(90))
            .precommit_timeout(Duration::from_secs(120));
        let wait_rule = commit_rule.clone().on_unreachable(OnUnreachable::Wait);
        let s = Duration::from_secs;
        #[rustfmt::skip]
        let table: &[(BranchState, Duration, &ThreePhaseConfig, CoordinatorReply, TimeoutVerdict)] = &[
            // The coordinator's decision is followed, whenever it comes.
            (VotedYes,     s(0),   &commit_rule, Commit,     V::Commit(Coordinator)),
            (VotedYes,     s(500), &commit_rule, Abort,      V::Abort(Coordinator)),
            (PreCommitted, s(500), &commit_rule, Commit,     V::Commit(Coordinator)),
            (PreCommitted, s(0),   &wait_rule,   Abort,      V::Abort(Coordinator)),
            // An answer without a decision (pending, 503, 425, ...) is
            // never a reason to decide alone, however long the wait.
            (VotedYes,     s(500), &commit_rule, NoDecision, V::Wait(W::CoordinatorUndecided)),
            (PreCommitted, s(500), &commit_rule, NoDecision, V::Wait(W::CoordinatorUndecided)),
            (PreCommitted, s(500), &wait_rule,   NoDecision, V::Wait(W::CoordinatorUndecided)),
            // No answer before the timeout: wait.
            (VotedYes,     s(89),  &commit_rule, NoAnswer,   V::Wait(W::NotTimedOut)),
            (PreCommitted, s(119), &commit_rule, NoAnswer,   V::Wait(W::NotTimedOut)),
            (PreCommitted, s(100), &commit_rule, NoAnswer,   V::Wait(W::NotTimedOut)),
            // No answer at or past the timeout: the classic rules.
            (VotedYes,     s(90),  &commit_rule, NoAnswer,   V::Abort(TimeoutRule)),
            (VotedYes,     s(90),  &wait_rule,   NoAnswer,   V::Abort(TimeoutRule)),
            (PreCommitted, s(120), &commit_rule, NoAnswer,   V::Commit(TimeoutRule)),
            (PreCommitted, s(500), &wait_rule,   NoAnswer,   V::Wait(W::WaitRuleWhenUnreachable)),
            // Final states have nothing to decide.
            (Committed,    s(500), &commit_rule, NoAnswer,   V::Wait(W::Final)),
            (Aborted,      s(500), &commit_rule, Commit,     V::Wait(W::Final)),
        ];
        for (i, &(state, waited, config, reply, expected)) in table.iter().enumerate() {
            assert_eq!(
                timeout_rule(state, waited, config, reply),
                expected,
                "row {i}: {state:?} after {waited:?}, coordinator {reply:?}"
            );
        }
    }

    #[test]
    fn only_no_answer_at_all_is_no_answer() {
        let answer = |decision| Ok(DecisionAnswer::new("g", decision));
        assert_eq!(CoordinatorReply::of(&answer(Decision::Commit)), Commit);
        assert_eq!(CoordinatorReply::of(&answer(Decision::Abort)), Abort);
        assert_eq!(CoordinatorReply::of(&answer(Decision::Pending)), NoDecision);
        for error in [
            ClientError::Unavailable {
                detail: "the database is down".into(),
            },
            ClientError::Unexpected {
                status: 425,
                detail: String::new(),
            },
            ClientError::Unexpected {
                status: 500,
                detail: String::new(),
            },
            ClientError::NotFound {
                detail: "no such route".into(),
            },
            ClientError::Config("bad URL".into()),
            // Something answered, if not the coordinator: counting it as
            // no answer would let a forger fire the timeout rule.
            ClientError::UnverifiedDecision {
                gid: "g".into(),
                source: crate::signature::DecisionSignatureError::Unsigned,
            },
        ] {
            assert_eq!(CoordinatorReply::of(&Err(error)), NoDecision);
        }
    }

    #[test]
    fn an_unverified_answer_never_fires_the_timeout_rule() {
        let config = ThreePhaseConfig::default();
        let unverified = CoordinatorReply::of(&Err(ClientError::UnverifiedDecision {
            gid: "g".into(),
            source: crate::signature::DecisionSignatureError::Mismatch,
        }));
        for state in [VotedYes, PreCommitted] {
            assert_eq!(
                timeout_rule(state, Duration::from_secs(86_400), &config, unverified),
                V::Wait(W::CoordinatorUndecided),
                "{state:?}"
            );
        }
    }
}
