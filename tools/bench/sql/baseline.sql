-- The baseline's tables: what a plain application would keep for the same people, with
-- the vault's columns, keys and indexes (services/vault/migrations/postgres) and the
-- gateway's consent table (services/gateway/migrations/postgres), so that the baseline
-- writes and reads the same rows and bytes. What it leaves out is Qupia's own work: the
-- access log here has no hash chain (no head row to lock and update), nothing is
-- encrypted or keyed by the client, and there is no policy-version table.

CREATE TABLE persons (
    person_id BYTEA PRIMARY KEY,
    dek_wrapped BYTEA NOT NULL,
    kek_version BIGINT NOT NULL,
    dek_version BIGINT NOT NULL,
    idempotency_key BYTEA UNIQUE,
    request_digest BYTEA,
    created_at BIGINT NOT NULL
);

CREATE TABLE field_values (
    token_id BYTEA PRIMARY KEY,
    person_id BYTEA NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    ciphertext BYTEA NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (person_id, field)
);

CREATE TABLE blind_index (
    field TEXT NOT NULL,
    index_version BIGINT NOT NULL,
    digest BYTEA NOT NULL,
    person_id BYTEA NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    PRIMARY KEY (field, index_version, digest, person_id)
);

CREATE INDEX blind_index_person ON blind_index (person_id);

-- The vault's audit_log columns; seq from an identity instead of a locked head row.
CREATE TABLE audit_log (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms BIGINT NOT NULL,
    caller TEXT NOT NULL,
    operation TEXT NOT NULL,
    purpose TEXT NOT NULL,
    person TEXT NOT NULL,
    fields TEXT NOT NULL,
    decision TEXT NOT NULL,
    reason TEXT NOT NULL,
    consent_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    prev_hash BYTEA NOT NULL,
    hash BYTEA NOT NULL
);

CREATE INDEX audit_log_person ON audit_log (person, seq);
CREATE INDEX audit_log_caller ON audit_log (caller, seq);
CREATE INDEX audit_log_at ON audit_log (at_ms);

-- The gateway's consent_events columns and index.
CREATE TABLE consent_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    person_token TEXT NOT NULL,
    purpose TEXT NOT NULL,
    recipient TEXT NOT NULL,
    action TEXT NOT NULL,
    policy_version BIGINT NOT NULL,
    channel TEXT NOT NULL,
    evidence TEXT NOT NULL,
    expires_at_ms BIGINT,
    recorded_at_ms BIGINT NOT NULL,
    recorded_by TEXT NOT NULL
);

CREATE INDEX consent_events_subject ON consent_events (person_token, purpose, recipient, seq);
