-- The audit ledger (crate qupia-audit): a hash chain of every decision to reveal, written
-- before any plaintext leaves the vault. Nothing here is personal data: an entry names
-- the caller, the purpose, the person's random token, field names and ids, never a value
-- and never an unkeyed hash of one.

-- One row per entry. seq runs 1, 2, 3... without gaps; hash = SHA-256 over the domain
-- tag, prev_hash and every other column (see libs/audit/src/chain.rs), so an edit, a
-- deletion or a reordering breaks the chain.
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,               -- unix milliseconds, wall clock of the append
    caller TEXT NOT NULL,                 -- the caller's identity, e.g. a SPIFFE id
    operation TEXT NOT NULL,              -- reveal, tokenize, lookup, erase, ...
    purpose TEXT NOT NULL,                -- may be empty
    person TEXT NOT NULL,                 -- the person token, may be empty
    fields TEXT NOT NULL,                 -- comma-separated field names
    decision TEXT NOT NULL,               -- allowed | denied
    reason TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    request_id TEXT NOT NULL,             -- legal-disclosure request
    decision_id TEXT NOT NULL,            -- the gateway's decision id
    trace_id TEXT NOT NULL,
    prev_hash BLOB NOT NULL,              -- 32 bytes: the previous entry's hash, zeros for seq 1
    hash BLOB NOT NULL                    -- 32 bytes
);

CREATE INDEX audit_log_person ON audit_log (person, seq);
CREATE INDEX audit_log_caller ON audit_log (caller, seq);
CREATE INDEX audit_log_at ON audit_log (at_ms);

-- The end of the chain, one row. Appenders take its write lock first, so entries are
-- numbered and chained one transaction at a time.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));

-- Commitments to the chain up to seq; copies are also exported out of the database, so
-- that cutting off the tail of the chain (and rewriting the head to match) is detected.
CREATE TABLE audit_checkpoints (
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (seq, at_ms)
);

-- Append-only in the database itself: a stray UPDATE or DELETE (a bug, an injected
-- statement) fails. Tampering then needs a schema change, and the chain still tells.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit_checkpoints is append-only');
END;
