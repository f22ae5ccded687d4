//! The PostgreSQL backend: the production store, shared by several
//! coordinators. Also meant for PostgreSQL-compatible distributed engines
//! (CockroachDB, YugabyteDB): the schema and statements avoid advisory locks
//! and LISTEN/NOTIFY.
//!
//! Correctness between coordinators rests on row locks, not on isolation
//! (the default, READ COMMITTED): every write starts by updating its
//! `transactions` row with the fence (or the open status) in the WHERE
//! clause, and PostgreSQL re-checks that WHERE clause on the newest version
//! of the row after waiting for another writer's lock; everything else the
//! write changes, it changes under that lock. Claims use `FOR UPDATE SKIP
//! LOCKED` so that coordinators split the expired leases between them.
//!
//! The two writes every transaction makes, `create` and `update`, are ONE
//! statement each ([`sql`], run by [`writes`]) sent in autocommit: one
//! round trip and one commit instead of `BEGIN`, a statement per row and
//! `COMMIT`. The rare writes (branch registration, takeover, claims, leases)
//! are the generic operations of `rows::ops`, each in a transaction of its
//! own on a pooled connection, and so are the reads.

mod sql;
mod writes;

use std::time::Duration;

use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres};

use super::rows::backend::{Backend, BoxFuture};
use super::rows::sql::CLAIM_EXPIRED_POSTGRES;
use super::{Created, NewTransaction, StoreError, Update};

/// Connections per coordinator. Writes are short (a few statements under
/// one row lock), so a handful of connections carry many transactions, and
/// several coordinators share one server's connection limit.
const MAX_CONNECTIONS: u32 = 16;

/// How long a caller waits for a free connection before the store answers
/// `Unavailable`: long enough to ride out a burst, short enough that a lost
/// database is reported rather than hung on.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled connection idle for longer than this is pinged before it is
/// handed out; one used again sooner is not. sqlx pings every connection
/// when it returns to the pool, so a connection idle for less than this
/// answered a moment ago; its ping on acquire, sqlx's default, would be a
/// round trip more on every write under load. Should the server go away in
/// that moment, the next statement on the connection fails with an I/O
/// error, `Unavailable` to the caller, which retries, and sqlx drops the
/// connection.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The durable transaction log on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://...`) and applies the
    /// migrations in `migrations/postgres`. sqlx's migrator holds a lock while
    /// it runs, so coordinators starting together apply each migration once.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect(url)
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

impl Backend for PostgresStore {
    type Db = Postgres;

    const CLAIM_EXPIRED: &'static str = CLAIM_EXPIRED_POSTGRES;

    async fn write<T, F>(&self, op: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, StoreError>>
            + Send
            + 'static,
    {
        let mut tx = self.pool.begin().await?;
        match op(&mut tx).await {
            Ok(value) => {
                // A commit whose answer is lost may or may not have happened;
                // the caller sees `Unavailable` and retries, which every
                // operation tolerates (create and register are idempotent, a
                // fenced update applies the same change again).
                tx.commit().await?;
                Ok(value)
            }
            Err(e) => {
                // Dropping the transaction rolls it back too; rolling back
                // here returns the connection to the pool clean at once.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }

    fn readers(&self) -> &PgPool {
        &self.pool
    }

    async fn create_tx(&self, new: NewTransaction) -> Result<Created, StoreError> {
        writes::create(&self.pool, new).await
    }

    async fn update_tx(&self, update: Update) -> Result<(), StoreError> {
        writes::update(&self.pool, update).await
    }
}
