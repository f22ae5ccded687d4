//! The consistency checker: reads every service's state and the
//! coordinator's log after a scenario (what [`Observed`] holds) and reports
//! each broken rule with the gid it concerns.
//!
//! | rule | violation |
//! |---|---|
//! | available + reserved + sold = seeded, per product | `stock_not_conserved` |
//! | an order's final status matches the stock its gid moved in the ledger | `order_disagrees_with_ledger` |
//! | an order's final status matches its transaction's | `order_disagrees_with_coordinator` |
//! | every transaction and order is final after heal | `not_final` |
//! | no (gid, branch, operation) applied twice | `applied_twice` |
//! | no confirm/commit/do-commit without its try/prepare/pre-commit | `confirm_without_try` |
//! | no undo of a forward step that never ran | `undo_without_do` |
//! | no 2PC transaction with a committed and a rolled-back branch | `mixed_two_phase_outcome` |
//!
//! A 3PC transaction whose participant committed on its own timeout while
//! the coordinator aborted (or the reverse) is reported as the named finding
//! `three_pc_partition_divergence`: expected only where a scenario cuts a
//! pre-committed participant off, a violation anywhere else.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A product as the inventory shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    /// The product's key.
    pub sku: String,
    /// Free units.
    pub available: i64,
    /// Held units.
    pub reserved: i64,
    /// Sold units.
    pub sold: i64,
}

/// One row of the inventory's ledger: a stock movement a branch call applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRow {
    /// The global transaction.
    pub gid: String,
    /// The branch.
    pub branch: String,
    /// The operation that moved the stock.
    pub op: String,
    /// The product.
    pub sku: String,
    /// The units moved.
    pub qty: i64,
    /// The stock column the units left and the one they went to. The
    /// operation alone does not say: an XA `prepare` sells, a reservation
    /// `prepare` holds.
    pub moved_from: String,
    /// See `moved_from`.
    pub moved_to: String,
}

/// An order as the order service shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRow {
    /// The order id, which is its transaction's gid.
    pub id: String,
    /// The product.
    pub sku: String,
    /// The units ordered.
    pub qty: i64,
    /// The mode it was placed in.
    pub mode: String,
    /// `confirmed`, `cancelled`, or not settled (`new`, `pending`, ...).
    pub status: String,
}

/// A transaction as the coordinator shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRow {
    /// The gid.
    pub gid: String,
    /// The mode.
    pub mode: String,
    /// The status.
    pub status: String,
    /// Branch statuses by branch id (read for 2PC and 3PC only).
    #[serde(default)]
    pub branches: BTreeMap<String, String>,
}

/// Everything the checker reads.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Observed {
    /// Units of each product when the scenario began.
    pub seeded: BTreeMap<String, i64>,
    /// The inventory's products.
    pub products: Vec<Product>,
    /// The inventory's ledger, oldest first.
    pub ledger: Vec<LedgerRow>,
    /// Every order.
    pub orders: Vec<OrderRow>,
    /// Every transaction the coordinators logged.
    pub transactions: Vec<TransactionRow>,
}

/// The kind of a broken rule; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Units appeared or vanished.
    StockNotConserved,
    /// The order's status and the stock its gid moved disagree.
    OrderDisagreesWithLedger,
    /// The order's status and its transaction's status disagree.
    OrderDisagreesWithCoordinator,
    /// Not final after heal and the quiescence bound.
    NotFinal,
    /// One operation of one branch moved stock twice.
    AppliedTwice,
    /// A second-phase operation moved stock its first phase never held.
    ConfirmWithoutTry,
    /// An undo moved stock back that its forward step never moved.
    UndoWithoutDo,
    /// A 2PC transaction committed one branch and rolled back another.
    MixedTwoPhaseOutcome,
    /// 3PC: a participant's timeout rule decided against the coordinator.
    ThreePcPartitionDivergence,
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// Which rule.
    pub kind: ViolationKind,
    /// The transaction concerned, when one is.
    pub gid: Option<String>,
    /// What was seen, in words.
    pub detail: String,
}

/// How a ledger row moved stock: (available, reserved, sold) per unit.
/// `None` for a column the checker does not know, which it reports.
fn effect(row: &LedgerRow) -> Option<(i64, i64, i64)> {
    let unit = |column: &str| match column {
        "available" => Some((1, 0, 0)),
        "reserved" => Some((0, 1, 0)),
        "sold" => Some((0, 0, 1)),
        _ => None,
    };
    let (from, to) = (unit(&row.moved_from)?, unit(&row.moved_to)?);
    Some((to.0 - from.0, to.1 - from.1, to.2 - from.2))
}

/// The forward operation a second-phase or undo operation depends on.
fn depends_on(op: &str) -> Option<(&'static str, ViolationKind)> {
    use ViolationKind::{ConfirmWithoutTry, UndoWithoutDo};
    Some(match op {
        "confirm" => ("try", ConfirmWithoutTry),
        "commit" => ("prepare", ConfirmWithoutTry),
        "do_commit" => ("pre_commit", ConfirmWithoutTry),
        "compensate" => ("action", UndoWithoutDo),
        "cancel" => ("try", UndoWithoutDo),
        "rollback" => ("prepare", UndoWithoutDo),
        "abort" => ("pre_commit", UndoWithoutDo),
        _ => return None,
    })
}

