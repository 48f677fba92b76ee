//! Every SQL statement of the baseline: a plain client writing and reading the rows
//! Qupia stores, straight to PostgreSQL with prepared statements (sqlx prepares each
//! statement once per connection and reuses it).
//!
//! What mirrors what, per person (see `sql/baseline.sql` and docs/benchmarks.md):
//! a `persons` row (16-byte id, a 60-byte wrapped data key as the keyring wraps it, a
//! 32-byte idempotency key and request digest), one `field_values` row per field (a
//! 16-byte token id, and as many bytes as the vault's ciphertext: 12-byte nonce, the
//! value, 16-byte tag), two `blind_index` rows (an HMAC-SHA-256 of the normalised
//! e-mail and phone, computed here as the vault computes them), and the access-log row
//! the vault writes with it. The bytes are random where the vault's are ciphertext or
//! hashes: PostgreSQL stores and moves them the same.

use std::ops::Range;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use qupia_crypto::BlindIndexKey;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Executor, Row};

use crate::people::{PersonData, person};

const SCHEMA: &str = include_str!("../../sql/baseline.sql");

/// The caller identities Qupia's access log names, so log rows have the same length.
const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";
const MARKETING: &str = "spiffe://qupia/ns/default/sa/marketing";
/// The reason the gateway and vault write for an allowed advertising reveal.
const REVEAL_REASON: &str = "permitted by advertising-contacts; revealed";
/// AES-GCM's nonce and tag around each value, and a wrapped 32-byte data key.
const SEAL_OVERHEAD: usize = 12 + 16;
const WRAPPED_DEK_LEN: usize = 32 + SEAL_OVERHEAD;

/// Appends a person's rows for one tokenize (the `persons` row, their field values,
/// blind-index entries and access-log entry), as arrays for one `UNNEST` per table.
const INSERT_PERSONS: &str = "INSERT INTO persons \
     (person_id, dek_wrapped, kek_version, dek_version, idempotency_key, request_digest, created_at) \
     SELECT t.person_id, t.dek_wrapped, 1, 1, t.idempotency_key, t.request_digest, $5 \
     FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[], $4::bytea[]) \
     AS t(person_id, dek_wrapped, idempotency_key, request_digest)";
const INSERT_FIELDS: &str = "INSERT INTO field_values (token_id, person_id, field, ciphertext, updated_at) \
     SELECT t.token_id, t.person_id, t.field, t.ciphertext, $5 \
     FROM UNNEST($1::bytea[], $2::bytea[], $3::text[], $4::bytea[]) AS t(token_id, person_id, field, ciphertext)";
const INSERT_INDEX: &str = "INSERT INTO blind_index (field, index_version, digest, person_id) \
     SELECT t.field, 1, t.digest, t.person_id \
     FROM UNNEST($1::text[], $2::bytea[], $3::bytea[]) AS t(field, digest, person_id)";
const INSERT_TOKENIZE_LOG: &str = "INSERT INTO audit_log (at_ms, caller, operation, purpose, person, fields, \
     decision, reason, consent_id, request_id, decision_id, trace_id, prev_hash, hash) \
     SELECT $1, $2, 'tokenize', '', t.person, t.fields, 'allowed', 'stored', '', '', '', '', t.prev_hash, t.hash \
     FROM UNNEST($3::text[], $4::text[], $5::bytea[], $6::bytea[]) AS t(person, fields, prev_hash, hash)";

/// Consent to advertising under policy version 1, as the accounts service records it.
const INSERT_CONSENTS: &str = "INSERT INTO consent_events (id, person_token, purpose, recipient, action, \
     policy_version, channel, evidence, expires_at_ms, recorded_at_ms, recorded_by) \
     SELECT t.id, t.person_token, 'advertising', '', 'granted', 1, 'web', 'bench-signup-form', NULL, $3, $4 \
     FROM UNNEST($1::text[], $2::text[]) AS t(id, person_token)";

