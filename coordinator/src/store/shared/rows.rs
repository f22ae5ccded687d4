//! The rows as the database returns them and their decoding into records,
//! the JSON text stored for specs and options, and the answers both
//! backends' writes draw from what they read (a branch registered again, a
//! transaction that is no longer open, a gid taken).
//!
//! Rows are decoded by column name through `sqlx::FromRow`, which is generic
//! over the database, so one definition serves SQLite and PostgreSQL. Every
//! integer column is a 64-bit integer on both (`INTEGER` / `BIGINT`), so every
//! integer decodes as `i64` and is narrowed here, where a value out of range
//! is reported as a corrupt row instead of wrapping silently.

use std::str::FromStr;

use dtx_protocol::{BranchSpec, BranchStatus, TxOptions};

use crate::store::{
    BranchRecord, BranchRegistered, Cause, Created, Event, StoreError, TransactionRecord,
};

/// A `transactions` row.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct TxRow {
    pub(in crate::store) gid: String,
    mode: String,
    status: String,
    request_hash: String,
    options: String,
    pub(in crate::store) created_at_ms: i64,
    updated_at_ms: i64,
    deadline_at_ms: i64,
    owner: Option<String>,
    lease_expires_at_ms: i64,
    epoch: i64,
    attention: Option<String>,
    namespace: String,
}

/// A `transactions` row joined with one of its branches, or with none
/// (`LEFT JOIN`): one statement reads a transaction and its branches from
/// the same snapshot, on every backend, in one round trip.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct JoinedRow {
    #[sqlx(flatten)]
    tx: TxRow,
    b_idx: Option<i64>,
    b_spec: Option<String>,
    b_status: Option<String>,
    b_attempts: Option<i64>,
    b_http_status: Option<i64>,
    b_error: Option<String>,
    b_refusal: Option<String>,
    b_failing_since: Option<i64>,
}

/// An `events` row.
#[derive(Debug, sqlx::FromRow)]
pub(in crate::store) struct EventRow {
    at_ms: i64,
    kind: String,
    branch_id: Option<String>,
    detail: String,
}

/// A transaction read back with its branches, and the fingerprint that the
/// record type does not carry (only `create` needs it).
pub(in crate::store) struct Loaded {
    /// The transaction and its branches.
    pub(in crate::store) record: TransactionRecord,
    /// The stored registration fingerprint.
    pub(in crate::store) request_hash: String,
}

impl TxRow {
    /// Decodes the row into a record with the given branches.
    pub(in crate::store) fn into_record(
        self,
        branches: Vec<BranchRecord>,
    ) -> Result<TransactionRecord, StoreError> {
        Ok(TransactionRecord {
            mode: parse_name(&self.gid, "mode", &self.mode)?,
            status: parse_name(&self.gid, "status", &self.status)?,
            options: serde_json::from_str::<TxOptions>(&self.options)
                .map_err(|e| corrupt(&self.gid, "options", e))?,
            gid: self.gid,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
            deadline_at_ms: self.deadline_at_ms,
            owner: self.owner,
            lease_expires_at_ms: self.lease_expires_at_ms,
            epoch: self.epoch,
            attention: self.attention,
            namespace: self.namespace,
            branches,
        })
    }
}

/// Folds the rows of one transaction joined with its branches (ordered by
/// branch index) into the transaction; `None` when there are no rows.
pub(in crate::store) fn fold_joined(rows: Vec<JoinedRow>) -> Result<Option<Loaded>, StoreError> {
    let mut branches = Vec::with_capacity(rows.len());
    let mut tx = None;
    for row in rows {
        if let Some(idx) = row.b_idx {
            branches.push(branch_record(&row.tx.gid, idx, &row)?);
        }
        tx.get_or_insert(row.tx);
    }
    let Some(tx) = tx else { return Ok(None) };
    let request_hash = tx.request_hash.clone();
    Ok(Some(Loaded {
        record: tx.into_record(branches)?,
        request_hash,
    }))
}

