//! Rules of time in the core: no phase-one call after the decision, retry
//! backoff per operation, steady polling of "still working", the operator
//! flag and its window, the sparse failure log, and when to wake up.

use super::*;
use crate::state::BranchStatus as B;
use crate::state::Status as S;
use crate::step::AttentionReason;
use crate::test_support::*;
use crate::timing::Timing;
use crate::wire::Op::{Abort, Action as Act, CanCommit, Compensate as Comp, Confirm, PreCommit};
use crate::wire::Reply::{Refused, StillWorking, Success, Unknown};

/// Two saga branches that depend on nothing.
fn independent_pair() -> T {
    T::new(Transaction::new_saga(vec![vec![], vec![]]))
}

fn attention_records(step: &Step) -> Vec<(usize, AttentionReason)> {
    step.history
        .iter()
        .filter_map(|h| match h {
            HistoryRecord::Attention { branch, reason, .. } => Some((*branch, *reason)),
            _ => None,
        })
        .collect()
}

fn failures_logged(step: &Step) -> usize {
    step.history
        .iter()
        .filter(|h| matches!(h, HistoryRecord::CallFailed { .. }))
        .count()
}

#[test]
fn a_refusal_drops_another_branch_waiting_to_retry_its_action() {
    // Seen in review: `a` answers 500 once, `b` answers 409; the saga aborted
    // and then `a`'s action was sent again.
    let mut tx = independent_pair();
    assert_eq!(tx.start().actions, vec![call(0, Act), call(1, Act)]);
    assert!(tx.reply(0, Act, Unknown).actions.is_empty());
    assert_eq!(tx.waits(0), Some(Act));
    let step = tx.reply(1, Act, Refused);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    // `a` may have run, so it is compensated at once, with `b`.
    assert_eq!(step.actions, vec![call(0, Comp), call(1, Comp)]);
    assert_eq!(tx.waits(0), None);
    // However long we wait, no action leaves again.
    tx.now_ms += 3_600_000;
    let now = Now::at(tx.now_ms);
    assert!(tx.tx.handle_timeout(now).actions.is_empty());
}

#[test]
fn a_no_vote_drops_another_branch_waiting_to_ask_can_commit_again() {
    let mut tx = T::new(Transaction::new_three_phase(2));
    tx.start();
    tx.reply(0, CanCommit, Unknown);
    let step = tx.reply(1, CanCommit, Refused);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(0, Abort), call(1, Abort)]);
    assert_eq!(tx.waits(0), None);
}

#[test]
fn a_refused_pre_commit_drops_another_branch_waiting_to_pre_commit() {
    // The worst case: a PreCommit sent after `aborting` is logged can make a
    // participant commit by its timeout rule while the others abort.
    let mut tx = T::new(Transaction::new_three_phase(2));
    tx.start();
    tx.reply(0, CanCommit, Success);
    let step = tx.reply(1, CanCommit, Success);
    assert_eq!(step.actions, vec![call(0, PreCommit), call(1, PreCommit)]);
    tx.reply(0, PreCommit, Unknown);
    assert_eq!(tx.waits(0), Some(PreCommit));
    let step = tx.reply(1, PreCommit, Refused);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(0, Abort), call(1, Abort)]);
    tx.now_ms += 3_600_000;
    let now = Now::at(tx.now_ms);
    assert!(tx.tx.handle_timeout(now).actions.is_empty());
}

#[test]
fn still_working_is_polled_at_a_steady_interval_and_logged_once() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![]]));
    tx.start();
    tx.reply(0, Act, Unknown);
    tx.retry_due(0, Act);
    let mut logged = 0;
    for _ in 0..20 {
        let at = tx.now_ms;
        let step = tx.reply(0, Act, StillWorking);
        logged += failures_logged(&step);
        assert_eq!(
            tx.poll_timeout(),
            Some(at + 1_000),
            "the poll interval, every time"
        );
        tx.retry_due(0, Act);
    }
    assert_eq!(logged, 1, "one history entry for a run of 425s");
    assert_eq!(tx.status(), S::Running);
}

#[test]
fn still_working_never_counts_towards_the_operators_window() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![]]));
    tx.start();
    tx.reply(0, Act, Refused);
    // The compensation is still working for an hour: alive, not failing.
    for _ in 0..3_600 {
        let step = tx.reply(0, Comp, StillWorking);
        assert!(attention_records(&step).is_empty());
        tx.retry_due(0, Comp);
    }
    assert!(!tx.flagged());
}

