//! The checker's rules, one test each: a clean history passes, and each
//! planted violation is reported with its kind and gid.

use std::collections::BTreeMap;

use dtx_protocol::{BranchStatus, Status};
use serde::de::DeserializeOwned;

use super::*;
use crate::harness::workload::{Attempt, Told};

/// A wire name as its typed value, as the services' JSON would give it.
fn parse<T: DeserializeOwned>(name: &str) -> T {
    serde_json::from_value(serde_json::Value::from(name)).expect("a known name")
}

/// A ledger row moving stock as the inventory's reservation flows do.
fn ledger(gid: &str, branch: &str, op: &str, qty: i64) -> LedgerRow {
    let (from, to) = match op {
        "action" => ("available", "sold"),
        "compensate" => ("sold", "available"),
        "try" | "prepare" | "pre_commit" => ("available", "reserved"),
        "confirm" | "commit" | "do_commit" => ("reserved", "sold"),
        _ => ("reserved", "available"),
    };
    LedgerRow {
        gid: gid.into(),
        branch: branch.into(),
        op: parse(op),
        sku: "apple".into(),
        qty,
        moved_from: parse(from),
        moved_to: parse(to),
    }
}

fn order(id: &str, mode: &str, qty: i64, status: &str) -> OrderRow {
    OrderRow {
        id: id.into(),
        sku: "apple".into(),
        qty,
        mode: parse(mode),
        status: parse(status),
    }
}

fn tx(gid: &str, mode: &str, status: &str) -> TransactionRow {
    TransactionRow {
        gid: gid.into(),
        mode: parse(mode),
        status: parse(status),
        attention: None,
        branches: BTreeMap::new(),
    }
}

/// A client's attempt that was answered with the order's final status.
fn told(id: &str, mode: &str, status: &str) -> Attempt {
    Attempt {
        at_ms: 0,
        mode: parse(mode),
        order: Some(id.into()),
        told: Told::Settled(parse(status)),
    }
}

/// A clean history of one order per mode, two confirmed, two cancelled;
/// 10 units seeded, 5 sold.
fn clean() -> Observed {
    Observed {
        seeded: BTreeMap::from([("apple".into(), 10)]),
        quiescent: true,
        attempts: vec![
            told("s1", "saga", "confirmed"),
            told("t1", "tcc", "confirmed"),
            told("p1", "2pc", "cancelled"),
            told("x1", "3pc", "cancelled"),
        ],
        products: vec![Product {
            sku: "apple".into(),
            available: 5,
            reserved: 0,
            sold: 5,
        }],
        ledger: vec![
            ledger("s1", "stock", "action", 2),
            ledger("t1", "stock", "try", 3),
            ledger("t1", "stock", "confirm", 3),
            ledger("p1", "stock", "prepare", 1),
            ledger("p1", "stock", "rollback", 1),
            ledger("x1", "stock", "pre_commit", 4),
            ledger("x1", "stock", "abort", 4),
        ],
        orders: vec![
            order("s1", "saga", 2, "confirmed"),
            order("t1", "tcc", 3, "confirmed"),
            order("p1", "2pc", 1, "cancelled"),
            order("x1", "3pc", 4, "cancelled"),
        ],
        transactions: vec![
            tx("s1", "saga", "committed"),
            tx("t1", "tcc", "committed"),
            tx("p1", "2pc", "aborted"),
            tx("x1", "3pc", "aborted"),
        ],
        prepared: vec![],
        three_phase: vec![ThreePhaseRecord {
            gid: "x1".into(),
            branch: "stock".into(),
            state: "aborted".into(),
            decided_by: Some("coordinator".into()),
        }],
    }
}

fn kinds(observed: &Observed) -> Vec<(ViolationKind, Option<String>)> {
    check(observed)
        .into_iter()
        .map(|v| (v.kind, v.gid))
        .collect()
}

#[test]
fn a_clean_history_has_no_violation() {
    assert_eq!(check(&clean()), vec![]);
}

#[test]
fn a_branch_applied_twice_is_caught_with_what_it_did_to_the_order() {
    // A participant without the barrier: the retried action moved stock again.
    let mut o = clean();
    o.ledger.push(ledger("s1", "stock", "action", 2));
    o.products[0].available -= 2;
    o.products[0].sold += 2;
    assert_eq!(
        kinds(&o),
        vec![
            (ViolationKind::AppliedTwice, Some("s1".into())),
            (ViolationKind::OrderDisagreesWithLedger, Some("s1".into())),
        ]
    );
}

