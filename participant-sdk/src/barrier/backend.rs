//! The barrier's SQL, the same text on both backends (`$N` placeholders and
//! `ON CONFLICT DO NOTHING` work on SQLite and PostgreSQL alike), and the two
//! things that differ: how a barrier transaction begins and which
//! migrations apply.

#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;
use sqlx::migrate::MigrateError;
use sqlx::{Database, Pool, Transaction};
use std::future::Future;

/// The table sqlx records the SDK's migrations in. It is not sqlx's default
/// (`_sqlx_migrations`) because the service's own migrator uses that one: two
/// migrators sharing a table each see the other's versions as unknown and
/// refuse to run.
pub(crate) const MIGRATIONS_TABLE: &str = "_dtx_sdk_migrations";

/// The savepoint between the barrier's rows and the business changes, so a
/// refusal can undo the business and keep the barrier row.
pub(crate) const SAVEPOINT: &str = "SAVEPOINT dtx_barrier_business";
pub(crate) const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT dtx_barrier_business";

const INSERT: &str = "INSERT INTO dtx_barrier \
     (gid, branch_id, op, origin_op, outcome, detail, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, NULL, $6) \
     ON CONFLICT (gid, branch_id, op) DO NOTHING";

const FIND: &str = "SELECT origin_op, outcome, detail FROM dtx_barrier \
     WHERE gid = $1 AND branch_id = $2 AND op = $3";

const SET_OUTCOME: &str = "UPDATE dtx_barrier SET outcome = $4, detail = $5 \
     WHERE gid = $1 AND branch_id = $2 AND op = $3";

const DELETE: &str = "DELETE FROM dtx_barrier WHERE gid = $1 AND branch_id = $2 AND op = $3";

/// Deletes, in one batch, every row of up to `$2` transactions all of whose
/// rows are older than `$1`. Whole transactions only: deleting a `try` row
/// while its `cancel` row stays (or the reverse) would let a late duplicate
/// slip past the suspension check.
const CLEANUP_BATCH: &str = "DELETE FROM dtx_barrier WHERE gid IN ( \
         SELECT old.gid FROM dtx_barrier old \
         WHERE old.created_at_ms < $1 \
           AND NOT EXISTS (SELECT 1 FROM dtx_barrier young \
                           WHERE young.gid = old.gid AND young.created_at_ms >= $1) \
         GROUP BY old.gid \
         LIMIT $2)";

/// Which row: a transaction, a branch and an operation. (Public only inside
/// this private module, as the sealed trait's argument.)
#[derive(Debug, Clone, Copy)]
pub struct Key<'a> {
    pub gid: &'a str,
    pub branch_id: &'a str,
    pub op: &'a str,
}

/// A barrier row as read back.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub origin_op: String,
    pub outcome: String,
    pub detail: Option<String>,
}

/// The operations the barrier needs from a database. Sealed: it lives in a
/// private module, so only this crate implements it (for SQLite and
/// PostgreSQL), and its methods are not part of the public API.
pub trait Backend: Database {
    /// Begins a transaction fit for the barrier.
    fn begin_barrier(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send + '_;

    /// Inserts a row unless one exists; `true` if inserted.
    fn insert<'a>(
        conn: &'a mut Self::Connection,
        key: Key<'a>,
        origin_op: &'a str,
        outcome: &'a str,
        now_ms: i64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;

    /// Reads a row.
    fn find<'a>(
        conn: &'a mut Self::Connection,
        key: Key<'a>,
    ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a;

    /// Changes a row's outcome and detail.
    fn set_outcome<'a>(
        conn: &'a mut Self::Connection,
        key: Key<'a>,
        outcome: &'a str,
        detail: Option<&'a str>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Deletes a row.
    fn delete<'a>(
        conn: &'a mut Self::Connection,
        key: Key<'a>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Runs a fixed statement (savepoints).
    fn execute<'a>(
        conn: &'a mut Self::Connection,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Deletes one batch of old transactions; returns the rows deleted.
    fn cleanup_batch(
        pool: &Pool<Self>,
        cutoff_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + '_;

    /// Applies the SDK's migrations.
    fn migrate(pool: &Pool<Self>) -> impl Future<Output = Result<(), MigrateError>> + Send + '_;
}

macro_rules! backend {
    ($db:ty, $begin:literal, $migrator:expr) => {
        impl Backend for $db {
            fn begin_barrier(
                pool: &Pool<Self>,
            ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send + '_
            {
                pool.begin_with($begin)
            }

            fn insert<'a>(
                conn: &'a mut Self::Connection,
                key: Key<'a>,
                origin_op: &'a str,
                outcome: &'a str,
                now_ms: i64,
            ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a {
                async move {
                    let done = sqlx::query(INSERT)
                        .bind(key.gid)
                        .bind(key.branch_id)
                        .bind(key.op)
                        .bind(origin_op)
                        .bind(outcome)
                        .bind(now_ms)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }
            }

            fn find<'a>(
                conn: &'a mut Self::Connection,
                key: Key<'a>,
            ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a {
                async move {
                    let row: Option<(String, String, Option<String>)> = sqlx::query_as(FIND)
                        .bind(key.gid)
                        .bind(key.branch_id)
                        .bind(key.op)
                        .fetch_optional(&mut *conn)
                        .await?;
                    Ok(row.map(|(origin_op, outcome, detail)| StoredRow {
                        origin_op,
                        outcome,
                        detail,
                    }))
                }
            }

            fn set_outcome<'a>(
                conn: &'a mut Self::Connection,
                key: Key<'a>,
                outcome: &'a str,
                detail: Option<&'a str>,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move {
                    sqlx::query(SET_OUTCOME)
                        .bind(key.gid)
                        .bind(key.branch_id)
                        .bind(key.op)
                        .bind(outcome)
                        .bind(detail)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }
            }

            fn delete<'a>(
                conn: &'a mut Self::Connection,
                key: Key<'a>,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move {
                    sqlx::query(DELETE)
                        .bind(key.gid)
                        .bind(key.branch_id)
                        .bind(key.op)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }
            }

            fn execute<'a>(
                conn: &'a mut Self::Connection,
                sql: &'static str,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move {
                    sqlx::query(sql).execute(&mut *conn).await?;
                    Ok(())
                }
            }

            fn cleanup_batch(
                pool: &Pool<Self>,
                cutoff_ms: i64,
                limit: i64,
            ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send + '_ {
                async move {
                    let done = sqlx::query(CLEANUP_BATCH)
                        .bind(cutoff_ms)
                        .bind(limit)
                        .execute(pool)
                        .await?;
                    Ok(done.rows_affected())
                }
            }

            fn migrate(
                pool: &Pool<Self>,
            ) -> impl Future<Output = Result<(), MigrateError>> + Send + '_ {
                async move {
                    let mut migrator = $migrator;
                    migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                    migrator.run(pool).await
                }
            }
        }
    };
}

// SQLite: BEGIN IMMEDIATE takes the write lock at once. With a deferred
// BEGIN, a transaction that read before its first write fails with
// SQLITE_BUSY when another writer committed in between (the busy timeout
// does not apply to that case), which would turn every race into a retry.
#[cfg(feature = "sqlite")]
backend!(
    Sqlite,
    "BEGIN IMMEDIATE",
    sqlx::migrate!("./migrations/sqlite")
);
// PostgreSQL: the default READ COMMITTED is what the barrier relies on; an
// insert that meets a concurrent uncommitted row waits for it, and the
// statements after it see the winner's committed row.
#[cfg(feature = "postgres")]
backend!(Postgres, "BEGIN", sqlx::migrate!("./migrations/postgres"));
