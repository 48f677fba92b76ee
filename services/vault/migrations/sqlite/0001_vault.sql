-- The vault's tables. Nothing here is plaintext personal data: field values are
-- AES-256-GCM ciphertexts under the person's data key, the data key is wrapped by a
-- key-encryption key that never enters this database, and the blind index holds keyed
-- HMACs only.

-- One row per person: their wrapped data key (DEK). Deleting this row is
-- crypto-shredding: without the DEK no copy of their ciphertexts can be read.
CREATE TABLE persons (
    person_id BLOB PRIMARY KEY,          -- 16 random bytes, the id inside the person token
    dek_wrapped BLOB NOT NULL,
    kek_version INTEGER NOT NULL,
    dek_version INTEGER NOT NULL,
    idempotency_key BLOB UNIQUE,          -- HMAC(caller, key) under the index key, or NULL
    request_digest BLOB,                  -- HMAC of the normalised request, to spot a reused key
    created_at INTEGER NOT NULL           -- unix milliseconds
);

CREATE INDEX persons_kek_version ON persons (kek_version);

-- One row per stored field value.
CREATE TABLE field_values (
    token_id BLOB PRIMARY KEY,            -- 16 random bytes, the id inside the field token
    person_id BLOB NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    field TEXT NOT NULL,
    ciphertext BLOB NOT NULL,             -- nonce || ciphertext || tag, AAD = slot
    updated_at INTEGER NOT NULL,
    UNIQUE (person_id, field)
);

-- Lookup by e-mail or phone without decrypting anything.
CREATE TABLE blind_index (
    field TEXT NOT NULL,
    index_version INTEGER NOT NULL,
    digest BLOB NOT NULL,
    person_id BLOB NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    PRIMARY KEY (field, index_version, digest, person_id)
);

CREATE INDEX blind_index_person ON blind_index (person_id);

-- Every erasure, so that a database restored from an older copy can re-apply them.
CREATE TABLE erasures (
    person_id BLOB PRIMARY KEY,
    erased_at INTEGER NOT NULL
);