#[test]
fn failures_of_an_action_do_not_carry_over_to_its_compensation() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![]]));
    tx.tx = tx.tx.clone().with_timing(Timing {
        deadline_at_ms: 24 * 3_600_000,
        ..Timing::default()
    });
    tx.start();
    for _ in 0..10 {
        tx.reply(0, Act, Unknown);
        tx.retry_due(0, Act);
    }
    tx.reply(0, Act, Refused);
    let at = tx.now_ms;
    tx.reply(0, Comp, Unknown);
    // The first retry of the compensation waits the first backoff (200 ms
    // with jitter in the middle: 150), not the tenth.
    assert_eq!(tx.poll_timeout(), Some(at + 150));
}

#[test]
fn a_failing_phase_two_call_flags_once_after_the_window() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![]]));
    tx.start();
    tx.reply(0, Act, Refused);
    let first_failure = tx.now_ms;
    let mut flags = vec![];
    while tx.now_ms < first_failure + 1_200_000 {
        flags.extend(
            attention_records(&tx.reply(0, Comp, Unknown))
                .into_iter()
                .map(|f| (tx.now_ms, f)),
        );
        tx.retry_due(0, Comp);
    }
    assert_eq!(flags.len(), 1, "{flags:?}");
    let (at, (branch, reason)) = flags[0];
    assert_eq!(branch, 0);
    assert!(at - first_failure >= 600_000, "not before the window");
    assert!(matches!(reason, AttentionReason::FailingFor { ms } if ms >= 600_000));
    assert!(tx.flagged());
}

#[test]
fn a_refused_phase_two_call_flags_at_once() {
    let mut tx = T::new(Transaction::new_tcc());
    tx.add_branch();
    tx.commit();
    let step = tx.reply(0, Confirm, Refused);
    assert_eq!(
        attention_records(&step),
        vec![(0, AttentionReason::Refused)]
    );
    assert_eq!(tx.waits(0), Some(Confirm), "and it is retried");
}

#[test]
fn the_window_survives_a_restart() {
    // Logged: branch 0's compensation has failed since time 0.
    let recovered = Transaction::recover(
        crate::Mode::Saga,
        S::Aborting,
        vec![B::RollingBack],
        vec![vec![]],
    )
    .with_attention_state(false, &[Some(0)]);
    let mut tx = T::new(recovered);
    tx.now_ms = 700_000;
    assert_eq!(tx.start().actions, vec![call(0, Comp)]);
    let step = tx.reply(0, Comp, Unknown);
    assert!(matches!(
        attention_records(&step)[..],
        [(0, AttentionReason::FailingFor { ms: 700_000 })]
    ));
    // A flag already logged is not raised again.
    let recovered = Transaction::recover(
        crate::Mode::Saga,
        S::Aborting,
        vec![B::RollingBack],
        vec![vec![]],
    )
    .with_attention_state(true, &[Some(0)]);
    let mut tx = T::new(recovered);
    tx.now_ms = 700_000;
    tx.start();
    assert!(attention_records(&tx.reply(0, Comp, Unknown)).is_empty());
}

#[test]
fn failures_are_logged_sparsely() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![]]));
    tx.start();
    tx.reply(0, Act, Refused);
    let mut logged = 0;
    for _ in 0..1_000 {
        logged += failures_logged(&tx.reply(0, Comp, Unknown));
        tx.retry_due(0, Comp);
    }
    // Attempts 1, 2, 4, …, 512.
    assert_eq!(logged, 10);
}

#[test]
fn poll_timeout_names_the_deadline_and_the_earliest_retry() {
    let mut tx = independent_pair();
    tx.start();
    assert_eq!(
        tx.poll_timeout(),
        Some(60_000),
        "the deadline, in phase one"
    );
    tx.reply(0, Act, Unknown);
    assert_eq!(tx.poll_timeout(), Some(150));
    tx.retry_due(0, Act);
    tx.reply(0, Act, Success);
    tx.reply(1, Act, Success);
    assert_eq!(tx.status(), S::Committed);
    assert_eq!(tx.poll_timeout(), None);
    // After the decision the deadline no longer wakes anyone.
    let mut tx = independent_pair();
    tx.start();
    tx.reply(0, Act, Refused);
    assert_eq!(tx.poll_timeout(), None, "only answers move it now");
}
