//! Every statement the store runs, shared by SQLite and PostgreSQL. The
//! schema is the same on both (see `migrations/`), times are integers in Unix
//! milliseconds, and placeholders are `$N` on both, so the text differs only
//! where the dialect must: the lease statements, which read "now" from the
//! database server's clock on PostgreSQL ([`pg_now_ms`]) and from a parameter
//! on SQLite (the process clock), and the claim of expired leases, which
//! takes row locks on PostgreSQL.

/// The predicate "not final", spelt exactly as in the partial indexes of the
/// migrations: the planner uses a partial index only for a query whose WHERE
/// clause contains the index's predicate as written.
macro_rules! live {
    () => {
        "status NOT IN ('committed', 'aborted')"
    };
}

/// "Now" in Unix milliseconds by the PostgreSQL server's clock, for every
/// lease PostgreSQL writes or compares. Several coordinators share the
/// database; were each to bring its own clock, one running an hour ahead
/// would claim the others' live transactions, and one whose clock jumped
/// forward would write leases nobody could claim for an hour. The server's
/// clock is one clock for all of them.
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
pub(in crate::store) use pg_now_ms;

/// Claims expired leases, the statement behind [`Backend::CLAIM_EXPIRED`](super::backend::Backend::CLAIM_EXPIRED),
/// with `$lock` as the subquery's locking clause and `$now` as the current
/// time. Binds `$1` owner, `$2` lease length, `$3` limit; returns `gid,
/// epoch, updated_at_ms` (the time of the claim) of each row it claimed. The
/// outer WHERE repeats the inner one: under READ COMMITTED an UPDATE
/// re-checks its own WHERE on the newest version of a row it had to wait
/// for, so a row that another claimer took in the meantime is left alone
/// whatever the subquery saw.
macro_rules! claim_expired {
    ($lock:literal, $now:expr) => {
        concat!(
            "UPDATE transactions SET owner = $1, epoch = epoch + 1, lease_expires_at_ms = ",
            $now,
            " + $2, updated_at_ms = ",
            $now,
            " WHERE gid IN (SELECT gid FROM transactions WHERE ",
            live!(),
            " AND lease_expires_at_ms < ",
            $now,
            " ORDER BY lease_expires_at_ms LIMIT $3",
            $lock,
            ") AND ",
            live!(),
            " AND lease_expires_at_ms < ",
            $now,
            " RETURNING gid, epoch, updated_at_ms"
        )
    };
}

/// SQLite has one writer at a time, so nothing can claim a row between the
/// subquery and the update: no locking clause (SQLite has none anyway).
/// `$4` is now by the process clock.
pub(in crate::store) const CLAIM_EXPIRED_SQLITE: &str = claim_expired!("", "$4");

/// PostgreSQL (and CockroachDB, YugabyteDB) lock the rows the subquery picks
/// and skip rows another claimer holds, so two coordinators claiming at once
/// split the expired transactions between them instead of queueing on the
/// same rows.
pub(in crate::store) const CLAIM_EXPIRED_POSTGRES: &str =
    claim_expired!(" FOR UPDATE SKIP LOCKED", pg_now_ms!());

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
            live!(),
            " RETURNING epoch, updated_at_ms"
        )
    };
}

/// [`take_over!`] on SQLite: `$4` is now by the process clock.
pub(in crate::store) const TAKE_OVER_SQLITE: &str = take_over!("$4");

/// [`take_over!`] on PostgreSQL, by the server's clock.
pub(in crate::store) const TAKE_OVER_POSTGRES: &str = take_over!(pg_now_ms!());

pub(in crate::store) const INSERT_TX: &str = "INSERT INTO transactions (gid, mode, status, request_hash, options, created_at_ms, \
     updated_at_ms, deadline_at_ms, owner, lease_expires_at_ms, epoch, attention, branch_count) \
     VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, 1, NULL, $10) ON CONFLICT (gid) DO NOTHING";
pub(in crate::store) const INSERT_BRANCH: &str = "INSERT INTO branches (gid, idx, branch_id, spec, status, attempts, \
     last_http_status, last_error) VALUES ($1, $2, $3, $4, $5, 0, NULL, NULL)";
