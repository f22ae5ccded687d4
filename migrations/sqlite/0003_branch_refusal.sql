-- Why the participant refused the branch's work (the detail of its refusal,
-- made storable and bounded like last_error), or NULL. Kept apart from
-- last_error, which the next call replaces, so that the reason stays on the
-- branch after its refusal, for the transaction view and the operator.
ALTER TABLE branches ADD COLUMN refusal TEXT;
