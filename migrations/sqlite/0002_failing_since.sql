-- When the branch's current phase-two operation started failing (Unix ms),
-- or NULL. The protocol core flags the transaction for an operator once a
-- call has failed for the attention window; keeping the start of the run in
-- the log means a coordinator restart does not reset that window.
ALTER TABLE branches ADD COLUMN failing_since_ms INTEGER;
