//! Transition tables of the state machine, one test per rule.
//!
//! Each test drives a [`Transaction`] with inputs and asserts the step it
//! returns. `call(b, op)` and friends keep the tables short.

use super::*;
use crate::state::BranchStatus as B;
use crate::state::Status as S;
use crate::test_support::*;
use crate::timing::Timing;
use crate::wire::Op::{Action as Act, Cancel, Compensate as Comp, Confirm};
use crate::wire::Reply::{Refused, StillWorking, Success, Unknown};

fn sequential(n: usize) -> T {
    T::new(Transaction::new_saga(
        (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect(),
    ))
}
/// A TCC transaction with `n` registered branches.
fn tcc(n: usize) -> T {
    let mut tx = T::new(Transaction::new_tcc());
    for _ in 0..n {
        tx.add_branch().unwrap();
    }
    tx
}

#[test]
fn saga_runs_actions_in_order_and_commits() {
    let mut tx = sequential(2);
    assert_eq!(tx.start().actions, vec![call(0, Act)]);
    // The outcome is logged, and the next action is sent only after it.
    let step = tx.reply(0, Act, Success);
    assert_eq!(branch_outcomes(&step), vec![(0, B::Succeeded)]);
    assert_eq!(step.actions, vec![call(1, Act)]);
    let step = tx.reply(1, Act, Success);
    assert_eq!(branch_outcomes(&step), vec![(1, B::Succeeded)]);
    assert_eq!(status_changes(&step), vec![S::Committed]);
    assert!(step.actions.is_empty());
    assert_eq!(tx.status(), S::Committed);
}

#[test]
fn saga_graph_runs_independent_branches_concurrently() {
    // c depends on a and b.
    let mut tx = T::new(Transaction::new_saga(vec![vec![], vec![], vec![0, 1]]));
    assert_eq!(tx.start().actions, vec![call(0, Act), call(1, Act)]);
    assert!(tx.reply(1, Act, Success).actions.is_empty());
    assert_eq!(tx.reply(0, Act, Success).actions, vec![call(2, Act)]);
}

#[test]
fn saga_refusal_compensates_in_reverse_order_including_the_refused_branch() {
    let mut tx = sequential(3);
    tx.start();
    tx.reply(0, Act, Success);
    tx.reply(1, Act, Success);
    let step = tx.reply(2, Act, Refused);
    assert_eq!(branch_outcomes(&step), vec![(2, B::Refused)]);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(2, Comp)]);
    assert_eq!(tx.reply(2, Comp, Success).actions, vec![call(1, Comp)]);
    assert_eq!(tx.reply(1, Comp, Success).actions, vec![call(0, Comp)]);
    let step = tx.reply(0, Comp, Success);
    assert_eq!(status_changes(&step), vec![S::Aborted]);
    assert_eq!(statuses(&tx), vec![B::RolledBack; 3]);
}

#[test]
fn saga_never_compensates_branches_that_never_started() {
    let mut tx = sequential(3);
    tx.start();
    let step = tx.reply(0, Act, Refused);
    assert_eq!(step.actions, vec![call(0, Comp)]);
    let step = tx.reply(0, Comp, Success);
    assert_eq!(status_changes(&step), vec![S::Aborted]);
    assert_eq!(statuses(&tx), vec![B::RolledBack, B::Pending, B::Pending]);
}

