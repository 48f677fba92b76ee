//! The vault's operations on validated input: encryption, blind indexes and tokens
//! around the store. This is the only code that ever holds plaintext and keys.

use std::sync::Arc;
use std::time::Instant;

use qupia_crypto::{BlindIndexKey, DataKey, KeyProvider, KeyStore, Token, TokenKind, WrappedKey, slot_aad};
use qupia_domain::Field;
use qupia_ops::CacheResult;
use qupia_transport::ServiceIdentity;
use zeroize::Zeroizing;

use qupia_audit::{AuditLedger, NewEntry, Operation, Outcome};

use crate::Error;
use crate::erasure_ledger::{ErasureLedger, LedgerEntry};
use crate::key_admin::KeyLifecycle;
use crate::model::{FieldUpdate, LookupKey, Person};
use crate::store::{AuditFor, IndexEntry, Inserted, NewPerson, PersonKey, PersonRecord, Store, StoredField};

mod aggregate;
mod documents;

pub use aggregate::AggregateSubject;
pub use documents::{DocumentInfo, UploadHeader};

/// Who an operation is for and why, as the access log records it. The vault trusts
/// these only from the gateway, which decided them.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord {
    /// The service the gateway acted for (or the direct caller).
    pub caller: String,
    pub purpose: String,
    pub decision_id: String,
    pub consent_id: String,
    pub request_id: String,
    pub trace_id: String,
    pub reason: String,
}

impl AccessRecord {
    /// An access-log entry for `operation` on `person`.
    pub fn entry(&self, operation: Operation, person: &str, fields: &[Field], reason: &str) -> NewEntry {
        NewEntry {
            caller: self.caller.clone(),
            operation: operation.as_str().to_owned(),
            purpose: self.purpose.clone(),
            person: person.to_owned(),
            fields: fields.iter().map(|f| f.as_str().to_owned()).collect(),
            outcome: Outcome::Allowed,
            reason: if self.reason.is_empty() { reason.to_owned() } else { format!("{}; {reason}", self.reason) },
            consent_id: self.consent_id.clone(),
            request_id: self.request_id.clone(),
            decision_id: self.decision_id.clone(),
            trace_id: self.trace_id.clone(),
        }
    }
}

/// The caller named in the access log for what the vault does on its own at start-up.
const REPLAY_CALLER: &str = "qupia-vault";

/// One token to reveal.
#[derive(Debug, Clone)]
pub struct RevealItem {
    pub token: Token,
    pub fields: Vec<Field>,
    /// The consent this item relies on, when it differs per person.
    pub consent_id: String,
}

/// The data-key version new people get. Field ciphertexts bind it in their AAD, so
/// a future re-keying of a person's DEK can tell old ciphertexts from new ones.
const DEK_VERSION: u32 = 1;

/// One person to tokenize.
#[derive(Debug)]
pub struct TokenizeItem {
    pub person: Person,
    pub idempotency_key: Option<String>,
}

/// The tokens of one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub person_token: String,
    pub field_tokens: Vec<(Field, String)>,
    pub replayed: bool,
}

/// The values revealed for one token. Values are zeroized when dropped.
#[derive(Debug)]
pub struct Revealed {
    pub person_token: String,
    pub values: Vec<(Field, Zeroizing<String>)>,
}

/// The vault: store, keys and tokens.
#[derive(Debug, Clone)]
pub struct Vault {
    store: Store,
    ledger: AuditLedger,
    /// The keyring file or an HSM: the vault only ever sees the `KeyStore` interface.
    keys: Arc<dyn KeyStore>,
    metrics: qupia_ops::Metrics,
    /// The minimum decryption version, the encryption counter and the write gate,
    /// shared with key administration.
    lifecycle: Arc<KeyLifecycle>,
    /// Every erasure is appended here before it commits (see `erasure_ledger.rs`).
    erasure_ledger: Option<ErasureLedger>,
}

impl Vault {
    pub fn new(store: Store, keys: Arc<dyn KeyStore>) -> Vault {
        Vault {
            ledger: store.audit_ledger(),
            store,
            keys,
            metrics: qupia_ops::Metrics::default(),
            lifecycle: Arc::default(),
            erasure_ledger: None,
        }
    }

