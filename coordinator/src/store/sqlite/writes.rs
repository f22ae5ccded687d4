//! The store's writes on SQLite, as plain synchronous calls on the writer
//! thread's `rusqlite` connection (see the parent module for why they do not
//! go through `sqlx`). Each runs inside the savepoint the writer opened for
//! it, so an error here undoes everything the write did.
//!
//! The statements are the shared ones of `rows::sql`; their `$N`
//! placeholders are bound by name ([`bind`]), because SQLite numbers
//! parameters in order of first appearance, not by the digits in their names.
//!
//! Lease times come from the caller, which reads the process clock (see
//! `store::sqlite`); SQLite is one machine, so that clock is the only one.
//!
//! Writes that must hand back a whole record (a takeover, a claim, a
//! registration that found the gid taken) return only what identifies it;
//! the store reads the record on a reader connection once the batch has
//! committed, so no row decoding is written twice.

use dtx_protocol::{BranchSpec, BranchStatus, Status};
use rusqlite::types::ToSql;
use rusqlite::{Connection, ErrorCode, Statement};

use crate::store::rows::sql::{
    CLAIM_EXPIRED_SQLITE, COUNT_BRANCH, FENCE_STATE, FIND_BRANCH, INSERT_BRANCH, INSERT_EVENT,
    INSERT_TX, LOCK_OPEN, RELEASE_SQLITE, RENEW_SQLITE, SET_ATTENTION, STATUS, TAKE_OVER_SQLITE,
    UPDATE_BRANCH, UPDATE_TX,
};
use crate::store::rows::{self, details};
use crate::store::{BranchRegistered, Cause, Event, Fence, NewTransaction, StoreError, Update};

/// What [`create`] did.
pub(super) enum Inserted {
    /// The transaction is new; the caller owns it under this fence.
    New(Fence),
    /// The gid was taken; read the existing transaction after the commit.
    GidTaken,
}

/// Inserts a new transaction with its branches and its `registered` event,
/// its lease running until `lease_expires_at_ms`.
pub(super) fn create(
    conn: &Connection,
    new: &NewTransaction,
    lease_expires_at_ms: i64,
) -> Result<Inserted, StoreError> {
    let branch_count = i64::try_from(new.branches.len())
        .map_err(|_| StoreError::Other("too many branches".into()))?;
    let inserted = execute(
        conn,
        INSERT_TX,
        &[
            &new.gid,
            &new.mode.as_str(),
            &new.status.as_str(),
            &new.request_hash,
            &rows::options_json(&new.options)?,
            &new.now_ms,
            &new.deadline_at_ms,
            &new.owner,
            &lease_expires_at_ms,
            &branch_count,
        ],
    )?;
    if inserted == 0 {
        return Ok(Inserted::GidTaken);
    }
    for (idx, spec) in (0_i64..).zip(&new.branches) {
        insert_branch(conn, &new.gid, idx, spec)?;
    }
    let detail = details::registered(new.mode, new.branches.len());
    append(conn, &new.gid, new.now_ms, "registered", None, &detail)?;
    Ok(Inserted::New(Fence {
        gid: new.gid.clone(),
        owner: new.owner.clone(),
        epoch: 1,
    }))
}

/// Adds a branch to an open transaction.
pub(super) fn register_branch(
    conn: &Connection,
    gid: &str,
    spec: &BranchSpec,
    now_ms: i64,
) -> Result<BranchRegistered, StoreError> {
    let count: Option<i64> = query_one(conn, LOCK_OPEN, &[&gid, &Status::Open.as_str()])?;
    let Some(count) = count else {
        let status: Option<String> = query_one(conn, STATUS, &[&gid])?;
        let status = status.ok_or(StoreError::NotFound)?;
        let status = status.parse().map_err(|_| {
            StoreError::Other(format!("corrupt status `{status}` of transaction `{gid}`").into())
        })?;
        return Ok(BranchRegistered::NotOpen(status));
    };
    let existing: Option<(i64, String)> = {
        let mut stmt = prepare(conn, FIND_BRANCH, &[&gid, &spec.id])?;
        let mut found = stmt.raw_query();
        match found.next().map_err(error)? {
            Some(row) => Some((row.get(0).map_err(error)?, row.get(1).map_err(error)?)),
            None => None,
        }
    };
    if let Some((idx, stored)) = existing {
        return Ok(if rows::same_spec(gid, &stored, spec)? {
            BranchRegistered::AlreadyRegistered(index(idx)?)
        } else {
            BranchRegistered::IdConflict
        });
    }
    insert_branch(conn, gid, count, spec)?;
    execute(conn, COUNT_BRANCH, &[&gid, &now_ms])?;
    let detail = details::branch_registered(count);
    append(conn, gid, now_ms, "branch", Some(&spec.id), &detail)?;
    Ok(BranchRegistered::Added(index(count)?))
}

