//! The order rules: each order against the stock its gid moved, its
//! transaction, and (for 2PC) its fellow participant; and the closed-world
//! rules that tie every trace to an order and every order to a client's
//! request and answer.

use std::collections::BTreeMap;

use dtx_protocol::{BranchStatus, Mode, Status};

use super::stock::{Columns, effect};
use super::{Findings, Observed, OrderRow, OrderStatus, TransactionRow, ViolationKind};
use crate::harness::workload::Told;

/// The per-order and closed-world rules; see the checker's module docs.
pub(super) fn check(observed: &Observed, found: &mut Findings) {
    let mut net: BTreeMap<&str, Columns> = BTreeMap::new();
    for row in &observed.ledger {
        if let Some((a, r, s)) = effect(row) {
            let total = net.entry(&row.gid).or_default();
            *total = (total.0 + a, total.1 + r, total.2 + s);
        }
    }
    let transactions: BTreeMap<&str, &TransactionRow> = observed
        .transactions
        .iter()
        .map(|t| (t.gid.as_str(), t))
        .collect();
    let timeout_rule_fired: std::collections::BTreeSet<&str> = observed
        .three_phase
        .iter()
        .filter(|r| r.decided_by.as_deref() == Some("timeout_rule"))
        .map(|r| r.gid.as_str())
        .collect();
    for tx in &observed.transactions {
        transaction(tx, found);
    }
    for order in &observed.orders {
        let moved = net.get(order.id.as_str()).copied().unwrap_or_default();
        let tx = transactions.get(order.id.as_str()).copied();
        let timeout_rule = timeout_rule_fired.contains(order.id.as_str());
        one_order(order, moved, tx, timeout_rule, found);
    }
    closed_world(observed, found);
}

/// A transaction by itself: final, unflagged, and (2PC) with agreeing
/// branch statuses.
fn transaction(tx: &TransactionRow, found: &mut Findings) {
    let gid = Some(tx.gid.as_str());
    if !tx.status.is_final() {
        found.report(
            ViolationKind::NotFinal,
            gid,
            format!("the {} transaction is {}", tx.mode, tx.status.as_str()),
        );
    }
    if let Some(why) = &tx.attention {
        found.report(
            ViolationKind::FlaggedForAttention,
            gid,
            format!("the coordinator flagged it: {why}"),
        );
    }
    let has = |status| tx.branches.values().any(|s| *s == status);
    if tx.mode == Mode::TwoPhase && has(BranchStatus::Committed) && has(BranchStatus::RolledBack) {
        found.report(
            ViolationKind::MixedTwoPhaseOutcome,
            gid,
            format!("the coordinator's branch statuses {:?}", tx.branches),
        );
    }
}

/// One order against the ledger, its transaction and its fellow
/// participant.
fn one_order(
    order: &OrderRow,
    moved: Columns,
    tx: Option<&TransactionRow>,
    timeout_rule_fired: bool,
    found: &mut Findings,
) {
    let gid = Some(order.id.as_str());
    let (expected, committed_status) = match order.status {
        OrderStatus::Confirmed => ((-order.qty, 0, order.qty), Status::Committed),
        OrderStatus::Cancelled => ((0, 0, 0), Status::Aborted),
        other => {
            found.report(
                ViolationKind::NotFinal,
                gid,
                format!("the order is still {other}"),
            );
            return;
        }
    };
    if moved != expected {
        // 3PC under a partition: the inventory's own record says its
        // timeout rule decided, and the coordinator (so the order) went the
        // other way. The protocol's known failure, named as such; without
        // that record a mismatch is an ordinary violation.
        let kind = if order.mode == Mode::ThreePhase && timeout_rule_fired {
            ViolationKind::ThreePcPartitionDivergence
        } else {
            ViolationKind::OrderDisagreesWithLedger
        };
        found.report(
            kind,
            gid,
            format!(
                "order {} of {} unit(s) but its ledger moved (available {:+}, reserved {:+}, sold {:+})",
                order.status, order.qty, moved.0, moved.1, moved.2
            ),
        );
    }
    if order.mode == Mode::TwoPhase && (order.status == OrderStatus::Confirmed) != (moved.2 > 0) {
        found.report(
            ViolationKind::MixedTwoPhaseOutcome,
            gid,
            format!(
                "by the participants' own records: the order is {}, the inventory sold {} unit(s)",
                order.status, moved.2
            ),
        );
    }
    match tx.map(|t| t.status) {
        Some(status) if status == committed_status => {}
        // A transaction that is not final is reported by itself.
        Some(status) if !status.is_final() => {}
        status => found.report(
            ViolationKind::OrderDisagreesWithCoordinator,
            gid,
            format!(
                "order {} but its transaction {}",
                order.status,
                status.map_or("is not in the coordinators' log".to_owned(), |s| format!(
                    "is {}",
                    s.as_str()
                ))
            ),
        ),
    }
}

/// Every trace belongs to an order, every order to a request, and every
/// answer a client got still holds.
fn closed_world(observed: &Observed, found: &mut Findings) {
    let orders: BTreeMap<&str, &OrderRow> =
        observed.orders.iter().map(|o| (o.id.as_str(), o)).collect();
    for gid in observed.traced_gids() {
        if !orders.contains_key(gid) {
            found.report(
                ViolationKind::OrphanGid,
                Some(gid),
                "work was done under this gid, but no order has it".into(),
            );
        }
    }
    if observed.orders.len() > observed.attempts.len() {
        found.report(
            ViolationKind::UnrequestedOrder,
            None,
            format!(
                "{} order(s) exist, but clients made only {} attempt(s)",
                observed.orders.len(),
                observed.attempts.len()
            ),
        );
    }
    for attempt in &observed.attempts {
        let Some(id) = attempt.order.as_deref() else {
            continue;
        };
        let now = orders.get(id).map(|o| o.status);
        let broken = match (&attempt.told, now) {
            (_, None) => Some("it does not exist".to_owned()),
            (Told::Settled(told), Some(status)) if *told != status => {
                Some(format!("it is {status}"))
            }
            _ => None,
        };
        if let Some(broken) = broken {
            found.report(
                ViolationKind::ClientToldOtherwise,
                Some(id),
                format!("the client was told {:?}, but {broken}", attempt.told),
            );
        }
    }
}
