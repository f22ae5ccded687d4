//! The statements only PostgreSQL runs: `create` and `update` as ONE
//! statement each, so that each costs one round trip and needs no
//! `BEGIN`/`COMMIT` (a single statement in autocommit is atomic), and the
//! read that explains a refused update.
//!
//! Both writes are data-modifying CTEs whose later parts read the first
//! part's `RETURNING` rows: the branches and events are written only if the
//! `transactions` row was, and never before that row is inserted or locked.
//! Lists of branches and events travel as parallel array parameters turned
//! back into rows by `unnest` (several arrays at once, `WITH ORDINALITY`
//! for their order). Only tested on PostgreSQL: a compatible engine must
//! accept data-modifying CTEs that read each other's `RETURNING` rows and
//! check foreign keys at the end of the statement, and must draw identity
//! values in the order rows reach the insert.

/// Inserts a transaction with its branches and its `registered` event, or
/// nothing when the gid is taken. Binds `$1` gid, `$2` mode, `$3` status,
/// `$4` request hash, `$5` options, `$6` now, `$7` deadline, `$8` owner,
/// `$9` lease expiry, `$10` branch count (the values of `rows::sql`'s
/// `INSERT_TX`), `$11` branch ids and `$12` branch specs in order, `$13` the
/// status of a new branch, `$14` and `$15` the event's kind and detail.
/// Returns one row: how many transactions it inserted (0 or 1).
///
/// Branch `i` of the arrays gets index `i` (ordinality counts from 1).
/// `ON CONFLICT DO NOTHING` waits for a concurrent insert of the same gid to
/// end, like `INSERT_TX`; when it inserted nothing, `tx` is empty and so are
/// the inserts that read it. The foreign keys of `branches` and `events` are
/// checked at the end of the statement, when the new row is visible.
pub(super) const CREATE: &str = "\
WITH tx AS (
    INSERT INTO transactions (gid, mode, status, request_hash, options, created_at_ms,
        updated_at_ms, deadline_at_ms, owner, lease_expires_at_ms, epoch, attention, branch_count)
    VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9, 1, NULL, $10)
    ON CONFLICT (gid) DO NOTHING
    RETURNING gid
), new_branches AS (
    INSERT INTO branches (gid, idx, branch_id, spec, status, attempts, last_http_status, last_error)
    SELECT tx.gid, b.ord - 1, b.branch_id, b.spec, $13, 0, NULL, NULL
    FROM tx CROSS JOIN unnest($11::text[], $12::text[]) WITH ORDINALITY AS b(branch_id, spec, ord)
), registered AS (
    INSERT INTO events (gid, at_ms, kind, branch_id, detail)
    SELECT tx.gid, $6, $14, NULL, $15 FROM tx
)
SELECT count(*) FROM tx";

/// One fenced write: the transaction's row, then its branches, then its new
/// events, all or nothing. Binds `$1` gid, `$2` owner, `$3` epoch, `$4`
/// status or NULL, `$5` attention or NULL, `$6` now, `$7` expected branch
/// count or NULL (the values of `rows::sql`'s `UPDATE_TX`), `$8`..`$12` the
/// branch changes as parallel arrays (index, status, attempts, last HTTP
/// status, last error; one entry per index), `$13`..`$16` the events in
/// order (time, kind, branch id, detail). Returns one row: how many
/// transactions it updated (0 or 1).
///
/// - `tx` is `UPDATE_TX` (same SET, same fence in the WHERE) and comes first:
///   the branch update and the event insert read its `RETURNING` row, so
///   they run only once it holds the row lock, which serialises the writers
///   of one gid as in every other write (see `store::postgres`). When the
///   fence does not hold, `tx` is empty and the statement changes nothing.
/// - A branch index the transaction lacks must refuse the whole write. The
///   last condition of `tx`'s WHERE checks, before anything changes, that
///   every index named has its row in `branches`; otherwise `tx` matches
///   nothing and the caller asks [`REFUSAL`] why. The check reads the
///   statement's snapshot, which is enough: branches are never deleted (but
///   with their transaction, whose row `tx` would then not find), and a
///   branch committed after the snapshot is one the writer cannot have
///   known of (it is registered under the row lock `tx` waits for, and a
///   writer names only branches it read).
/// - The branch update then changes exactly the rows named. Under READ
///   COMMITTED it re-checks each row it waited for on the newest version,
///   and sets whole values, so a version newer than the snapshot is no
///   harm.
/// - Identity values are drawn as rows reach the insert, above its
///   `SELECT`, which `ORDER BY` keeps a subquery of its own (the planner
///   does not flatten a subquery with `ORDER BY`): the ids follow the order
///   the events were given in (`EXPLAIN VERBOSE` shows `nextval` in the
///   subquery scan over the ordered rows). Rows reach it only once `tx`
///   holds the row lock, so the ids also come after every earlier writer's.
pub(super) const UPDATE: &str = "\
WITH tx AS (
    UPDATE transactions SET status = COALESCE($4, status),
        attention = COALESCE($5, attention), updated_at_ms = $6
    WHERE gid = $1 AND owner = $2 AND epoch = $3 AND ($7::bigint IS NULL OR branch_count = $7)
        AND NOT EXISTS (
            SELECT 1 FROM unnest($8::bigint[]) AS named(idx)
            WHERE NOT EXISTS (SELECT 1 FROM branches b WHERE b.gid = $1 AND b.idx = named.idx))
    RETURNING gid
), changed_branches AS (
    UPDATE branches b SET status = u.status, attempts = u.attempts,
        last_http_status = u.http_status, last_error = u.error
    FROM tx CROSS JOIN unnest($8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::text[])
        AS u(idx, status, attempts, http_status, error)
    WHERE b.gid = tx.gid AND b.idx = u.idx
), appended AS (
    INSERT INTO events (gid, at_ms, kind, branch_id, detail)
    SELECT tx.gid, e.at_ms, e.kind, e.branch_id, e.detail
    FROM tx CROSS JOIN unnest($13::bigint[], $14::text[], $15::text[], $16::text[])
        WITH ORDINALITY AS e(at_ms, kind, branch_id, detail, ord)
    ORDER BY e.ord
)
SELECT count(*) FROM tx";

/// Why [`UPDATE`] matched no row, read afresh after it: the transaction's
/// owner, epoch and branch count (as `rows::sql`'s `FENCE_STATE`), and the
/// first of the indices `$2` (in the order given) that has no branch row,
/// or NULL. No row: the transaction does not exist.
pub(super) const REFUSAL: &str = "\
SELECT t.owner, t.epoch, t.branch_count,
    (SELECT named.idx FROM unnest($2::bigint[]) WITH ORDINALITY AS named(idx, ord)
     WHERE NOT EXISTS (SELECT 1 FROM branches b WHERE b.gid = t.gid AND b.idx = named.idx)
     ORDER BY named.ord LIMIT 1) AS missing_branch
FROM transactions t WHERE t.gid = $1";
