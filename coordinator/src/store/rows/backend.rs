//! What a backend must provide (how a write reaches the database, where
//! reads go, its claim statement), and the one [`Store`] implementation that
//! follows from it for every backend.
//!
//! Only PostgreSQL is such a backend now (SQLite implements [`Store`] itself
//! around its writer thread): it runs each rare write in a transaction of
//! its own, claims expired leases with `FOR UPDATE SKIP LOCKED`, renews and
//! releases leases with statements that lock rows in gid order, and writes
//! the two hot operations, `create` and `update`, its own way (batched,
//! one statement per batch) instead of through [`Ops`].

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;
use dtx_protocol::BranchSpec;
use sqlx::{Database, Pool};

use super::ops::Ops;
use crate::store::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update,
};

/// A boxed, sendable future: what a write operation hands its backend.
pub(in crate::store) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a backend provides; [`Store`] follows from it.
pub(in crate::store) trait Backend: Send + Sync + 'static {
    /// The database.
    type Db: Ops;

    /// The statement that claims expired leases: binds `$1` owner, `$2` now,
    /// `$3` new lease expiry, `$4` limit; returns `gid, epoch` of each row it
    /// claimed. Two claimers running it at once must never both claim a row.
    const CLAIM_EXPIRED: &'static str;

    /// The statement that extends leases: binds `$1` owner, `$2` new lease
    /// expiry, `$3` the gids to renew as a JSON array; changes what
    /// `rows::sql::RENEW_SQLITE` changes.
    const RENEW: &'static str;

    /// The statement that ends leases: binds `$1` owner, `$2` now; changes
    /// what `rows::sql::RELEASE` changes.
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
        now_ms: i64,
        lease_expires_at_ms: i64,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let (gid, owner) = (gid.to_owned(), owner.to_owned());
        self.write(move |conn| {
            Box::pin(B::Db::take_over(
                conn,
                gid,
                owner,
                now_ms,
                lease_expires_at_ms,
            ))
        })
        .await
    }

    async fn claim_expired(
        &self,
        owner: &str,
        now_ms: i64,
        lease_expires_at_ms: i64,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| {
            Box::pin(B::Db::claim_expired(
                conn,
                B::CLAIM_EXPIRED,
                owner,
                now_ms,
                lease_expires_at_ms,
                limit,
            ))
        })
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease_expires_at_ms: i64,
    ) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        let gids = super::gids_json(gids)?;
        self.write(move |conn| {
            Box::pin(B::Db::renew(
                conn,
                B::RENEW,
                owner,
                gids,
                lease_expires_at_ms,
            ))
        })
        .await
    }

    async fn release_leases(&self, owner: &str, now_ms: i64) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |conn| Box::pin(B::Db::release(conn, B::RELEASE, owner, now_ms)))
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.readers().acquire().await?;
        B::Db::ping(&mut conn).await
    }
}