#[test]
fn an_xa_prepare_that_sold_counts_as_a_sale() {
    // On PostgreSQL the inventory's prepare sells inside the prepared
    // transaction; its row becomes visible at COMMIT PREPARED, and no
    // commit row follows.
    let mut o = clean();
    let mut sold = ledger("p1", "stock", "prepare", 1);
    sold.moved_to = Column::Sold;
    o.ledger.retain(|r| r.gid != "p1");
    o.ledger.push(sold);
    o.orders[2].status = OrderStatus::Confirmed;
    o.transactions[2].status = Status::Committed;
    o.attempts[2] = told("p1", "2pc", "confirmed");
    o.products[0].available -= 1;
    o.products[0].sold += 1;
    assert_eq!(check(&o), vec![]);
}

#[test]
fn lost_or_invented_units_break_conservation() {
    let mut o = clean();
    o.products[0].available += 1;
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::LedgerDisagreesWithStock, None)]
    );
}

#[test]
fn a_confirm_without_its_try_and_an_undo_without_its_do_are_caught() {
    let mut o = clean();
    o.ledger
        .retain(|r| !(r.gid == "t1" && r.op == parse::<LedgerOp>("try")));
    o.ledger
        .retain(|r| !(r.gid == "x1" && r.op == parse::<LedgerOp>("pre_commit")));
    let found = kinds(&o);
    assert!(
        found.contains(&(ViolationKind::ConfirmWithoutTry, Some("t1".into()))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ViolationKind::UndoWithoutDo, Some("x1".into()))),
        "{found:?}"
    );
}

#[test]
fn unfinished_transactions_and_orders_are_reported() {
    let mut o = clean();
    o.transactions[0].status = Status::Running;
    o.orders[1].status = OrderStatus::Pending;
    let found = kinds(&o);
    assert!(
        found.contains(&(ViolationKind::NotFinal, Some("s1".into()))),
        "{found:?}"
    );
    assert!(
        found.contains(&(ViolationKind::NotFinal, Some("t1".into()))),
        "{found:?}"
    );
}

#[test]
fn an_order_against_its_transaction_is_reported() {
    let mut o = clean();
    o.transactions[1].status = Status::Aborted;
    assert_eq!(
        kinds(&o),
        vec![(
            ViolationKind::OrderDisagreesWithCoordinator,
            Some("t1".into())
        )]
    );
}

#[test]
fn a_two_phase_transaction_with_mixed_branch_outcomes_is_reported() {
    let mut o = clean();
    o.transactions[2].branches = BTreeMap::from([
        ("order".into(), BranchStatus::Committed),
        ("stock".into(), BranchStatus::RolledBack),
    ]);
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::MixedTwoPhaseOutcome, Some("p1".into()))]
    );
}

#[test]
fn a_three_phase_participant_committing_against_the_abort_is_the_named_finding() {
    // The inventory pre-committed, was cut off, and committed on its own
    // timeout; the coordinator aborted and the order was cancelled.
    let mut o = clean();
    o.ledger
        .retain(|r| !(r.gid == "x1" && r.op == parse::<LedgerOp>("abort")));
    o.ledger.push(ledger("x1", "stock", "do_commit", 4));
    o.products[0].available -= 4;
    o.products[0].sold += 4;
    o.three_phase[0].state = "committed".into();
    o.three_phase[0].decided_by = Some("timeout_rule".into());
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::ThreePcPartitionDivergence, Some("x1".into()))]
    );
    // The same mismatch without the participant's record of its timeout
    // rule is an ordinary violation, not the known finding.
    o.three_phase[0].decided_by = Some("coordinator".into());
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::OrderDisagreesWithLedger, Some("x1".into()))]
    );
}

#[test]
fn an_undo_before_its_forward_step_is_caught_by_the_ledger_order() {
    // A Cancel that moved stock, then a late Try that moved it too: both
    // rows exist, in the wrong order.
    let mut o = clean();
    o.ledger.retain(|r| r.gid != "t1");
    o.ledger.push(ledger("t1", "stock", "cancel", 3));
    o.ledger.push(ledger("t1", "stock", "try", 3));
    o.orders[1].status = OrderStatus::Cancelled;
    o.transactions[1].status = Status::Aborted;
    o.attempts[1] = told("t1", "tcc", "cancelled");
    o.products[0].available += 3;
    o.products[0].sold -= 3;
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::UndoWithoutDo, Some("t1".into()))]
    );
}