/// Applies one fenced write.
pub(super) fn update(conn: &Connection, update: &Update) -> Result<(), StoreError> {
    let fence = &update.fence;
    let changed = execute(
        conn,
        UPDATE_TX,
        &[
            &fence.gid,
            &fence.owner,
            &fence.epoch,
            &update.status.map(Status::as_str),
            &update.attention,
            &update.now_ms,
            &update.expect_branch_count.map(i64::from),
        ],
    )?;
    if changed == 0 {
        return Err(refusal(conn, fence, update.expect_branch_count)?);
    }
    for branch in &update.branches {
        let changed = execute(
            conn,
            UPDATE_BRANCH,
            &[
                &fence.gid,
                &i64::from(branch.index),
                &branch.status.as_str(),
                &i64::from(branch.attempts),
                &branch.last_http_status.map(i64::from),
                &branch.last_error,
                &branch.failing_since_ms,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::Conflict(
                details::no_such_branch(&fence.gid, branch.index).into(),
            ));
        }
    }
    for event in &update.events {
        append_event(conn, &fence.gid, event)?;
    }
    Ok(())
}

/// Flags a transaction for an operator, fenced.
pub(super) fn set_attention(
    conn: &Connection,
    fence: &Fence,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let changed = execute(
        conn,
        SET_ATTENTION,
        &[&fence.gid, &fence.owner, &fence.epoch, &reason, &now_ms],
    )?;
    if changed == 0 {
        return Err(refusal(conn, fence, None)?);
    }
    append(conn, &fence.gid, now_ms, "attention", None, reason)
}

/// Makes `owner` the owner of a transaction that is not final, with a lease
/// of `lease_ms` from `now_ms`. `Ok(None)` when it is final; `NotFound` when
/// absent; otherwise the new epoch.
pub(super) fn take_over(
    conn: &Connection,
    gid: &str,
    owner: &str,
    lease_ms: i64,
    now_ms: i64,
) -> Result<Option<i64>, StoreError> {
    let epoch: Option<i64> =
        query_one(conn, TAKE_OVER_SQLITE, &[&gid, &owner, &lease_ms, &now_ms])?;
    let Some(epoch) = epoch else {
        let status: Option<String> = query_one(conn, STATUS, &[&gid])?;
        return status.map(|_| None).ok_or(StoreError::NotFound);
    };
    let detail = details::taken_over(owner, epoch);
    append(conn, gid, now_ms, "takeover", None, &detail)?;
    Ok(Some(epoch))
}

/// Claims up to `limit` leases expired at `now_ms`, each with a lease of
/// `lease_ms` from then; returns each claimed gid with its new epoch,
/// ordered by gid.
pub(super) fn claim_expired(
    conn: &Connection,
    owner: &str,
    lease_ms: i64,
    limit: u32,
    now_ms: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    let mut claimed: Vec<(String, i64)> = Vec::new();
    {
        let args: [&dyn ToSql; 4] = [&owner, &lease_ms, &i64::from(limit), &now_ms];
        let mut stmt = prepare(conn, CLAIM_EXPIRED_SQLITE, &args)?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(error)? {
            claimed.push((row.get(0).map_err(error)?, row.get(1).map_err(error)?));
        }
    }
    // RETURNING promises no order; give callers a stable one.
    claimed.sort();
    for (gid, epoch) in &claimed {
        let detail = details::claimed(owner, *epoch);
        append(conn, gid, now_ms, "takeover", None, &detail)?;
    }
    Ok(claimed)
}

/// Extends to `lease_ms` from `now_ms` the leases `owner` holds of `gids`
/// (a JSON array); returns the gids it renewed.
pub(super) fn renew(
    conn: &Connection,
    owner: &str,
    gids: &str,
    lease_ms: i64,
    now_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let mut stmt = prepare(conn, RENEW_SQLITE, &[&owner, &lease_ms, &gids, &now_ms])?;
    let mut rows = stmt.raw_query();
    let mut renewed = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        renewed.push(row.get(0).map_err(error)?);
    }
    Ok(renewed)
}

/// Ends the leases `owner` holds at `now_ms`; returns the rows changed.
pub(super) fn release(conn: &Connection, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
    execute(conn, RELEASE_SQLITE, &[&owner, &now_ms]).map(|n| n as u64)
}

