//! The store's writes on SQLite, as plain synchronous calls on the writer
//! thread's `rusqlite` connection (see the parent module for why they do not
//! go through `sqlx`), and the statements only SQLite runs. Each runs inside
//! the savepoint the writer opened for it, so an error here undoes
//! everything the write did.
//!
//! Lease times come from the caller, which reads the process clock (see
//! `store::sqlite`); SQLite is one machine, so that clock is the only one.
//! The statements take it as a parameter where PostgreSQL's read the
//! server's clock.
//!
//! Writes that must hand back a whole record (a takeover, a claim, a
//! registration that found the gid taken) return only what identifies it;
//! the store reads the record on a reader connection once the batch has
//! committed, so no row decoding is written twice.

use dtx_protocol::{BranchSpec, BranchStatus, Status};
use rusqlite::Connection;
use rusqlite::types::ToSql;

use super::connection::{error, execute, prepare, query_one};
use crate::store::shared::history;
use crate::store::shared::rows::{self, branch_index};
use crate::store::shared::statements::{
    COUNT_BRANCH, FENCE_STATE, FIND_BRANCH, INSERT_BRANCH, INSERT_EVENT, LOCK_OPEN, SET_ATTENTION,
    STATUS, claim_expired, live, take_over,
};
use crate::store::{BranchRegistered, Event, Fence, NewTransaction, StoreError, Update};

/// A new transaction, owned at epoch 1, with no operator flag. `$9` is when
/// its lease expires.
const INSERT_TX: &str = "INSERT INTO transactions (gid, mode, status, request_hash, options, created_at_ms, \
     updated_at_ms, deadline_at_ms, owner, lease_expires_at_ms, epoch, attention, branch_count, namespace) \
     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, 1, NULL, $10, $11) ON CONFLICT (gid) DO NOTHING";

/// A fenced write's change to the transaction's row: `$4` status and `$5`
/// attention when not NULL, `$6` now; refused unless `$2` owner and `$3`
/// epoch hold and, when `$7` is not NULL, the transaction has `$7` branches.
const UPDATE_TX: &str = "UPDATE transactions SET status = COALESCE($4, status), \
     attention = COALESCE($5, attention), updated_at_ms = $6 \
     WHERE gid = $1 AND owner = $2 AND epoch = $3 AND ($7 IS NULL OR branch_count = $7)";

/// A fenced write's change to one branch.
const UPDATE_BRANCH: &str = "UPDATE branches SET status = $3, attempts = $4, last_http_status = $5, \
     last_error = $6, failing_since_ms = $7, refusal = $8 WHERE gid = $1 AND idx = $2";

/// [`take_over!`] on SQLite: `$4` is now by the process clock.
const TAKE_OVER: &str = take_over!("$4");

/// [`claim_expired!`] on SQLite. SQLite has one writer at a time, so nothing
/// can claim a row between the subquery and the update: no locking clause
/// (SQLite has none anyway). `$4` is now by the process clock.
const CLAIM_EXPIRED: &str = claim_expired!("", "$4");

/// Extends to `$2` (a lease length) from `$4` (now by the process clock) the
/// leases `$1` holds of the gids in `$3`, a JSON array (one parameter however
/// many gids); returns the gids it renewed. PostgreSQL's renewal, which also
/// takes the row locks in order and reads the server's clock, is
/// `store::postgres::rare_writes`'s.
const RENEW: &str = concat!(
    "UPDATE transactions SET lease_expires_at_ms = $4 + $2 WHERE owner = $1 AND ",
    live!(),
    " AND gid IN (SELECT value FROM json_each($3)) RETURNING gid"
);

/// Ends `$1`'s leases at `$2`, now by the process clock. Only shortens: a
/// lease that ran out already stays as it was.
const RELEASE: &str = concat!(
    "UPDATE transactions SET lease_expires_at_ms = $2 WHERE owner = $1 AND ",
    live!(),
    " AND lease_expires_at_ms > $2"
);

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
            &new.namespace,
        ],
    )?;
    if inserted == 0 {
        return Ok(Inserted::GidTaken);
    }
    for (idx, spec) in (0_i64..).zip(&new.branches) {
        insert_branch(conn, &new.gid, idx, spec)?;
    }
    let detail = history::registered(new.mode, new.branches.len(), new.registered_by.as_deref());
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
    by: Option<&str>,
) -> Result<BranchRegistered, StoreError> {
    let count: Option<i64> = query_one(conn, LOCK_OPEN, &[&gid, &Status::Open.as_str()])?;
    let Some(count) = count else {
        return rows::not_open(gid, query_one(conn, STATUS, &[&gid])?);
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
        return rows::registered_again(gid, idx, &stored, spec);
    }
    insert_branch(conn, gid, count, spec)?;
    execute(conn, COUNT_BRANCH, &[&gid, &now_ms])?;
    let detail = history::branch_registered(count, by);
    append(conn, gid, now_ms, "branch", Some(&spec.id), &detail)?;
    Ok(BranchRegistered::Added(branch_index(count)?))
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
                &branch.refusal,
            ],
        )?;
        if changed == 0 {
            return Err(StoreError::Conflict(
                history::no_such_branch(&fence.gid, branch.index).into(),
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
    let epoch: Option<i64> = query_one(conn, TAKE_OVER, &[&gid, &owner, &lease_ms, &now_ms])?;
    let Some(epoch) = epoch else {
        let status: Option<String> = query_one(conn, STATUS, &[&gid])?;
        return status.map(|_| None).ok_or(StoreError::NotFound);
    };
    let detail = history::taken_over(owner, epoch);
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
        let mut stmt = prepare(conn, CLAIM_EXPIRED, &args)?;
        let mut rows = stmt.raw_query();
        while let Some(row) = rows.next().map_err(error)? {
            claimed.push((row.get(0).map_err(error)?, row.get(1).map_err(error)?));
        }
    }
    // RETURNING promises no order; give callers a stable one.
    claimed.sort();
    for (gid, epoch) in &claimed {
        let detail = history::claimed(owner, *epoch);
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
    let mut stmt = prepare(conn, RENEW, &[&owner, &lease_ms, &gids, &now_ms])?;
    let mut rows = stmt.raw_query();
    let mut renewed = Vec::new();
    while let Some(row) = rows.next().map_err(error)? {
        renewed.push(row.get(0).map_err(error)?);
    }
    Ok(renewed)
}

/// Ends the leases `owner` holds at `now_ms`; returns the rows changed.
pub(super) fn release(conn: &Connection, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
    execute(conn, RELEASE, &[&owner, &now_ms]).map(|n| n as u64)
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
    Ok(history::refusal(
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
