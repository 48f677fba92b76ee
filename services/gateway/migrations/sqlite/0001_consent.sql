-- The gateway's consent ledger and the published versions of the privacy policy
-- (policy clauses 2.2.4, 2.2.5, 3.5, 5.4, 5.5). Nothing here is personal data: people
-- appear only as opaque person tokens, and evidence is a reference, never a value.
-- Every table is append-only: history is never rewritten, only added to.

-- One row per published version. version runs 1, 2, 3... without gaps (the gateway
-- numbers it MAX + 1 under the write lock).
CREATE TABLE policy_versions (
    version INTEGER PRIMARY KEY CHECK (version >= 1),
    text_sha256 TEXT NOT NULL
        CHECK (length(text_sha256) = 64 AND text_sha256 NOT GLOB '*[^0-9a-f]*'),  -- lowercase hex
    published_at_ms INTEGER NOT NULL,     -- unix milliseconds
    published_by TEXT NOT NULL            -- the publisher's identity (a SPIFFE id)
);

-- The purposes whose consents under earlier versions stop counting from this version.
CREATE TABLE policy_reconsent (
    version INTEGER NOT NULL REFERENCES policy_versions (version),
    purpose TEXT NOT NULL CHECK (purpose IN ('advertising', 'statistics', 'third_party_transfer')),
    PRIMARY KEY (version, purpose)
);

CREATE INDEX policy_reconsent_purpose ON policy_reconsent (purpose, version);

-- One row per grant or withdrawal. seq orders events (AUTOINCREMENT: only ever
-- increases, never reused); the clock does not. A consent's state is its latest event.
CREATE TABLE consent_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,              -- random UUID v4: the consent id
    person_token TEXT NOT NULL CHECK (length(person_token) = 39 AND substr(person_token, 1, 4) = 'qpp_'
        AND substr(person_token, 5) NOT GLOB '*[^A-Za-z0-9_-]*'),
    purpose TEXT NOT NULL CHECK (purpose IN ('advertising', 'statistics', 'third_party_transfer')),
    recipient TEXT NOT NULL,              -- the third party; empty unless third_party_transfer
    action TEXT NOT NULL CHECK (action IN ('granted', 'withdrawn')),
    policy_version INTEGER NOT NULL REFERENCES policy_versions (version),
    channel TEXT NOT NULL,                -- web, mobile, paper, call-centre, ...
    evidence TEXT NOT NULL,               -- a reference (form id, document token), may be empty for a withdrawal
    expires_at_ms INTEGER,                -- unix milliseconds; NULL = no expiry
    recorded_at_ms INTEGER NOT NULL,      -- unix milliseconds
    recorded_by TEXT NOT NULL,            -- the caller's identity (a SPIFFE id)
    CHECK ((purpose = 'third_party_transfer' AND recipient <> '')
        OR (purpose <> 'third_party_transfer' AND recipient = '')),
    CHECK (expires_at_ms IS NULL OR (action = 'granted' AND expires_at_ms > recorded_at_ms))
);

-- The latest event of one consent, and one person's history, by index.
CREATE INDEX consent_events_subject ON consent_events (person_token, purpose, recipient, seq);

-- Append-only in the database itself: a stray UPDATE or DELETE (a bug, an injected
-- statement) fails instead of rewriting what a person agreed to.
CREATE TRIGGER consent_events_no_update BEFORE UPDATE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent history is append-only');
END;

CREATE TRIGGER consent_events_no_delete BEFORE DELETE ON consent_events
BEGIN
    SELECT RAISE(ABORT, 'consent history is append-only');
END;

CREATE TRIGGER policy_versions_no_update BEFORE UPDATE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy versions are append-only');
END;

CREATE TRIGGER policy_versions_no_delete BEFORE DELETE ON policy_versions
BEGIN
    SELECT RAISE(ABORT, 'policy versions are append-only');
END;

CREATE TRIGGER policy_reconsent_no_update BEFORE UPDATE ON policy_reconsent
BEGIN
    SELECT RAISE(ABORT, 'policy versions are append-only');
END;

CREATE TRIGGER policy_reconsent_no_delete BEFORE DELETE ON policy_reconsent
BEGIN
    SELECT RAISE(ABORT, 'policy versions are append-only');
END;
