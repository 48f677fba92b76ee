-- Scanned documents (privacy policy clause 1.6). Nothing here is readable without the
-- person's data key: the content is AES-256-GCM ciphertext in 64 KiB chunks, each bound
-- to its person, document, data-key version, index and "last chunk" flag (see
-- qupia_crypto::chunk_aad). What is in clear is what a listing shows: kind, type, size
-- and time, none of it personal data.

-- One row per document. Deleting the person deletes their documents (and, through
-- them, every chunk): crypto-shredding covers scans as it covers fields.
CREATE TABLE documents (
    document_id BYTEA PRIMARY KEY,          -- 16 random bytes, the id inside the document token
    person_id BYTEA NOT NULL REFERENCES persons (person_id) ON DELETE CASCADE,
    kind TEXT NOT NULL CHECK (kind IN ('identity', 'authorisation')),
    content_type TEXT NOT NULL CHECK (content_type IN ('pdf', 'jpeg', 'png')),  -- judged from the content
    size_bytes BIGINT NOT NULL CHECK (size_bytes > 0),
    chunk_count BIGINT NOT NULL CHECK (chunk_count > 0),  -- the last chunk is sealed as the last
    dek_version BIGINT NOT NULL,          -- the data-key version in every chunk's AAD
    uploaded_at BIGINT NOT NULL           -- unix milliseconds
);

CREATE INDEX documents_person ON documents (person_id, uploaded_at);

-- The content: chunk_index runs 0 .. chunk_count - 1; each chunk holds 64 KiB of
-- plaintext except the last.
CREATE TABLE document_chunks (
    document_id BYTEA NOT NULL REFERENCES documents (document_id) ON DELETE CASCADE,
    chunk_index BIGINT NOT NULL CHECK (chunk_index >= 0),
    ciphertext BYTEA NOT NULL,              -- nonce || ciphertext || tag, AAD = chunk_aad
    PRIMARY KEY (document_id, chunk_index)
);