pub(in crate::store) const INSERT_EVENT: &str =
    "INSERT INTO events (gid, at_ms, kind, branch_id, detail) VALUES ($1, $2, $3, $4, $5)";
pub(in crate::store) const LOAD: &str = "SELECT t.*, b.idx AS b_idx, b.spec AS b_spec, b.status AS b_status, \
     b.attempts AS b_attempts, b.last_http_status AS b_http_status, b.last_error AS b_error, b.failing_since_ms AS b_failing_since \
     FROM transactions t LEFT JOIN branches b ON b.gid = t.gid WHERE t.gid = $1 ORDER BY b.idx";
pub(in crate::store) const STATUS: &str = "SELECT status FROM transactions WHERE gid = $1";
// Writes nothing, but takes the row lock and re-checks the status after any
// wait for it: from here until commit no decision can slip in.
pub(in crate::store) const LOCK_OPEN: &str = "UPDATE transactions SET updated_at_ms = updated_at_ms WHERE gid = $1 AND status = $2 RETURNING branch_count";
pub(in crate::store) const FIND_BRANCH: &str =
    "SELECT idx, spec FROM branches WHERE gid = $1 AND branch_id = $2";
pub(in crate::store) const COUNT_BRANCH: &str =
    "UPDATE transactions SET branch_count = branch_count + 1, updated_at_ms = $2 WHERE gid = $1";
pub(in crate::store) const UPDATE_TX: &str = "UPDATE transactions SET status = COALESCE($4, status), \
     attention = COALESCE($5, attention), updated_at_ms = $6 \
     WHERE gid = $1 AND owner = $2 AND epoch = $3 AND ($7 IS NULL OR branch_count = $7)";
pub(in crate::store) const SET_ATTENTION: &str = "UPDATE transactions SET attention = $4, updated_at_ms = $5 \
     WHERE gid = $1 AND owner = $2 AND epoch = $3";
pub(in crate::store) const FENCE_STATE: &str =
    "SELECT owner, epoch, branch_count FROM transactions WHERE gid = $1";
pub(in crate::store) const UPDATE_BRANCH: &str = "UPDATE branches SET status = $3, attempts = $4, last_http_status = $5, \
     last_error = $6, failing_since_ms = $7 WHERE gid = $1 AND idx = $2";
// Renewal names its gids in `$3`, a JSON array (one parameter however many
// gids), which each dialect unpacks its own way, and returns the gids it
// renewed. `$2` is the lease length, `$4` now by the process clock.
// PostgreSQL's statement, which also takes the row locks in order and reads
// the server's clock, is `postgres::sql::RENEW`.
pub(in crate::store) const RENEW_SQLITE: &str = concat!(
    "UPDATE transactions SET lease_expires_at_ms = $4 + $2 WHERE owner = $1 AND ",
    live!(),
    " AND gid IN (SELECT value FROM json_each($3)) RETURNING gid"
);
// Ends `$1`'s leases at `$2`, now by the process clock. Only shortens: a
// lease that ran out already stays as it was.
pub(in crate::store) const RELEASE_SQLITE: &str = concat!(
    "UPDATE transactions SET lease_expires_at_ms = $2 WHERE owner = $1 AND ",
    live!(),
    " AND lease_expires_at_ms > $2"
);
pub(in crate::store) const EVENTS: &str =
    "SELECT at_ms, kind, branch_id, detail FROM events WHERE gid = $1 ORDER BY id";
// One static statement for every combination of filters: a NULL parameter
// switches its filter off. The cursor comparison is a row value, which
// PostgreSQL turns into one index range.
pub(in crate::store) const LIST: &str = "SELECT * FROM transactions \
     WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR mode = $2) \
     AND ($3 IS NULL OR (attention IS NOT NULL) = $3) \
     AND ($4 IS NULL OR (created_at_ms, gid) < ($4, $5)) \
     ORDER BY created_at_ms DESC, gid DESC LIMIT $6";

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
