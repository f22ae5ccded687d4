//! What both backends share besides their SQL: the rows as the database
//! returns them and their decoding into records, the listing cursor, the
//! comparison that makes branch registration idempotent, and the mapping of
//! `sqlx` errors to [`StoreError`]. Beneath it: [`sql`], every statement;
//! [`details`], the history's sentences;
//! [`ops`], the operations built from them, generic over the database;
//! [`backend`], what a backend provides and the one `Store` implementation.
//!
//! Rows are decoded by column name through `sqlx::FromRow`, which is generic
//! over the database, so one definition serves SQLite and PostgreSQL. Every
//! integer column is a 64-bit integer on both (`INTEGER` / `BIGINT`), so every
//! integer decodes as `i64` and is narrowed here, where a value out of range
//! is reported as a corrupt row instead of wrapping silently.

pub(super) mod backend;
pub(super) mod details;
pub(super) mod ops;
pub(super) mod sql;

use std::borrow::Cow;
use std::str::FromStr;

use dtx_protocol::{BranchSpec, BranchStatus, TxOptions};
use sqlx::error::{DatabaseError, ErrorKind};

use super::{BranchRecord, Cause, Event, StoreError, TransactionRecord};

/// Listing pages hold at most this many transactions, whatever was asked.
pub(super) const MAX_PAGE: u32 = 1000;

/// A `transactions` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct TxRow {
    gid: String,
    mode: String,
    status: String,
    pub(super) request_hash: String,
    options: String,
    pub(super) created_at_ms: i64,
    updated_at_ms: i64,
    deadline_at_ms: i64,
    owner: Option<String>,
    lease_expires_at_ms: i64,
    epoch: i64,
    attention: Option<String>,
}

/// A `transactions` row joined with one of its branches, or with none
/// (`LEFT JOIN`): one statement reads a transaction and its branches from
/// the same snapshot, on every backend, in one round trip.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct JoinedRow {
    #[sqlx(flatten)]
    tx: TxRow,
    b_idx: Option<i64>,
    b_spec: Option<String>,
    b_status: Option<String>,
    b_attempts: Option<i64>,
    b_http_status: Option<i64>,
    b_error: Option<String>,
    b_failing_since: Option<i64>,
}

/// An `events` row.
#[derive(Debug, sqlx::FromRow)]
pub(super) struct EventRow {
    at_ms: i64,
    kind: String,
    branch_id: Option<String>,
    detail: String,
}

/// A transaction read back with its branches, and the fingerprint that the
/// record type does not carry (only `create` needs it).
pub(super) struct Loaded {
    /// The transaction and its branches.
    pub(super) record: TransactionRecord,
    /// The stored registration fingerprint.
    pub(super) request_hash: String,
}

impl TxRow {
    /// Decodes the row into a record with the given branches.
    pub(super) fn into_record(
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
            branches,
        })
    }
}

/// Folds the rows of one transaction joined with its branches (ordered by
/// branch index) into the transaction; `None` when there are no rows.
pub(super) fn fold_joined(rows: Vec<JoinedRow>) -> Result<Option<Loaded>, StoreError> {
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
        failing_since_ms: row.b_failing_since,
    })
}

impl EventRow {
    /// Decodes the row.
    pub(super) fn into_event(self) -> Event {
        Event {
            at_ms: self.at_ms,
            kind: self.kind,
            branch_id: self.branch_id,
            detail: self.detail,
        }
    }
}

/// The JSON text stored for a branch spec.
pub(super) fn spec_json(spec: &BranchSpec) -> Result<String, StoreError> {
    serde_json::to_string(spec).map_err(|e| {
        StoreError::Other(Cause::explained(
            format!("cannot encode branch `{}`", spec.id),
            e,
        ))
    })
}

/// The JSON text stored for the options.
pub(super) fn options_json(options: &TxOptions) -> Result<String, StoreError> {
    serde_json::to_string(options)
        .map_err(|e| StoreError::Other(Cause::explained("cannot encode options", e)))
}

/// The JSON array of gids that lease renewal binds as one parameter.
pub(super) fn gids_json(gids: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(gids)
        .map_err(|e| StoreError::Other(Cause::explained("cannot encode gids", e)))
}

