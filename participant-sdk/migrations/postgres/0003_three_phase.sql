-- The 3PC participant helper of dtx-sdk: one row per (transaction, branch)
-- this participant voted on or was told to abort, written in the same local
-- transaction as the business work of each step; see src/three_phase/mod.rs.
CREATE TABLE dtx_three_phase (
    gid           TEXT    NOT NULL,
    branch_id     TEXT    NOT NULL,
    -- voted_yes: can_commit said yes (nothing held);
    -- pre_committed: the work is done and held;
    -- committed / aborted: final.
    state         TEXT    NOT NULL
                  CHECK (state IN ('voted_yes', 'pre_committed', 'committed', 'aborted')),
    -- Who decided a final state: coordinator (a call, or its answer to the
    -- termination query), timeout_rule (the watchdog could not reach the
    -- coordinator), participant (this participant voted or pre-committed no).
    -- NULL while not final. A checker compares it across participants.
    decided_by    TEXT    CHECK (decided_by IN ('coordinator', 'timeout_rule', 'participant')),
    -- The branch payload (JSON) of the can_commit call, for the hooks the
    -- watchdog runs without a call.
    payload       TEXT,
    -- Why the branch was refused or aborted, if it was.
    detail        TEXT,
    -- Unix milliseconds.
    created_at_ms BIGINT NOT NULL,
    -- Unix milliseconds of the last state change: the watchdog's clock.
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (gid, branch_id)
);

CREATE INDEX dtx_three_phase_waiting ON dtx_three_phase (state, updated_at_ms);
