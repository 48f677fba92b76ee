-- The marketing service's audiences, campaigns and outbox (policy clauses 2.2.4, 2.2.5).
-- Nothing here is personal data: people appear only as opaque person tokens. No
-- column ever holds an address, a phone number, a name or a rendered message; the
-- contact is revealed through the gateway at delivery and lives only in memory.

CREATE TABLE audiences (
    id TEXT PRIMARY KEY,                  -- "aud_" + 22 random base64url characters
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at_ms BIGINT NOT NULL,        -- unix milliseconds
    created_by TEXT NOT NULL              -- the caller's identity (a SPIFFE id)
);

CREATE TABLE audience_members (
    audience_id TEXT NOT NULL REFERENCES audiences (id),
    person_token TEXT NOT NULL CHECK (person_token ~ '^qpp_[A-Za-z0-9_-]{35}$'),
    seq BIGINT NOT NULL,                  -- the order members were added in
    added_at_ms BIGINT NOT NULL,
    PRIMARY KEY (audience_id, person_token)
);

CREATE INDEX audience_members_order ON audience_members (audience_id, seq);

CREATE TABLE campaigns (
    id TEXT PRIMARY KEY,                  -- "cmp_" + 22 random base64url characters
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    audience_id TEXT NOT NULL REFERENCES audiences (id),
    channel TEXT NOT NULL CHECK (channel IN ('email', 'sms')),
    subject_template TEXT NOT NULL,       -- validated at creation; empty for SMS
    body_template TEXT NOT NULL,          -- validated at creation, rendered only in memory
    created_at_ms BIGINT NOT NULL,
    created_by TEXT NOT NULL
);

-- One message of a campaign to one person. The state machine: pending → sent |
-- skipped_no_consent | skipped_erased | failed; pending again on a retry, or when the
-- campaign is sent again (skipped_no_consent and failed only).
CREATE TABLE outbox (
    id TEXT PRIMARY KEY,                  -- "msg_" + 22 random base64url characters (the unsubscribe reference)
    campaign_id TEXT NOT NULL REFERENCES campaigns (id),
    person_token TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('pending', 'sent', 'skipped_no_consent', 'skipped_erased', 'failed')),
    attempts BIGINT NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at_ms BIGINT NOT NULL,   -- when a pending message is due
    last_error_code TEXT,                 -- a fixed code such as smtp_unavailable; never a message
    lease_owner TEXT,                     -- the delivery worker holding the message
    lease_until_ms BIGINT,                -- until when; another worker may take it after
    queued_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    UNIQUE (campaign_id, person_token)
);

CREATE INDEX outbox_due ON outbox (state, next_attempt_at_ms);