/// Whether a stored branch spec is the one being registered again.
///
/// The comparison is on JSON values, not text: a spec that went through a
/// JSON column may come back with its keys in another order, and a retry
/// that differs only in key order is still the same registration.
pub(super) fn same_spec(gid: &str, stored: &str, spec: &BranchSpec) -> Result<bool, StoreError> {
    let stored: serde_json::Value =
        serde_json::from_str(stored).map_err(|e| corrupt(gid, "spec", e))?;
    let asked = serde_json::to_value(spec).map_err(|e| {
        StoreError::Other(Cause::explained(
            format!("cannot encode branch `{}`", spec.id),
            e,
        ))
    })?;
    Ok(stored == asked)
}

/// The opaque listing cursor for "after this transaction": its creation time
/// and its gid in hex, so that no character of a client-chosen gid can clash
/// with the separator.
pub(super) fn encode_cursor(created_at_ms: i64, gid: &str) -> String {
    let hex: String = gid.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{created_at_ms}.{hex}")
}

/// Reads a cursor made by [`encode_cursor`].
pub(super) fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let invalid = || {
        StoreError::InvalidInput(format!(
            "invalid listing cursor `{cursor}`: pass back a `next_cursor` unchanged"
        ))
    };
    let (created, hex) = cursor.split_once('.').ok_or_else(invalid)?;
    let created = created.parse::<i64>().map_err(|_| invalid())?;
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return Err(invalid());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| invalid())?;
    let gid = String::from_utf8(bytes).map_err(|_| invalid())?;
    Ok((created, gid))
}

/// The page size to fetch for a requested limit: 0 (nothing asked) and
/// anything above [`MAX_PAGE`] mean [`MAX_PAGE`].
pub(super) fn page_size(limit: u32) -> u32 {
    if limit == 0 {
        MAX_PAGE
    } else {
        limit.min(MAX_PAGE)
    }
}

/// Maps database errors to what the caller can do about them: a connection
/// that failed or a database that is busy or shutting down is `Unavailable`
/// (retry later); a violated uniqueness is a `Conflict`; the rest is `Other`.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let kind: fn(Cause) -> StoreError = match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable,
            E::Database(db) if is_transient(db.as_ref()) => StoreError::Unavailable,
            E::Database(db) if db.kind() == ErrorKind::UniqueViolation => StoreError::Conflict,
            _ => StoreError::Other,
        };
        kind(Cause::of(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            e => StoreError::Other(Cause::explained("cannot migrate the database", e)),
        }
    }
}

/// Whether a database error may pass by itself.
fn is_transient(db: &dyn DatabaseError) -> bool {
    let code = db.code().unwrap_or(Cow::Borrowed(""));
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes carry the primary code in their low byte:
        // BUSY (5), LOCKED (6), IOERR (10), FULL (13), CANTOPEN (14).
        return code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
    }
    // PostgreSQL SQLSTATEs: connection exceptions (08), insufficient
    // resources (53), operator intervention such as a shutdown (57P), and
    // the serialization failures and deadlocks that distributed engines
    // answer instead of waiting (40001, 40P01): retrying is their cure.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_any_gid() {
        for gid in ["plain", "with.dots.and:colons", "ünïcode ✓", ""] {
            let cursor = encode_cursor(1_700_000_000_123, gid);
            assert_eq!(
                decode_cursor(&cursor).unwrap(),
                (1_700_000_000_123, gid.to_owned())
            );
        }
    }

    #[test]
    fn malformed_cursor_is_refused() {
        for bad in ["", "12", "x.00", "12.0", "12.zz", "12.ff"] {
            assert!(decode_cursor(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_database_error_is_classified_and_kept_whole() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        let StoreError::Unavailable(cause) = &e else {
            panic!("{e:?}")
        };
        assert!(matches!(
            cause.error().downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        assert_eq!(e.to_string(), format!("database unavailable: {cause}"));
    }

    #[test]
    fn page_size_is_capped() {
        assert_eq!(page_size(0), MAX_PAGE);
        assert_eq!(page_size(10), 10);
        assert_eq!(page_size(5000), MAX_PAGE);
    }
}