#[test]
fn unknown_answers_are_retried_never_read_as_failure() {
    let mut tx = sequential(1);
    tx.start();
    for reply in [Unknown, StillWorking, Unknown] {
        let step = tx.reply(0, Act, reply);
        assert!(step.actions.is_empty(), "nothing is sent before the timer");
        assert!(status_changes(&step).is_empty());
        assert_eq!(tx.waits(0), Some(Act));
        assert_eq!(tx.status(), S::Running);
        assert_eq!(tx.retry_due(0, Act).actions, vec![call(0, Act)]);
    }
    let step = tx.reply(0, Act, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
}

#[test]
fn timeout_never_triggers_compensation_before_the_deadline() {
    let mut tx = sequential(2);
    tx.tx = tx.tx.clone().with_timing(Timing {
        deadline_at_ms: 24 * 3_600_000,
        ..Timing::default()
    });
    tx.start();
    tx.reply(0, Act, Success);
    for _ in 0..50 {
        let step = tx.reply(1, Act, Unknown);
        assert!(
            step.actions
                .iter()
                .all(|a| !matches!(a, Action::Call { op: Comp, .. }))
        );
        tx.retry_due(1, Act);
    }
    assert_eq!(tx.status(), S::Running);
}

#[test]
fn saga_deadline_compensates_everything_that_may_have_run() {
    let mut tx = T::new(Transaction::new_saga(vec![vec![], vec![], vec![0]]));
    tx.start(); // a and b in flight
    tx.reply(0, Act, Success); // c in flight now
    tx.reply(1, Act, Unknown); // b waits for a retry
    let step = tx.deadline();
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    // b's retry is dropped and b is compensated at once; a waits for c,
    // whose action is still in flight.
    assert_eq!(step.actions, vec![call(1, Comp)]);
    assert_eq!(tx.waits(1), None, "the abandoned retry is gone");
    assert!(
        tx.poll_timeout().is_none_or(|t| t > tx.now_ms),
        "nothing else is due"
    );
    // c's late answer, whatever it is, leads to its compensation, then a's.
    assert_eq!(tx.reply(2, Act, Unknown).actions, vec![call(2, Comp)]);
    tx.reply(1, Comp, Success);
    assert_eq!(tx.reply(2, Comp, Success).actions, vec![call(0, Comp)]);
    let step = tx.reply(0, Comp, Success);
    assert_eq!(status_changes(&step), vec![S::Aborted]);
}

#[test]
fn compensation_is_retried_until_it_succeeds() {
    let mut tx = sequential(1);
    tx.start();
    tx.reply(0, Act, Refused);
    for reply in [Unknown, Refused, StillWorking] {
        assert!(tx.reply(0, Comp, reply).actions.is_empty());
        assert_eq!(tx.waits(0), Some(Comp));
        assert_eq!(tx.retry_due(0, Comp).actions, vec![call(0, Comp)]);
    }
    assert_eq!(
        status_changes(&tx.reply(0, Comp, Success)),
        vec![S::Aborted]
    );
}

#[test]
fn deadline_after_a_decision_changes_nothing() {
    let mut tx = sequential(1);
    tx.start();
    tx.reply(0, Act, Refused);
    assert_eq!(tx.deadline(), Step::default());
    let mut tx = tcc(1);
    tx.commit();
    assert_eq!(tx.deadline(), Step::default());
    assert_eq!(tx.status(), S::Committing);
}

#[test]
fn duplicate_and_stale_replies_are_ignored() {
    let mut tx = sequential(2);
    tx.start();
    tx.reply(0, Act, Success);
    let before = tx.clone();
    // A second answer to the same call, and an answer to a call never made.
    assert_eq!(tx.reply(0, Act, Success), Step::default());
    assert_eq!(tx.reply(1, Comp, Success), Step::default());
    assert_eq!(tx, before);
}

#[test]
#[should_panic(expected = "does not exist")]
fn a_reply_for_a_branch_out_of_range_is_a_driver_bug() {
    let mut tx = sequential(2);
    tx.start();
    tx.reply(7, Act, Success);
}

#[test]
fn recovered_running_saga_resends_the_frontier() {
    let mut tx = T::new(Transaction::recover(
        Mode::Saga,
        S::Running,
        vec![B::Succeeded, B::Pending, B::Pending],
        vec![vec![], vec![0], vec![1]],
    ));
    assert_eq!(tx.start().actions, vec![call(1, Act)]);
}

#[test]
fn recovered_aborting_saga_compensates_a_branch_that_may_have_been_sent() {
    // Sending is not logged: b may have been sent just before the crash.
    let mut tx = T::new(Transaction::recover(
        Mode::Saga,
        S::Aborting,
        vec![B::Succeeded, B::Pending, B::Pending],
        vec![vec![], vec![0], vec![1]],
    ));
    assert_eq!(tx.start().actions, vec![call(1, Comp)]);
    assert_eq!(tx.reply(1, Comp, Success).actions, vec![call(0, Comp)]);
    assert_eq!(
        status_changes(&tx.reply(0, Comp, Success)),
        vec![S::Aborted]
    );
    assert_eq!(
        statuses(&tx),
        vec![B::RolledBack, B::RolledBack, B::Pending]
    );
}

#[test]
fn tcc_open_waits_for_the_initiator() {
    let mut tx = tcc(2);
    assert_eq!(tx.start(), Step::default());
    assert_eq!(tx.status(), S::Open);
}

#[test]
fn tcc_commit_confirms_every_branch_concurrently() {
    let mut tx = tcc(2);
    let step = tx.commit();
    assert_eq!(status_changes(&step), vec![S::Committing]);
    assert_eq!(step.actions, vec![call(0, Confirm), call(1, Confirm)]);
    assert_eq!(
        tx.add_branch(),
        None,
        "no branch joins a decided transaction"
    );
    assert!(tx.reply(1, Confirm, Unknown).actions.is_empty());
    assert_eq!(tx.waits(1), Some(Confirm));
    assert_eq!(
        branch_outcomes(&tx.reply(0, Confirm, Success)),
        vec![(0, B::Committed)]
    );
    tx.retry_due(1, Confirm);
    let step = tx.reply(1, Confirm, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
}

#[test]
fn tcc_abort_and_deadline_cancel_every_branch() {
    for deadline in [false, true] {
        let mut tx = tcc(2);
        let step = if deadline { tx.deadline() } else { tx.abort() };
        assert_eq!(status_changes(&step), vec![S::Aborting]);
        assert_eq!(step.actions, vec![call(0, Cancel), call(1, Cancel)]);
        // A refused cancel is retried: phase two never gives up.
        assert!(tx.reply(0, Cancel, Refused).actions.is_empty());
        assert_eq!(tx.waits(0), Some(Cancel));
        tx.retry_due(0, Cancel);
        tx.reply(0, Cancel, Success);
        assert_eq!(
            status_changes(&tx.reply(1, Cancel, Success)),
            vec![S::Aborted]
        );
    }
}

#[test]
fn tcc_without_branches_finishes_at_once() {
    let mut tx = tcc(0);
    assert_eq!(
        status_changes(&tx.commit()),
        vec![S::Committing, S::Committed]
    );
    let mut tx = tcc(0);
    assert_eq!(status_changes(&tx.abort()), vec![S::Aborting, S::Aborted]);
}

#[test]
fn second_decision_is_ignored() {
    let mut tx = tcc(1);
    tx.commit();
    assert_eq!(tx.abort(), Step::default());
    assert_eq!(tx.status(), S::Committing);
}

#[test]
fn recovered_committing_tcc_confirms_what_is_left() {
    let mut tx = T::new(Transaction::recover(
        Mode::Tcc,
        S::Committing,
        vec![B::Committed, B::Committing, B::Pending],
        vec![],
    ));
    assert_eq!(tx.start().actions, vec![call(1, Confirm), call(2, Confirm)]);
}

#[test]
fn saga_ignores_commit_and_abort_requests() {
    let mut tx = sequential(1);
    tx.start();
    assert_eq!(tx.commit(), Step::default());
    assert_eq!(tx.abort(), Step::default());
}
