//! The 3PC helper's SQL on its state table `dtx_three_phase`, the same text
//! on SQLite and PostgreSQL except for how a transaction begins and how the
//! row is locked, implemented once per backend by a macro (as the barrier's
//! backend is).

use crate::db::Conn;
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "sqlite")]
use sqlx::Sqlite;
use sqlx::{Database, Pool, Transaction};
use std::future::Future;

/// A state row as read back.
#[derive(Debug, Clone)]
pub struct StoredRow {
    pub state: String,
    pub decided_by: Option<String>,
    pub payload: Option<String>,
    pub detail: Option<String>,
    pub updated_at_ms: i64,
}

/// A state change to write.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub gid: &'a str,
    pub branch_id: &'a str,
    pub state: &'a str,
    pub decided_by: Option<&'a str>,
    pub payload: Option<&'a str>,
    pub detail: Option<&'a str>,
    pub now_ms: i64,
}

const INSERT: &str = "INSERT INTO dtx_three_phase \
     (gid, branch_id, state, decided_by, payload, detail, created_at_ms, updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (gid, branch_id) DO NOTHING";

/// The payload is never overwritten with NULL: it was stored by can_commit.
const UPDATE: &str = "UPDATE dtx_three_phase SET state = $3, decided_by = $4, \
     payload = COALESCE(payload, $5), detail = $6, updated_at_ms = $7 \
     WHERE gid = $1 AND branch_id = $2";

const STUCK: &str = "SELECT gid, branch_id, updated_at_ms FROM dtx_three_phase \
     WHERE state = $1 AND updated_at_ms <= $2 ORDER BY updated_at_ms LIMIT $3";

const SELECT: &str = "SELECT state, decided_by, payload, detail, updated_at_ms \
     FROM dtx_three_phase WHERE gid = $1 AND branch_id = $2";

/// What the helper needs from a database. Sealed: it lives in a private
/// module, so only this crate implements it.
pub trait Store: Database {
    /// The connection as the hooks receive it.
    fn hook_conn(conn: &mut Self::Connection) -> Conn<'_>;

    /// Begins a transaction that will change the state row.
    fn begin_step(
        pool: &Pool<Self>,
    ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send + '_;

    /// Reads the row, locking it for the rest of the transaction.
    fn load<'a>(
        conn: &'a mut Self::Connection,
        gid: &'a str,
        branch_id: &'a str,
    ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a;

    /// Reads the row without a transaction.
    fn read<'a>(
        pool: &'a Pool<Self>,
        gid: &'a str,
        branch_id: &'a str,
    ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a;

    /// Inserts the row unless one exists; `true` if inserted.
    fn insert_row<'a>(
        conn: &'a mut Self::Connection,
        change: Change<'a>,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a;

    /// Changes the row.
    fn update_row<'a>(
        conn: &'a mut Self::Connection,
        change: Change<'a>,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Runs a fixed statement (savepoints).
    fn run_sql<'a>(
        conn: &'a mut Self::Connection,
        sql: &'static str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;

    /// Up to `limit` (gid, branch, updated_at_ms) in `state` unchanged since
    /// `before_ms`, the longest waiting first.
    fn stuck<'a>(
        pool: &'a Pool<Self>,
        state: &'a str,
        before_ms: i64,
        limit: i64,
    ) -> impl Future<Output = Result<Vec<(String, String, i64)>, sqlx::Error>> + Send + 'a;
}

macro_rules! store {
    ($db:ty, $begin:literal, $lock:literal) => {
        impl Store for $db {
            fn hook_conn(conn: &mut Self::Connection) -> Conn<'_> {
                Conn::from(conn)
            }

            fn begin_step(
                pool: &Pool<Self>,
            ) -> impl Future<Output = Result<Transaction<'static, Self>, sqlx::Error>> + Send + '_
            {
                pool.begin_with($begin)
            }

            fn load<'a>(
                conn: &'a mut Self::Connection,
                gid: &'a str,
                branch_id: &'a str,
            ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a {
                async move {
                    let sql = sqlx::AssertSqlSafe(format!("{SELECT}{}", $lock));
                    let row: Option<(String, Option<String>, Option<String>, Option<String>, i64)> =
                        sqlx::query_as(sql)
                            .bind(gid)
                            .bind(branch_id)
                            .fetch_optional(&mut *conn)
                            .await?;
                    Ok(row.map(row_of))
                }
            }

            fn read<'a>(
                pool: &'a Pool<Self>,
                gid: &'a str,
                branch_id: &'a str,
            ) -> impl Future<Output = Result<Option<StoredRow>, sqlx::Error>> + Send + 'a {
                async move {
                    let row: Option<(String, Option<String>, Option<String>, Option<String>, i64)> =
                        sqlx::query_as(SELECT)
                            .bind(gid)
                            .bind(branch_id)
                            .fetch_optional(pool)
                            .await?;
                    Ok(row.map(row_of))
                }
            }

            fn insert_row<'a>(
                conn: &'a mut Self::Connection,
                c: Change<'a>,
            ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send + 'a {
                async move {
                    let done = sqlx::query(INSERT)
                        .bind(c.gid)
                        .bind(c.branch_id)
                        .bind(c.state)
                        .bind(c.decided_by)
                        .bind(c.payload)
                        .bind(c.detail)
                        .bind(c.now_ms)
                        .execute(&mut *conn)
                        .await?;
                    Ok(done.rows_affected() == 1)
                }
            }

            fn update_row<'a>(
                conn: &'a mut Self::Connection,
                c: Change<'a>,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move {
                    sqlx::query(UPDATE)
                        .bind(c.gid)
                        .bind(c.branch_id)
                        .bind(c.state)
                        .bind(c.decided_by)
                        .bind(c.payload)
                        .bind(c.detail)
                        .bind(c.now_ms)
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                }
            }

            fn run_sql<'a>(
                conn: &'a mut Self::Connection,
                sql: &'static str,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move {
                    sqlx::query(sql).execute(&mut *conn).await?;
                    Ok(())
                }
            }

            fn stuck<'a>(
                pool: &'a Pool<Self>,
                state: &'a str,
                before_ms: i64,
                limit: i64,
            ) -> impl Future<Output = Result<Vec<(String, String, i64)>, sqlx::Error>> + Send + 'a
            {
                async move {
                    sqlx::query_as(STUCK)
                        .bind(state)
                        .bind(before_ms)
                        .bind(limit)
                        .fetch_all(pool)
                        .await
                }
            }
        }
    };
}

fn row_of(
    (state, decided_by, payload, detail, updated_at_ms): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
    ),
) -> StoredRow {
    StoredRow {
        state,
        decided_by,
        payload,
        detail,
        updated_at_ms,
    }
}

// SQLite: BEGIN IMMEDIATE takes the write lock at once, which serializes the
// steps of a branch (SQLite has no row locks; see the barrier's backend).
#[cfg(feature = "sqlite")]
store!(Sqlite, "BEGIN IMMEDIATE", "");
// PostgreSQL: FOR UPDATE makes concurrent steps of one branch wait for each
// other; two first steps racing on a missing row meet at the primary key.
#[cfg(feature = "postgres")]
store!(Postgres, "BEGIN", " FOR UPDATE");
