//! `create` and `update` on PostgreSQL, each sent as the one statement of
//! [`super::sql`] straight on a pooled connection, in autocommit: one round
//! trip, one commit, no `BEGIN`/`COMMIT`. The rare outcomes (the gid was
//! taken, the update was refused) cost a second query that reads why.
//!
//! A statement whose answer is lost may or may not have committed; sqlx
//! reports the broken connection as an I/O error, which the store maps to
//! `Unavailable`, and every caller retries (create answers the retry with
//! the existing transaction, a fenced update applies the same change again),
//! as with a lost `COMMIT` before.

use std::collections::HashMap;

use dtx_protocol::{BranchStatus, Status};
use sqlx::Postgres;
use sqlx::postgres::PgPool;

use super::sql::{CREATE, REFUSAL, UPDATE};
use crate::store::rows::ops::Ops;
use crate::store::rows::{Loaded, details, options_json, spec_json};
use crate::store::{BranchUpdate, Created, Event, Fence, NewTransaction, StoreError, Update};

/// See [`Store::create`](crate::store::Store::create).
pub(super) async fn create(pool: &PgPool, new: NewTransaction) -> Result<Created, StoreError> {
    let branch_count = i64::try_from(new.branches.len())
        .map_err(|_| StoreError::Other("too many branches".into()))?;
    let ids: Vec<&str> = new.branches.iter().map(|b| b.id.as_str()).collect();
    let specs = new
        .branches
        .iter()
        .map(spec_json)
        .collect::<Result<Vec<_>, _>>()?;
    let detail = details::registered(new.mode, new.branches.len());
    let (inserted,): (i64,) = sqlx::query_as(CREATE)
        .bind(&*new.gid)
        .bind(new.mode.as_str())
        .bind(new.status.as_str())
        .bind(&*new.request_hash)
        .bind(options_json(&new.options)?)
        .bind(new.now_ms)
        .bind(new.deadline_at_ms)
        .bind(&*new.owner)
        .bind(new.lease_expires_at_ms)
        .bind(branch_count)
        .bind(ids)
        .bind(specs)
        .bind(BranchStatus::Pending.as_str())
        .bind("registered")
        .bind(detail)
        .fetch_one(pool)
        .await?;
    if inserted == 0 {
        // The statement waited for a concurrent insert of the same gid to
        // end (ON CONFLICT), so the row it lost to is committed: read it.
        let mut conn = pool.acquire().await?;
        let existing = <Postgres as Ops>::load(&mut conn, &new.gid).await?;
        return exists(&new, existing);
    }
    Ok(Created::Inserted(Fence {
        gid: new.gid,
        owner: new.owner,
        epoch: 1,
    }))
}

/// The answer to a create that found its gid taken, from the transaction
/// read after the insert did nothing.
fn exists(new: &NewTransaction, existing: Option<Loaded>) -> Result<Created, StoreError> {
    let existing = existing.ok_or_else(|| {
        StoreError::Other(format!(
            "transaction `{}` conflicted but cannot be read",
            new.gid
        ))
    })?;
    Ok(Created::Exists {
        same_request: existing.request_hash == new.request_hash,
        existing: Box::new(existing.record),
    })
}