fn branch_record(gid: &str, idx: i64, row: &JoinedRow) -> Result<BranchRecord, StoreError> {
    // The branch columns are NULL only when the LEFT JOIN found no branch,
    // and then `b_idx` is NULL too; a NULL next to an index is corruption.
    let missing = |column: &str| corrupt(gid, column, "NULL in a branch row");
    let spec = row.b_spec.as_deref().ok_or_else(|| missing("spec"))?;
    let status = row.b_status.as_deref().ok_or_else(|| missing("status"))?;
    let attempts = row.b_attempts.ok_or_else(|| missing("attempts"))?;
    Ok(BranchRecord {
        index: narrow(gid, "idx", idx)?,
        spec: serde_json::from_str(spec).map_err(|e| corrupt(gid, "spec", e))?,
        status: parse_name::<BranchStatus>(gid, "branch status", status)?,
        attempts: narrow(gid, "attempts", attempts)?,
        last_http_status: row
            .b_http_status
            .map(|s| narrow(gid, "last_http_status", s))
            .transpose()?,
        last_error: row.b_error.clone(),
        refusal: row.b_refusal.clone(),
        failing_since_ms: row.b_failing_since,
    })
}

impl EventRow {
    /// Decodes the row.
    pub(in crate::store) fn into_event(self) -> Event {
        Event {
            at_ms: self.at_ms,
            kind: self.kind,
            branch_id: self.branch_id,
            detail: self.detail,
        }
    }
}

/// The JSON text stored for a branch spec.
pub(in crate::store) fn spec_json(spec: &BranchSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| {
        StoreError::Other(Cause::explained(
            format!("cannot encode branch `{}`", spec.id),
            e,
        ))
    })
}

/// The JSON text stored for the options.
pub(in crate::store) fn options_json(options: &TxOptions) -> Result<String, StoreError> {
    serde_json::to_string(options)
        .map_err(|e| StoreError::Other(Cause::explained("cannot encode options", e)))
}

/// The JSON array of gids that lease renewal binds as one parameter.
pub(in crate::store) fn gids_json(gids: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(gids)
        .map_err(|e| StoreError::Other(Cause::explained("cannot encode gids", e)))
}

/// The answer to a registration of a branch whose id the transaction has
/// already, at `idx` with the spec `stored`: a retry when the specs are the
/// same, a conflict otherwise.
///
/// The comparison is on JSON values, not text: a spec that went through a
/// JSON column may come back with its keys in another order, and a retry
/// that differs only in key order is still the same registration.
pub(in crate::store) fn registered_again(
    gid: &str,
    idx: i64,
    stored: &str,
    spec: &BranchSpec,
) -> Result<BranchRegistered, StoreError> {
    let stored: serde_json::Value =
        serde_json::from_str(stored).map_err(|e| corrupt(gid, "spec", e))?;
    let asked = serde_json::to_value(spec).map_err(|e| {
        StoreError::Other(Cause::explained(
            format!("cannot encode branch `{}`", spec.id),
            e,
        ))
    })?;
    Ok(if stored == asked {
        BranchRegistered::AlreadyRegistered(branch_index(idx)?)
    } else {
        BranchRegistered::IdConflict
    })
}

/// The answer to a registration of a branch on a transaction that is not
/// open, from its `status` as read (`None`: there is no such transaction).
pub(in crate::store) fn not_open(
    gid: &str,
    status: Option<String>,
) -> Result<BranchRegistered, StoreError> {
    let status = status.ok_or(StoreError::NotFound)?;
    let status = status.parse().map_err(|_| {
        StoreError::Other(format!("corrupt status `{status}` of transaction `{gid}`").into())
    })?;
    Ok(BranchRegistered::NotOpen(status))
}

/// The answer to a create of `gid` with the fingerprint `request_hash` that
/// found the gid taken, from the transaction read after the insert did
/// nothing.
pub(in crate::store) fn existing(
    gid: &str,
    request_hash: &str,
    existing: Option<Loaded>,
) -> Result<Created, StoreError> {
    let existing = existing.ok_or_else(|| {
        StoreError::Other(format!("transaction `{gid}` conflicted but cannot be read").into())
    })?;
    Ok(Created::Exists {
        same_request: existing.request_hash == request_hash,
        existing: Box::new(existing.record),
    })
}

/// A branch index as the store stores it, as the records carry it.
pub(in crate::store) fn branch_index(idx: i64) -> Result<u32, StoreError> {
    u32::try_from(idx)
        .map_err(|_| StoreError::Other(format!("branch index {idx} is out of range").into()))
}

fn parse_name<T: FromStr>(gid: &str, column: &str, value: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| corrupt(gid, column, format!("unknown value `{value}`")))
}

fn narrow<T: TryFrom<i64>>(gid: &str, column: &str, value: i64) -> Result<T, StoreError> {
    T::try_from(value).map_err(|_| corrupt(gid, column, format!("{value} is out of range")))
}

fn corrupt(gid: &str, column: &str, why: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("corrupt row of transaction `{gid}`: column {column}: {why}").into())
}
