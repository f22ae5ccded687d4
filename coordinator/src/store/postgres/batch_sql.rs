//! The batched statements: many `create`s as ONE statement and many
//! `update`s as ONE statement (the batches of [`super::batcher`]), and the
//! read that explains a refused update. The lock order they follow is
//! described here for every PostgreSQL write.
//!
//! Both batched writes are data-modifying CTEs whose later parts wait for
//! the first part's `RETURNING` rows: a write's branches and events are
//! written only if its `transactions` row was, and never before that row is
//! inserted or locked, so each write of a batch is all or nothing on its
//! own. Lists travel as parallel array parameters turned back into rows by
//! `unnest` (several arrays at once, `WITH ORDINALITY` for their order);
//! each branch and event carries its write's gid and position. A single
//! statement in autocommit is atomic and needs no `BEGIN`/`COMMIT`.
//!
//! Plans. The write connections keep one generic plan per statement (see
//! `WRITE_SETTINGS` in `store::postgres`), made once, maybe on empty tables,
//! and used for batches of any size on tables of any size. So the statements
//! leave the planner one sensible plan: every table is reached through its
//! primary key from the array rows (nested loops of index lookups; the
//! settings forbid sequential scans and hash and merge joins, which on a
//! small table look cheaper and on a grown one read all of it), and the
//! arrays never join each other: a part keeps the rows of applied writes
//! with `= ANY (ARRAY(SELECT ... FROM tx))`, computed once.
//!
//! Lock order. A batch holds several row locks until it commits, so two
//! batches (two coordinators, or two batches of one) that took them in
//! opposite orders would deadlock. Every statement that locks more than one
//! `transactions` row therefore takes the locks in gid order: creates insert
//! in gid order (an insert "locks" its gid until it commits: a concurrent
//! insert of the same gid waits for it), updates and lease renewals and
//! releases ([`super::rare_writes`]) first lock their rows with
//! `SELECT ... ORDER BY gid FOR NO KEY UPDATE` (the row-locking node sits
//! above the sort, so rows are locked in sorted order), and the claim of
//! expired leases never waits (`SKIP LOCKED`). The other writes hold one
//! `transactions` row at a time.
//!
//! Only tested on PostgreSQL: a compatible engine must accept data-modifying
//! CTEs that read each other's `RETURNING` rows and check foreign keys at the
//! end of the statement, and must draw identity values in the order rows
//! reach the insert (distributed engines answer a lock conflict with a
//! serialization failure instead; the batcher retries those).

use super::server_clock::pg_now_ms;

/// Inserts transactions, each with its branches and its `registered` event,
/// skipping each gid that is taken. Binds, one entry per transaction: `$1`
/// gid, `$2` mode, `$3` status, `$4` request hash, `$5` options, `$6` now,
/// `$7` deadline, `$8` owner, `$9` lease length, `$10` branch count (the
/// values of SQLite's `INSERT_TX` in `store::sqlite::writes`, but for the
/// lease, which starts now by the server's clock), `$11` the `registered`
/// event's detail; one entry per branch: `$12` its transaction's gid, `$13`
/// index, `$14` id, `$15` spec; then `$16` the status of a new branch and
/// `$17` the event's kind. Returns the gids it inserted.
///
/// - The rows reach the insert in gid order (`ORDER BY`): see the module's
///   lock order.
/// - `ON CONFLICT DO NOTHING` waits for a concurrent insert of the same gid
///   to end, like `INSERT_TX`; a gid it skips is not in `tx`, so neither are
///   its branches and event.
/// - The foreign keys of `branches` and `events` are checked at the end of
///   the statement, when the new rows are visible.
/// - A batch holds each gid once (the batcher sees to it).
pub(super) const CREATE_MANY: &str = concat!(
    "\
WITH tx AS (
    INSERT INTO transactions (gid, mode, status, request_hash, options, created_at_ms,
        updated_at_ms, deadline_at_ms, owner, lease_expires_at_ms, epoch, attention, branch_count,
        namespace)
    SELECT n.gid, n.mode, n.status, n.request_hash, n.options, n.now_ms, n.now_ms,
        n.deadline_at_ms, n.owner, ",
    pg_now_ms!(),
    " + n.lease_ms, 1, NULL, n.branch_count, n.namespace
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[],
            $7::bigint[], $8::text[], $9::bigint[], $10::bigint[], $18::text[])
        AS n(gid, mode, status, request_hash, options, now_ms, deadline_at_ms, owner,
            lease_ms, branch_count, namespace)
    ORDER BY n.gid
    ON CONFLICT (gid) DO NOTHING
    RETURNING gid
), new_branches AS (
    INSERT INTO branches (gid, idx, branch_id, spec, status, attempts, last_http_status, last_error)
    SELECT b.gid, b.idx, b.branch_id, b.spec, $16, 0, NULL, NULL
    FROM unnest($12::text[], $13::bigint[], $14::text[], $15::text[]) AS b(gid, idx, branch_id, spec)
    WHERE b.gid = ANY (ARRAY(SELECT gid FROM tx))
), registered AS (
    INSERT INTO events (gid, at_ms, kind, branch_id, detail)
    SELECT r.gid, r.now_ms, $17, NULL, r.detail
    FROM unnest($1::text[], $6::bigint[], $11::text[]) AS r(gid, now_ms, detail)
    WHERE r.gid = ANY (ARRAY(SELECT gid FROM tx))
)
SELECT gid FROM tx"
);

