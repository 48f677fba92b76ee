-- Disclosure to state bodies on a reasoned request (policy clause 3.4): the register of
-- requests, the people each covers, and approvals. People appear only as person
-- tokens; the authority, the legal basis and the reference number describe the state
-- body's request, never a person. Nothing here is ever rewritten or deleted: the
-- register is what a reviewer reads years later.

CREATE TABLE disclosures (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,   -- orders the register
    id TEXT NOT NULL UNIQUE,                    -- 'dr-' and a random UUID v4
    authority TEXT NOT NULL CHECK (length(authority) BETWEEN 1 AND 200),
    legal_basis TEXT NOT NULL CHECK (length(legal_basis) BETWEEN 1 AND 500),
    reference_number TEXT NOT NULL CHECK (length(reference_number) BETWEEN 1 AND 100),
    fields TEXT NOT NULL,                       -- the field names in scope, comma-separated
    documents BIGINT NOT NULL CHECK (documents IN (0, 1)),  -- identity documents in scope
    expires_at_ms BIGINT NOT NULL,              -- unix milliseconds
    requested_by TEXT NOT NULL,                 -- the filing officer's identity (a SPIFFE id)
    requested_at_ms BIGINT NOT NULL,
    CHECK (expires_at_ms > requested_at_ms),
    CHECK (fields <> '' OR documents = 1)
);

CREATE TABLE disclosure_people (
    disclosure_id TEXT NOT NULL REFERENCES disclosures (id),
    person_token TEXT NOT NULL CHECK (person_token ~ '^qpp_[A-Za-z0-9_-]{35}$'),
    PRIMARY KEY (disclosure_id, person_token)
);

-- At most one approval per request, never by the officer who filed it.
CREATE TABLE disclosure_approvals (
    disclosure_id TEXT PRIMARY KEY REFERENCES disclosures (id),
    approved_by TEXT NOT NULL,
    approved_at_ms BIGINT NOT NULL
);

CREATE FUNCTION disclosure_second_person() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.approved_by = (SELECT requested_by FROM disclosures WHERE id = NEW.disclosure_id) THEN
        RAISE EXCEPTION 'a disclosure request is approved by a second person';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER disclosure_approvals_second_person BEFORE INSERT ON disclosure_approvals
    FOR EACH ROW EXECUTE FUNCTION disclosure_second_person();

CREATE TRIGGER disclosures_append_only BEFORE UPDATE OR DELETE ON disclosures
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
CREATE TRIGGER disclosures_no_truncate BEFORE TRUNCATE ON disclosures
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
CREATE TRIGGER disclosure_people_append_only BEFORE UPDATE OR DELETE ON disclosure_people
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
CREATE TRIGGER disclosure_people_no_truncate BEFORE TRUNCATE ON disclosure_people
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
CREATE TRIGGER disclosure_approvals_append_only BEFORE UPDATE OR DELETE ON disclosure_approvals
    FOR EACH ROW EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
CREATE TRIGGER disclosure_approvals_no_truncate BEFORE TRUNCATE ON disclosure_approvals
    FOR EACH STATEMENT EXECUTE FUNCTION gateway_append_only('the disclosure register is append-only');
