//! Statements on the writer's `rusqlite` connection: the `$N` parameters of
//! the store's statements bound by name, a statement run for the rows it
//! changed or for its one row, and `rusqlite`'s errors in the store's terms.
//!
//! The statements are written with `$N` placeholders so that PostgreSQL can
//! run the same text (see `store::shared::statements`); SQLite numbers
//! parameters in order of first appearance, not by the digits in their
//! names, so they are bound by name here ([`bind`]).

use rusqlite::types::{FromSql, ToSql};
use rusqlite::{CachedStatement, Connection, ErrorCode, Statement};

use crate::store::{Cause, StoreError};

/// Runs a statement that returns no rows; answers how many rows it changed.
pub(super) fn execute(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<usize, StoreError> {
    prepare(conn, sql, args)?.raw_execute().map_err(error)
}

/// Runs a statement that returns at most one row of one column.
pub(super) fn query_one<T: FromSql>(
    conn: &Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<Option<T>, StoreError> {
    let mut stmt = prepare(conn, sql, args)?;
    let mut rows = stmt.raw_query();
    let value = match rows.next().map_err(error)? {
        Some(row) => Some(row.get(0).map_err(error)?),
        None => None,
    };
    // Step to the end, as SQLite expects of a statement that writes
    // (`UPDATE ... RETURNING`), before the cache resets it.
    while rows.next().map_err(error)?.is_some() {}
    Ok(value)
}

/// A cached prepared statement with `args[i]` bound to `$<i+1>`.
pub(super) fn prepare<'c>(
    conn: &'c Connection,
    sql: &str,
    args: &[&dyn ToSql],
) -> Result<CachedStatement<'c>, StoreError> {
    let mut stmt = conn.prepare_cached(sql).map_err(error)?;
    bind(&mut stmt, args)?;
    Ok(stmt)
}

/// Binds `args[i]` to the parameter named `$<i+1>`. A statement need not use
/// every number (then that argument is skipped), but must not use one that
/// has no argument (SQLite would read it as NULL).
fn bind(stmt: &mut Statement<'_>, args: &[&dyn ToSql]) -> Result<(), StoreError> {
    for (number, arg) in (1..).zip(args) {
        if let Some(position) = stmt.parameter_index(&format!("${number}")).map_err(error)? {
            stmt.raw_bind_parameter(position, arg).map_err(error)?;
        }
    }
    if stmt.parameter_count() > args.len() {
        return Err(StoreError::Other(
            format!(
                "statement takes {} parameters, {} given",
                stmt.parameter_count(),
                args.len()
            )
            .into(),
        ));
    }
    Ok(())
}

/// Maps SQLite's errors to what the caller can do about them, as
/// `store::shared::sqlx_errors` does for the `sqlx` side: busy, locked, I/O,
/// full disk, cannot open → `Unavailable`; a uniqueness violation →
/// `Conflict`; the rest → `Other`.
pub(super) fn error(e: rusqlite::Error) -> StoreError {
    let kind: fn(Cause) -> StoreError = match e.sqlite_error() {
        Some(failure) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen => StoreError::Unavailable,
            ErrorCode::ConstraintViolation
                if matches!(
                    failure.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                        | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                StoreError::Conflict
            }
            _ => StoreError::Other,
        },
        None => StoreError::Other,
    };
    kind(Cause::of(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_database_is_unavailable_and_its_error_kept_whole() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            Some("database is locked".into()),
        );
        let e = error(busy);
        let StoreError::Unavailable(cause) = &e else {
            panic!("{e:?}")
        };
        let kept = cause.error().downcast_ref::<rusqlite::Error>().unwrap();
        assert_eq!(kept.sqlite_error_code(), Some(ErrorCode::DatabaseBusy));
        assert_eq!(e.to_string(), "database unavailable: database is locked");
    }
}
