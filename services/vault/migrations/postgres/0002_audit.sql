-- The audit ledger (crate qupia-audit): a hash chain of every decision to reveal, written
-- before any plaintext leaves the vault. Nothing here is personal data: an entry names
-- the caller, the purpose, the person's random token, field names and ids, never a value
-- and never an unkeyed hash of one.

-- One row per entry. seq runs 1, 2, 3... without gaps; hash = SHA-256 over the domain
-- tag, prev_hash and every other column (see libs/audit/src/chain.rs), so an edit, a
-- deletion or a reordering breaks the chain.
CREATE TABLE audit_log (
    seq BIGINT PRIMARY KEY,
    at_ms BIGINT NOT NULL,                -- unix milliseconds, wall clock of the append
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
    prev_hash BYTEA NOT NULL,             -- 32 bytes: the previous entry's hash, zeros for seq 1
    hash BYTEA NOT NULL                   -- 32 bytes
);

CREATE INDEX audit_log_person ON audit_log (person, seq);
CREATE INDEX audit_log_caller ON audit_log (caller, seq);
CREATE INDEX audit_log_at ON audit_log (at_ms);

-- The end of the chain, one row. Appenders lock it (SELECT ... FOR UPDATE), so entries
-- are numbered and chained one transaction at a time.
CREATE TABLE audit_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL
);

INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'));

-- Commitments to the chain up to seq; copies are also exported out of the database, so
-- that cutting off the tail of the chain (and rewriting the head to match) is detected.
CREATE TABLE audit_checkpoints (
    seq BIGINT NOT NULL,
    hash BYTEA NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (seq, at_ms)
);

-- Append-only in the database itself: a stray UPDATE, DELETE or TRUNCATE (a bug, an
-- injected statement) fails. Tampering then needs a schema change, and the chain still
-- tells.
CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
END
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_append_only BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_append_only();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only();
