-- Key lifecycle state that must survive a restart of the vault: the minimum
-- decryption version, the background jobs (rewrap, reindex) with their cursors, and
-- the encryptions counted per KEK version. No key material and no personal data.

-- One row: data keys under KEK versions below min_decrypt_version are not unwrapped
-- (except to rewrap them); 0 = no minimum.
CREATE TABLE key_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    min_decrypt_version INTEGER NOT NULL
);

INSERT INTO key_settings (id, min_decrypt_version) VALUES (1, 0);

-- The last job of each kind. A running job resumes after a restart from its cursor:
-- every person id up to and including it is done. The cursor moves in the same
-- transaction as the rows the job changed, so a crash never loses or repeats work.
CREATE TABLE key_jobs (
    kind TEXT PRIMARY KEY,                -- rewrap | reindex
    state TEXT NOT NULL,                  -- running | finished
    target_version INTEGER NOT NULL,
    cursor BLOB,                         -- the last person id done; NULL = none yet
    pass INTEGER NOT NULL,                   -- 1, then again from the start for rows changed meanwhile
    done INTEGER NOT NULL,
    skipped INTEGER NOT NULL,
    total INTEGER NOT NULL,
    rate_per_second INTEGER NOT NULL,
    requested_by TEXT NOT NULL,           -- the identity that started the job
    started_at INTEGER NOT NULL,             -- unix milliseconds
    updated_at INTEGER NOT NULL
);

-- Wraps under each KEK version (NIST SP 800-38D: at most 2^32 encryptions with
-- random 96-bit nonces per key). Counted in memory and added here periodically and
-- at shutdown, so a crash loses at most one flush interval of counts.
CREATE TABLE kek_encryptions (
    kek_version INTEGER PRIMARY KEY,
    encryptions INTEGER NOT NULL
);

-- Where the replay of the erasure ledger got to: every ledger entry up to this
-- sequence number has been applied to this database. A database restored from a
-- backup brings back an older value, so the replay covers every later erasure.
CREATE TABLE erasure_replay (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ledger_seq INTEGER NOT NULL
);

INSERT INTO erasure_replay (id, ledger_seq) VALUES (1, 0);
