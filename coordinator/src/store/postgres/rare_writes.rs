//! The rare writes on PostgreSQL (branch registration, the operator flag,
//! takeover, claims, lease renewal and release), as plain calls on one
//! connection, and the statements only PostgreSQL runs for them. The store
//! runs each in a transaction of its own and commits it only if it returns
//! `Ok` (`store::postgres`): a write that fails half-way leaves nothing
//! behind.
//!
//! Each write touches its `transactions` row before anything else. That row
//! lock serialises all writers of one transaction, which is what makes
//! branch registration atomic against a decision and keeps the events of one
//! transaction in the order they were written. The writes that change many
//! rows take their locks in gid order (see the lock order of
//! [`batch_sql`](super::batch_sql)): a claim never waits (`FOR UPDATE SKIP
//! LOCKED`), renewal and release lock their rows sorted first.
//!
//! Every lease is timed by the server's clock ([`pg_now_ms!`]); a takeover
//! or a claim logs the server's time of the change, which its statement
//! returns.

use dtx_protocol::{BranchSpec, BranchStatus, Status};
use sqlx::postgres::PgConnection;

use super::server_clock::pg_now_ms;
use crate::store::shared::history;
use crate::store::shared::reads::postgres as reads;
use crate::store::shared::rows::{self, branch_index};
use crate::store::shared::statements::{
    COUNT_BRANCH, FENCE_STATE, FIND_BRANCH, INSERT_BRANCH, INSERT_EVENT, LOCK_OPEN, SET_ATTENTION,
    STATUS, claim_expired, live, take_over,
};
use crate::store::{BranchRegistered, Event, Fence, StoreError, TransactionRecord};

/// [`take_over!`] on PostgreSQL, by the server's clock.
pub(super) const TAKE_OVER: &str = take_over!(pg_now_ms!());

/// [`claim_expired!`] on PostgreSQL (and CockroachDB, YugabyteDB): the
/// subquery locks the rows it picks and skips rows another claimer holds,
/// so two coordinators claiming at once split the expired transactions
/// between them instead of queueing on the same rows.
pub(super) const CLAIM_EXPIRED: &str = claim_expired!(" FOR UPDATE SKIP LOCKED", pg_now_ms!());

/// Changes the lease of the live transactions `$1` owns to `$value`, `$extra`
/// being a further condition: [`RENEW`] and [`RELEASE`]. They change the
/// same rows as SQLite's renewal and release (`store::sqlite::writes`), but
/// lock them first in gid order: a renewal touches many rows that batches of
/// updates lock too (see the lock order of [`batch_sql`](super::batch_sql)).
/// The UPDATE repeats the conditions, which it re-checks on the newest
/// version of a row it had to wait for. Every time is the server's
/// ([`pg_now_ms!`]); returns the gids it changed.
macro_rules! set_leases {
    ($value:expr, $extra:expr) => {
        concat!(
            "WITH locked AS MATERIALIZED (SELECT gid FROM transactions WHERE owner = $1 AND ",
            live!(),
            $extra,
            " ORDER BY gid FOR NO KEY UPDATE) \
             UPDATE transactions SET lease_expires_at_ms = ",
            $value,
            " FROM locked WHERE transactions.gid = locked.gid AND owner = $1 AND ",
            live!(),
            $extra,
            " RETURNING transactions.gid"
        )
    };
}

/// Extends to `$2` (a lease length) from now the leases `$1` holds of the
/// gids in the JSON array `$3`.
pub(super) const RENEW: &str = set_leases!(
    concat!(pg_now_ms!(), " + $2"),
    " AND transactions.gid IN (SELECT jsonb_array_elements_text($3::jsonb))"
);

/// Ends now the leases `$1` holds; only shortens: a lease that ran out
/// already stays as it was.
pub(super) const RELEASE: &str = set_leases!(
    pg_now_ms!(),
    concat!(" AND lease_expires_at_ms > ", pg_now_ms!())
);

