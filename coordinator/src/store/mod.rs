//! The durable transaction log: the [`Store`] trait, the records it reads and
//! writes, and its error type.
//!
//! Each backend implements [`Store`] itself, with writes of its own:
//! [`sqlite`] (one file, one writer thread) and [`postgres`] (shared by
//! several coordinators, batched writes). What both really share (the reads,
//! the decoding of rows, the statements both run, the history's sentences,
//! the listing cursor, the meaning of `sqlx`'s errors) is in `shared`;
//! [`text`] makes free text storable, the same on both.
//!
//! Every write by a driver is *fenced*: it names the owner and the epoch it
//! believes it holds ([`Fence`]), and the store refuses it when either has
//! changed. A coordinator that stalled past its lease and woke up after
//! another took the transaction over can therefore not overwrite the new
//! owner's work. The epoch changes only when ownership changes (takeover or
//! claim); lease renewal keeps it.
//!
//! Free text from outside (a participant's error, a reason for an operator)
//! is stored as [`text::storable`] makes it, the same on every backend.
//!
//! Lease times are the store's business, not the caller's: a caller names a
//! lease's *length*, and the store decides when it started and when it
//! expires. PostgreSQL, shared by several coordinators, reads the database
//! server's clock in the statement itself, so one coordinator's clock being
//! ahead or behind cannot move another's leases. SQLite, one file on one
//! machine, reads this process's clock (`crate::clock::now_ms`). Deadlines
//! and history times stay the coordinator's (`now_ms` fields).

mod error;
pub mod postgres;
mod shared;
pub mod sqlite;
pub mod text;

pub use error::{Cause, StoreError};

use std::time::Duration;

use async_trait::async_trait;
use dtx_protocol::{BranchSpec, BranchStatus, Mode, Status, TxOptions};
use serde::Serialize;

/// The right to write a transaction: its owner and the epoch of that
/// ownership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fence {
    /// The transaction.
    pub gid: String,
    /// The coordinator that owns it.
    pub owner: String,
    /// Bumped each time ownership changes hands.
    pub epoch: i64,
}

/// A transaction to insert at registration.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    /// Client-chosen or generated global id.
    pub gid: String,
    /// The protocol.
    pub mode: Mode,
    /// The first status: `running` for a saga, `open` for TCC.
    pub status: Status,
    /// Fingerprint of the registration request; the same gid with another
    /// fingerprint is a conflict.
    pub request_hash: String,
    /// Options, with defaults filled in.
    pub options: TxOptions,
    /// Branches known at registration (every branch of a saga; none for TCC).
    pub branches: Vec<BranchSpec>,
    /// The registering coordinator, which owns the transaction from the start.
    pub owner: String,
    /// The namespace of the token that registered it (`default` without
    /// tokens); only that namespace's tokens and operators see it.
    pub namespace: String,
    /// The name of the token that registered it, for the history; `None`
    /// without tokens.
    pub registered_by: Option<String>,
    /// Wall-clock time of the registration, in Unix milliseconds.
    pub now_ms: i64,
    /// How long the owner's lease lasts; the store starts it by its own
    /// clock (see the module's doc).
    pub lease: Duration,
    /// When phase one must be over, in Unix milliseconds.
    pub deadline_at_ms: i64,
}

/// The answer to [`Store::create`].
#[derive(Debug)]
pub enum Created {
    /// The transaction was inserted; the caller owns it under this fence and
    /// must start driving it.
    Inserted(Fence),
    /// A transaction with this gid exists already. When `same_request` is
    /// true this is a retry of the same registration: answer with `existing`.
    /// Otherwise the client reused a gid for another request: a conflict.
    Exists {
        /// Whether the stored request has the same fingerprint.
        same_request: bool,
        /// The stored transaction.
        existing: Box<TransactionRecord>,
    },
}

