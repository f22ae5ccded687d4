//! What `sqlx`'s errors mean to a caller of the store, on both backends
//! (both read through `sqlx`, and PostgreSQL writes through it too): a
//! connection that failed or a database that is busy or shutting down is
//! `Unavailable` (retry later), a violated uniqueness is a `Conflict`, the
//! rest is `Other`. SQLite's writer maps `rusqlite`'s errors the same way
//! (`store::sqlite::connection`).

use std::borrow::Cow;

use sqlx::error::{DatabaseError, ErrorKind};

use crate::store::{Cause, StoreError};

/// Maps database errors to what the caller can do about them (see the
/// module's doc).
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let kind: fn(Cause) -> StoreError = match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable,
            E::Database(db) if is_transient(db.as_ref()) => StoreError::Unavailable,
            E::Database(db) if db.kind() == ErrorKind::UniqueViolation => StoreError::Conflict,
            _ => StoreError::Other,
        };
        kind(Cause::of(e))
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            e => StoreError::Other(Cause::explained("cannot migrate the database", e)),
        }
    }
}

/// Whether a database error may pass by itself.
fn is_transient(db: &dyn DatabaseError) -> bool {
    let code = db.code().unwrap_or(Cow::Borrowed(""));
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // Extended result codes carry the primary code in their low byte:
        // BUSY (5), LOCKED (6), IOERR (10), FULL (13), CANTOPEN (14).
        return code
            .parse::<i32>()
            .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14));
    }
    // PostgreSQL SQLSTATEs: connection exceptions (08), insufficient
    // resources (53), operator intervention such as a shutdown (57P), and
    // the serialization failures and deadlocks that distributed engines
    // answer instead of waiting (40001, 40P01): retrying is their cure.
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P")
        || code == "40001"
        || code == "40P01"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_error_is_classified_and_kept_whole() {
        let e = StoreError::from(sqlx::Error::PoolTimedOut);
        let StoreError::Unavailable(cause) = &e else {
            panic!("{e:?}")
        };
        assert!(matches!(
            cause.error().downcast_ref::<sqlx::Error>(),
            Some(sqlx::Error::PoolTimedOut)
        ));
        assert_eq!(e.to_string(), format!("database unavailable: {cause}"));
    }
}
