//! The consistency checker: reads every service's state, the coordinators'
//! log and what each client was told after a run (what [`Observed`] holds)
//! and reports each broken rule with the gid it concerns.
//!
//! The check is closed-world: every trace of a transaction anywhere (a
//! ledger row, a logged transaction, a prepared transaction, a 3PC record)
//! must belong to an order, and every order to a client's request.
//!
//! | rule (violation) | what it sees | what it cannot see |
//! |---|---|---|
//! | `ledger_disagrees_with_stock`: seeded + the ledger's movements = each product's available, reserved and sold | a movement without its ledger row, a row without its movement | a wrong movement recorded as such (self-consistent: the order rules see it) |
//! | `left_reserved`: after quiescence no unit is held | a hold never sold or released | holds of the order service's own branch (it has no stock) |
//! | `left_prepared`: after quiescence PostgreSQL holds no prepared transaction in the inventory's database | a 2PC branch left prepared (XA) | the reservation path (SQLite), whose holds are `left_reserved` |
//! | `flagged_for_attention`: no transaction carries the coordinator's operator flag | a phase-two refusal, a call failing for the whole attention window | — |
//! | `not_final`: every transaction is committed or aborted, every order confirmed or cancelled | work left unfinished | — |
//! | `applied_twice`: no (gid, branch, operation) twice in the ledger | a retried call applied again | the order branch (no ledger); XA commit and rollback (no row of their own, and PostgreSQL cannot run them twice) |
//! | `confirm_without_try`: every confirm, commit and do-commit row follows its try, prepare or pre-commit row | a second phase without (or before) its first | XA commits (no row of their own: the `prepare` row becomes visible instead) |
//! | `undo_without_do`: every compensate, cancel, rollback and abort row follows its forward row | an undo of nothing, a late forward step after its undo when both moved stock | XA rollbacks (the `prepare` row vanishes with the prepared transaction) |
//! | `mixed_two_phase_outcome`: a 2PC transaction's participants agree, by the coordinator's branch statuses and by their own records (the order's status, the units the inventory sold) | one branch committed, another rolled back | — |
//! | `order_disagrees_with_ledger`: a confirmed order's gid sold its units, a cancelled one's moved nothing | lost or extra work on the inventory | — |
//! | `order_disagrees_with_coordinator`: a settled order has a transaction, committed if confirmed, aborted if cancelled | an order settled against (or without) its transaction | — |
//! | `client_told_otherwise`: an order a client was told is confirmed (cancelled) ends confirmed (cancelled); one a client was given an id for exists | an answer the service later broke | answers the client never got (they are `no_answer`) |
//! | `orphan_gid`: every traced gid is an order's id | work under a gid no order has (an order placed again under a new gid) | — |
//! | `unrequested_order`: no more orders than client attempts | orders nobody asked for | a one-for-one swap of orders |
//! | `unstable_observation`: two reads of the final state, apart, are identical | work still going, a read that changes what it reads | a change slower than the gap between the reads |
//! | `service_unanswered`: every service answers the reads of the final state within the harness's patience (not a rule of the checker: `scenario` reports it, and then nothing is checked) | a service that stayed down, hung or unreachable after heal | — |
//!
//! A 3PC order whose inventory branch decided by its own timeout rule
//! (`decided_by = timeout_rule` in the participant's record) while the
//! coordinator went the other way is the named finding
//! `three_pc_partition_divergence`: expected only where a scenario cuts a
//! pre-committed participant off. Without that evidence a 3PC mismatch is an
//! ordinary `order_disagrees_with_ledger`.
//!
//! Module layout: [`observed`] holds the values read, [`stock`] the ledger
//! and stock rules, [`orders`] the per-order and closed-world rules.

mod observed;
mod orders;
mod stock;

pub use observed::{
    Column, LedgerOp, LedgerRow, Observed, OrderRow, OrderStatus, PreparedBranch, Product,
    ThreePhaseRecord, TransactionRow,
};

use serde::{Deserialize, Serialize};

/// The kind of a broken rule; see the module's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// The ledger does not add up to the stock columns.
    LedgerDisagreesWithStock,
    /// Units still held after quiescence.
    LeftReserved,
    /// A transaction still prepared after quiescence.
    LeftPrepared,
    /// The coordinator flagged a transaction for an operator.
    FlaggedForAttention,
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
    /// The order's status and the stock its gid moved disagree.
    OrderDisagreesWithLedger,
    /// The order's status and its transaction's status disagree.
    OrderDisagreesWithCoordinator,
    /// A client was told something about its order that did not hold.
    ClientToldOtherwise,
    /// Work under a gid that is no order's.
    OrphanGid,
    /// More orders than clients asked for.
    UnrequestedOrder,
    /// Two reads of the final state differ.
    UnstableObservation,
    /// 3PC: a participant's timeout rule decided against the coordinator.
    ThreePcPartitionDivergence,
    /// A service never answered the reads of the final state, so the run
    /// could not be checked.
    ServiceUnanswered,
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

/// Collects violations as the rules find them.
#[derive(Debug, Default)]
pub(crate) struct Findings(Vec<Violation>);

impl Findings {
    /// Records one broken rule.
    pub(crate) fn report(&mut self, kind: ViolationKind, gid: Option<&str>, detail: String) {
        self.0.push(Violation {
            kind,
            gid: gid.map(str::to_owned),
            detail,
        });
    }
}

/// Checks every rule; returns the violations, sorted by kind and gid.
pub fn check(observed: &Observed) -> Vec<Violation> {
    let mut found = Findings::default();
    stock::check(observed, &mut found);
    orders::check(observed, &mut found);
    let mut found = found.0;
    found.sort_by(|a, b| (a.kind, &a.gid).cmp(&(b.kind, &b.gid)));
    found
}

/// Compares two reads of the final state, taken apart: any difference is
/// an `unstable_observation` (the state was still changing, so the check
/// would have judged a moving target).
pub fn compare_reads(first: &Observed, second: &Observed) -> Option<Violation> {
    let changes = first.differences(second);
    (!changes.is_empty()).then(|| Violation {
        kind: ViolationKind::UnstableObservation,
        gid: None,
        detail: changes.join("; "),
    })
}

#[cfg(test)]
mod tests;
