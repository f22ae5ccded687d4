//! The reads, the same on both backends: a transaction with its branches,
//! its history, a page of the listing, and the readiness ping, each on a
//! connection of a `sqlx` pool (SQLite's read-only pool, PostgreSQL's pool);
//! and a transaction read on a given connection (by a rare write on
//! PostgreSQL, to read back what it changed).
//!
//! Written once, in [`reads_on!`], for each driver ([`sqlite`],
//! [`postgres`]). Generic over `sqlx::Database` instead, the functions would
//! need a bound for every type they bind and every row they decode, spelt
//! with higher-ranked lifetimes; each instantiation here is checked against
//! one concrete driver. The statements are in
//! [`statements`](super::statements), the decoding in [`rows`](super::rows).

/// The reads on the database `$db`, a concrete `sqlx` database.
macro_rules! reads_on {
    ($db:ty) => {
        use crate::store::shared::cursor::{cut_page, decode_cursor, page_size};
        use crate::store::shared::rows::{EventRow, JoinedRow, Loaded, TxRow, fold_joined};
        use crate::store::shared::statements::{EVENTS, LIST, LOAD};
        use crate::store::{Event, ListQuery, Page, StoreError, TransactionRecord};
        use dtx_protocol::Status;

        /// A connection to the database.
        type Connection = <$db as sqlx::Database>::Connection;

        /// A pool of connections to the database.
        type Pool = sqlx::Pool<$db>;

        /// Reads a transaction with its branches and fingerprint.
        pub(in crate::store) async fn load(
            conn: &mut Connection,
            gid: &str,
        ) -> Result<Option<Loaded>, StoreError> {
            let rows: Vec<JoinedRow> = sqlx::query_as(LOAD).bind(gid).fetch_all(&mut *conn).await?;
            fold_joined(rows)
        }

        /// [`load`] on a connection of `pool`.
        pub(in crate::store) async fn load_pooled(
            pool: &Pool,
            gid: &str,
        ) -> Result<Option<Loaded>, StoreError> {
            let mut conn = pool.acquire().await?;
            load(&mut conn, gid).await
        }

        /// See [`Store::get`](crate::store::Store::get).
        pub(in crate::store) async fn get(
            pool: &Pool,
            gid: &str,
        ) -> Result<Option<TransactionRecord>, StoreError> {
            Ok(load_pooled(pool, gid).await?.map(|loaded| loaded.record))
        }

        /// See [`Store::events`](crate::store::Store::events).
        pub(in crate::store) async fn events(
            pool: &Pool,
            gid: &str,
        ) -> Result<Vec<Event>, StoreError> {
            let mut conn = pool.acquire().await?;
            let rows: Vec<EventRow> = sqlx::query_as(EVENTS)
                .bind(gid)
                .fetch_all(&mut *conn)
                .await?;
            Ok(rows.into_iter().map(EventRow::into_event).collect())
        }

        /// See [`Store::list`](crate::store::Store::list).
        pub(in crate::store) async fn list(
            pool: &Pool,
            query: ListQuery,
        ) -> Result<Page, StoreError> {
            let mut conn = pool.acquire().await?;
            let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
            let size = page_size(query.limit) as usize;
            // One row more than the page tells whether another page follows.
            let rows: Vec<TxRow> = sqlx::query_as(LIST)
                .bind(query.status.map(Status::as_str))
                .bind(query.mode.map(|m| m.as_str()))
                .bind(query.attention)
                .bind(after.as_ref().map(|(at, _)| *at))
                .bind(after.as_ref().map(|(_, gid)| gid.as_str()))
                .bind(size as i64 + 1)
                .bind(query.namespace.as_deref())
                .fetch_all(&mut *conn)
                .await?;
            cut_page(rows, size)
        }

        /// See [`Store::ping`](crate::store::Store::ping).
        pub(in crate::store) async fn ping(pool: &Pool) -> Result<(), StoreError> {
            let mut conn = pool.acquire().await?;
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok(())
        }
    };
}

/// The reads on SQLite.
pub(in crate::store) mod sqlite {
    reads_on!(sqlx::Sqlite);
}

/// The reads on PostgreSQL.
pub(in crate::store) mod postgres {
    reads_on!(sqlx::Postgres);
}
