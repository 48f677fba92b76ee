-- The accounts service's tables: ids, tokens and state. Never a name, an e-mail
-- address, a phone number, a document byte, or a hash of any of them: those live in
-- the vault, behind the tokens kept here.

-- One row per registered account.
CREATE TABLE accounts (
    account_id TEXT PRIMARY KEY,                  -- 'acc_' and 22 base64url characters, random
    person_token TEXT NOT NULL UNIQUE,            -- the vault's token for the person
    attestation TEXT NOT NULL                     -- clause 2.4: whose data was entered
        CHECK (attestation IN ('own_data', 'authorised')),
    policy_version BIGINT NOT NULL,               -- the privacy policy version accepted
    identity_document_token TEXT NOT NULL,        -- the scan sent at registration (clause 1.6)
    authorisation_document_token TEXT,            -- the authority document, when authorised
    registered_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,                -- the last rectification
    CHECK ((attestation = 'authorised') = (authorisation_document_token IS NOT NULL))
);

-- Deleted accounts: the id and when, nothing else (no token), so that a deleted
-- account can be told apart from one that never existed.
CREATE TABLE deleted_accounts (
    account_id TEXT PRIMARY KEY,
    deleted_at_ms BIGINT NOT NULL
);
