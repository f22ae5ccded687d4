//! What the checker reads: every service's state after a run, as plain
//! values. [`super::super::observe`] fills it through read-only views (the
//! services' `GET` routes, the coordinators' API, and SELECTs on the
//! inventory's database), none of which changes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use dtx_protocol::{BranchStatus, Mode, Op, Status};
use serde::{Deserialize, Serialize};

use crate::harness::workload::Attempt;

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
    pub op: LedgerOp,
    /// The product.
    pub sku: String,
    /// The units moved.
    pub qty: i64,
    /// The stock column the units left and the one they went to. The
    /// operation alone does not say: an XA `prepare` sells, a reservation
    /// `prepare` holds.
    pub moved_from: Column,
    /// See `moved_from`.
    pub moved_to: Column,
}

/// The operation a ledger row records: one the coordinator calls, or the
/// TCC Try, which the initiator calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LedgerOp {
    /// The TCC Try.
    Try,
    /// An operation of the coordinator's.
    Coordinator(Op),
}

impl TryFrom<String> for LedgerOp {
    type Error = dtx_protocol::wire::UnknownName;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        match name.as_str() {
            "try" => Ok(LedgerOp::Try),
            other => other.parse().map(LedgerOp::Coordinator),
        }
    }
}

impl From<LedgerOp> for String {
    fn from(op: LedgerOp) -> String {
        op.to_string()
    }
}

impl fmt::Display for LedgerOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LedgerOp::Try => f.write_str("try"),
            LedgerOp::Coordinator(op) => write!(f, "{op}"),
        }
    }
}

/// A stock column of the inventory's products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Column {
    /// Free units.
    Available,
    /// Held units.
    Reserved,
    /// Sold units.
    Sold,
    /// A column the checker does not know (reported as a violation).
    #[serde(other)]
    Unknown,
}

/// Where an order stands, as the sample order service names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Created, its transaction not (known to be) under way.
    New,
    /// Its own branch holds it (TCC Try, 2PC/3PC prepare).
    Pending,
    /// Settled: its transaction committed.
    Confirmed,
    /// Settled: its transaction aborted.
    Cancelled,
    /// Any other status (not settled).
    #[serde(other)]
    Other,
}

impl OrderStatus {
    /// Whether the order is settled.
    pub fn is_settled(self) -> bool {
        matches!(self, OrderStatus::Confirmed | OrderStatus::Cancelled)
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = serde_json::to_value(self).unwrap_or_default();
        f.write_str(name.as_str().unwrap_or("?"))
    }
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
    pub mode: Mode,
    /// Where it stands.
    pub status: OrderStatus,
}

/// A transaction as the coordinator shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRow {
    /// The gid.
    pub gid: String,
    /// The mode.
    pub mode: Mode,
    /// The status.
    pub status: Status,
    /// Why an operator should look at it, when the coordinator flagged it.
    #[serde(default)]
    pub attention: Option<String>,
    /// Branch statuses by branch id (read for 2PC and 3PC only).
    #[serde(default)]
    pub branches: BTreeMap<String, BranchStatus>,
}

/// A transaction PostgreSQL holds prepared in the inventory's database
/// (`pg_prepared_xacts`), with the branch the SDK's XA helper mapped its
/// xid to (`dtx_xa_branch`), when it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedBranch {
    /// PostgreSQL's transaction identifier.
    pub xid: String,
    /// The global transaction, when the xid maps to one.
    pub gid: Option<String>,
    /// The branch, when the xid maps to one.
    pub branch: Option<String>,
}

/// The inventory's own record of a 3PC branch (`dtx_three_phase`): its
/// state and who decided it. `decided_by = timeout_rule` is the evidence
/// that the participant decided alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreePhaseRecord {
    /// The global transaction.
    pub gid: String,
    /// The branch.
    pub branch: String,
    /// `voted_yes`, `pre_committed`, `committed` or `aborted`.
    pub state: String,
    /// `coordinator`, `timeout_rule` or `participant`; `None` while open.
    pub decided_by: Option<String>,
}

/// Everything the checker reads.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Observed {
    /// Units of each product when the scenario began.
    pub seeded: BTreeMap<String, i64>,
    /// Whether the run reached quiescence: the rules about what must be
    /// gone by then (holds, prepared transactions) apply only if it did.
    pub quiescent: bool,
    /// Every order attempt and what its client was told.
    pub attempts: Vec<Attempt>,
    /// The inventory's products.
    pub products: Vec<Product>,
    /// The inventory's ledger, oldest first.
    pub ledger: Vec<LedgerRow>,
    /// Every order.
    pub orders: Vec<OrderRow>,
    /// Every transaction the coordinators logged.
    pub transactions: Vec<TransactionRow>,
    /// Transactions left prepared in the inventory's database.
    pub prepared: Vec<PreparedBranch>,
    /// The inventory's 3PC branch records.
    pub three_phase: Vec<ThreePhaseRecord>,
}

impl Observed {
    /// Every gid some service holds a trace of: ledger rows, the
    /// coordinators' log, prepared transactions, 3PC records.
    pub fn traced_gids(&self) -> BTreeSet<&str> {
        self.ledger
            .iter()
            .map(|r| r.gid.as_str())
            .chain(self.transactions.iter().map(|t| t.gid.as_str()))
            .chain(
                self.prepared
                    .iter()
                    .map(|p| p.gid.as_deref().unwrap_or(p.xid.as_str())),
            )
            .chain(self.three_phase.iter().map(|r| r.gid.as_str()))
            .collect()
    }

    /// What differs between two reads of the same cluster, in words; empty
    /// when they are identical. The client answers are the harness's own
    /// record, not read from the cluster, and are not compared.
    pub fn differences(&self, later: &Observed) -> Vec<String> {
        [
            ("products", self.products != later.products),
            ("the ledger", self.ledger != later.ledger),
            ("orders", self.orders != later.orders),
            ("transactions", self.transactions != later.transactions),
            ("prepared transactions", self.prepared != later.prepared),
            ("3PC records", self.three_phase != later.three_phase),
        ]
        .into_iter()
        .filter(|(_, changed)| *changed)
        .map(|(what, _)| format!("{what} changed between the two reads"))
        .collect()
    }
}
