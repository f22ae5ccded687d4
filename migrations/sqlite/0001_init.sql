-- The durable transaction log, SQLite flavour. Kept column for column equal
-- to migrations/postgres/0001_init.sql so that both backends run the same
-- statements (coordinator/src/store/rows/sql.rs). Only the events id differs.
--
-- Every time is Unix milliseconds chosen by the coordinator, never the
-- database's clock, so that the SQL is identical on every backend and tests
-- can run on a virtual clock.

-- One row per global transaction.
CREATE TABLE transactions (
    gid                 TEXT    NOT NULL PRIMARY KEY,
    mode                TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    -- Fingerprint of the registration request: the same gid with another
    -- fingerprint is a client reusing a gid.
    request_hash        TEXT    NOT NULL,
    -- TxOptions as JSON text.
    options             TEXT    NOT NULL,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL,
    deadline_at_ms      INTEGER NOT NULL,
    -- The coordinator driving the transaction, and until when.
    owner               TEXT,
    lease_expires_at_ms INTEGER NOT NULL,
    -- Fencing token: bumped whenever ownership changes hands.
    epoch               INTEGER NOT NULL,
    -- Why an operator should look at it, when they should.
    attention           TEXT,
    -- Number of branches; also the index the next branch gets.
    branch_count        INTEGER NOT NULL
);

-- Recovery claims expired leases of transactions that are not final. The
-- partial index holds only live transactions, so it stays small however long
-- the history grows.
CREATE INDEX transactions_lease_idx ON transactions (lease_expires_at_ms)
    WHERE status NOT IN ('committed', 'aborted');

-- Lease renewal and release find a coordinator's live transactions.
CREATE INDEX transactions_owner_idx ON transactions (owner)
    WHERE status NOT IN ('committed', 'aborted');

-- Listing is newest first with a (created_at_ms, gid) cursor.
CREATE INDEX transactions_created_idx ON transactions (created_at_ms, gid);

-- Operators list the flagged transactions; few are, so the index is small.
CREATE INDEX transactions_attention_idx ON transactions (created_at_ms, gid)
    WHERE attention IS NOT NULL;

-- The branches of each transaction, in registration order.
CREATE TABLE branches (
    gid              TEXT    NOT NULL REFERENCES transactions (gid) ON DELETE CASCADE,
    idx              INTEGER NOT NULL,
    branch_id        TEXT    NOT NULL,
    -- BranchSpec as JSON text.
    spec             TEXT    NOT NULL,
    status           TEXT    NOT NULL,
    attempts         INTEGER NOT NULL,
    last_http_status INTEGER,
    last_error       TEXT,
    PRIMARY KEY (gid, idx),
    UNIQUE (gid, branch_id)
);

-- The history of each transaction. A rowid alias grows with every insert,
-- so ordering by id within a gid is the order of the writes.
CREATE TABLE events (
    id        INTEGER NOT NULL PRIMARY KEY,
    gid       TEXT    NOT NULL REFERENCES transactions (gid) ON DELETE CASCADE,
    at_ms     INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    branch_id TEXT,
    detail    TEXT    NOT NULL
);

CREATE INDEX events_gid_idx ON events (gid, id);
