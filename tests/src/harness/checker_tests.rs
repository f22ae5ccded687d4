//! The checker's rules, one test each: a clean history passes, and each
//! planted violation is reported with its kind and gid.

use super::*;

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
        op: op.into(),
        sku: "apple".into(),
        qty,
        moved_from: from.into(),
        moved_to: to.into(),
    }
}

fn order(id: &str, mode: &str, qty: i64, status: &str) -> OrderRow {
    OrderRow {
        id: id.into(),
        sku: "apple".into(),
        qty,
        mode: mode.into(),
        status: status.into(),
    }
}

fn tx(gid: &str, mode: &str, status: &str) -> TransactionRow {
    TransactionRow {
        gid: gid.into(),
        mode: mode.into(),
        status: status.into(),
        branches: BTreeMap::new(),
    }
}

/// A clean history of one order per mode, two confirmed, two cancelled;
/// 10 units seeded, 5 sold.
fn clean() -> Observed {
    Observed {
        seeded: BTreeMap::from([("apple".into(), 10)]),
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
            (ViolationKind::OrderDisagreesWithLedger, Some("s1".into())),
            (ViolationKind::AppliedTwice, Some("s1".into())),
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
    sold.moved_to = "sold".into();
    o.ledger.retain(|r| r.gid != "p1");
    o.ledger.push(sold);
    o.orders[2].status = "confirmed".into();
    o.transactions[2].status = "committed".into();
    o.products[0].available -= 1;
    o.products[0].sold += 1;
    assert_eq!(check(&o), vec![]);
}

#[test]
fn lost_or_invented_units_break_conservation() {
    let mut o = clean();
    o.products[0].available += 1;
    assert_eq!(kinds(&o), vec![(ViolationKind::StockNotConserved, None)]);
}

#[test]
fn a_confirm_without_its_try_and_an_undo_without_its_do_are_caught() {
    let mut o = clean();
    o.ledger.retain(|r| !(r.gid == "t1" && r.op == "try"));
    o.ledger
        .retain(|r| !(r.gid == "x1" && r.op == "pre_commit"));
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
    o.transactions[0].status = "running".into();
    o.orders[1].status = "pending".into();
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
    o.transactions[1].status = "aborted".into();
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
        ("order".into(), "committed".into()),
        ("stock".into(), "rolled_back".into()),
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
    o.ledger.retain(|r| !(r.gid == "x1" && r.op == "abort"));
    o.ledger.push(ledger("x1", "stock", "do_commit", 4));
    o.products[0].available -= 4;
    o.products[0].sold += 4;
    assert_eq!(
        kinds(&o),
        vec![(ViolationKind::ThreePcPartitionDivergence, Some("x1".into()))]
    );
}
