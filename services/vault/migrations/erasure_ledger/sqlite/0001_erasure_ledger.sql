-- The erasure ledger: every erasure, in a database of its own, so that restoring the
-- vault database from an older backup cannot roll it back. The vault writes an entry
-- (and waits for it to be durable) before it commits the erasure, and at every start
-- erases again every ledgered person still present before it serves.
--
-- Nothing here is personal data: a person id is the 16 random bytes inside a token.

CREATE TABLE erasure_ledger (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    person_id BLOB NOT NULL,              -- 16 random bytes, the id inside the person token
    erased_at INTEGER NOT NULL,           -- unix milliseconds
    requested_by TEXT NOT NULL            -- the identity the erasure was done for
);

-- Append-only: a stray UPDATE or DELETE fails.
CREATE TRIGGER erasure_ledger_no_update BEFORE UPDATE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'erasure_ledger is append-only');
END;

CREATE TRIGGER erasure_ledger_no_delete BEFORE DELETE ON erasure_ledger
BEGIN
    SELECT RAISE(ABORT, 'erasure_ledger is append-only');
END;