/// Checks every rule; returns the violations, grouped by kind.
pub fn check(observed: &Observed) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut report = |kind, gid: Option<&str>, detail: String| {
        found.push(Violation {
            kind,
            gid: gid.map(str::to_owned),
            detail,
        })
    };
    // Conservation, per product.
    for (sku, &seeded) in &observed.seeded {
        let total = observed
            .products
            .iter()
            .find(|p| &p.sku == sku)
            .map_or(0, |p| p.available + p.reserved + p.sold);
        if total != seeded {
            report(
                ViolationKind::StockNotConserved,
                None,
                format!("{sku}: available + reserved + sold = {total}, seeded {seeded}"),
            );
        }
    }
    // Per-operation rules, and the net movement of each gid.
    let mut seen = BTreeSet::new();
    let mut net: BTreeMap<&str, (i64, i64, i64)> = BTreeMap::new();
    for row in &observed.ledger {
        if !seen.insert((&row.gid, &row.branch, &row.op)) {
            report(
                ViolationKind::AppliedTwice,
                Some(&row.gid),
                format!("branch {} applied {} twice", row.branch, row.op),
            );
        }
        match effect(row) {
            Some((a, r, s)) => {
                let e = net.entry(&row.gid).or_default();
                *e = (e.0 + a * row.qty, e.1 + r * row.qty, e.2 + s * row.qty);
            }
            None => report(
                ViolationKind::OrderDisagreesWithLedger,
                Some(&row.gid),
                format!(
                    "the ledger moved {} from `{}` to `{}`: unknown columns",
                    row.op, row.moved_from, row.moved_to
                ),
            ),
        }
    }
    for row in &observed.ledger {
        let Some((needed, kind)) = depends_on(&row.op) else {
            continue;
        };
        if !seen.contains(&(&row.gid, &row.branch, &needed.to_owned())) {
            report(
                kind,
                Some(&row.gid),
                format!("branch {} applied {} without {needed}", row.branch, row.op),
            );
        }
    }
    let transactions: BTreeMap<&str, &TransactionRow> = observed
        .transactions
        .iter()
        .map(|t| (t.gid.as_str(), t))
        .collect();
    for tx in &observed.transactions {
        if !matches!(tx.status.as_str(), "committed" | "aborted") {
            report(
                ViolationKind::NotFinal,
                Some(&tx.gid),
                format!("the {} transaction is {}", tx.mode, tx.status),
            );
        }
        let statuses: BTreeSet<&str> = tx.branches.values().map(String::as_str).collect();
        if tx.mode == "2pc" && statuses.contains("committed") && statuses.contains("rolled_back") {
            report(
                ViolationKind::MixedTwoPhaseOutcome,
                Some(&tx.gid),
                format!("branch statuses {:?}", tx.branches),
            );
        }
    }
    for order in &observed.orders {
        check_order(
            order,
            net.get(order.id.as_str()),
            transactions.get(order.id.as_str()),
            &mut report,
        );
    }
    found.sort_by(|a, b| (a.kind, &a.gid).cmp(&(b.kind, &b.gid)));
    found
}

/// One order against the ledger and its transaction.
fn check_order(
    order: &OrderRow,
    net: Option<&(i64, i64, i64)>,
    tx: Option<&&TransactionRow>,
    report: &mut impl FnMut(ViolationKind, Option<&str>, String),
) {
    let gid = Some(order.id.as_str());
    let moved = net.copied().unwrap_or_default();
    let expected = match order.status.as_str() {
        "confirmed" => (-order.qty, 0, order.qty),
        "cancelled" => (0, 0, 0),
        other => {
            report(
                ViolationKind::NotFinal,
                gid,
                format!("the order is still {other}"),
            );
            return;
        }
    };
    let tx_status = tx.map(|t| t.status.as_str());
    let tx_agrees = matches!(
        (order.status.as_str(), tx_status),
        ("confirmed", Some("committed")) | ("cancelled", Some("aborted") | None)
    );
    if moved != expected {
        // 3PC under a partition: the inventory's timeout rule committed
        // (or aborted) while the coordinator, and so the order, went the
        // other way. That is the protocol's known failure, named as such.
        let kind = if order.mode == "3pc" {
            ViolationKind::ThreePcPartitionDivergence
        } else {
            ViolationKind::OrderDisagreesWithLedger
        };
        report(
            kind,
            gid,
            format!(
                "order {} of {} unit(s) but its ledger moved (available {:+}, reserved {:+}, sold {:+})",
                order.status, order.qty, moved.0, moved.1, moved.2
            ),
        );
    }
    // A transaction that is not final is reported by itself (`not_final`).
    if !tx_agrees && tx_status.is_none_or(|s| matches!(s, "committed" | "aborted")) {
        report(
            ViolationKind::OrderDisagreesWithCoordinator,
            gid,
            format!(
                "order {} but its transaction {}",
                order.status,
                tx_status.unwrap_or("?")
            ),
        );
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