fn refusal(
    conn: &Connection,
    fence: &Fence,
    expect_branch_count: Option<u32>,
) -> Result<StoreError, StoreError> {
    let mut stmt = prepare(conn, FENCE_STATE, &[&fence.gid])?;
    let mut found = stmt.raw_query();
    let Some(row) = found.next().map_err(error)? else {
        return Ok(StoreError::NotFound);
    };
    let owner: Option<String> = row.get(0).map_err(error)?;
    let epoch: i64 = row.get(1).map_err(error)?;
    let count: i64 = row.get(2).map_err(error)?;
    Ok(details::refusal(
        fence,
        expect_branch_count,
        owner.as_deref(),
        epoch,
        count,
    ))
}

fn insert_branch(
    conn: &Connection,
    gid: &str,
    idx: i64,
    spec: &BranchSpec,
) -> Result<(), StoreError> {
    let spec_json = rows::spec_json(spec)?;
    let status = BranchStatus::Pending.as_str();
    execute(
        conn,
        INSERT_BRANCH,
        &[&gid, &idx, &spec.id, &spec_json, &status],
    )?;
    Ok(())
}

fn append_event(conn: &Connection, gid: &str, event: &Event) -> Result<(), StoreError> {
    append(
        conn,
        gid,
        event.at_ms,
        &event.kind,
        event.branch_id.as_deref(),
        &event.detail,
    )
}

fn append(
    conn: &Connection,
    gid: &str,
    at_ms: i64,
    kind: &str,
    branch_id: Option<&str>,
    detail: &str,
) -> Result<(), StoreError> {
    execute(
        conn,
        INSERT_EVENT,
        &[&gid, &at_ms, &kind, &branch_id, &detail],
    )?;
    Ok(())
}

/// Runs a statement that returns no rows; answers how many rows it changed.
fn execute(conn: &Connection, sql: &str, args: &[&dyn ToSql]) -> Result<usize, StoreError> {
    prepare(conn, sql, args)?.raw_execute().map_err(error)
}

/// Runs a statement that returns at most one row of one column.
fn query_one<T: rusqlite::types::FromSql>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<Option<T>, StoreError> {
    let mut stmt = prepare(conn, sql, args)?;
    let mut rows = stmt.raw_query();
    let value = match rows.next().map_err(error)? {
        Some(row) => Some(row.get(0).map_err(error)?),
        None => None,
    };
    // Step to the end, as SQLite expects of a statement that writes
    // (`UPDATE ... RETURNING`), before the cache resets it.
    while rows.next().map_err(error)?.is_some() {}
    Ok(value)
}

/// A cached prepared statement with `args[i]` bound to `$<i+1>`.
fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<rusqlite::CachedStatement<'c>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    bind(&mut stmt, args)?;
    Ok(stmt)
}

/// Binds `args[i]` to the parameter named `$<i+1>`. A statement need not use
/// every number (then that argument is skipped), but must not use one that
/// has no argument (SQLite would read it as NULL).
fn bind(stmt: &mut Statement<'_>, args: &[&dyn ToSql]) -> Result<(), StoreError> {
    for (number, arg) in (1..).zip(args) {
        if let Some(position) = stmt.parameter_index(&format!("${number}")).map_err(error)? {
            stmt.raw_bind_parameter(position, arg).map_err(error)?;
        }
    }
    if stmt.parameter_count() > args.len() {
        return Err(StoreError::Other(
            format!(
                "statement takes {} parameters, {} given",
                stmt.parameter_count(),
                args.len()
            )
            .into(),
        ));
    }
    Ok(())
}

/// Maps SQLite's errors to what the caller can do about them, as
/// `rows::From<sqlx::Error>` does for the `sqlx` side: busy, locked, I/O,
/// full disk, cannot open → `Unavailable`; a uniqueness violation →
/// `Conflict`; the rest → `Other`.
pub(super) fn error(e: rusqlite::Error) -> StoreError {
    let kind: fn(Cause) -> StoreError = match e.sqlite_error() {
        Some(failure) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen => StoreError::Unavailable,
            ErrorCode::ConstraintViolation
                if matches!(
                    failure.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Other,
        },
        None => StoreError::Other,
    };
    kind(Cause::of(e))
}

fn index(idx: i64) -> Result<u32, StoreError> {
    u32::try_from(idx)
        .map_err(|_| StoreError::Other(format!("branch index {idx} is out of range").into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_unavailable_and_its_error_kept_whole() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let e = error(busy);
        let StoreError::Unavailable(cause) = &e else {
            panic!("{e:?}")
        };
        let kept = cause.error().downcast_ref::<rusqlite::Error>().unwrap();
        assert_eq!(kept.sqlite_error_code(), Some(ErrorCode::DatabaseBusy));
        assert_eq!(e.to_string(), "database unavailable: database is locked");
    }
}