/// The answer to [`Store::register_branch`].
#[derive(Debug, PartialEq, Eq)]
pub enum BranchRegistered {
    /// The branch was added at this index.
    Added(u32),
    /// The same branch (same id, same spec) was registered before, at this
    /// index: a retry, answer as the first time.
    AlreadyRegistered(u32),
    /// A branch with this id but another spec exists.
    IdConflict,
    /// The transaction no longer accepts branches; it is in this status.
    NotOpen(Status),
}

/// A transaction as stored, with its branches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionRecord {
    /// Global id.
    pub gid: String,
    /// The protocol.
    pub mode: Mode,
    /// Current status.
    pub status: Status,
    /// Options in force.
    pub options: TxOptions,
    /// Unix milliseconds of registration.
    pub created_at_ms: i64,
    /// Unix milliseconds of the last write.
    pub updated_at_ms: i64,
    /// Unix milliseconds when phase one must be over.
    pub deadline_at_ms: i64,
    /// The owning coordinator, if any.
    pub owner: Option<String>,
    /// Unix milliseconds when the owner's lease expires.
    pub lease_expires_at_ms: i64,
    /// Fencing epoch.
    pub epoch: i64,
    /// Why an operator should look at this transaction, if they should.
    pub attention: Option<String>,
    /// The namespace it belongs to (see [`NewTransaction::namespace`]).
    pub namespace: String,
    /// Branches, in registration order.
    pub branches: Vec<BranchRecord>,
}

/// One branch as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BranchRecord {
    /// Position in the transaction, from 0.
    pub index: u32,
    /// What was registered.
    pub spec: BranchSpec,
    /// Current status.
    pub status: BranchStatus,
    /// Calls made on this branch so far (all operations).
    pub attempts: u32,
    /// HTTP status of the last answer, if there was one.
    pub last_http_status: Option<u16>,
    /// The last error (transport error or unexpected status), if any.
    pub last_error: Option<String>,
    /// Why the participant refused the branch's work (the detail of its
    /// refusal), if it did; stays when later calls replace `last_error`.
    pub refusal: Option<String>,
    /// Unix milliseconds since which the current phase-two operation has
    /// been failing, if it is.
    pub failing_since_ms: Option<i64>,
}

/// A change to one branch within an [`Update`].
#[derive(Debug, Clone, PartialEq)]
pub struct BranchUpdate {
    /// Which branch.
    pub index: u32,
    /// Its status now.
    pub status: BranchStatus,
    /// Calls made so far.
    pub attempts: u32,
    /// HTTP status of the last answer.
    pub last_http_status: Option<u16>,
    /// The last error.
    pub last_error: Option<String>,
    /// Why the participant refused the branch's work.
    pub refusal: Option<String>,
    /// Since when the current phase-two operation has been failing.
    pub failing_since_ms: Option<i64>,
}

/// An entry of a transaction's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// What happened, as a short machine-readable word (`status`, `branch`,
    /// `call_failed`, `attention`, `registered`, `takeover`).
    pub kind: String,
    /// The branch concerned, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch_id: Option<String>,
    /// A sentence for people.
    pub detail: String,
}

/// One fenced write of a driver: all of it is applied, or none.
#[derive(Debug, Clone)]
pub struct Update {
    /// Who writes; the write is refused with [`StoreError::Fenced`] unless
    /// this owner and epoch still hold.
    pub fence: Fence,
    /// Unix milliseconds of the write.
    pub now_ms: i64,
    /// The new status, when it changed.
    pub status: Option<Status>,
    /// When set, the write is refused with [`StoreError::Conflict`] unless the
    /// transaction has exactly this many branches (a TCC decision must not
    /// miss a branch registered through another coordinator).
    pub expect_branch_count: Option<u32>,
    /// Sets the operator flag, when `Some`.
    pub attention: Option<String>,
    /// Branch changes.
    pub branches: Vec<BranchUpdate>,
    /// History entries to append.
    pub events: Vec<Event>,
}

