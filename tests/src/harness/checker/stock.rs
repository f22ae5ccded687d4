//! The stock rules, over the inventory's ledger and products: the ledger
//! adds up to the stock, no operation applied twice, every second phase and
//! undo after its forward step, nothing held or prepared after quiescence.

use std::collections::{BTreeMap, BTreeSet};

use dtx_protocol::Op;

use super::{Column, Findings, LedgerOp, LedgerRow, Observed, ViolationKind};

/// Units per column: (available, reserved, sold).
pub(super) type Columns = (i64, i64, i64);

/// How one unit of a ledger row moved the columns; `None` for a column the
/// checker does not know.
fn unit_effect(row: &LedgerRow) -> Option<Columns> {
    let unit = |column: Column| match column {
        Column::Available => Some((1, 0, 0)),
        Column::Reserved => Some((0, 1, 0)),
        Column::Sold => Some((0, 0, 1)),
        Column::Unknown => None,
    };
    let (from, to) = (unit(row.moved_from)?, unit(row.moved_to)?);
    Some((to.0 - from.0, to.1 - from.1, to.2 - from.2))
}

/// What a ledger row moved, in units; `None` for unknown columns.
pub(super) fn effect(row: &LedgerRow) -> Option<Columns> {
    let (a, r, s) = unit_effect(row)?;
    Some((a * row.qty, r * row.qty, s * row.qty))
}

fn add(total: &mut Columns, (a, r, s): Columns) {
    *total = (total.0 + a, total.1 + r, total.2 + s);
}

/// The forward operation a second-phase or undo operation depends on.
fn depends_on(op: LedgerOp) -> Option<(LedgerOp, ViolationKind)> {
    use ViolationKind::{ConfirmWithoutTry, UndoWithoutDo};
    let LedgerOp::Coordinator(op) = op else {
        return None; // the Try depends on nothing
    };
    let coordinator = LedgerOp::Coordinator;
    Some(match op {
        Op::Confirm => (LedgerOp::Try, ConfirmWithoutTry),
        Op::Commit => (coordinator(Op::Prepare), ConfirmWithoutTry),
        Op::DoCommit => (coordinator(Op::PreCommit), ConfirmWithoutTry),
        Op::Compensate => (coordinator(Op::Action), UndoWithoutDo),
        Op::Cancel => (LedgerOp::Try, UndoWithoutDo),
        Op::Rollback => (coordinator(Op::Prepare), UndoWithoutDo),
        Op::Abort => (coordinator(Op::PreCommit), UndoWithoutDo),
        Op::Action | Op::Prepare | Op::CanCommit | Op::PreCommit => return None,
    })
}

/// The stock rules; see the module documentation.
pub(super) fn check(observed: &Observed, found: &mut Findings) {
    ledger_adds_up(observed, found);
    // Operations in ledger order: a dependent row must come after the row
    // it depends on, not merely exist.
    let mut applied: BTreeSet<(&str, &str, LedgerOp)> = BTreeSet::new();
    for row in &observed.ledger {
        let key = (row.gid.as_str(), row.branch.as_str(), row.op);
        if let Some((needed, kind)) = depends_on(row.op)
            && !applied.contains(&(key.0, key.1, needed))
        {
            found.report(
                kind,
                Some(&row.gid),
                format!(
                    "branch {} applied {} without {needed} before it",
                    row.branch, row.op
                ),
            );
        }
        if !applied.insert(key) {
            found.report(
                ViolationKind::AppliedTwice,
                Some(&row.gid),
                format!("branch {} applied {} twice", row.branch, row.op),
            );
        }
    }
    if !observed.quiescent {
        return;
    }
    for product in observed.products.iter().filter(|p| p.reserved != 0) {
        found.report(
            ViolationKind::LeftReserved,
            None,
            format!(
                "{}: {} unit(s) still reserved after quiescence",
                product.sku, product.reserved
            ),
        );
    }
    for prepared in &observed.prepared {
        found.report(
            ViolationKind::LeftPrepared,
            prepared.gid.as_deref(),
            format!(
                "transaction {} (branch {}) still prepared after quiescence",
                prepared.xid,
                prepared.branch.as_deref().unwrap_or("?")
            ),
        );
    }
}

/// Seeded units plus every ledger movement must give each product's columns.
fn ledger_adds_up(observed: &Observed, found: &mut Findings) {
    let mut expected: BTreeMap<&str, Columns> = observed
        .seeded
        .iter()
        .map(|(sku, &units)| (sku.as_str(), (units, 0, 0)))
        .collect();
    for row in &observed.ledger {
        match effect(row) {
            Some(moved) => add(expected.entry(&row.sku).or_default(), moved),
            None => found.report(
                ViolationKind::LedgerDisagreesWithStock,
                Some(&row.gid),
                format!(
                    "the ledger moved {} from {:?} to {:?}: unknown columns",
                    row.op, row.moved_from, row.moved_to
                ),
            ),
        }
    }
    let shown: BTreeMap<&str, Columns> = observed
        .products
        .iter()
        .map(|p| (p.sku.as_str(), (p.available, p.reserved, p.sold)))
        .collect();
    let skus: BTreeSet<&str> = expected.keys().chain(shown.keys()).copied().collect();
    for sku in skus {
        let want = expected.get(sku).copied().unwrap_or_default();
        let have = shown.get(sku).copied().unwrap_or_default();
        if want != have {
            found.report(
                ViolationKind::LedgerDisagreesWithStock,
                None,
                format!(
                    "{sku}: seeded plus the ledger gives (available {}, reserved {}, sold {}), \
                     the product shows (available {}, reserved {}, sold {})",
                    want.0, want.1, want.2, have.0, have.1, have.2
                ),
            );
        }
    }
}