/// See [`Store::register_branch`](crate::store::Store::register_branch).
pub(super) async fn register_branch(
    conn: &mut PgConnection,
    gid: &str,
    spec: &BranchSpec,
    now_ms: i64,
    by: Option<&str>,
) -> Result<BranchRegistered, StoreError> {
    let locked: Option<(i64,)> = sqlx::query_as(LOCK_OPEN)
        .bind(gid)
        .bind(Status::Open.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    let Some((count,)) = locked else {
        let status: Option<(String,)> = sqlx::query_as(STATUS)
            .bind(gid)
            .fetch_optional(&mut *conn)
            .await?;
        return rows::not_open(gid, status.map(|(status,)| status));
    };
    let existing: Option<(i64, String)> = sqlx::query_as(FIND_BRANCH)
        .bind(gid)
        .bind(&*spec.id)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some((idx, stored)) = existing {
        return rows::registered_again(gid, idx, &stored, spec);
    }
    insert_branch(conn, gid, count, spec).await?;
    sqlx::query(COUNT_BRANCH)
        .bind(gid)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?;
    let detail = history::branch_registered(count, by);
    let entry = event(now_ms, "branch", Some(spec.id.clone()), detail);
    append(conn, gid, entry).await?;
    Ok(BranchRegistered::Added(branch_index(count)?))
}

/// See [`Store::set_attention`](crate::store::Store::set_attention).
pub(super) async fn set_attention(
    conn: &mut PgConnection,
    fence: &Fence,
    reason: &str,
    now_ms: i64,
) -> Result<(), StoreError> {
    let changed = sqlx::query(SET_ATTENTION)
        .bind(&*fence.gid)
        .bind(&*fence.owner)
        .bind(fence.epoch)
        .bind(reason)
        .bind(now_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if changed == 0 {
        let state: Option<(Option<String>, i64, i64)> = sqlx::query_as(FENCE_STATE)
            .bind(&*fence.gid)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((owner, epoch, count)) = state else {
            return Err(StoreError::NotFound);
        };
        return Err(history::refusal(
            fence,
            None,
            owner.as_deref(),
            epoch,
            count,
        ));
    }
    let entry = event(now_ms, "attention", None, reason.to_owned());
    append(conn, &fence.gid, entry).await
}

/// See [`Store::take_over`](crate::store::Store::take_over); `lease_ms` is
/// the lease length.
pub(super) async fn take_over(
    conn: &mut PgConnection,
    gid: &str,
    owner: &str,
    lease_ms: i64,
) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
    let taken: Option<(i64, i64)> = sqlx::query_as(TAKE_OVER)
        .bind(gid)
        .bind(owner)
        .bind(lease_ms)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((epoch, now_ms)) = taken else {
        // Nothing changed: the transaction is final, or absent.
        let status: Option<(String,)> = sqlx::query_as(STATUS)
            .bind(gid)
            .fetch_optional(&mut *conn)
            .await?;
        return status.map(|_| None).ok_or(StoreError::NotFound);
    };
    let detail = history::taken_over(owner, epoch);
    owned(
        conn,
        gid.to_owned(),
        owner.to_owned(),
        epoch,
        now_ms,
        detail,
    )
    .await
    .map(Some)
}

/// See [`Store::claim_expired`](crate::store::Store::claim_expired);
/// `lease_ms` is the lease length.
pub(super) async fn claim_expired(
    conn: &mut PgConnection,
    owner: &str,
    lease_ms: i64,
    limit: u32,
) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
    let mut claimed: Vec<(String, i64, i64)> = sqlx::query_as(CLAIM_EXPIRED)
        .bind(owner)
        .bind(lease_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await?;
    // RETURNING promises no order; give callers a stable one.
    claimed.sort();
    let mut out = Vec::with_capacity(claimed.len());
    for (gid, epoch, now_ms) in claimed {
        let detail = history::claimed(owner, epoch);
        out.push(owned(conn, gid, owner.to_owned(), epoch, now_ms, detail).await?);
    }
    Ok(out)
}

/// Runs [`RENEW`] for `owner`'s `gids` (a JSON array) with the lease length
/// `lease_ms`; returns the gids it renewed.
pub(super) async fn renew(
    conn: &mut PgConnection,
    owner: &str,
    gids: &str,
    lease_ms: i64,
) -> Result<Vec<String>, StoreError> {
    let renewed: Vec<(String,)> = sqlx::query_as(RENEW)
        .bind(owner)
        .bind(lease_ms)
        .bind(gids)
        .fetch_all(&mut *conn)
        .await?;
    Ok(renewed.into_iter().map(|(gid,)| gid).collect())
}

/// Runs [`RELEASE`] for `owner`; returns how many rows changed.
pub(super) async fn release(conn: &mut PgConnection, owner: &str) -> Result<u64, StoreError> {
    let result = sqlx::query(RELEASE).bind(owner).execute(&mut *conn).await?;
    Ok(result.rows_affected())
}

/// Finishes a change of ownership made by a takeover or a claim: logs it
/// and reads the transaction back for its new owner.
async fn owned(
    conn: &mut PgConnection,
    gid: String,
    owner: String,
    epoch: i64,
    now_ms: i64,
    detail: String,
) -> Result<(Fence, TransactionRecord), StoreError> {
    append(conn, &gid, event(now_ms, "takeover", None, detail)).await?;
    let loaded = reads::load(conn, &gid).await?.ok_or_else(|| {
        StoreError::Other(format!("transaction `{gid}` vanished while being taken over").into())
    })?;
    Ok((Fence { gid, owner, epoch }, loaded.record))
}

/// Inserts a freshly registered branch at `idx`.
async fn insert_branch(
    conn: &mut PgConnection,
    gid: &str,
    idx: i64,
    spec: &BranchSpec,
) -> Result<(), StoreError> {
    sqlx::query(INSERT_BRANCH)
        .bind(gid)
        .bind(idx)
        .bind(&*spec.id)
        .bind(rows::spec_json(spec)?)
        .bind(BranchStatus::Pending.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one history entry.
async fn append(conn: &mut PgConnection, gid: &str, entry: Event) -> Result<(), StoreError> {
    sqlx::query(INSERT_EVENT)
        .bind(gid)
        .bind(entry.at_ms)
        .bind(entry.kind)
        .bind(entry.branch_id)
        .bind(entry.detail)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn event(at_ms: i64, kind: &str, branch_id: Option<String>, detail: String) -> Event {
    Event {
        at_ms,
        kind: kind.to_owned(),
        branch_id,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renewal and release lock exactly the rows they change: the UPDATE
    /// repeats each condition of the locking subquery (which it re-checks on
    /// the newest version of a row it waited for).
    #[test]
    fn lease_statements_repeat_their_conditions_in_the_update() {
        assert_eq!(RENEW.matches(live!()).count(), 2);
        assert_eq!(RENEW.matches("jsonb_array_elements_text($3").count(), 2);
        let later_than_now = concat!(" AND lease_expires_at_ms > ", pg_now_ms!());
        assert_eq!(RELEASE.matches(later_than_now).count(), 2);
    }
}
