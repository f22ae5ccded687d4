//! The PostgreSQL backend: the production store, shared by several
//! coordinators. Also meant for PostgreSQL-compatible distributed engines
//! (CockroachDB, YugabyteDB): the schema and statements avoid advisory locks
//! and LISTEN/NOTIFY.
//!
//! Each write runs in a transaction of its own on a pooled connection, at the
//! default READ COMMITTED isolation. Correctness between coordinators rests
//! on row locks, not on isolation: every write starts by updating its
//! `transactions` row with the fence (or the open status) in the WHERE
//! clause, and PostgreSQL re-checks that WHERE clause on the newest version
//! of the row after waiting for another writer's lock. Claims use `FOR
//! UPDATE SKIP LOCKED` so that coordinators split the expired leases between
//! them. The operations themselves are shared with SQLite (`rows::sql`).

use std::time::Duration;

use sqlx::Postgres;
use sqlx::postgres::{PgConnection, PgPool, PgPoolOptions};

use super::StoreError;
use super::rows::backend::{Backend, BoxFuture};
use super::rows::sql::CLAIM_EXPIRED_POSTGRES;

/// Connections per coordinator. Writes are short (a few statements under
/// one row lock), so a handful of connections carry many transactions, and
/// several coordinators share one server's connection limit.
const MAX_CONNECTIONS: u32 = 16;

/// How long a caller waits for a free connection before the store answers
/// `Unavailable`: long enough to ride out a burst, short enough that a lost
/// database is reported rather than hung on.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

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
}
