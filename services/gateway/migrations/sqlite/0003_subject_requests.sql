-- The register of data-subject requests and complaints (policy clauses 3.1 and 5.2).
-- Nothing here is personal data: people appear only as opaque person tokens, evidence
-- is a reference (an incoming-letter number, a form id), and a rejection is one of a
-- fixed list of reasons. Both tables are append-only: a status change is a new event,
-- and a request's current status is its latest event.

-- One row per request, as received. Dates are calendar days in Asia/Almaty, as
-- YYYY-MM-DD text (which sorts as the dates do); due_on is 30 working days after
-- received_on by the gateway's holiday calendar.
CREATE TABLE subject_requests (
    id TEXT PRIMARY KEY,                  -- random UUID v4
    person_token TEXT NOT NULL,           -- empty only for a complaint from someone without an account
    kind TEXT NOT NULL
        CHECK (kind IN ('access', 'rectification', 'erasure', 'consent_withdrawal', 'complaint')),
    channel TEXT NOT NULL,                -- web, paper, e-mail, call-centre, ...
    evidence TEXT NOT NULL,               -- a reference to the request, never personal data
    received_on TEXT NOT NULL
        CHECK (length(received_on) = 10 AND received_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    due_on TEXT NOT NULL
        CHECK (length(due_on) = 10 AND due_on GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
    recorded_at_ms INTEGER NOT NULL,      -- unix milliseconds
    recorded_by TEXT NOT NULL,            -- the caller's identity (a SPIFFE id)
    CHECK ((person_token = '' AND kind = 'complaint')
        OR (length(person_token) = 39 AND substr(person_token, 1, 4) = 'qpp_'
            AND substr(person_token, 5) NOT GLOB '*[^A-Za-z0-9_-]*')),
    CHECK (due_on > received_on)
);

-- The register's listing order, and one person's requests.
CREATE INDEX subject_requests_due ON subject_requests (due_on, id);
CREATE INDEX subject_requests_person ON subject_requests (person_token);

-- One row per status: revision 1 is always 'received'; each change adds the next
-- revision. (request_id, revision) is unique, so two racing changes cannot both follow
-- the same status.
CREATE TABLE subject_request_events (
    request_id TEXT NOT NULL REFERENCES subject_requests (id),
    revision INTEGER NOT NULL CHECK (revision >= 1),
    status TEXT NOT NULL CHECK (status IN ('received', 'in_progress', 'completed', 'rejected')),
    rejection_reason TEXT NOT NULL,       -- empty unless rejected
    evidence TEXT NOT NULL,               -- a reference to what was done (an answer's number), may be empty
    recorded_at_ms INTEGER NOT NULL,      -- unix milliseconds
    recorded_by TEXT NOT NULL,            -- the caller's identity (a SPIFFE id)
    PRIMARY KEY (request_id, revision),
    CHECK ((revision = 1) = (status = 'received')),
    CHECK ((status = 'rejected' AND rejection_reason IN ('identity_not_verified', 'no_data_held',
            'retention_required_by_law', 'duplicate', 'manifestly_unfounded', 'withdrawn_by_subject'))
        OR (status <> 'rejected' AND rejection_reason = ''))
);

-- Append-only in the database itself, as the consent history is.
CREATE TRIGGER subject_requests_no_update BEFORE UPDATE ON subject_requests
BEGIN
    SELECT RAISE(ABORT, 'the subject request register is append-only');
END;

CREATE TRIGGER subject_requests_no_delete BEFORE DELETE ON subject_requests
BEGIN
    SELECT RAISE(ABORT, 'the subject request register is append-only');
END;

CREATE TRIGGER subject_request_events_no_update BEFORE UPDATE ON subject_request_events
BEGIN
    SELECT RAISE(ABORT, 'the subject request register is append-only');
END;

CREATE TRIGGER subject_request_events_no_delete BEFORE DELETE ON subject_request_events
BEGIN
    SELECT RAISE(ABORT, 'the subject request register is append-only');
END;