    /// Shares the key lifecycle state with key administration.
    pub fn with_key_lifecycle(mut self, lifecycle: Arc<KeyLifecycle>) -> Vault {
        self.lifecycle = lifecycle;
        self
    }

    /// Records every erasure in `ledger` before it commits.
    pub fn with_erasure_ledger(mut self, ledger: ErasureLedger) -> Vault {
        self.erasure_ledger = Some(ledger);
        self
    }

    /// The key store, for key administration.
    pub fn keys(&self) -> &Arc<dyn KeyStore> {
        &self.keys
    }

    /// Reports audit-write times to `metrics`.
    pub fn with_metrics(mut self, metrics: qupia_ops::Metrics) -> Vault {
        self.metrics = metrics;
        self
    }

    /// Appends entries to the access log, timed for `qupia_audit_write_seconds`.
    pub async fn append_audit(&self, entries: &[NewEntry]) -> Result<Vec<i64>, qupia_audit::Error> {
        let started = Instant::now();
        let appended = self.ledger.append(entries).await;
        self.metrics.audit_write(started.elapsed());
        appended
    }

    pub fn ledger(&self) -> &AuditLedger {
        &self.ledger
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn kek(&self) -> &dyn KeyProvider {
        self.keys.as_ref()
    }

    fn encode(&self, kind: TokenKind, id: [u8; 16]) -> String {
        Token::new(kind, id).encode(self.keys.token_key())
    }

    /// Parses a token string; a malformed or forged token is refused here, before
    /// any database work.
    pub fn parse_token(&self, token: &str, field_name: &str) -> Result<Token, Error> {
        Token::parse(token, self.keys.token_key()).map_err(|e| Error::invalid(field_name, e.to_string()))
    }

    /// Stores people, one transaction for all; a result per item.
    pub async fn tokenize(
        &self,
        caller: &ServiceIdentity,
        access: &AccessRecord,
        items: Vec<TokenizeItem>,
    ) -> Result<Vec<Result<Tokenized, Error>>, Error> {
        // Held from the key snapshot to the commit (see `key_admin.rs`).
        let _gate = self.lifecycle.write_gate.read().await;
        let mut rows = Vec::with_capacity(items.len());
        let mut tokens = Vec::with_capacity(items.len());
        for item in &items {
            let (row, tokenized) = self.seal_person(caller, item)?;
            rows.push(row);
            tokens.push(tokenized);
        }
        // The access-log entry of each person, once the store has settled whether they
        // are new or an earlier person behind a reused idempotency key. Owned, because
        // the entry may be made by the task that writes a shared commit.
        let access = access.clone();
        let keys = Arc::clone(&self.keys);
        let stored: Vec<(String, Vec<Field>)> =
            tokens.iter().map(|t| (t.person_token.clone(), t.field_tokens.iter().map(|(f, _)| *f).collect())).collect();
        let audit_for: AuditFor = Box::new(move |i: usize, inserted: &Inserted| match inserted {
            Inserted::New => access.entry(Operation::Tokenize, &stored[i].0, &stored[i].1, "stored"),
            Inserted::Replayed { person_id, fields, same_request } => {
                let person = Token::new(TokenKind::Person, *person_id).encode(keys.token_key());
                let fields: Vec<Field> = fields.iter().map(|(f, _)| *f).collect();
                let reason =
                    if *same_request { "replayed by idempotency key" } else { "refused: idempotency key reused" };
                access.entry(Operation::Tokenize, &person, &fields, reason)
            }
        });
        let outcomes = self.store.insert_people(rows, audit_for).await?;
        Ok(outcomes
            .into_iter()
            .zip(tokens)
            .map(|(outcome, fresh)| match outcome {
                Inserted::New => Ok(fresh),
                Inserted::Replayed { same_request: false, .. } => {
                    Err(Error::FailedPrecondition("the idempotency key was used before with other data"))
                }
                Inserted::Replayed { person_id, fields, same_request: true } => Ok(Tokenized {
                    person_token: self.encode(TokenKind::Person, person_id),
                    field_tokens: fields
                        .into_iter()
                        .map(|(field, id)| (field, self.encode(TokenKind::Field, id)))
                        .collect(),
                    replayed: true,
                }),
            })
            .collect())
    }

    /// Encrypts one person under a fresh data key and computes their index entries.
    fn seal_person(&self, caller: &ServiceIdentity, item: &TokenizeItem) -> Result<(NewPerson, Tokenized), Error> {
        let person_id = *Token::generate(TokenKind::Person).id();
        let dek = DataKey::generate();
        let wrapped = self.kek().wrap(&dek, &person_id)?;
        self.lifecycle.counter.count(wrapped.kek_version);
        let mut fields = Vec::with_capacity(Field::ALL.len());
        let mut field_tokens = Vec::with_capacity(Field::ALL.len());
        for field in Field::ALL {
            let Some(value) = item.person.value(field) else {
                continue;
            };
            let token_id = *Token::generate(TokenKind::Field).id();
            fields.push(StoredField {
                token_id,
                field,
                ciphertext: dek.seal(value.as_bytes(), &slot_aad(&person_id, field.as_str(), DEK_VERSION)),
            });
            field_tokens.push((field, self.encode(TokenKind::Field, token_id)));
        }
        // One snapshot of the index keys for every digest of this person, so a rotation
        // in between never splits them across versions.
        let index_keys = self.keys.blind_index_keys();
        let index_key = index_keys.first().cloned().unwrap_or_else(|| self.keys.blind_index_key());
        let scoped = item.idempotency_key.as_ref().map(|key| {
            let mut scoped = Vec::with_capacity(caller.as_str().len() + key.len() + 1);
            scoped.extend_from_slice(caller.as_str().as_bytes());
            scoped.push(0);
            scoped.extend_from_slice(key.as_bytes());
            scoped
        });
        let canonical = canonical_person(&item.person);
        // During an index-key rotation, a retry must also find a person stored under the
        // older key (until that key is removed).
        let earlier_digests = match &scoped {
            Some(scoped) => index_keys
                .iter()
                .skip(1)
                .map(|key| (key.digest("idempotency", scoped), key.digest("request", &canonical)))
                .collect(),
            None => Vec::new(),
        };
        let row = NewPerson {
            person_id,
            key: PersonKey { dek_wrapped: wrapped.bytes, kek_version: wrapped.kek_version, dek_version: DEK_VERSION },
            idempotency_key: scoped.as_ref().map(|scoped| index_key.digest("idempotency", scoped)),
            request_digest: index_key.digest("request", &canonical),
            earlier_digests,
            fields,
            index: index_entries(&index_key, &item.person),
        };
        let tokenized =
            Tokenized { person_token: self.encode(TokenKind::Person, person_id), field_tokens, replayed: false };
        Ok((row, tokenized))
    }

    /// Reveals each item: the fields asked for (all stored fields when none are named)
    /// of a person token, or the one field of a field token.
    ///
    /// The stored ciphertexts are fetched first, then every item's decision is written
    /// to the access log in one transaction, and only then is anything decrypted. If
    /// the log cannot be written, the whole call fails and nothing is revealed.
    pub async fn reveal(
        &self,
        access: &AccessRecord,
        items: &[RevealItem],
    ) -> Result<Vec<Result<Revealed, Error>>, Error> {
        // Person tokens are fetched together, in one round trip per 500; field tokens
        // (rare in a batch) one by one.
        let person_ids: Vec<[u8; 16]> =
            items.iter().filter(|i| i.token.kind() == TokenKind::Person).map(|i| *i.token.id()).collect();
        let people = if person_ids.len() > 1 { self.store.people(&person_ids).await? } else { Default::default() };
        let mut fetched: Vec<Result<(PersonRecord, Vec<Field>), Error>> = Vec::with_capacity(items.len());
        for item in items {
            let prefetched = match item.token.kind() {
                TokenKind::Person if person_ids.len() > 1 => Some(people.get(item.token.id()).cloned()),
                _ => None,
            };
            fetched.push(self.fetch(item, prefetched).await);
        }
        let entries: Vec<NewEntry> = items
            .iter()
            .zip(&fetched)
            .map(|(item, fetched)| {
                let mut record = access.clone();
                if !item.consent_id.is_empty() {
                    record.consent_id = item.consent_id.clone();
                }
                match fetched {
                    Ok((person, fields)) => record.entry(
                        Operation::Reveal,
                        &self.encode(TokenKind::Person, person.person_id),
                        fields,
                        "revealed",
                    ),
                    Err(err) => {
                        let token = self.encode(item.token.kind(), *item.token.id());
                        record.entry(
                            Operation::Reveal,
                            &token,
                            &item.fields,
                            &format!("not revealed: {}", err.code_name()),
                        )
                    }
                }
            })
            .collect();
        self.append_audit(&entries).await?;
        Ok(fetched
            .into_iter()
            .map(|fetched| fetched.and_then(|(person, fields)| self.open_fields(&person, &fields)))
            .collect())
    }

    /// The stored record behind a token and the fields to reveal of it; nothing decrypted.
    /// `prefetched` is the record of a person token already read in bulk (`Some(None)`:
    /// there is none).
    async fn fetch(
        &self,
        item: &RevealItem,
        prefetched: Option<Option<PersonRecord>>,
    ) -> Result<(PersonRecord, Vec<Field>), Error> {
        let token = &item.token;
        let record = match token.kind() {
            TokenKind::Person => match prefetched {
                Some(record) => record,
                None => self.store.person(token.id()).await?,
            },
            TokenKind::Field => self.store.person_by_field_token(token.id()).await?,
            TokenKind::Document => {
                return Err(Error::invalid("token", "a document token cannot be revealed as fields"));
            }
        }
        .ok_or(Error::NotFound("token"))?;
        // Refused before the access-log entry, so the entry says it was not revealed.
        self.check_min_decrypt_version(&record.key)?;
        let wanted: Vec<Field> = match token.kind() {
            TokenKind::Field => {
                let own = record
                    .fields
                    .iter()
                    .find(|f| f.token_id == *token.id())
                    .map(|f| f.field)
                    .ok_or(Error::NotFound("token"))?;
                if item.fields.iter().any(|f| *f != own) {
                    return Err(Error::invalid("fields", "a field token reveals only its own field"));
                }
                vec![own]
            }
            _ if item.fields.is_empty() => Field::ALL.to_vec(),
            _ => item.fields.clone(),
        };
        Ok((record, wanted))
    }

    fn open_fields(&self, record: &PersonRecord, wanted: &[Field]) -> Result<Revealed, Error> {
        let dek = self.unwrap_dek(record)?;
        let mut values = Vec::with_capacity(wanted.len());
        for stored in record.fields.iter().filter(|f| wanted.contains(&f.field)) {
            let aad = slot_aad(&record.person_id, stored.field.as_str(), record.key.dek_version);
            let plaintext = dek.open(&stored.ciphertext, &aad)?;
            let text = std::str::from_utf8(&plaintext).map_err(|_| Error::Integrity)?;
            values.push((stored.field, Zeroizing::new(text.to_owned())));
        }
        Ok(Revealed { person_token: self.encode(TokenKind::Person, record.person_id), values })
    }

    fn check_min_decrypt_version(&self, key: &PersonKey) -> Result<(), Error> {
        if key.kek_version < self.lifecycle.min_decrypt_version() {
            return Err(Error::FailedPrecondition(
                "the person's data key is under a key-encryption-key version below the minimum decryption \
                 version; it can be read again once it is rewrapped",
            ));
        }
        Ok(())
    }

    /// Unwraps a person's data key for a request. A key under a KEK version below the
    /// minimum decryption version is refused until the rewrap job moves it.
    fn unwrap_dek(&self, record: &PersonRecord) -> Result<Arc<DataKey>, Error> {
        self.unwrap_key(&record.person_id, &record.key)
    }

    /// Unwraps a data key for a request about one person (reveal, rectify, documents),
    /// through the cache of recently unwrapped keys. A key under a KEK version below the
    /// minimum decryption version is refused until the rewrap job moves it (the job
    /// unwraps through key administration, not here).
    fn unwrap_key(&self, person_id: &[u8; 16], key: &PersonKey) -> Result<Arc<DataKey>, Error> {
        let cache = &self.lifecycle.deks;
        if !cache.enabled() {
            return self.unwrap_key_uncached(person_id, key).map(Arc::new);
        }
        self.check_min_decrypt_version(key)?;
        let wrapped = WrappedKey { kek_version: key.kek_version, bytes: key.dek_wrapped.clone() };
        if let Some(dek) = cache.get(person_id, &wrapped) {
            self.metrics.dek_cache(CacheResult::Hit);
            return Ok(dek);
        }
        self.metrics.dek_cache(CacheResult::Miss);
        let generation = cache.generation();
        let dek = Arc::new(self.kek().unwrap(&wrapped, person_id)?);
        cache.insert(person_id, wrapped, generation, Arc::clone(&dek));
        Ok(dek)
    }

    /// Unwraps a data key for a pass over many people (aggregates), leaving the cache
    /// to the people read one by one.
    fn unwrap_key_uncached(&self, person_id: &[u8; 16], key: &PersonKey) -> Result<DataKey, Error> {
        self.check_min_decrypt_version(key)?;
        let wrapped = WrappedKey { kek_version: key.kek_version, bytes: key.dek_wrapped.clone() };
        Ok(self.kek().unwrap(&wrapped, person_id)?)
    }

    /// The person tokens of an e-mail or phone, through every index-key version in use.
    /// The lookup is in the access log before its answer leaves.
    pub async fn lookup(&self, access: &AccessRecord, key: &LookupKey) -> Result<Vec<String>, Error> {
        let (field, normalized) = match key {
            LookupKey::Email(email) => (Field::Email, email.lookup_key()),
            LookupKey::Phone(phone) => (Field::Phone, phone.e164()),
        };
        let digests: Vec<(u32, [u8; 32])> = self
            .keys
            .blind_index_keys()
            .iter()
            .map(|key| (key.version(), key.digest(field.as_str(), normalized.as_bytes())))
            .collect();
        let ids = self.store.lookup(field, &digests).await?;
        let tokens: Vec<String> = ids.into_iter().map(|id| self.encode(TokenKind::Person, id)).collect();
        // The lookup is in the access log before its answer leaves.
        let entries: Vec<NewEntry> = if tokens.is_empty() {
            vec![access.entry(Operation::Lookup, "", &[field], "nobody found")]
        } else {
            tokens.iter().map(|t| access.entry(Operation::Lookup, t, &[field], "found")).collect()
        };
        self.append_audit(&entries).await?;
        Ok(tokens)
    }

    /// Rectifies one field: new ciphertext (and index entry), same token.
    /// Returns the field's token, or `None` when the field was cleared.
    pub async fn update_field(
        &self,
        access: &AccessRecord,
        person: &Token,
        update: FieldUpdate,
    ) -> Result<Option<String>, Error> {
        if person.kind() != TokenKind::Person {
            return Err(Error::invalid("person_token", "must be a person token"));
        }
        // Held from the index-key snapshot to the commit (see `key_admin.rs`).
        let _gate = self.lifecycle.write_gate.read().await;
        let record = self.store.person(person.id()).await?.ok_or(Error::NotFound("person"))?;
        let dek = self.unwrap_dek(&record)?;
        let (field, value): (Field, Option<String>) = match &update {
            FieldUpdate::Name(field, part) => (*field, part.as_ref().map(|p| p.as_str().to_owned())),
            FieldUpdate::Email(email) => (Field::Email, Some(email.as_str().to_owned())),
            FieldUpdate::Phone(phone) => (Field::Phone, Some(phone.e164().to_owned())),
        };
        let value = value.map(Zeroizing::new);
        let token_id = match self.store.field_token(person.id(), field).await? {
            Some(id) => id,
            None => *Token::generate(TokenKind::Field).id(),
        };
        let stored = value.as_ref().map(|value| StoredField {
            token_id,
            field,
            ciphertext: dek.seal(value.as_bytes(), &slot_aad(person.id(), field.as_str(), record.key.dek_version)),
        });
        let index: Vec<IndexEntry> = match &update {
            FieldUpdate::Email(email) => vec![self.index_entry(Field::Email, email.lookup_key())],
            FieldUpdate::Phone(phone) => vec![self.index_entry(Field::Phone, phone.e164())],
            FieldUpdate::Name(..) => Vec::new(),
        };
        let cleared = stored.is_none();
        let entry = access.entry(
            Operation::Update,
            &self.encode(TokenKind::Person, *person.id()),
            &[field],
            if cleared { "cleared" } else { "rectified" },
        );
        if !self.store.update_field(person.id(), field, stored, &index, &entry).await? {
            return Err(Error::NotFound("person"));
        }
        Ok((!cleared).then(|| self.encode(TokenKind::Field, token_id)))
    }

    fn index_entry(&self, field: Field, normalized: &str) -> IndexEntry {
        let key = self.keys.blind_index_key();
        IndexEntry { field, version: key.version(), digest: key.digest(field.as_str(), normalized.as_bytes()) }
    }

    /// Crypto-shreds a person. Returns how many field values were destroyed.
    pub async fn erase(&self, access: &AccessRecord, person: &Token) -> Result<u32, Error> {
        if person.kind() != TokenKind::Person {
            return Err(Error::invalid("person_token", "must be a person token"));
        }
        let person_token = self.encode(TokenKind::Person, *person.id());
        let entry = access.entry(Operation::Erase, &person_token, &Field::ALL, "crypto-shredded");
        let erased = self.store.erase(person.id(), &entry, self.erasure_ledger.as_ref()).await;
        // Whether or not it committed, the unwrapped key need not stay in memory.
        self.lifecycle.deks.forget(person.id());
        erased?.ok_or(Error::NotFound("person"))
    }

    /// Erases again every person in the erasure ledger still present in the database
    /// (restored from a backup older than their erasure), before the vault serves.
    /// Each re-applied erasure is in the access log, and so is the replay. Returns how
    /// many people were erased again.
    pub async fn replay_erasures(&self) -> Result<u64, Error> {
        let Some(ledger) = &self.erasure_ledger else { return Ok(0) };
        const PAGE: i64 = 500;
        let mut after = self.store.erasure_replay_seq().await?;
        let mut erased = 0u64;
        let mut examined = 0u64;
        loop {
            let entries = ledger.entries_after(after, PAGE).await.map_err(Error::ErasureLedger)?;
            let Some(last) = entries.last() else { break };
            after = last.seq;
            examined += entries.len() as u64;
            let audit_for = |entry: &LedgerEntry| {
                let caller = if entry.requested_by.is_empty() { REPLAY_CALLER } else { &entry.requested_by };
                AccessRecord { caller: caller.to_owned(), ..AccessRecord::default() }.entry(
                    Operation::Erase,
                    &self.encode(TokenKind::Person, entry.person_id),
                    &Field::ALL,
                    "erasure re-applied from the erasure ledger at start-up",
                )
            };
            let replayed = self.store.replay_erasures(&entries, audit_for).await?;
            for entry in &entries {
                self.lifecycle.deks.forget(&entry.person_id);
            }
            erased += replayed.len() as u64;
        }
        if examined == 0 {
            return Ok(0);
        }
        if erased > 0 {
            tracing::warn!(
                erased,
                examined,
                "re-applied erasures from the erasure ledger: the database was older than them"
            );
        } else {
            tracing::info!(examined, "erasure ledger replayed: nothing to re-apply");
        }
        let summary = AccessRecord { caller: REPLAY_CALLER.to_owned(), ..AccessRecord::default() }.entry(
            Operation::ErasureReplay,
            "",
            &[],
            &format!("erasure ledger replayed at start-up: {erased} erasures re-applied, {examined} entries examined"),
        );
        self.append_audit(std::slice::from_ref(&summary)).await?;
        Ok(erased)
    }
}

fn index_entries(key: &BlindIndexKey, person: &Person) -> Vec<IndexEntry> {
    [(Field::Email, person.email.lookup_key()), (Field::Phone, person.phone.e164())]
        .into_iter()
        .map(|(field, normalized)| IndexEntry {
            field,
            version: key.version(),
            digest: key.digest(field.as_str(), normalized.as_bytes()),
        })
        .collect()
}

/// An unambiguous encoding of a person's values, only ever fed to a keyed HMAC
/// (never stored), to tell a retried request from another one with the same key.
fn canonical_person(person: &Person) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::new());
    for field in Field::ALL {
        let value = person.value(field).unwrap_or("");
        out.extend_from_slice(&(value.len() as u64).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}