/// Filters and position of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this status.
    pub status: Option<Status>,
    /// Only this mode.
    pub mode: Option<Mode>,
    /// Only flagged (`true`) or unflagged (`false`) transactions.
    pub attention: Option<bool>,
    /// Only this namespace's transactions.
    pub namespace: Option<String>,
    /// Continue after this cursor (from [`Page::next_cursor`]).
    pub cursor: Option<String>,
    /// At most this many (the store caps it at 1000).
    pub limit: u32,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    /// The transactions, without their branches (`branches` is empty).
    pub transactions: Vec<TransactionRecord>,
    /// Pass this as the cursor to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// The durable transaction log. Implemented for SQLite and PostgreSQL; the
/// same test suite runs against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new transaction with its branches and a `registered` event,
    /// owned by `new.owner` at epoch 1; or reports the existing one.
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError>;

    /// Adds a branch to an open TCC transaction, atomically with respect to
    /// any status change (a branch never lands on a decided transaction).
    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
        by: Option<&str>,
    ) -> Result<BranchRegistered, StoreError>;

    /// Applies one fenced write. Its free text (attention, last errors,
    /// refusals, event details) is stored as [`text::storable`] makes it:
    /// control characters but tab and newline replaced, at most
    /// [`text::STORED_TEXT_MAX_CHARS`] characters each.
    async fn update(&self, update: Update) -> Result<(), StoreError>;

    /// Flags a transaction for an operator with `reason` (replacing an
    /// earlier reason) and logs it as an `attention` event at `now_ms`,
    /// fenced like [`Store::update`]. A write of its own, as small as it can
    /// be, for when the driver's own writes keep failing: it carries none of
    /// what they carried.
    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// Reads a transaction with its branches.
    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError>;

    /// Reads a transaction's history, oldest first.
    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError>;

    /// Lists transactions, newest first.
    async fn list(&self, query: ListQuery) -> Result<Page, StoreError>;

    /// Makes `owner` the owner of a transaction that is not final, whoever
    /// held it, bumping the epoch (and so fencing out the previous owner),
    /// with a lease of `lease` from now by the store's clock. Returns `None`
    /// when the transaction is final; `NotFound` when absent.
    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError>;

    /// Claims up to `limit` transactions that are not final and whose lease
    /// expired by the store's clock, bumping their epochs, each with a lease
    /// of `lease` from now. Two coordinators claiming at once never both get
    /// the same transaction.
    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError>;

    /// Extends to `lease` from now (by the store's clock) the lease of each
    /// of `gids` that `owner` holds and that is not final: the transactions
    /// it is driving. A transaction `owner` holds but does not drive (say,
    /// one whose registration committed while the answer was lost) is left
    /// to expire, so that it is claimed and driven.
    ///
    /// Returns the gids of `gids` whose lease was NOT extended, in the order
    /// given: another coordinator owns them now, or they are final, or gone.
    /// Their drivers here must stop: a write of theirs would be fenced out.
    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Ends now (by the store's clock) the leases `owner` holds (graceful
    /// shutdown), so that other coordinators take them over without waiting
    /// for expiry. Returns how many it ended.
    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError>;

    /// Checks the database answers (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A lease length in milliseconds, as the statements add it to "now".
/// Saturates: no lease is anywhere near the limit, and a lease that would
/// overflow the column is better long than negative.
pub(crate) fn lease_ms(lease: Duration) -> i64 {
    i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4)
}

/// The gids of `named` not in `renewed`, in `named`'s order.
pub(crate) fn not_renewed(named: &[String], renewed: Vec<String>) -> Vec<String> {
    let renewed: std::collections::HashSet<String> = renewed.into_iter().collect();
    named
        .iter()
        .filter(|gid| !renewed.contains(*gid))
        .cloned()
        .collect()
}

/// Opens the store a URL names: `sqlite:` (file created when missing) or
/// `postgres://` / `postgresql://`. Applies the backend's migrations.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(url).await?,
        ))
    } else {
        Err(StoreError::Other(
            format!(
                "unsupported database URL `{}`: use sqlite:<file> or postgres://...",
                url.split(':').next().unwrap_or("")
            )
            .into(),
        ))
    }
}
