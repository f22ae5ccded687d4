-- The sub-transaction barrier of dtx-sdk: one row per (transaction, branch,
-- operation) this participant has seen. Rows are written inside the
-- participant's own business transaction; see src/barrier/mod.rs.
CREATE TABLE dtx_barrier (
    gid           TEXT    NOT NULL,
    branch_id     TEXT    NOT NULL,
    -- action, compensate, try, confirm or cancel.
    op            TEXT    NOT NULL,
    -- The operation of the call that wrote the row: `op` itself, or, for a
    -- forward row (action, try), the undo that arrived first and wrote it as
    -- a marker ("this forward step never ran here").
    origin_op     TEXT    NOT NULL,
    -- succeeded, refused, or never_ran (the marker).
    outcome       TEXT    NOT NULL CHECK (outcome IN ('succeeded', 'refused', 'never_ran')),
    -- The refusal reason, or the JSON body of the first success, if any.
    detail        TEXT,
    -- Unix milliseconds; cleanup deletes by it.
    created_at_ms INTEGER NOT NULL,
    PRIMARY KEY (gid, branch_id, op)
);

CREATE INDEX dtx_barrier_created_at ON dtx_barrier (created_at_ms);
