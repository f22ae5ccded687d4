//! The store's operations, written once as one generic implementation over
//! the database (see the bounds on it: they name the column types the schema
//! uses, which both backends have). Both backends read through them; the
//! writes here are the rare ones (branch registration, takeover, claims,
//! leases), which only PostgreSQL runs through them: SQLite has its writer
//! thread (`store::sqlite`), and PostgreSQL sends the hot `create` and
//! `update` as one statement each (`store::postgres`).
//!
//! Every write runs on one connection inside a transaction that the backend
//! opened, and is committed only if it returns `Ok`: a write that fails
//! half-way leaves nothing behind.
//!
//! Each write touches its `transactions` row before anything else. On
//! PostgreSQL that row lock serialises all writers of one transaction, which
//! is what makes branch registration atomic against a decision and keeps the
//! events of one transaction in the order they were written.

use std::future::Future;

use dtx_protocol::{BranchSpec, BranchStatus, Status};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Type};

use super::backend::RowsAffected;
use super::details;
use super::sql::*;
use super::{
    EventRow, JoinedRow, Loaded, TxRow, decode_cursor, encode_cursor, fold_joined, page_size,
    same_spec, spec_json,
};
use crate::store::{
    BranchRegistered, Event, Fence, ListQuery, Page, StoreError, TransactionRecord,
};

/// The store's operations on one connection, implemented once for every
/// database that has the column types the schema uses (see the bounds of the
/// implementation below: SQLite and PostgreSQL).
pub(in crate::store) trait Ops: Database {
    /// See [`Store::register_branch`](crate::store::Store::register_branch).
    fn register_branch(
        conn: &mut Self::Connection,
        gid: String,
        spec: BranchSpec,
        now_ms: i64,
    ) -> impl Future<Output = Result<BranchRegistered, StoreError>> + Send;

