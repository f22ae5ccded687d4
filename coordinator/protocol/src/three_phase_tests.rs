//! Transition tables of 3PC, one test per rule.

use crate::machine::Transaction;
use crate::state::BranchStatus as B;
use crate::state::Status as S;
use crate::test_support::*;
use crate::wire::Op::{Abort, CanCommit, DoCommit, PreCommit};
use crate::wire::Reply::{Refused, StillWorking, Success, Unknown};

/// A 3PC transaction of `n` branches that every branch voted yes on.
fn pre_committing(n: usize) -> T {
    let mut tx = T::new(Transaction::new_three_phase(n));
    tx.start();
    for i in 0..n {
        tx.reply(i, CanCommit, Success);
    }
    assert_eq!(tx.status(), S::PreCommitting);
    tx
}

#[test]
fn three_phases_in_order_each_decision_logged_before_its_calls() {
    let mut tx = T::new(Transaction::new_three_phase(2));
    assert_eq!(
        tx.start().actions,
        vec![call(0, CanCommit), call(1, CanCommit)]
    );
    assert!(tx.reply(0, CanCommit, Success).actions.is_empty());
    let step = tx.reply(1, CanCommit, Success);
    assert_eq!(status_changes(&step), vec![S::PreCommitting]);
    assert_eq!(step.actions, vec![call(0, PreCommit), call(1, PreCommit)]);
    let step = tx.reply(0, PreCommit, Success);
    assert_eq!(branch_outcomes(&step), vec![(0, B::PreCommitted)]);
    assert!(step.actions.is_empty(), "DoCommit waits for every ack");
    let step = tx.reply(1, PreCommit, Success);
    assert_eq!(status_changes(&step), vec![S::Committing]);
    assert_eq!(step.actions, vec![call(0, DoCommit), call(1, DoCommit)]);
    tx.reply(0, DoCommit, Success);
    let step = tx.reply(1, DoCommit, Success);
    assert_eq!(status_changes(&step), vec![S::Committed]);
    assert_eq!(statuses(&tx), vec![B::Committed; 2]);
}

#[test]
fn a_no_vote_aborts_every_branch() {
    let mut tx = T::new(Transaction::new_three_phase(3));
    tx.start();
    tx.reply(0, CanCommit, Success);
    let step = tx.reply(1, CanCommit, Refused);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    // Branch 2's vote is still in flight: it is told once that call ends.
    assert_eq!(step.actions, vec![call(0, Abort), call(1, Abort)]);
    let step = tx.reply(2, CanCommit, Success);
    assert_eq!(step.actions, vec![call(2, Abort)]);
    for i in 0..3 {
        tx.reply(i, Abort, Success);
    }
    assert_eq!(tx.status(), S::Aborted);
}

#[test]
fn deadline_in_can_commit_aborts() {
    let mut tx = T::new(Transaction::new_three_phase(2));
    tx.start();
    tx.reply(0, CanCommit, Success);
    tx.reply(1, CanCommit, Unknown);
    let step = tx.deadline();
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(0, Abort), call(1, Abort)]);
}

#[test]
fn missing_pre_commit_ack_is_retried_until_the_deadline_then_aborts() {
    let mut tx = pre_committing(2);
    tx.reply(0, PreCommit, Success);
    for reply in [Unknown, StillWorking] {
        assert!(tx.reply(1, PreCommit, reply).actions.is_empty());
        assert_eq!(tx.waits(1), Some(PreCommit));
        tx.retry_due(1, PreCommit);
    }
    assert_eq!(tx.status(), S::PreCommitting, "unknown is not a refusal");
    let step = tx.deadline();
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    // Branch 1's PreCommit is in flight again; branch 0 is told at once.
    assert_eq!(step.actions, vec![call(0, Abort)]);
    assert_eq!(
        tx.reply(1, PreCommit, Unknown).actions,
        vec![call(1, Abort)]
    );
}

#[test]
fn refused_pre_commit_aborts() {
    let mut tx = pre_committing(2);
    tx.reply(0, PreCommit, Success);
    let step = tx.reply(1, PreCommit, Refused);
    assert_eq!(status_changes(&step), vec![S::Aborting]);
    assert_eq!(step.actions, vec![call(0, Abort), call(1, Abort)]);
}

#[test]
fn do_commit_is_retried_until_acknowledged_and_the_deadline_changes_nothing() {
    let mut tx = pre_committing(1);
    tx.reply(0, PreCommit, Success);
    assert_eq!(tx.status(), S::Committing);
    for reply in [Unknown, Refused] {
        assert!(tx.reply(0, DoCommit, reply).actions.is_empty());
        assert_eq!(tx.waits(0), Some(DoCommit));
        // The clock is at or past the deadline: nothing changes but the
        // retry, which is sent once it is due.
        let step = tx.deadline();
        assert!(status_changes(&step).is_empty());
        if step.actions.is_empty() {
            tx.retry_due(0, DoCommit);
        } else {
            assert_eq!(step.actions, vec![call(0, DoCommit)]);
        }
    }
    tx.reply(0, DoCommit, Success);
    assert_eq!(tx.status(), S::Committed);
}

#[test]
fn recovery_resumes_the_phase_it_logged() {
    let recovered = |status, branches: Vec<B>| {
        let mut tx = T::new(Transaction::recover(
            crate::Mode::ThreePhase,
            status,
            branches,
            vec![],
        ));
        tx.start().actions
    };
    assert_eq!(
        recovered(S::Preparing, vec![B::Prepared, B::Pending]),
        vec![call(1, CanCommit)]
    );
    assert_eq!(
        recovered(S::PreCommitting, vec![B::PreCommitted, B::Prepared]),
        vec![call(1, PreCommit)]
    );
    assert_eq!(
        recovered(S::Committing, vec![B::Committed, B::PreCommitted]),
        vec![call(1, DoCommit)]
    );
    assert_eq!(
        recovered(S::Aborting, vec![B::RolledBack, B::PreCommitted]),
        vec![call(1, Abort)]
    );
}
