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
//! The two writes every transaction makes, `create` and `update`, are group
//! committed: concurrent creates leave as ONE statement, and so do
//! concurrent updates ([`batcher`], [`batch`], [`batch_sql`]), sent in
//! autocommit, one round trip and one commit for the lot, each write still
//! all or nothing and fenced on its own ([`batched_writes`]). They go out on
//! connections of their own, set up for those two statements
//! ([`WRITE_SETTINGS`]). A batch holds several row locks at once, so every
//! statement that does takes them in gid order (see [`batch_sql`]). The rare
//! writes (branch registration, the operator flag, takeover, claims, leases;
//! [`rare_writes`]) each run in a transaction of their own on a pooled
//! connection; lease renewal and release lock their rows in gid order first.
//! The reads are the ones SQLite runs too (`store::shared::reads`), on a
//! pooled connection.
//!
//! Every lease is timed by the server's clock ([`server_clock`]), never by a
//! coordinator's: the coordinators sharing the database need not agree on
//! the time for one not to claim another's live transactions.

mod batch;
mod batch_sql;
mod batched_writes;
mod batcher;
mod rare_writes;
mod server_clock;

use std::time::Duration;

use async_trait::async_trait;
use dtx_protocol::BranchSpec;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{Connection, Postgres, Transaction};

use self::batch::{NewRow, UpdateRow};
use self::batcher::Batcher;
use super::shared::reads::postgres as reads;
use super::shared::rows::gids_json;
use super::{
    BranchRegistered, Created, Event, Fence, ListQuery, NewTransaction, Page, Store, StoreError,
    TransactionRecord, Update, lease_ms, not_renewed,
};

/// Connections per coordinator for reads, the rare writes, and the reads
/// that explain a refused create or update. Several coordinators share one
/// server's connection limit.
const MAX_CONNECTIONS: u32 = 8;

/// Connections per coordinator for the batched creates and updates: one per
/// batch out (of two kinds), each held for the time of one statement.
const WRITE_CONNECTIONS: u32 = 2 * batcher::MAX_IN_FLIGHT as u32;

/// The settings the write connections run with; they run nothing but the
/// two batched statements of [`batch_sql`].
///
/// PostgreSQL plans a prepared statement afresh for its first five
/// executions, then keeps a generic plan only if its estimated cost is no
/// higher than theirs. The batched statements are large (planning one took
/// about as long as running it for a few writes), and a generic plan does
/// not know the arrays' lengths (it assumes ten elements), so with small
/// batches fresh plans looked cheaper and every batch was planned again:
/// hence generic plans always. A generic plan is made once, though, maybe
/// on tables still empty, where reading a whole table and hashing it looks
/// cheaper than looking rows up; kept while the table grows, such a plan
/// reads all of it for every batch. The statements are written so that
/// their one sensible plan is index lookups from the array rows (see
/// [`batch_sql`]); forbidding sequential scans and hash and merge joins
/// leaves the planner no other, whatever the tables' sizes when it plans.
/// The foreign key checks the statements trigger look rows up by primary
/// key too.
const WRITE_SETTINGS: [(&str, &str); 4] = [
    ("plan_cache_mode", "force_generic_plan"),
    ("enable_seqscan", "off"),
    ("enable_hashjoin", "off"),
    ("enable_mergejoin", "off"),
];

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
    creates: Batcher<NewRow>,
    updates: Batcher<UpdateRow>,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://...`) and applies the
    /// migrations in `migrations/postgres`. sqlx's migrator holds a lock while
    /// it runs, so coordinators starting together apply each migration once.
    /// Starts the write batchers on the current tokio runtime; they stop
    /// when the last clone of the store is dropped.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = pool_options(MAX_CONNECTIONS)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        // Connected lazily: the batchers' first writes open them.
        let writers =
            pool_options(WRITE_CONNECTIONS).connect_lazy_with(options.options(WRITE_SETTINGS));
        Ok(PostgresStore {
            creates: Batcher::start(&writers),
            updates: Batcher::start(&writers),
            pool,
        })
    }
}

/// A pool of at most `max` connections, as both of the store's are.
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
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
}

/// Ends a rare write's transaction: commits it when the write returned
/// `Ok`, rolls it back otherwise. Returns only once the commit is durable.
async fn commit_if_ok<T>(
    tx: Transaction<'_, Postgres>,
    outcome: Result<T, StoreError>,
) -> Result<T, StoreError> {
    match outcome {
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

/// Creates and updates go to their batchers ([`batched_writes`]); every
/// other write runs in a transaction of its own ([`rare_writes`],
/// [`commit_if_ok`]); reads run on a pooled connection.
#[async_trait]
impl Store for PostgresStore {
    async fn create(&self, new: NewTransaction) -> Result<Created, StoreError> {
        batched_writes::create(&self.pool, &self.creates, new).await
    }

    async fn register_branch(
        &self,
        gid: &str,
        spec: BranchSpec,
        now_ms: i64,
        by: Option<&str>,
    ) -> Result<BranchRegistered, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::register_branch(&mut tx, gid, &spec, now_ms, by).await;
        commit_if_ok(tx, outcome).await
    }

    async fn update(&self, update: Update) -> Result<(), StoreError> {
        let update = super::text::storable_update(update);
        batched_writes::update(&self.pool, &self.updates, update).await
    }

    async fn set_attention(
        &self,
        fence: &Fence,
        reason: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::set_attention(&mut tx, fence, reason, now_ms).await;
        commit_if_ok(tx, outcome).await
    }

    async fn get(&self, gid: &str) -> Result<Option<TransactionRecord>, StoreError> {
        reads::get(&self.pool, gid).await
    }

    async fn events(&self, gid: &str) -> Result<Vec<Event>, StoreError> {
        reads::events(&self.pool, gid).await
    }

    async fn list(&self, query: ListQuery) -> Result<Page, StoreError> {
        reads::list(&self.pool, query).await
    }

    async fn take_over(
        &self,
        gid: &str,
        owner: &str,
        lease: Duration,
    ) -> Result<Option<(Fence, TransactionRecord)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::take_over(&mut tx, gid, owner, lease_ms(lease)).await;
        commit_if_ok(tx, outcome).await
    }

    async fn claim_expired(
        &self,
        owner: &str,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<(Fence, TransactionRecord)>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::claim_expired(&mut tx, owner, lease_ms(lease), limit).await;
        commit_if_ok(tx, outcome).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        gids: &[String],
        lease: Duration,
    ) -> Result<Vec<String>, StoreError> {
        let named = gids_json(gids)?;
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::renew(&mut tx, owner, &named, lease_ms(lease)).await;
        let renewed = commit_if_ok(tx, outcome).await?;
        Ok(not_renewed(gids, renewed))
    }

    async fn release_leases(&self, owner: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let outcome = rare_writes::release(&mut tx, owner).await;
        commit_if_ok(tx, outcome).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        reads::ping(&self.pool).await
    }
}