    /// See [`Store::take_over`](crate::store::Store::take_over); `statement`
    /// is [`Backend::TAKE_OVER`](super::backend::Backend::TAKE_OVER), `lease_ms`
    /// the lease length.
    fn take_over(
        conn: &mut Self::Connection,
        statement: &'static str,
        gid: String,
        owner: String,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Option<(Fence, TransactionRecord)>, StoreError>> + Send;

    /// See [`Store::claim_expired`](crate::store::Store::claim_expired); `claim` is [`Backend::CLAIM_EXPIRED`](super::backend::Backend::CLAIM_EXPIRED).
    fn claim_expired(
        conn: &mut Self::Connection,
        claim: &'static str,
        owner: String,
        lease_ms: i64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(Fence, TransactionRecord)>, StoreError>> + Send;

    /// Runs [`Backend::RENEW`](super::backend::Backend::RENEW) for
    /// `owner`'s `gids` (a JSON array) with the lease length `lease_ms`;
    /// returns the gids it renewed.
    fn renew(
        conn: &mut Self::Connection,
        statement: &'static str,
        owner: String,
        gids: String,
        lease_ms: i64,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Runs [`Backend::RELEASE`](super::backend::Backend::RELEASE) for
    /// `owner`; returns how many rows changed.
    fn release(
        conn: &mut Self::Connection,
        statement: &'static str,
        owner: String,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// See [`Store::set_attention`](crate::store::Store::set_attention).
    fn set_attention(
        conn: &mut Self::Connection,
        fence: Fence,
        reason: String,
        now_ms: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads a transaction with its branches and fingerprint.
    fn load(
        conn: &mut Self::Connection,
        gid: &str,
    ) -> impl Future<Output = Result<Option<Loaded>, StoreError>> + Send;

    /// See [`Store::events`](crate::store::Store::events).
    fn events(
        conn: &mut Self::Connection,
        gid: &str,
    ) -> impl Future<Output = Result<Vec<Event>, StoreError>> + Send;

    /// See [`Store::list`](crate::store::Store::list).
    fn list(
        conn: &mut Self::Connection,
        query: ListQuery,
    ) -> impl Future<Output = Result<Page, StoreError>> + Send;

    /// Checks the connection answers.
    fn ping(conn: &mut Self::Connection) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends one history entry.
    fn append(
        conn: &mut Self::Connection,
        gid: &str,
        entry: Event,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Inserts a freshly registered branch at `idx`.
    fn insert_branch(
        conn: &mut Self::Connection,
        gid: &str,
        idx: i64,
        spec: &BranchSpec,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Finishes a change of ownership made by a takeover or a claim: logs it
    /// and reads the transaction back for its new owner.
    fn owned(
        conn: &mut Self::Connection,
        gid: String,
        owner: String,
        epoch: i64,
        now_ms: i64,
        detail: String,
    ) -> impl Future<Output = Result<(Fence, TransactionRecord), StoreError>> + Send;
}

impl<DB> Ops for DB
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    DB::QueryResult: RowsAffected,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'e> i64: Encode<'e, DB> + Decode<'e, DB> + Type<DB>,
    for<'e> Option<i64>: Encode<'e, DB>,
    for<'e> String: Encode<'e, DB> + Decode<'e, DB> + Type<DB>,
    for<'e> Option<String>: Encode<'e, DB>,
    for<'e> &'e str: Encode<'e, DB> + Type<DB> + ColumnIndex<DB::Row>,
    for<'e> Option<&'e str>: Encode<'e, DB>,
    for<'e> Option<bool>: Encode<'e, DB>,
    bool: Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    async fn register_branch(
        conn: &mut DB::Connection,
        gid: String,
        spec: BranchSpec,
        now_ms: i64,
    ) -> Result<BranchRegistered, StoreError> {
        let locked: Option<(i64,)> = sqlx::query_as(LOCK_OPEN)
            .bind(&*gid)
            .bind(Status::Open.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let Some((count,)) = locked else {
            let status: Option<(String,)> = sqlx::query_as(STATUS)
                .bind(&*gid)
                .fetch_optional(&mut *conn)
                .await?;
            let Some((status,)) = status else {
                return Err(StoreError::NotFound);
            };
            let status = status.parse().map_err(|_| {
                StoreError::Other(
                    format!("corrupt status `{status}` of transaction `{gid}`").into(),
                )
            })?;
            return Ok(BranchRegistered::NotOpen(status));
        };
        let existing: Option<(i64, String)> = sqlx::query_as(FIND_BRANCH)
            .bind(&*gid)
            .bind(&*spec.id)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some((idx, stored)) = existing {
            return Ok(if same_spec(&gid, &stored, &spec)? {
                BranchRegistered::AlreadyRegistered(index(idx)?)
            } else {
                BranchRegistered::IdConflict
            });
        }
        Self::insert_branch(conn, &gid, count, &spec).await?;
        sqlx::query(COUNT_BRANCH)
            .bind(&*gid)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?;
        let detail = details::branch_registered(count);
        Self::append(conn, &gid, event(now_ms, "branch", Some(spec.id), detail)).await?;
        Ok(BranchRegistered::Added(index(count)?))
    }

    async fn take_over(
        conn: &mut DB::Connection,
        statement: &'static str,
        gid: String,
        owner: String,
        lease_ms: i64,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let taken: Option<(i64, i64)> = sqlx::query_as(statement)
            .bind(&*gid)
            .bind(&*owner)
            .bind(lease_ms)
            .fetch_optional(&mut *conn)
            .await?;
        let Some((epoch, now_ms)) = taken else {
            // Nothing changed: the transaction is final, or absent.
            let status: Option<(String,)> = sqlx::query_as(STATUS)
                .bind(&*gid)
                .fetch_optional(&mut *conn)
                .await?;
            return status.map(|_| None).ok_or(StoreError::NotFound);
        };
        let detail = details::taken_over(&owner, epoch);
        Self::owned(conn, gid, owner, epoch, now_ms, detail)
            .await
            .map(Some)
    }

    async fn claim_expired(
        conn: &mut DB::Connection,
        claim: &'static str,
        owner: String,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let mut claimed: Vec<(String, i64, i64)> = sqlx::query_as(claim)
            .bind(&*owner)
            .bind(lease_ms)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
        // RETURNING promises no order; give callers a stable one.
        claimed.sort();
        let mut out = Vec::with_capacity(claimed.len());
        for (gid, epoch, now_ms) in claimed {
            let detail = details::claimed(&owner, epoch);
            out.push(Self::owned(conn, gid, owner.clone(), epoch, now_ms, detail).await?);
        }
        Ok(out)
    }

    async fn renew(
        conn: &mut DB::Connection,
        statement: &'static str,
        owner: String,
        gids: String,
        lease_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let renewed: Vec<(String,)> = sqlx::query_as(statement)
            .bind(owner)
            .bind(lease_ms)
            .bind(gids)
            .fetch_all(&mut *conn)
            .await?;
        Ok(renewed.into_iter().map(|(gid,)| gid).collect())
    }

    async fn release(
        conn: &mut DB::Connection,
        statement: &'static str,
        owner: String,
    ) -> Result<u64, StoreError> {
        let result = sqlx::query(statement)
            .bind(owner)
            .execute(&mut *conn)
            .await?;
        Ok(result.rows())
    }

    async fn set_attention(
        conn: &mut DB::Connection,
        fence: Fence,
        reason: String,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let changed = sqlx::query(SET_ATTENTION)
            .bind(&*fence.gid)
            .bind(&*fence.owner)
            .bind(fence.epoch)
            .bind(&*reason)
            .bind(now_ms)
            .execute(&mut *conn)
            .await?
            .rows();
        if changed == 0 {
            let state: Option<(Option<String>, i64, i64)> = sqlx::query_as(FENCE_STATE)
                .bind(&*fence.gid)
                .fetch_optional(&mut *conn)
                .await?;
            let Some((owner, epoch, count)) = state else {
                return Err(StoreError::NotFound);
            };
            return Err(details::refusal(
                &fence,
                None,
                owner.as_deref(),
                epoch,
                count,
            ));
        }
        let entry = event(now_ms, "attention", None, reason);
        Self::append(conn, &fence.gid, entry).await
    }

    async fn load(conn: &mut DB::Connection, gid: &str) -> Result<Option<Loaded>, StoreError> {
        let rows: Vec<JoinedRow> = sqlx::query_as(LOAD).bind(gid).fetch_all(&mut *conn).await?;
        fold_joined(rows)
    }

    async fn events(conn: &mut DB::Connection, gid: &str) -> Result<Vec<Event>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(EVENTS)
            .bind(gid)
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    async fn list(conn: &mut DB::Connection, query: ListQuery) -> Result<Page, StoreError> {
        let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
        let size = page_size(query.limit) as usize;
        // One row more than the page tells whether another page follows.
        let mut rows: Vec<TxRow> = sqlx::query_as(LIST)
            .bind(query.status.map(Status::as_str))
            .bind(query.mode.map(|m| m.as_str()))
            .bind(query.attention)
            .bind(after.as_ref().map(|(at, _)| *at))
            .bind(after.as_ref().map(|(_, gid)| gid.as_str()))
            .bind(size as i64 + 1)
            .fetch_all(&mut *conn)
            .await?;
        let more = rows.len() > size;
        rows.truncate(size);
        let next_cursor = match rows.last() {
            Some(last) if more => Some(encode_cursor(last.created_at_ms, &last.gid)),
            _ => None,
        };
        let transactions = rows
            .into_iter()
            .map(|row| row.into_record(Vec::new()))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            transactions,
            next_cursor,
        })
    }

    async fn ping(conn: &mut DB::Connection) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&mut *conn).await?;
        Ok(())
    }

    async fn append(conn: &mut DB::Connection, gid: &str, entry: Event) -> Result<(), StoreError> {
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

    async fn insert_branch(
        conn: &mut DB::Connection,
        gid: &str,
        idx: i64,
        spec: &BranchSpec,
    ) -> Result<(), StoreError> {
        sqlx::query(INSERT_BRANCH)
            .bind(gid)
            .bind(idx)
            .bind(&*spec.id)
            .bind(spec_json(spec)?)
            .bind(BranchStatus::Pending.as_str())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    async fn owned(
        conn: &mut DB::Connection,
        gid: String,
        owner: String,
        epoch: i64,
        now_ms: i64,
        detail: String,
    ) -> Result<(Fence, TransactionRecord), StoreError> {
        Self::append(conn, &gid, event(now_ms, "takeover", None, detail)).await?;
        let loaded = Self::load(conn, &gid).await?.ok_or_else(|| {
            StoreError::Other(format!("transaction `{gid}` vanished while being taken over").into())
        })?;
        Ok((Fence { gid, owner, epoch }, loaded.record))
    }
}

fn event(at_ms: i64, kind: &str, branch_id: Option<String>, detail: String) -> Event {
    Event {
        at_ms,
        kind: kind.to_owned(),
        branch_id,
        detail,
    }
}

fn index(idx: i64) -> Result<u32, StoreError> {
    u32::try_from(idx)
        .map_err(|_| StoreError::Other(format!("branch index {idx} is out of range").into()))
}
