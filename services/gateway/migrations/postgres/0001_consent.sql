-- The gateway's consent ledger and the published versions of the privacy policy
-- (policy clauses 2.2.4, 2.2.5, 3.5, 5.4, 5.5). Nothing here is personal data: people
-- appear only as opaque person tokens, and evidence is a reference, never a value.
-- Every table is append-only: history is never rewritten, only added to.

-- One row per published version. version runs 1, 2, 3... without gaps (the gateway
-- numbers it MAX + 1 while holding a lock that queues publishers).
CREATE TABLE policy_versions (
    version BIGINT PRIMARY KEY CHECK (version >= 1),
    text_sha256 TEXT NOT NULL CHECK (text_sha256 ~ '^[0-9a-f]{64}$'),
    published_at_ms BIGINT NOT NULL,      -- unix milliseconds
    published_by TEXT NOT NULL            -- the publisher's identity (a SPIFFE id)
);

-- The purposes whose consents under earlier versions stop counting from this version.
CREATE TABLE policy_reconsent (
    version BIGINT NOT NULL REFERENCES policy_versions (version),
    purpose TEXT NOT NULL CHECK (purpose IN ('advertising', 'statistics', 'third_party_transfer')),
    PRIMARY KEY (version, purpose)
);

CREATE INDEX policy_reconsent_purpose ON policy_reconsent (purpose, version);

-- One row per grant or withdrawal. seq orders events (an identity: only ever
-- increases); the clock does not. A consent's state is its latest event.
CREATE TABLE consent_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,              -- random UUID v4: the consent id
    person_token TEXT NOT NULL CHECK (person_token ~ '^qpp_[A-Za-z0-9_-]{35}$'),
    purpose TEXT NOT NULL CHECK (purpose IN ('advertising', 'statistics', 'third_party_transfer')),
    recipient TEXT NOT NULL,              -- the third party; empty unless third_party_transfer
    action TEXT NOT NULL CHECK (action IN ('granted', 'withdrawn')),
    policy_version BIGINT NOT NULL REFERENCES policy_versions (version),
    channel TEXT NOT NULL,                -- web, mobile, paper, call-centre, ...
    evidence TEXT NOT NULL,               -- a reference (form id, document token), may be empty for a withdrawal
    expires_at_ms BIGINT,                 -- unix milliseconds; NULL = no expiry
    recorded_at_ms BIGINT NOT NULL,       -- unix milliseconds
    recorded_by TEXT NOT NULL,            -- the caller's identity (a SPIFFE id)
    CHECK ((purpose = 'third_party_transfer' AND recipient <> '')
        OR (purpose <> 'third_party_transfer' AND recipient = '')),
    CHECK (expires_at_ms IS NULL OR (action = 'granted' AND expires_at_ms > recorded_at_ms))
);

-- The latest event of one consent, and one person's history, by index.
CREATE INDEX consent_events_subject ON consent_events (person_token, purpose, recipient, seq);

-- Append-only in the database itself: a stray UPDATE, DELETE or TRUNCATE (a bug, an
-- injected statement) fails instead of rewriting what a person agreed to. The trigger's
-- argument is the message, so both backends say the same.
CREATE FUNCTION gateway_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0];
END
$$;

CREATE TRIGGER consent_events_append_only BEFORE UPDATE OR DELETE ON consent_events
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('consent history is append-only');
CREATE TRIGGER consent_events_no_truncate BEFORE TRUNCATE ON consent_events
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('consent history is append-only');
CREATE TRIGGER policy_versions_append_only BEFORE UPDATE OR DELETE ON policy_versions
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('policy versions are append-only');
CREATE TRIGGER policy_versions_no_truncate BEFORE TRUNCATE ON policy_versions
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('policy versions are append-only');
CREATE TRIGGER policy_reconsent_append_only BEFORE UPDATE OR DELETE ON policy_reconsent
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('policy versions are append-only');
CREATE TRIGGER policy_reconsent_no_truncate BEFORE TRUNCATE ON policy_reconsent
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('policy versions are append-only');
