//! The statements both backends run as they are: the reads, and the writes
//! of one row each that SQLite's writer and PostgreSQL's rare writes both
//! make (branch registration, the operator flag, a history entry, the read
//! of a fence). Also the predicate "not final" ([`live!`]) and the templates
//! of the two statements that differ between the backends only in their
//! clock and locking ([`take_over!`], [`claim_expired!`]), which each
//! backend fills in beside its writes.
//!
//! One text serves both: the schema is the same on both (see
//! `migrations/`), times are integers in Unix milliseconds, and placeholders
//! are `$N` on both (SQLite's writer binds them by name, see
//! `store::sqlite::connection`). The statements only one backend runs are
//! that backend's, beside its writes: `store::sqlite::writes`,
//! `store::postgres::rare_writes` and `store::postgres::batch_sql`.

/// The predicate "not final", spelt exactly as in the partial indexes of the
/// migrations: the planner uses a partial index only for a query whose WHERE
/// clause contains the index's predicate as written.
macro_rules! live {
    () => {
        "status NOT IN ('committed', 'aborted')"
    };
}
pub(in crate::store) use live;

/// Takes a live transaction over with `$now` as the current time. Binds `$1`
/// gid, `$2` owner, `$3` lease length; returns the new epoch and the time of
/// the takeover.
macro_rules! take_over {
    ($now:expr) => {
        concat!(
            "UPDATE transactions SET owner = $2, epoch = epoch + 1, lease_expires_at_ms = ",
            $now,
            " + $3, updated_at_ms = ",
            $now,
            " WHERE gid = $1 AND ",
            $crate::store::shared::statements::live!(),
            " RETURNING epoch, updated_at_ms"
        )
    };
}
pub(in crate::store) use take_over;

/// Claims expired leases with `$lock` as the subquery's locking clause and
/// `$now` as the current time. Binds `$1` owner, `$2` lease length, `$3`
/// limit; returns `gid, epoch, updated_at_ms` (the time of the claim) of
/// each row it claimed. Two claimers running it at once must never both
/// claim a row: the outer WHERE repeats the inner one, because under READ
/// COMMITTED an UPDATE re-checks its own WHERE on the newest version of a
/// row it had to wait for, so a row that another claimer took in the
/// meantime is left alone whatever the subquery saw.
macro_rules! claim_expired {
    ($lock:literal, $now:expr) => {
        concat!(
            "UPDATE transactions SET owner = $1, epoch = epoch + 1, lease_expires_at_ms = ",
            $now,
            " + $2, updated_at_ms = ",
            $now,
            " WHERE gid IN (SELECT gid FROM transactions WHERE ",
            $crate::store::shared::statements::live!(),
            " AND lease_expires_at_ms < ",
            $now,
            " ORDER BY lease_expires_at_ms LIMIT $3",
            $lock,
            ") AND ",
            $crate::store::shared::statements::live!(),
            " AND lease_expires_at_ms < ",
            $now,
            " RETURNING gid, epoch, updated_at_ms"
        )
    };
}
pub(in crate::store) use claim_expired;

/// A transaction and its branches, one row per branch (one row with NULL
/// branch columns when it has none), read from one snapshot.
pub(in crate::store) const LOAD: &str = "SELECT t.*, b.idx AS b_idx, b.spec AS b_spec, b.status AS b_status, \
     b.attempts AS b_attempts, b.last_http_status AS b_http_status, b.last_error AS b_error, b.refusal AS b_refusal, \
     b.failing_since_ms AS b_failing_since \
     FROM transactions t LEFT JOIN branches b ON b.gid = t.gid WHERE t.gid = $1 ORDER BY b.idx";
/// A transaction's history, oldest first.
pub(in crate::store) const EVENTS: &str =
    "SELECT at_ms, kind, branch_id, detail FROM events WHERE gid = $1 ORDER BY id";
/// A page of the listing, newest first. One static statement for every
/// combination of filters: a NULL parameter switches its filter off. The
/// cursor comparison is a row value, which PostgreSQL turns into one index
/// range.
pub(in crate::store) const LIST: &str = "SELECT * FROM transactions \
     WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR mode = $2) \
     AND ($3 IS NULL OR (attention IS NOT NULL) = $3) \
     AND ($4 IS NULL OR (created_at_ms, gid) < ($4, $5)) \
     AND ($7 IS NULL OR namespace = $7) \
     ORDER BY created_at_ms DESC, gid DESC LIMIT $6";

/// A transaction's status.
pub(in crate::store) const STATUS: &str = "SELECT status FROM transactions WHERE gid = $1";
/// Locks an open transaction for a branch registration; returns its branch
/// count. Writes nothing, but takes the row lock and re-checks the status
/// after any wait for it: from here until commit no decision can slip in.
pub(in crate::store) const LOCK_OPEN: &str = "UPDATE transactions SET updated_at_ms = updated_at_ms WHERE gid = $1 AND status = $2 RETURNING branch_count";
/// The index and spec of a transaction's branch of this id.
pub(in crate::store) const FIND_BRANCH: &str =
    "SELECT idx, spec FROM branches WHERE gid = $1 AND branch_id = $2";
/// A new branch, pending, never called.
pub(in crate::store) const INSERT_BRANCH: &str = "INSERT INTO branches (gid, idx, branch_id, spec, status, attempts, \
     last_http_status, last_error) VALUES ($1, $2, $3, $4, $5, 0, NULL, NULL)";
/// Counts a branch registered after the transaction.
pub(in crate::store) const COUNT_BRANCH: &str =
    "UPDATE transactions SET branch_count = branch_count + 1, updated_at_ms = $2 WHERE gid = $1";
/// Sets the operator flag, fenced.
pub(in crate::store) const SET_ATTENTION: &str = "UPDATE transactions SET attention = $4, updated_at_ms = $5 \
     WHERE gid = $1 AND owner = $2 AND epoch = $3";
/// What a refused fenced write is checked against: the owner, epoch and
/// branch count.
pub(in crate::store) const FENCE_STATE: &str =
    "SELECT owner, epoch, branch_count FROM transactions WHERE gid = $1";
/// A history entry.
pub(in crate::store) const INSERT_EVENT: &str =
    "INSERT INTO events (gid, at_ms, kind, branch_id, detail) VALUES ($1, $2, $3, $4, $5)";

#[cfg(test)]
mod tests {
    use dtx_protocol::Status;

    /// The SQL spells "not final" by hand (it must match the partial indexes
    /// of the migrations); this keeps it equal to the protocol's rule.
    #[test]
    fn live_predicate_names_exactly_the_final_statuses() {
        let finals: Vec<&str> = Status::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.as_str())
            .collect();
        let quoted: Vec<String> = finals.iter().map(|s| format!("'{s}'")).collect();
        assert_eq!(live!(), format!("status NOT IN ({})", quoted.join(", ")));
        for schema in [
            include_str!("../../../../migrations/sqlite/0001_init.sql"),
            include_str!("../../../../migrations/postgres/0001_init.sql"),
        ] {
            assert_eq!(
                schema.matches(live!()).count(),
                2,
                "both partial indexes use the same predicate"
            );
        }
    }
}