/// See [`Store::update`](crate::store::Store::update).
pub(super) async fn update(pool: &PgPool, update: Update) -> Result<(), StoreError> {
    let Update {
        fence,
        now_ms,
        status,
        expect_branch_count,
        attention,
        branches,
        events,
    } = update;
    let branches = Branches::of(branches);
    let events = Events::of(events);
    let (updated,): (i64,) = sqlx::query_as(UPDATE)
        .bind(&*fence.gid)
        .bind(&*fence.owner)
        .bind(fence.epoch)
        .bind(status.map(Status::as_str))
        .bind(attention)
        .bind(now_ms)
        .bind(expect_branch_count.map(i64::from))
        .bind(&branches.index)
        .bind(branches.status)
        .bind(branches.attempts)
        .bind(branches.http_status)
        .bind(branches.error)
        .bind(events.at_ms)
        .bind(events.kind)
        .bind(events.branch_id)
        .bind(events.detail)
        .fetch_one(pool)
        .await?;
    if updated == 1 {
        return Ok(());
    }
    // Nothing changed; say why.
    let state: Option<(Option<String>, i64, i64, Option<i64>)> = sqlx::query_as(REFUSAL)
        .bind(&*fence.gid)
        .bind(&branches.index)
        .fetch_optional(pool)
        .await?;
    let Some((owner, epoch, count, missing)) = state else {
        return Err(StoreError::NotFound);
    };
    let fence_holds = owner.as_deref() == Some(fence.owner.as_str()) && epoch == fence.epoch;
    let count_holds = expect_branch_count.is_none_or(|expected| i64::from(expected) == count);
    Err(match missing {
        // Refused for its last condition alone: a branch it names is not
        // there. A broken fence or a wrong count is reported first, as the
        // store always has (and SQLite does).
        Some(index) if fence_holds && count_holds => {
            // The index came from a `u32` of this update.
            let index = u32::try_from(index)
                .map_err(|_| StoreError::Other(format!("branch index {index} is out of range")))?;
            StoreError::Conflict(details::no_such_branch(&fence.gid, index))
        }
        _ => details::refusal(&fence, expect_branch_count, owner.as_deref(), epoch, count),
    })
}

/// An update's events as the parallel arrays [`UPDATE`] binds, in order.
struct Events {
    at_ms: Vec<i64>,
    kind: Vec<String>,
    branch_id: Vec<Option<String>>,
    detail: Vec<String>,
}

impl Events {
    fn of(events: Vec<Event>) -> Self {
        let mut out = Events {
            at_ms: Vec::with_capacity(events.len()),
            kind: Vec::with_capacity(events.len()),
            branch_id: Vec::with_capacity(events.len()),
            detail: Vec::with_capacity(events.len()),
        };
        for entry in events {
            out.at_ms.push(entry.at_ms);
            out.kind.push(entry.kind);
            out.branch_id.push(entry.branch_id);
            out.detail.push(entry.detail);
        }
        out
    }
}

/// An update's branch changes as the parallel arrays [`UPDATE`] binds.
struct Branches {
    index: Vec<i64>,
    status: Vec<&'static str>,
    attempts: Vec<i64>,
    http_status: Vec<Option<i64>>,
    error: Vec<Option<String>>,
}

impl Branches {
    /// One entry per index, in the order the indices first appear, with the
    /// values of their last change. Changes applied one after the other (as
    /// the store did before, and SQLite does) let the last change of a
    /// branch win; one `UPDATE ... FROM` with two matches for a row would
    /// apply either.
    fn of(changes: Vec<BranchUpdate>) -> Self {
        let mut position = HashMap::with_capacity(changes.len());
        let mut last: Vec<BranchUpdate> = Vec::with_capacity(changes.len());
        for change in changes {
            match position.get(&change.index) {
                Some(&at) => last[at] = change,
                None => {
                    position.insert(change.index, last.len());
                    last.push(change);
                }
            }
        }
        let mut out = Branches {
            index: Vec::with_capacity(last.len()),
            status: Vec::with_capacity(last.len()),
            attempts: Vec::with_capacity(last.len()),
            http_status: Vec::with_capacity(last.len()),
            error: Vec::with_capacity(last.len()),
        };
        for change in last {
            out.index.push(i64::from(change.index));
            out.status.push(change.status.as_str());
            out.attempts.push(i64::from(change.attempts));
            out.http_status.push(change.last_http_status.map(i64::from));
            out.error.push(change.last_error);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(index: u32, attempts: u32) -> BranchUpdate {
        BranchUpdate {
            index,
            status: BranchStatus::Succeeded,
            attempts,
            last_http_status: None,
            last_error: None,
        }
    }

    #[test]
    fn the_last_change_of_a_branch_wins_at_its_first_place() {
        let b = Branches::of(vec![change(3, 1), change(0, 1), change(3, 2)]);
        assert_eq!(b.index, [3, 0]);
        assert_eq!(b.attempts, [2, 1]);
    }
}
