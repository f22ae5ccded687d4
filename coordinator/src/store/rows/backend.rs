//! What a backend must provide (how a write reaches the database, where
//! reads go, its claim statement), and the one [`Store`] implementation that
//! follows from it for every backend.
//!
//! Only PostgreSQL is such a backend now (SQLite implements [`Store`] itself
//! around its writer thread): it runs each rare write in a transaction of
//! its own, claims expired leases with `FOR UPDATE SKIP LOCKED`, renews and
//! releases leases with statements that lock rows in gid order, times every
//! lease by the server's clock, and writes
//! the two hot operations, `create` and `update`, its own way (batched,
//! one statement per batch) instead of through [`Ops`].

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use dtx_protocol::BranchSpec;
use sqlx::{Database, Pool};

use super::ops::Ops;
use crate::store::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update, lease_ms, not_renewed,
};

/// A boxed, sendable future: what a write operation hands its backend.
pub(in crate::store) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend provides; [`Store`] follows from it.
pub(in crate::store) trait Backend: Send + Sync + 'static {
    /// The database.
    type Db: Ops;

    /// The statement that takes a live transaction over: binds `$1` gid,
    /// `$2` owner, `$3` lease length; returns the new epoch and the time of
    /// the takeover. The backend reads "now" itself.
    const TAKE_OVER: &'static str;

    /// The statement that claims expired leases: binds `$1` owner, `$2` lease
    /// length, `$3` limit; returns `gid, epoch, updated_at_ms` of each row it
    /// claimed. Two claimers running it at once must never both claim a row.
    const CLAIM_EXPIRED: &'static str;

    /// The statement that extends leases: binds `$1` owner, `$2` lease
    /// length, `$3` the gids to renew as a JSON array; changes what
    /// `rows::sql::RENEW_SQLITE` changes and returns the gids it renewed.
    const RENEW: &'static str;

    /// The statement that ends leases now: binds `$1` owner; changes what
    /// `rows::sql::RELEASE_SQLITE` changes.
    const RELEASE: &'static str;

    /// Runs `op` in a write transaction and commits it when `op` returns `Ok`
    /// (rolls it back otherwise). Returns only once the commit is durable.
    fn write<T, F>(&self, op: F) -> impl Future<Output = Result<T, StoreError>> + Send
    where
        T: Send + 'static,
        F: for<'c> FnOnce(
                &'c mut <Self::Db as Database>::Connection,
            ) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static;

    /// The connections reads go through.
    fn readers(&self) -> &Pool<Self::Db>;

    /// [`Store::create`]. Every transaction starts with it, so a backend
    /// writes it the cheapest way it has rather than through [`Ops`].
    fn create_tx(
        &self,
        new: NewTransaction,
    ) -> impl Future<Output = Result<Created, StoreError>> + Send;

    /// [`Store::update`], a driver's every step: written as
    /// [`Backend::create_tx`] is.
    fn update_tx(&self, update: Update) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The number of rows a statement changed. `sqlx` has this on each
/// backend's result type but not on a trait, so the backends implement it.
pub(in crate::store) trait RowsAffected {
    /// Rows inserted, updated or deleted.
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

/// The one implementation of [`Store`] for a [`Backend`]: creates and
/// updates are the backend's own, every other operation is an [`Ops`] call,
/// writes through [`Backend::write`], reads on a connection of
/// [`Backend::readers`].
#[async_trait]
impl<B: Backend> Store for B {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        self.create_tx(new).await
    }

    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
    ) -> Result<BranchRegistered, StoreError> {
        let gid = gid.to_owned();
        self.write(move |conn| Box::pin(B::Db::register_branch(conn, gid, spec, now_ms)))
            .await
    }

    async fn update(&self, update: Update) -> Result<(), StoreError> {
        self.update_tx(update).await
    }

    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let (fence, reason) = (fence.clone(), reason.to_owned());
        self.write(move |conn| Box::pin(B::Db::set_attention(conn, fence, reason, now_ms)))
            .await
    }

    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError> {
        let mut conn = self.readers().acquire().await?;
        Ok(B::Db::load(&mut conn, gid)
            .await?
            .map(|loaded| loaded.record))
    }

    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError> {
        let mut conn = self.readers().acquire().await?;
        B::Db::events(&mut conn, gid).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        let mut conn = self.readers().acquire().await?;
        B::Db::list(&mut conn, query).await
    }

    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let (gid, owner) = (gid.to_owned(), owner.to_owned());
        let lease = lease_ms(lease);
        self.write(move |conn| Box::pin(B::Db::take_over(conn, B::TAKE_OVER, gid, owner, lease)))
            .await
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let owner = owner.to_owned();
        let lease = lease_ms(lease);
        self.write(move |conn| {
            Box::pin(B::Db::claim_expired(
                conn,
                B::CLAIM_EXPIRED,
                owner,
                lease,
                limit,
            ))
        })
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let owner = owner.to_owned();
        let named = super::gids_json(gids)?;
        let lease = lease_ms(lease);
        let renewed = self
            .write(move |conn| Box::pin(B::Db::renew(conn, B::RENEW, owner, named, lease)))
            .await?;
        Ok(not_renewed(gids, renewed))
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| Box::pin(B::Db::release(conn, B::RELEASE, owner)))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.readers().acquire().await?;
        B::Db::ping(&mut conn).await
    }
}
