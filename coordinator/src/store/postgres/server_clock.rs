//! "Now" on PostgreSQL: the database server's clock, which every statement
//! that writes or compares a lease reads ([`pg_now_ms!`]), so that no lease
//! time on PostgreSQL is ever a coordinator's.
//!
//! Several coordinators share the database; were each to bring its own
//! clock, one running an hour ahead would claim the others' live
//! transactions, and one whose clock jumped forward would write leases
//! nobody could claim for an hour. The server's clock is one clock for all
//! of them.

/// "Now" in Unix milliseconds by the PostgreSQL server's clock, for every
/// lease PostgreSQL writes or compares.
///
/// `statement_timestamp()` is the start of the current statement: stable
/// within it (so an index can compare against it, and every row of a claim
/// sees the same instant), and never earlier than the moment the caller sent
/// the statement, so a lease the caller trusts from the moment it sent the
/// renewal runs at least as long in the database.
macro_rules! pg_now_ms {
    () => {
        "(floor(extract(epoch from statement_timestamp()) * 1000)::bigint)"
    };
}
pub(super) use pg_now_ms;

#[cfg(test)]
mod tests {
    use super::super::batch_sql::CREATE_MANY;
    use super::super::rare_writes::{CLAIM_EXPIRED, RELEASE, RENEW, TAKE_OVER};

    /// Every lease time PostgreSQL writes or compares is the server's: no
    /// lease statement takes a time from the caller.
    #[test]
    fn lease_statements_read_the_servers_clock_only() {
        for (statement, params) in [
            (RENEW, 3),
            (RELEASE, 1),
            (CREATE_MANY, 18),
            (TAKE_OVER, 3),
            (CLAIM_EXPIRED, 3),
        ] {
            assert!(statement.contains(pg_now_ms!()), "{statement}");
            assert!(
                !statement.contains(&format!("${}", params + 1)),
                "{statement} takes more than {params} parameters"
            );
        }
    }
}