#[test]
fn holds_and_prepared_transactions_left_after_quiescence_are_reported() {
    let mut o = clean();
    // The rollback's row is lost and its hold kept.
    o.ledger
        .retain(|r| !(r.gid == "p1" && r.op == parse::<LedgerOp>("rollback")));
    o.products[0].available -= 1;
    o.products[0].reserved += 1;
    o.prepared.push(PreparedBranch {
        xid: "dtx-abc".into(),
        gid: Some("p1".into()),
        branch: Some("stock".into()),
    });
    let found = kinds(&o);
    assert!(
        found.contains(&(ViolationKind::LeftReserved, None)),
        "{found:?}"
    );
    assert!(
        found.contains(&(ViolationKind::LeftPrepared, Some("p1".into()))),
        "{found:?}"
    );
    // Before quiescence holds and prepared transactions are normal.
    o.quiescent = false;
    let found = kinds(&o);
    assert!(
        !found
            .iter()
            .any(|(k, _)| matches!(k, ViolationKind::LeftReserved | ViolationKind::LeftPrepared)),
        "{found:?}"
    );
}

#[test]
fn a_flagged_transaction_is_reported() {
    let mut o = clean();
    o.transactions[1].attention = Some("confirm refused".into());
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::FlaggedForAttention, Some("t1".into()))]
    );
}

#[test]
fn an_answer_the_service_later_broke_is_reported() {
    let mut o = clean();
    // Told confirmed, ends cancelled (with its transaction and ledger).
    o.attempts[2] = told("p1", "2pc", "confirmed");
    // Given an id for an order that then vanished.
    o.attempts.push(Attempt {
        at_ms: 0,
        mode: dtx_protocol::Mode::Saga,
        order: Some("gone".into()),
        told: Told::Unsettled,
    });
    assert_eq!(
        kinds(&o),
        vec![
            (ViolationKind::ClientToldOtherwise, Some("gone".into())),
            (ViolationKind::ClientToldOtherwise, Some("p1".into())),
        ]
    );
}

#[test]
fn work_under_a_gid_no_order_has_is_reported() {
    let mut o = clean();
    // The saga placed again under a new gid: a second transaction and a
    // second sale, and no order for either.
    o.ledger.push(ledger("s1-again", "stock", "action", 2));
    o.transactions.push(tx("s1-again", "saga", "committed"));
    o.products[0].available -= 2;
    o.products[0].sold += 2;
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::OrphanGid, Some("s1-again".into()))]
    );
}

#[test]
fn more_orders_than_attempts_are_reported() {
    let mut o = clean();
    o.attempts.pop();
    assert_eq!(kinds(&o), vec![(ViolationKind::UnrequestedOrder, None)]);
}

#[test]
fn a_settled_order_without_a_transaction_is_reported() {
    let mut o = clean();
    // Cancelled orders used to pass without a transaction.
    o.transactions.retain(|t| t.gid != "p1");
    assert_eq!(
        kinds(&o),
        vec![(
            ViolationKind::OrderDisagreesWithCoordinator,
            Some("p1".into())
        )]
    );
}

#[test]
fn two_phase_participants_disagreeing_by_their_own_records_are_reported() {
    // The coordinator believes both rolled back, but the inventory's
    // prepared sale was committed (an XA `prepare` row that sold).
    let mut o = clean();
    o.ledger.retain(|r| r.gid != "p1");
    let mut sold = ledger("p1", "stock", "prepare", 1);
    sold.moved_to = Column::Sold;
    o.ledger.push(sold);
    o.products[0].available -= 1;
    o.products[0].sold += 1;
    assert_eq!(
        kinds(&o),
        vec![
            (ViolationKind::MixedTwoPhaseOutcome, Some("p1".into())),
            (ViolationKind::OrderDisagreesWithLedger, Some("p1".into())),
        ]
    );
}

#[test]
fn two_reads_that_differ_are_an_unstable_observation() {
    let first = clean();
    assert_eq!(compare_reads(&first, &first.clone()), None);
    let mut second = clean();
    second.orders[0].status = OrderStatus::Cancelled;
    let found = compare_reads(&first, &second).expect("a difference");
    assert_eq!(found.kind, ViolationKind::UnstableObservation);
    assert!(found.detail.contains("orders"), "{}", found.detail);
}