/// Reveal of one person's contacts for advertising in one statement: the consent
/// check (the person's latest advertising event is an unexpired grant), the access-log
/// entry of the decision, and the fetch of the stored values, which only happens when
/// the entry says allowed.
const REVEAL: &str = "WITH latest AS ( \
         SELECT e.id, e.action, e.expires_at_ms FROM consent_events e \
         WHERE e.person_token = $1 AND e.purpose = 'advertising' AND e.recipient = '' \
         ORDER BY e.seq DESC LIMIT 1 \
     ), decision AS ( \
         SELECT (SELECT l.id FROM latest l WHERE l.action = 'granted' \
                 AND (l.expires_at_ms IS NULL OR l.expires_at_ms > $3)) AS consent_id \
     ), logged AS ( \
         INSERT INTO audit_log (at_ms, caller, operation, purpose, person, fields, decision, reason, \
             consent_id, request_id, decision_id, trace_id, prev_hash, hash) \
         SELECT $3, $4, 'reveal', 'advertising', $1, 'email,phone', \
             CASE WHEN d.consent_id IS NULL THEN 'denied' ELSE 'allowed' END, \
             CASE WHEN d.consent_id IS NULL THEN 'no active consent for advertising' ELSE $5 END, \
             COALESCE(d.consent_id, ''), '', $6, '', $7, $8 \
         FROM decision d \
         RETURNING decision \
     ) \
     SELECT f.field, f.ciphertext, p.dek_wrapped, p.kek_version \
     FROM persons p JOIN field_values f ON f.person_id = p.person_id \
     WHERE p.person_id = $2 AND f.field IN ('email', 'phone') \
     AND EXISTS (SELECT 1 FROM logged WHERE logged.decision = 'allowed')";

/// [`REVEAL`] for many people in one statement: a decision and a log entry per person,
/// and the values of those the log says allowed.
const BATCH_REVEAL: &str = "WITH asked AS ( \
         SELECT * FROM UNNEST($1::text[], $2::bytea[], $3::bytea[], $4::bytea[]) \
         AS a(person_token, person_id, prev_hash, hash) \
     ), latest AS ( \
         SELECT DISTINCT ON (e.person_token) e.person_token, e.id, e.action, e.expires_at_ms \
         FROM consent_events e \
         WHERE e.person_token = ANY($1) AND e.purpose = 'advertising' AND e.recipient = '' \
         ORDER BY e.person_token, e.seq DESC \
     ), decided AS ( \
         SELECT a.person_token, a.person_id, a.prev_hash, a.hash, \
             CASE WHEN l.action = 'granted' AND (l.expires_at_ms IS NULL OR l.expires_at_ms > $5) \
                  THEN l.id END AS consent_id \
         FROM asked a LEFT JOIN latest l ON l.person_token = a.person_token \
     ), logged AS ( \
         INSERT INTO audit_log (at_ms, caller, operation, purpose, person, fields, decision, reason, \
             consent_id, request_id, decision_id, trace_id, prev_hash, hash) \
         SELECT $5, $6, 'reveal', 'advertising', d.person_token, 'email,phone', \
             CASE WHEN d.consent_id IS NULL THEN 'denied' ELSE 'allowed' END, \
             CASE WHEN d.consent_id IS NULL THEN 'no active consent for advertising' ELSE $7 END, \
             COALESCE(d.consent_id, ''), '', $8, '', d.prev_hash, d.hash \
         FROM decided d \
         RETURNING person, decision \
     ) \
     SELECT p.person_id, f.field, f.ciphertext, p.dek_wrapped, p.kek_version \
     FROM logged l \
     JOIN decided d ON d.person_token = l.person AND l.decision = 'allowed' \
     JOIN persons p ON p.person_id = d.person_id \
     JOIN field_values f ON f.person_id = p.person_id AND f.field IN ('email', 'phone')";

/// Lookup by e-mail: the indexed select on the blind index.
const LOOKUP: &str = "SELECT person_id FROM blind_index WHERE field = 'email' AND index_version = 1 AND digest = $1";

/// The next DEKs to move to another key version, in key order after a cursor.
const REWRAP_NEXT: &str = "SELECT person_id, dek_wrapped FROM persons \
     WHERE person_id > $1 AND kek_version <> $2 ORDER BY person_id LIMIT $3";
/// Moves a batch of DEKs, each only if it is still the one read (a compare-and-set, as a
/// rewrap racing an erasure or a rectification must do).
const REWRAP_UPDATE: &str = "UPDATE persons p SET dek_wrapped = u.new_wrapped, kek_version = $4 \
     FROM UNNEST($1::bytea[], $2::bytea[], $3::bytea[]) AS u(person_id, old_wrapped, new_wrapped) \
     WHERE p.person_id = u.person_id AND p.dek_wrapped = u.old_wrapped";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

