//! Transition tables of 2PC, one test per rule.

use crate::machine::Transaction;
use crate::state::BranchStatus as B;
use crate::state::Status as S;
use crate::step::Step;
use crate::test_support::*;
use crate::wire::Op::{Commit, Prepare, Rollback};
use crate::wire::Reply::{ReadOnly, Refused, StillWorking, Success, Unknown};

#[test]
fn prepare_goes_to_every_branch_at_once() {
    let mut tx = T::new(Transaction::new_two_phase(3));
    let step = tx.start();
    assert_eq!(
        step.actions,
        vec![call(0, Prepare), call(1, Prepare), call(2, Prepare)]
    );
    assert!(step.history.is_empty(), "sending is not logged");
    assert_eq!(statuses(&tx), vec![B::Preparing; 3]);
}

#[test]
fn all_yes_logs_the_commit_decision_then_commits_every_branch() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    let step = tx.reply(0, Prepare, Success);
    assert_eq!(branch_outcomes(&step), vec![(0, B::Prepared)]);
    assert!(
        step.actions.is_empty(),
        "no decision while a vote is missing"
    );
    let step = tx.reply(1, Prepare, Success);
    // The decision is in the same step's history, so it is durable before
    // the commits are sent.
    assert_eq!(status_changes(&step), vec![S::Committing]);
    assert_eq!(step.actions, vec![call(0, Commit), call(1, Commit)]);
    tx.reply(0, Commit, Success);
    let step = tx.reply(1, Commit, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
    assert_eq!(statuses(&tx), vec![B::Committed; 2]);
}

#[test]
fn read_only_branches_take_no_part_in_phase_two() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    let step = tx.reply(0, Prepare, ReadOnly);
    assert_eq!(branch_outcomes(&step), vec![(0, B::ReadOnly)]);
    let step = tx.reply(1, Prepare, Success);
    assert_eq!(step.actions, vec![call(1, Commit)]);
    let step = tx.reply(1, Commit, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
    assert_eq!(statuses(&tx), vec![B::ReadOnly, B::Committed]);
}

#[test]
fn all_read_only_commits_without_phase_two() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    tx.reply(0, Prepare, ReadOnly);
    let step = tx.reply(1, Prepare, ReadOnly);
    assert_eq!(status_changes(&step), vec![S::Committed]);
    assert!(step.actions.is_empty());
}

#[test]
fn a_no_vote_rolls_back_every_branch_that_may_have_prepared() {
    let mut tx = T::new(Transaction::new_two_phase(3));
    tx.start();
    tx.reply(0, Prepare, Success);
    tx.reply(1, Prepare, ReadOnly);
    let step = tx.reply(2, Prepare, Refused);
    assert_eq!(branch_outcomes(&step), vec![(2, B::Refused)]);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    // The refused branch too (an earlier lost answer may hide a prepare);
    // never the read-only one.
    assert_eq!(step.actions, vec![call(0, Rollback), call(2, Rollback)]);
    tx.reply(0, Rollback, Success);
    let step = tx.reply(2, Rollback, Success);
    assert_eq!(status_changes(&step), vec![S::Aborted]);
    assert_eq!(
        statuses(&tx),
        vec![B::RolledBack, B::ReadOnly, B::RolledBack]
    );
}

#[test]
fn unknown_votes_are_asked_again_until_the_deadline() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    for reply in [Unknown, StillWorking] {
        let step = tx.reply(0, Prepare, reply);
        assert!(step.actions.is_empty());
        assert!(status_changes(&step).is_empty());
        assert_eq!(tx.waits(0), Some(Prepare));
        assert_eq!(tx.retry_due(0, Prepare).actions, vec![call(0, Prepare)]);
    }
    assert_eq!(tx.status(), S::Preparing, "an unknown vote is never a no");
}

#[test]
fn deadline_with_a_vote_missing_aborts() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    tx.reply(0, Prepare, Success);
    tx.reply(1, Prepare, Unknown); // now in backoff
    let step = tx.deadline();
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(0, Rollback), call(1, Rollback)]);
    // The abandoned retry never fires a prepare.
    assert_eq!(tx.waits(1), None, "the abandoned retry is gone");
    assert!(
        tx.poll_timeout().is_none_or(|t| t > tx.now_ms),
        "nothing else is due"
    );
}

#[test]
fn rollback_waits_for_an_outstanding_prepare() {
    let mut tx = T::new(Transaction::new_two_phase(2));
    tx.start();
    let step = tx.deadline();
    assert!(step.actions.is_empty(), "both prepares are still in flight");
    // A late yes after the abort: the branch is prepared, so it is rolled back.
    let step = tx.reply(0, Prepare, Success);
    assert_eq!(step.actions, vec![call(0, Rollback)]);
    let step = tx.reply(1, Prepare, Unknown);
    assert_eq!(step.actions, vec![call(1, Rollback)]);
}

#[test]
fn phase_two_is_retried_until_acknowledged_and_the_deadline_changes_nothing() {
    let mut tx = T::new(Transaction::new_two_phase(1));
    tx.start();
    tx.reply(0, Prepare, Success);
    for reply in [Unknown, Refused, StillWorking] {
        assert!(tx.reply(0, Commit, reply).actions.is_empty());
        assert_eq!(tx.waits(0), Some(Commit));
        // The clock is at or past the deadline: nothing changes but the
        // retry, which is sent once it is due.
        let step = tx.deadline();
        assert!(status_changes(&step).is_empty());
        if step.actions.is_empty() {
            tx.retry_due(0, Commit);
        } else {
            assert_eq!(step.actions, vec![call(0, Commit)]);
        }
    }
    let step = tx.reply(0, Commit, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
}

#[test]
fn recovery_without_a_decision_asks_for_the_votes_again() {
    // Presumed abort: no decision record, so nothing committed; the
    // coordinator may ask again (prepare is idempotent) until the deadline.
    let mut tx = T::new(Transaction::recover(
        crate::Mode::TwoPhase,
        S::Preparing,
        vec![B::Prepared, B::Pending],
        vec![],
    ));
    assert_eq!(tx.start().actions, vec![call(1, Prepare)]);
}

#[test]
fn recovery_after_the_decision_carries_it_out() {
    let mut tx = T::new(Transaction::recover(
        crate::Mode::TwoPhase,
        S::Committing,
        vec![B::Committed, B::Committing, B::ReadOnly],
        vec![],
    ));
    assert_eq!(tx.start().actions, vec![call(1, Commit)]);
    let mut tx = T::new(Transaction::recover(
        crate::Mode::TwoPhase,
        S::Aborting,
        vec![B::Pending, B::Refused, B::ReadOnly],
        vec![],
    ));
    // A pending branch may have been sent its prepare before the crash.
    assert_eq!(
        tx.start().actions,
        vec![call(0, Rollback), call(1, Rollback)]
    );
}

#[test]
fn two_phase_ignores_initiator_commit_and_abort() {
    let mut tx = T::new(Transaction::new_two_phase(1));
    tx.start();
    assert_eq!(tx.commit(), Step::default());
    assert_eq!(tx.abort(), Step::default());
}