/// Fenced writes: for each, the transaction's row, then its branches, then
/// its new events, all or nothing. Binds, one entry per write (its position
/// is its ordinality, from 1): `$1` gid, `$2` owner, `$3` epoch, `$4` status
/// or NULL, `$5` attention or NULL, `$6` now, `$7` expected branch count or
/// NULL (the values of SQLite's `UPDATE_TX` in `store::sqlite::writes`); one
/// entry per branch change: `$8` its write's position, `$9` gid, `$10`
/// index, `$11` status, `$12` attempts, `$13` last HTTP status, `$14` last
/// error, `$21` failing since, `$22` refusal (one entry per index of a
/// write); one entry per event, in order: `$15` its write's position, `$16`
/// gid, `$17` time, `$18` kind, `$19` branch id, `$20` detail. Returns the
/// positions of the writes it applied.
///
/// - `locked` takes the rows' locks in gid order (see the module's lock
///   order), and `tx` changes only rows `locked` returned, so it waits for
///   no lock of its own. Under READ COMMITTED, a row `locked` had to wait
///   for is changed after the statement's snapshot was taken: `tx` then
///   re-checks its WHERE clause, with each write's own fence, on the newest
///   version (see `store::postgres`). A write whose fence does not hold is
///   not in `tx`, and so changes nothing. A gid without a row is not in
///   `locked`.
/// - A branch index the transaction lacks must refuse its whole write: the
///   array in `tx`'s WHERE lists the writes that name one, before anything
///   changes, and `tx` leaves them out; the caller asks [`REFUSAL`] why. The
///   check reads the statement's snapshot, which is enough: branches are
///   never deleted (but with their transaction, whose row `tx` would then
///   not find), and a branch committed after the snapshot is one the writer
///   cannot have known of (it is registered under the row lock `locked`
///   waits for, and a writer names only branches it read).
/// - The branch update then changes exactly the rows named by the writes in
///   `tx` (a batch holds each gid once and each write names an index once,
///   so no row matches twice). It waits for no lock: a branch is changed
///   only under its transaction's row lock, which `locked` holds.
/// - Identity values are drawn as rows reach the insert, above its `SELECT`,
///   which `ORDER BY` keeps a subquery of its own (the planner does not
///   flatten a subquery with `ORDER BY`): the ids follow the order the events
///   were given in, within each write as across the batch. Rows reach it only
///   once `tx` holds the row locks, so the ids also come after every earlier
///   writer's of the same transaction.
pub(super) const UPDATE_MANY: &str = "\
WITH locked AS MATERIALIZED (
    SELECT u.* FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],
            $6::bigint[], $7::bigint[])
        WITH ORDINALITY AS u(gid, owner, epoch, status, attention, now_ms, branch_count, pos)
    JOIN transactions t ON t.gid = u.gid
    ORDER BY u.gid FOR NO KEY UPDATE OF t
), tx AS (
    UPDATE transactions t SET status = COALESCE(w.status, t.status),
        attention = COALESCE(w.attention, t.attention), updated_at_ms = w.now_ms
    FROM locked w
    WHERE t.gid = w.gid AND t.owner = w.owner AND t.epoch = w.epoch
        AND (w.branch_count IS NULL OR t.branch_count = w.branch_count)
        AND w.pos <> ALL (ARRAY(
            SELECT c.pos FROM unnest($8::bigint[], $9::text[], $10::bigint[]) AS c(pos, gid, idx)
            WHERE NOT EXISTS (SELECT 1 FROM branches b WHERE b.gid = c.gid AND b.idx = c.idx)))
    RETURNING t.gid, w.pos
), changed_branches AS (
    UPDATE branches b SET status = c.status, attempts = c.attempts,
        last_http_status = c.http_status, last_error = c.error,
        failing_since_ms = c.failing_since, refusal = c.refusal
    FROM unnest($8::bigint[], $9::text[], $10::bigint[], $11::text[], $12::bigint[],
            $13::bigint[], $14::text[], $21::bigint[], $22::text[])
        AS c(pos, gid, idx, status, attempts, http_status, error, failing_since, refusal)
    WHERE b.gid = c.gid AND b.idx = c.idx AND c.pos = ANY (ARRAY(SELECT pos FROM tx))
), appended AS (
    INSERT INTO events (gid, at_ms, kind, branch_id, detail)
    SELECT e.gid, e.at_ms, e.kind, e.branch_id, e.detail
    FROM unnest($15::bigint[], $16::text[], $17::bigint[], $18::text[], $19::text[], $20::text[])
        WITH ORDINALITY AS e(pos, gid, at_ms, kind, branch_id, detail, ord)
    WHERE e.pos = ANY (ARRAY(SELECT pos FROM tx))
    ORDER BY e.ord
)
SELECT pos FROM tx";

/// Why a write of [`UPDATE_MANY`] was not applied, read afresh after it: the
/// transaction's owner, epoch and branch count (as `FENCE_STATE` in
/// `store::shared::statements`), and the first of the indices `$2` (in the
/// order given) that has no branch row, or NULL. No row: the transaction
/// does not exist.
pub(super) const REFUSAL: &str = "\
SELECT t.owner, t.epoch, t.branch_count,
    (SELECT named.idx FROM unnest($2::bigint[]) WITH ORDINALITY AS named(idx, ord)
     WHERE NOT EXISTS (SELECT 1 FROM branches b WHERE b.gid = t.gid AND b.idx = named.idx)
     ORDER BY named.ord LIMIT 1) AS missing_branch
FROM transactions t WHERE t.gid = $1";
