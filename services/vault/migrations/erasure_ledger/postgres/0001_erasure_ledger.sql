-- The erasure ledger: every erasure, in a database of its own, so that restoring the
-- vault database from an older backup cannot roll it back. The vault writes an entry
-- (and waits for it to be durable) before it commits the erasure, and at every start
-- erases again every ledgered person still present before it serves.
--
-- Nothing here is personal data: a person id is the 16 random bytes inside a token.

CREATE TABLE erasure_ledger (
    seq BIGSERIAL PRIMARY KEY,
    person_id BYTEA NOT NULL,              -- 16 random bytes, the id inside the person token
    erased_at BIGINT NOT NULL,             -- unix milliseconds
    requested_by TEXT NOT NULL             -- the identity the erasure was done for
);

-- Append-only: a stray UPDATE, DELETE or TRUNCATE fails.
CREATE FUNCTION erasure_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'erasure_ledger is append-only';
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER erasure_ledger_append_only BEFORE UPDATE OR DELETE ON erasure_ledger
    FOR EACH ROW EXECUTE FUNCTION erasure_ledger_append_only();

CREATE TRIGGER erasure_ledger_no_truncate BEFORE TRUNCATE ON erasure_ledger
    FOR EACH STATEMENT EXECUTE FUNCTION erasure_ledger_append_only();
