-- The namespace of the API token that registered the transaction: a token
-- sees only its own namespace's transactions (operators see every one).
-- Transactions registered before tokens existed, or without tokens, are in
-- `default`.
ALTER TABLE transactions ADD COLUMN namespace TEXT NOT NULL DEFAULT 'default';

-- Listings of one namespace, newest first.
CREATE INDEX transactions_namespace_idx ON transactions (namespace, created_at_ms, gid);