fn derived(domain: &str, index: u64, part: &str) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(domain.as_bytes());
    hasher.update(index.to_be_bytes());
    hasher.update(part.as_bytes());
    hasher.finalize().into()
}

/// The baseline's id of person `index`: 16 bytes, like the vault's random ids.
pub fn person_id(index: u64) -> Vec<u8> {
    derived("qupia-bench person", index, "")[..16].to_vec()
}

/// The baseline's token text of person `index`: as long as a Qupia person token
/// (`qpp_` and 35 characters), so consent and log rows have the same size.
pub fn person_token(index: u64) -> String {
    format!("qpp_{}", &hex::encode(derived("qupia-bench token", index, ""))[..35])
}

/// The rows of many people, as one array per column.
#[derive(Default)]
struct Rows {
    person_id: Vec<Vec<u8>>,
    dek_wrapped: Vec<Vec<u8>>,
    idempotency_key: Vec<Vec<u8>>,
    request_digest: Vec<Vec<u8>>,
    field_token: Vec<Vec<u8>>,
    field_person: Vec<Vec<u8>>,
    field_name: Vec<String>,
    ciphertext: Vec<Vec<u8>>,
    index_field: Vec<String>,
    index_digest: Vec<Vec<u8>>,
    index_person: Vec<Vec<u8>>,
    log_person: Vec<String>,
    log_fields: Vec<String>,
    log_prev_hash: Vec<Vec<u8>>,
    log_hash: Vec<Vec<u8>>,
}

impl Rows {
    fn add(&mut self, index: u64, person: &PersonData, index_key: &BlindIndexKey) {
        let id = person_id(index);
        self.person_id.push(id.clone());
        self.dek_wrapped.push(random_bytes(WRAPPED_DEK_LEN));
        self.idempotency_key.push(random_bytes(32));
        self.request_digest.push(random_bytes(32));
        let fields = person.fields();
        for (name, value) in &fields {
            self.field_token.push(derived("qupia-bench field", index, name)[..16].to_vec());
            self.field_person.push(id.clone());
            self.field_name.push((*name).to_owned());
            self.ciphertext.push(random_bytes(value.len() + SEAL_OVERHEAD));
        }
        for (name, normalized) in [("email", person.email.as_str()), ("phone", person.phone.as_str())] {
            self.index_field.push(name.to_owned());
            self.index_digest.push(index_key.digest(name, normalized.as_bytes()).to_vec());
            self.index_person.push(id.clone());
        }
        self.log_person.push(person_token(index));
        self.log_fields.push(fields.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(","));
        self.log_prev_hash.push(random_bytes(32));
        self.log_hash.push(random_bytes(32));
    }
}

/// The baseline's database.
#[derive(Debug, Clone)]
pub struct BaselineStore {
    pool: PgPool,
    /// The blind-index key: the baseline computes the same HMAC the vault does.
    index_key: std::sync::Arc<BlindIndexKey>,
}

