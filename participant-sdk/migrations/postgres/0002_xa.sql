-- The 2PC (XA) helper of dtx-sdk on PostgreSQL; see src/xa/mod.rs.
--
-- One row per branch this participant was asked to prepare or roll back,
-- written and committed *before* the branch's PREPARE TRANSACTION, so that
-- recovery can map a prepared transaction's xid (a hash) back to its gid and
-- branch, and so that a rollback that arrives first is remembered.
CREATE TABLE dtx_xa_branch (
    -- `dtx-` and the hex SHA-256 of gid and branch (src/xa/xid.rs).
    xid           TEXT   PRIMARY KEY,
    gid           TEXT   NOT NULL,
    branch_id     TEXT   NOT NULL,
    -- open: a prepare may run (or ran: see pg_prepared_xacts and
    --       dtx_xa_committed);
    -- refused: the business voted no (detail: why); a repeat is refused too;
    -- rolled_back: rolled back, or rolled back before any prepare (null
    --       rollback); a later prepare is refused (suspension).
    state         TEXT   NOT NULL CHECK (state IN ('open', 'refused', 'rolled_back')),
    detail        TEXT,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);

CREATE UNIQUE INDEX dtx_xa_branch_gid ON dtx_xa_branch (gid, branch_id);

-- One row per committed branch, inserted *inside* the prepared transaction:
-- it is invisible while the branch is prepared, appears atomically with the
-- business changes at COMMIT PREPARED and vanishes with them at ROLLBACK
-- PREPARED. So "was this branch committed?" is answered without writing
-- anything after COMMIT PREPARED (a crash there would lose that write).
CREATE TABLE dtx_xa_committed (
    xid            TEXT   PRIMARY KEY,
    prepared_at_ms BIGINT NOT NULL
);