impl BaselineStore {
    /// Connects with a pool of `pool_size` connections (the vault's pool size) and
    /// creates the tables. `synchronous_commit` stays at the server's setting, as the
    /// vault's does.
    pub async fn connect(url: &str, pool_size: u32) -> anyhow::Result<BaselineStore> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(pool_size)
            .acquire_timeout(std::time::Duration::from_secs(30))
            .connect(url)
            .await
            .context("connect to the baseline database")?;
        sqlx::raw_sql(SCHEMA).execute(&pool).await.context("create the baseline tables")?;
        Ok(BaselineStore { pool, index_key: std::sync::Arc::new(BlindIndexKey::generate(1)) })
    }

    /// Stores people `indices` in one transaction: one multi-row insert per table.
    /// With one person this is what one tokenize stores, in one transaction.
    pub async fn insert_people(&self, indices: Range<u64>) -> anyhow::Result<u64> {
        let mut rows = Rows::default();
        for index in indices.clone() {
            rows.add(index, &person(index), &self.index_key);
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSERT_PERSONS)
            .bind(&rows.person_id)
            .bind(&rows.dek_wrapped)
            .bind(&rows.idempotency_key)
            .bind(&rows.request_digest)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_FIELDS)
            .bind(&rows.field_token)
            .bind(&rows.field_person)
            .bind(&rows.field_name)
            .bind(&rows.ciphertext)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_INDEX)
            .bind(&rows.index_field)
            .bind(&rows.index_digest)
            .bind(&rows.index_person)
            .execute(&mut *tx)
            .await?;
        sqlx::query(INSERT_TOKENIZE_LOG)
            .bind(now)
            .bind(ACCOUNTS)
            .bind(&rows.log_person)
            .bind(&rows.log_fields)
            .bind(&rows.log_prev_hash)
            .bind(&rows.log_hash)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(indices.end - indices.start)
    }

    /// Records consent to advertising for people `indices`.
    pub async fn grant_consents(&self, indices: Range<u64>) -> anyhow::Result<()> {
        let ids: Vec<String> = indices.clone().map(|_| uuid::Uuid::new_v4().to_string()).collect();
        let tokens: Vec<String> = indices.map(person_token).collect();
        sqlx::query(INSERT_CONSENTS).bind(&ids).bind(&tokens).bind(now_ms()).bind(ACCOUNTS).execute(&self.pool).await?;
        Ok(())
    }

    /// Reveals person `index`'s contacts for advertising; returns how many values came back.
    pub async fn reveal(&self, index: u64) -> anyhow::Result<usize> {
        let rows = sqlx::query(REVEAL)
            .bind(person_token(index))
            .bind(person_id(index))
            .bind(now_ms())
            .bind(MARKETING)
            .bind(REVEAL_REASON)
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(random_bytes(32))
            .bind(random_bytes(32))
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let _: Vec<u8> = row.try_get("ciphertext")?;
        }
        Ok(rows.len())
    }

    /// Reveals the contacts of many people in one statement; returns how many values
    /// came back.
    pub async fn batch_reveal(&self, indices: &[u64]) -> anyhow::Result<usize> {
        let tokens: Vec<String> = indices.iter().map(|i| person_token(*i)).collect();
        let ids: Vec<Vec<u8>> = indices.iter().map(|i| person_id(*i)).collect();
        let prev: Vec<Vec<u8>> = indices.iter().map(|_| random_bytes(32)).collect();
        let hash: Vec<Vec<u8>> = indices.iter().map(|_| random_bytes(32)).collect();
        let rows = sqlx::query(BATCH_REVEAL)
            .bind(&tokens)
            .bind(&ids)
            .bind(&prev)
            .bind(&hash)
            .bind(now_ms())
            .bind(MARKETING)
            .bind(REVEAL_REASON)
            .bind(uuid::Uuid::new_v4().to_string())
            .fetch_all(&self.pool)
            .await?;
        for row in &rows {
            let _: Vec<u8> = row.try_get("ciphertext")?;
        }
        Ok(rows.len())
    }

    /// The people whose e-mail is `email` (already normalised), through the blind index.
    pub async fn lookup(&self, email: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let digest = self.index_key.digest("email", email.as_bytes());
        let rows = sqlx::query(LOOKUP).bind(digest.to_vec()).fetch_all(&self.pool).await?;
        rows.iter().map(|row| Ok(row.try_get("person_id")?)).collect()
    }

    /// Moves every DEK to key version `version`, `batch` per transaction: read a batch
    /// after the cursor, write each a new wrapped key of the same length. Returns how
    /// many moved.
    pub async fn rewrap_all(&self, version: i64, batch: i64) -> anyhow::Result<u64> {
        let mut cursor: Vec<u8> = Vec::new();
        let mut moved = 0u64;
        loop {
            let rows = sqlx::query(REWRAP_NEXT).bind(&cursor).bind(version).bind(batch).fetch_all(&self.pool).await?;
            let Some(last) = rows.last() else {
                return Ok(moved);
            };
            cursor = last.try_get("person_id")?;
            let mut ids = Vec::with_capacity(rows.len());
            let mut old = Vec::with_capacity(rows.len());
            for row in &rows {
                ids.push(row.try_get::<Vec<u8>, _>("person_id")?);
                old.push(row.try_get::<Vec<u8>, _>("dek_wrapped")?);
            }
            let new: Vec<Vec<u8>> = old.iter().map(|wrapped| random_bytes(wrapped.len())).collect();
            moved += sqlx::query(REWRAP_UPDATE)
                .bind(&ids)
                .bind(&old)
                .bind(&new)
                .bind(version)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
    }

    /// How many people are stored.
    pub async fn count_people(&self) -> anyhow::Result<u64> {
        let count: i64 = self.pool.fetch_one("SELECT COUNT(*) FROM persons").await?.try_get(0)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }
}
