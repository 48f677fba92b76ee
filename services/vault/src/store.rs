//! The vault's storage: every SQL statement the vault runs lives here.
//!
//! One set of statements serves SQLite (the embedded default) and PostgreSQL
//! (production) through sqlx's `Any` driver; only the migrations differ per backend.
//! Every write that a caller is told succeeded has been committed: SQLite runs with
//! `synchronous=FULL` in WAL mode, PostgreSQL with its default `synchronous_commit`.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use qupia_audit::{AuditLedger, NewEntry};
use qupia_domain::Field;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use tokio::sync::{mpsc, oneshot};

mod aggregate;
mod documents;

pub use aggregate::AggregateRow;
pub use documents::{DocumentRow, NewDocument};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The database behind a store, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Backend> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// A write that failed: in the database, or in the access log written with it.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    #[error(transparent)]
    Audit(#[from] qupia_audit::Error),
    /// The erasure ledger (a database of its own) could not record an erasure.
    #[error("erasure ledger: {0}")]
    ErasureLedger(sqlx::Error),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL must start with sqlite: or postgres:")]
    UnknownBackend,
    #[error("failed to migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// A person's key row: their wrapped data key.
#[derive(Debug, Clone)]
pub struct PersonKey {
    pub dek_wrapped: Vec<u8>,
    pub kek_version: u32,
    pub dek_version: u32,
}

/// One stored field value.
#[derive(Debug, Clone)]
pub struct StoredField {
    pub token_id: [u8; 16],
    pub field: Field,
    pub ciphertext: Vec<u8>,
}

/// A person to insert: everything already encrypted or keyed.
#[derive(Debug)]
pub struct NewPerson {
    pub person_id: [u8; 16],
    pub key: PersonKey,
    pub idempotency_key: Option<[u8; 32]>,
    pub request_digest: [u8; 32],
    /// The idempotency and request digests under each older blind-index key still in
    /// use: during an index-key rotation a retry must find the person stored before it.
    pub earlier_digests: Vec<([u8; 32], [u8; 32])>,
    pub fields: Vec<StoredField>,
    pub index: Vec<IndexEntry>,
}

/// One blind-index row.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub field: Field,
    pub version: u32,
    pub digest: [u8; 32],
}

/// What inserting a person did.
#[derive(Debug)]
pub enum Inserted {
    New,
    /// The idempotency key was used before: the earlier person's id, their field
    /// tokens, and whether the earlier request carried the same data.
    Replayed {
        person_id: [u8; 16],
        fields: Vec<(Field, [u8; 16])>,
        same_request: bool,
    },
}

/// A person with the fields asked for (ciphertexts and the wrapped key only).
#[derive(Debug, Clone)]
pub struct PersonRecord {
    pub person_id: [u8; 16],
    pub key: PersonKey,
    pub fields: Vec<StoredField>,
}

#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The queue of the shared-commit writer of people, started by the first
    /// [`Store::insert_people`].
    inserts: Arc<OnceLock<mpsc::UnboundedSender<PendingInsert>>>,
}

/// Makes the access-log entry of the `i`th person of one call, once the insert has
/// settled what happened to them.
pub type AuditFor = Box<dyn Fn(usize, &Inserted) -> NewEntry + Send + Sync>;

/// One call's people waiting for a shared commit, and where its answer goes.
struct PendingInsert {
    people: Vec<NewPerson>,
    audit_for: AuditFor,
    answer: oneshot::Sender<Result<Vec<Inserted>, WriteError>>,
}

type PendingQueue = mpsc::UnboundedReceiver<PendingInsert>;

/// Most people one shared commit writes; later calls wait for the next.
const MAX_GROUP_PEOPLE: usize = 256;

/// Most people a call may have and still share a commit with others.
const MAX_SHARED_CALL: usize = 16;

/// Shared transactions in progress at once. Two (one writing its rows while the other
/// commits) measured no faster than one: the access log's head row orders the commits.
const COMMITTERS: usize = 1;

pub(crate) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

pub(crate) fn id16(bytes: Vec<u8>) -> Result<[u8; 16], sqlx::Error> {
    bytes.try_into().map_err(|_| sqlx::Error::Decode("a stored id is not 16 bytes".into()))
}

fn field_of(name: &str) -> Result<Field, sqlx::Error> {
    Field::from_str(name).map_err(|_| sqlx::Error::Decode("a stored field name is unknown".into()))
}

pub(crate) fn u32_of(value: i64) -> Result<u32, sqlx::Error> {
    u32::try_from(value).map_err(|_| sqlx::Error::Decode("a stored version is out of range".into()))
}

/// Rows per multi-row INSERT of people (7 parameters each), field values (5) and
/// blind-index entries (4): at most 500 parameters a statement.
const PERSON_ROWS: usize = 70;
const FIELD_ROWS: usize = 100;
const INDEX_ROWS: usize = 125;

/// `($1, $2, …), ($n+1, …)…`: the VALUES of a multi-row INSERT of `rows` rows.
fn values_sql(rows: usize, columns: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=columns).map(|column| format!("${}", row * columns + column)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    values.join(", ")
}

/// Ids per bulk fetch of people: 500 parameters, far below either database's limit.
const PEOPLE_CHUNK: usize = 500;

impl Store {
    /// Connects to `url`, runs the migrations, and returns a pool.
    ///
    /// SQLite gets a single connection: SQLite serialises writers anyway, and one
    /// connection cannot meet another's lock half-way through a transaction.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url).ok_or(StoreError::UnknownBackend)?;
        let options = AnyConnectOptions::from_str(url)?;

        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 1 } else { max_connections })
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // FULL: a commit is on disk before the caller hears of it.
                        // secure_delete: erased rows are overwritten, not left in free pages.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; \
                             PRAGMA secure_delete = ON; PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store { pool, backend, inserts: Arc::default() })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool, for the pool gauges on `/metrics`.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// The access log, in this same database.
    pub fn audit_ledger(&self) -> AuditLedger {
        AuditLedger::new(self.pool.clone(), self.audit_backend())
    }

    pub(crate) fn audit_backend(&self) -> qupia_audit::Backend {
        audit_backend(self.backend)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Inserts people with their access-log entries, committed before this returns. A
    /// person whose idempotency key is already taken is not inserted; the earlier person
    /// is returned instead (and `audit_for` is asked for that person's entry).
    ///
    /// Small calls share a transaction and its commit (group commit): every write of
    /// people locks the access log's head row until it commits, so without sharing they
    /// would commit one at a time, each paying a flush of its own. A committer task
    /// takes every small call waiting at the time (up to [`MAX_GROUP_PEOPLE`] people),
    /// writes them in one transaction, and answers each caller after the commit. If a shared transaction fails, each
    /// of its calls is retried in a transaction of its own, so one call's failure is
    /// never another's. A call whose caller has gone away before its turn is dropped
    /// unwritten. A call of more than [`MAX_SHARED_CALL`] people already spreads its
    /// commit over them and is written in a transaction of its own, concurrently with
    /// the others.
    pub async fn insert_people(
        &self,
        people: Vec<NewPerson>,
        audit_for: AuditFor,
    ) -> Result<Vec<Inserted>, WriteError> {
        if people.is_empty() {
            return Ok(Vec::new());
        }
        if people.len() > MAX_SHARED_CALL {
            let people: Vec<&NewPerson> = people.iter().collect();
            return insert_together(&self.pool, self.backend, &people, &*audit_for).await;
        }
        let queue = self.inserts.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
            for _ in 0..COMMITTERS {
                tokio::spawn(commit_inserts(self.pool.clone(), self.backend, Arc::clone(&receiver)));
            }
            sender
        });
        let (answer, answered) = oneshot::channel();
        if queue.send(PendingInsert { people, audit_for, answer }).is_err() {
            return Err(sqlx::Error::PoolClosed.into());
        }
        // A writer that went away (its runtime shut down) committed nothing it did not answer.
        answered.await.unwrap_or(Err(WriteError::Sql(sqlx::Error::PoolClosed)))
    }

    /// The person with `person_id` and their stored fields (all of them; the caller
    /// filters), in one round trip.
    pub async fn person(&self, person_id: &[u8; 16]) -> Result<Option<PersonRecord>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT p.dek_wrapped, p.kek_version, p.dek_version, f.token_id, f.field, f.ciphertext \
             FROM persons p LEFT JOIN field_values f ON f.person_id = p.person_id \
             WHERE p.person_id = $1",
        )
        .bind(person_id.to_vec())
        .fetch_all(&self.pool)
        .await?;
        person_record(*person_id, rows)
    }

    /// The people with these ids and their stored fields, in one round trip per 500
    /// ids; an id with no person is absent from the map.
    pub async fn people(
        &self,
        person_ids: &[[u8; 16]],
    ) -> Result<std::collections::HashMap<[u8; 16], PersonRecord>, sqlx::Error> {
        let mut found = std::collections::HashMap::with_capacity(person_ids.len());
        for chunk in person_ids.chunks(PEOPLE_CHUNK) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT p.person_id, p.dek_wrapped, p.kek_version, p.dek_version, f.token_id, f.field, f.ciphertext \
                 FROM persons p LEFT JOIN field_values f ON f.person_id = p.person_id \
                 WHERE p.person_id IN ({})",
                placeholders.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id.to_vec());
            }
            let mut rows_by_person: std::collections::HashMap<[u8; 16], Vec<sqlx::any::AnyRow>> =
                std::collections::HashMap::new();
            for row in query.fetch_all(&self.pool).await? {
                let id = id16(row.try_get("person_id")?)?;
                rows_by_person.entry(id).or_default().push(row);
            }
            for (id, rows) in rows_by_person {
                if let Some(record) = person_record(id, rows)? {
                    found.insert(id, record);
                }
            }
        }
        Ok(found)
    }

    /// The person owning the field token `token_id`, with their stored fields.
    pub async fn person_by_field_token(&self, token_id: &[u8; 16]) -> Result<Option<PersonRecord>, sqlx::Error> {
        let owner = sqlx::query("SELECT person_id FROM field_values WHERE token_id = $1")
            .bind(token_id.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        match owner {
            Some(row) => self.person(&id16(row.try_get("person_id")?)?).await,
            None => Ok(None),
        }
    }

    /// People whose blind-index entry for `field` matches one of `digests`
    /// (one digest per index-key version in use).
    pub async fn lookup(&self, field: Field, digests: &[(u32, [u8; 32])]) -> Result<Vec<[u8; 16]>, sqlx::Error> {
        let mut found = Vec::new();
        for (version, digest) in digests {
            let rows = sqlx::query(
                "SELECT person_id FROM blind_index WHERE field = $1 AND index_version = $2 AND digest = $3",
            )
            .bind(field.as_str())
            .bind(i64::from(*version))
            .bind(digest.to_vec())
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let id = id16(row.try_get("person_id")?)?;
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        Ok(found)
    }

    /// Replaces one field's ciphertext (and its blind-index entries), keeping its
    /// token when it had one. `None` removes the field. Returns false when the person
    /// no longer exists.
    pub async fn update_field(
        &self,
        person_id: &[u8; 16],
        field: Field,
        value: Option<StoredField>,
        index: &[IndexEntry],
        audit: &NewEntry,
    ) -> Result<bool, WriteError> {
        let now = now_millis();
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM persons WHERE person_id = $1")
            .bind(person_id.to_vec())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            return Ok(false);
        }
        match value {
            Some(stored) => {
                sqlx::query(
                    "INSERT INTO field_values (token_id, person_id, field, ciphertext, updated_at) \
                     VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (person_id, field) DO UPDATE SET ciphertext = excluded.ciphertext, \
                     updated_at = excluded.updated_at",
                )
                .bind(stored.token_id.to_vec())
                .bind(person_id.to_vec())
                .bind(field.as_str())
                .bind(stored.ciphertext)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM field_values WHERE person_id = $1 AND field = $2")
                    .bind(person_id.to_vec())
                    .bind(field.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // The index entries go after the value: the value's row is locked by then, so a
        // reindex that read the old value either committed its entry before (and it is
        // deleted here) or finds the value changed and writes nothing.
        sqlx::query("DELETE FROM blind_index WHERE person_id = $1 AND field = $2")
            .bind(person_id.to_vec())
            .bind(field.as_str())
            .execute(&mut *tx)
            .await?;
        for entry in index {
            insert_index(&mut tx, person_id, entry).await?;
        }
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The token id of one field of a person, if stored.
    pub async fn field_token(&self, person_id: &[u8; 16], field: Field) -> Result<Option<[u8; 16]>, sqlx::Error> {
        let row = sqlx::query("SELECT token_id FROM field_values WHERE person_id = $1 AND field = $2")
            .bind(person_id.to_vec())
            .bind(field.as_str())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| id16(r.try_get("token_id")?)).transpose()
    }

    /// Crypto-shreds a person: removes their wrapped key, ciphertexts, documents and
    /// index entries and records the erasure. Returns the number of field values
    /// removed, or `None` when there was no such person.
    ///
    /// With a `ledger`, the erasure is appended to it (and durable there) before this
    /// transaction commits; if it cannot be, nothing is erased.
    pub async fn erase(
        &self,
        person_id: &[u8; 16],
        audit: &NewEntry,
        ledger: Option<&crate::erasure_ledger::ErasureLedger>,
    ) -> Result<Option<u32>, WriteError> {
        let mut tx = self.pool.begin().await?;
        // The foreign keys cascade too; deleting explicitly does not depend on SQLite's
        // foreign_keys pragma being on for this connection.
        sqlx::query(
            "DELETE FROM document_chunks WHERE document_id IN (SELECT document_id FROM documents WHERE person_id = $1)",
        )
        .bind(person_id.to_vec())
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM documents WHERE person_id = $1").bind(person_id.to_vec()).execute(&mut *tx).await?;
        let removed_fields = sqlx::query("DELETE FROM field_values WHERE person_id = $1")
            .bind(person_id.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM blind_index WHERE person_id = $1").bind(person_id.to_vec()).execute(&mut *tx).await?;
        let removed_person = sqlx::query("DELETE FROM persons WHERE person_id = $1")
            .bind(person_id.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed_person == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = now_millis();
        sqlx::query("INSERT INTO erasures (person_id, erased_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(person_id.to_vec())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        if let Some(ledger) = ledger {
            // Last before the commit: a failed append rolls the erasure back; an append
            // whose erasure then fails to commit is re-applied at the next start.
            if let Err(err) = ledger.append(person_id, &audit.caller, now).await {
                tx.rollback().await?;
                return Err(WriteError::ErasureLedger(err));
            }
        }
        tx.commit().await?;
        Ok(Some(u32::try_from(removed_fields).unwrap_or(u32::MAX)))
    }

    /// How many people are stored.
    pub async fn count_people(&self) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM persons").fetch_one(&self.pool).await?;
        Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
    }
}

/// A shared-commit writer of people: until every sender is gone, takes all calls
/// waiting, writes them in one transaction and answers each.
async fn commit_inserts(pool: AnyPool, backend: Backend, queue: Arc<tokio::sync::Mutex<PendingQueue>>) {
    loop {
        let group = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut count = first.people.len();
            let mut group = vec![first];
            while count < MAX_GROUP_PEOPLE {
                match queue.try_recv() {
                    Ok(pending) => {
                        count += pending.people.len();
                        group.push(pending);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        settle_group(&pool, backend, group).await;
    }
}

/// Writes `group` in one transaction and answers each call; if that fails, each call in
/// a transaction of its own.
async fn settle_group(pool: &AnyPool, backend: Backend, group: Vec<PendingInsert>) {
    // Nobody is waiting for these any more: their callers were cancelled or timed out.
    let group: Vec<PendingInsert> = group.into_iter().filter(|pending| !pending.answer.is_closed()).collect();
    if group.len() <= 1 {
        for pending in group {
            settle_alone(pool, backend, pending).await;
        }
        return;
    }
    let shared = {
        let people: Vec<&NewPerson> = group.iter().flat_map(|pending| pending.people.iter()).collect();
        let owners: Vec<(usize, usize)> = group
            .iter()
            .enumerate()
            .flat_map(|(call, pending)| (0..pending.people.len()).map(move |i| (call, i)))
            .collect();
        let audit_for = |i: usize, inserted: &Inserted| {
            let (call, mine) = owners[i];
            (group[call].audit_for)(mine, inserted)
        };
        insert_together(pool, backend, &people, &audit_for).await
    };
    match shared {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for pending in group {
                let mine = outcomes.by_ref().take(pending.people.len()).collect();
                let _ = pending.answer.send(Ok(mine));
            }
        }
        Err(_) => {
            for pending in group {
                settle_alone(pool, backend, pending).await;
            }
        }
    }
}

async fn settle_alone(pool: &AnyPool, backend: Backend, pending: PendingInsert) {
    let people: Vec<&NewPerson> = pending.people.iter().collect();
    let result = insert_together(pool, backend, &people, &*pending.audit_for).await;
    let _ = pending.answer.send(result);
}

fn audit_backend(backend: Backend) -> qupia_audit::Backend {
    match backend {
        Backend::Sqlite => qupia_audit::Backend::Sqlite,
        Backend::Postgres => qupia_audit::Backend::Postgres,
    }
}

/// Inserts `people` in one transaction, with their access-log entries.
///
/// The rows go in multi-row statements (people, then their field values, then their
/// blind-index entries), so a batch of 100 people costs a handful of round trips,
/// not 800.
async fn insert_together(
    pool: &AnyPool,
    backend: Backend,
    people: &[&NewPerson],
    audit_for: &(dyn Fn(usize, &Inserted) -> NewEntry + Send + Sync),
) -> Result<Vec<Inserted>, WriteError> {
    let now = now_millis();
    let mut tx = pool.begin().await?;
    let mut outcomes: Vec<Option<Inserted>> = Vec::with_capacity(people.len());
    for person in people {
        outcomes.push(replayed_under_earlier_keys(&mut tx, &person.earlier_digests).await?);
    }

    // 1. The people not already settled, in one statement per chunk; those whose
    // idempotency key (or, improbably, random id) is taken come back missing.
    let candidates: Vec<usize> = (0..people.len()).filter(|i| outcomes[*i].is_none()).collect();
    let mut inserted: std::collections::HashSet<[u8; 16]> = std::collections::HashSet::new();
    for chunk in candidates.chunks(PERSON_ROWS) {
        let sql = format!(
            "INSERT INTO persons \
             (person_id, dek_wrapped, kek_version, dek_version, idempotency_key, request_digest, created_at) \
             VALUES {} ON CONFLICT DO NOTHING RETURNING person_id",
            values_sql(chunk.len(), 7)
        );
        let mut insert = sqlx::query(&sql);
        for i in chunk {
            let person = people[*i];
            insert = insert
                .bind(person.person_id.to_vec())
                .bind(person.key.dek_wrapped.clone())
                .bind(i64::from(person.key.kek_version))
                .bind(i64::from(person.key.dek_version))
                .bind(person.idempotency_key.map(|k| k.to_vec()))
                .bind(person.request_digest.to_vec())
                .bind(now);
        }
        for row in insert.fetch_all(&mut *tx).await? {
            inserted.insert(id16(row.try_get("person_id")?)?);
        }
    }
    let new: Vec<&NewPerson> =
        candidates.iter().map(|i| people[*i]).filter(|p| inserted.contains(&p.person_id)).collect();

    // 2. Their field values and blind-index entries.
    let fields: Vec<(&NewPerson, &StoredField)> =
        new.iter().flat_map(|person| person.fields.iter().map(move |field| (*person, field))).collect();
    for chunk in fields.chunks(FIELD_ROWS) {
        let sql = format!(
            "INSERT INTO field_values (token_id, person_id, field, ciphertext, updated_at) VALUES {}",
            values_sql(chunk.len(), 5)
        );
        let mut insert = sqlx::query(&sql);
        for (person, field) in chunk {
            insert = insert
                .bind(field.token_id.to_vec())
                .bind(person.person_id.to_vec())
                .bind(field.field.as_str())
                .bind(field.ciphertext.clone())
                .bind(now);
        }
        insert.execute(&mut *tx).await?;
    }
    let index: Vec<(&NewPerson, &IndexEntry)> =
        new.iter().flat_map(|person| person.index.iter().map(move |entry| (*person, entry))).collect();
    for chunk in index.chunks(INDEX_ROWS) {
        let sql = format!(
            "INSERT INTO blind_index (field, index_version, digest, person_id) VALUES {} ON CONFLICT DO NOTHING",
            values_sql(chunk.len(), 4)
        );
        let mut insert = sqlx::query(&sql);
        for (person, entry) in chunk {
            insert = insert
                .bind(entry.field.as_str())
                .bind(i64::from(entry.version))
                .bind(entry.digest.to_vec())
                .bind(person.person_id.to_vec());
        }
        insert.execute(&mut *tx).await?;
    }

    // 3. The replays: the earlier person behind a taken idempotency key, read now
    // that this batch's own rows are in (a key used twice in one batch answers the
    // first person).
    for i in candidates {
        let person = people[i];
        outcomes[i] = Some(if inserted.contains(&person.person_id) {
            Inserted::New
        } else {
            let key =
                person.idempotency_key.ok_or_else(|| sqlx::Error::Protocol("a random person id collided".into()))?;
            replayed(&mut tx, &key, &person.request_digest).await?
        });
    }
    let outcomes: Vec<Inserted> = outcomes.into_iter().map(|o| o.expect("every person settled")).collect();
    let entries: Vec<NewEntry> = outcomes.iter().enumerate().map(|(i, o)| audit_for(i, o)).collect();
    AuditLedger::append_in(&mut tx, audit_backend(backend), &entries).await?;
    tx.commit().await?;
    Ok(outcomes)
}

async fn insert_index(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    person_id: &[u8; 16],
    entry: &IndexEntry,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO blind_index (field, index_version, digest, person_id) VALUES ($1, $2, $3, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(entry.field.as_str())
    .bind(i64::from(entry.version))
    .bind(entry.digest.to_vec())
    .bind(person_id.to_vec())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The earlier person whose idempotency digest under an older index key matches, if any.
async fn replayed_under_earlier_keys(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    earlier: &[([u8; 32], [u8; 32])],
) -> Result<Option<Inserted>, sqlx::Error> {
    for (idempotency_key, request_digest) in earlier {
        let taken = sqlx::query("SELECT 1 AS one FROM persons WHERE idempotency_key = $1")
            .bind(idempotency_key.to_vec())
            .fetch_optional(&mut **tx)
            .await?
            .is_some();
        if taken {
            return replayed(tx, idempotency_key, request_digest).await.map(Some);
        }
    }
    Ok(None)
}

async fn replayed(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    idempotency_key: &[u8; 32],
    request_digest: &[u8; 32],
) -> Result<Inserted, sqlx::Error> {
    let row = sqlx::query("SELECT person_id, request_digest FROM persons WHERE idempotency_key = $1")
        .bind(idempotency_key.to_vec())
        .fetch_one(&mut **tx)
        .await?;
    let person_id = id16(row.try_get("person_id")?)?;
    let stored_digest: Option<Vec<u8>> = row.try_get("request_digest")?;
    let rows = sqlx::query("SELECT field, token_id FROM field_values WHERE person_id = $1")
        .bind(person_id.to_vec())
        .fetch_all(&mut **tx)
        .await?;
    let mut fields = Vec::with_capacity(rows.len());
    for row in rows {
        fields.push((field_of(row.try_get("field")?)?, id16(row.try_get("token_id")?)?));
    }
    fields.sort_by_key(|(field, _)| *field);
    Ok(Inserted::Replayed {
        person_id,
        fields,
        same_request: stored_digest.as_deref() == Some(request_digest.as_slice()),
    })
}

fn person_record(person_id: [u8; 16], rows: Vec<sqlx::any::AnyRow>) -> Result<Option<PersonRecord>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let key = PersonKey {
        dek_wrapped: first.try_get("dek_wrapped")?,
        kek_version: u32_of(first.try_get("kek_version")?)?,
        dek_version: u32_of(first.try_get("dek_version")?)?,
    };
    let mut fields = Vec::with_capacity(rows.len());
    for row in &rows {
        // A person with no field values yet still has one joined row, of NULLs.
        let Some(token_id) = row.try_get::<Option<Vec<u8>>, _>("token_id")? else {
            continue;
        };
        fields.push(StoredField {
            token_id: id16(token_id)?,
            field: field_of(row.try_get("field")?)?,
            ciphertext: row.try_get("ciphertext")?,
        });
    }
    fields.sort_by_key(|f| f.field);
    Ok(Some(PersonRecord { person_id, key, fields }))
}

#[cfg(test)]
mod tests {
    use qupia_audit::{NewEntry, Outcome};
    use qupia_test_support::{Backend as TestBackend, TestDb, storage_test};

    use super::*;

    fn id() -> [u8; 16] {
        *uuid::Uuid::new_v4().as_bytes()
    }

    fn digest() -> [u8; 32] {
        let mut digest = [0; 32];
        digest[..16].copy_from_slice(&id());
        digest[16..].copy_from_slice(&id());
        digest
    }

    /// A person as the vault would hand it over: random bytes stand in for ciphertexts.
    fn person(idempotency_key: Option<[u8; 32]>) -> NewPerson {
        NewPerson {
            person_id: id(),
            key: PersonKey { dek_wrapped: vec![7; 60], kek_version: 1, dek_version: 1 },
            idempotency_key,
            request_digest: digest(),
            earlier_digests: Vec::new(),
            fields: vec![StoredField { token_id: id(), field: Field::Email, ciphertext: vec![9; 40] }],
            index: vec![IndexEntry { field: Field::Email, version: 1, digest: digest() }],
        }
    }

    /// Entries naming `caller`; an empty caller makes an entry the ledger refuses.
    fn entries_of(caller: &'static str) -> AuditFor {
        Box::new(move |_, inserted| NewEntry {
            caller: caller.to_owned(),
            operation: "tokenize".to_owned(),
            fields: vec!["email".to_owned()],
            outcome: Outcome::Allowed,
            reason: match inserted {
                Inserted::New => "stored".to_owned(),
                Inserted::Replayed { .. } => "replayed by idempotency key".to_owned(),
            },
            ..NewEntry::default()
        })
    }

    type Answer = oneshot::Receiver<Result<Vec<Inserted>, WriteError>>;

    fn call(people: Vec<NewPerson>, caller: &'static str) -> (PendingInsert, Answer) {
        let (answer, answered) = oneshot::channel();
        (PendingInsert { people, audit_for: entries_of(caller), answer }, answered)
    }

    async fn count(store: &Store, table: &str) -> i64 {
        let row = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}")).fetch_one(store.pool()).await.unwrap();
        row.try_get("n").unwrap()
    }

    /// Transactions that wrote `persons` rows (PostgreSQL only: each row's `xmin`).
    async fn writing_transactions(store: &Store) -> Option<i64> {
        if store.backend() != Backend::Postgres {
            return None;
        }
        let row = sqlx::query("SELECT COUNT(DISTINCT xmin::text) AS n FROM persons").fetch_one(store.pool()).await;
        Some(row.unwrap().try_get("n").unwrap())
    }

    storage_test!(calls_waiting_together_share_one_commit, shared_commit);
    async fn shared_commit(backend: TestBackend) {
        let db = TestDb::create(backend, "vault_group").await;
        let store = Store::connect(&db.url, 4).await.unwrap();
        let key = digest();
        let first = person(Some(key));
        let first_id = first.person_id;
        let (a, a_answer) = call(vec![first], "accounts");
        let (b, b_answer) = call(vec![person(None), person(None)], "accounts");
        // The same idempotency key as the first call: the first call's person answers.
        let (c, c_answer) = call(vec![person(Some(key))], "accounts");
        // A caller that has gone away before its turn: written for nobody, so not written.
        let (gone, gone_answer) = call(vec![person(None)], "accounts");
        drop(gone_answer);
        settle_group(store.pool(), store.backend(), vec![a, b, gone, c]).await;

        assert!(matches!(a_answer.await.unwrap().unwrap()[..], [Inserted::New]));
        assert!(matches!(b_answer.await.unwrap().unwrap()[..], [Inserted::New, Inserted::New]));
        match &c_answer.await.unwrap().unwrap()[..] {
            [Inserted::Replayed { person_id, same_request: false, .. }] => assert_eq!(*person_id, first_id),
            other => panic!("the reused key answers the first person: {other:?}"),
        }
        assert_eq!(count(&store, "persons").await, 3, "the departed caller's person is not stored");
        assert_eq!(count(&store, "audit_log").await, 4, "one entry per person of every answered call");
        if let Some(transactions) = writing_transactions(&store).await {
            assert_eq!(transactions, 1, "the three calls committed together");
        }
        let report = store.audit_ledger().verify(None).await.unwrap();
        assert_eq!((report.entries, report.problem), (4, None));
    }

    storage_test!(a_failing_call_fails_alone, failing_member);
    async fn failing_member(backend: TestBackend) {
        let db = TestDb::create(backend, "vault_group_fail").await;
        let store = Store::connect(&db.url, 4).await.unwrap();
        let (a, a_answer) = call(vec![person(None)], "accounts");
        // An access-log entry the ledger refuses fails the shared transaction...
        let (bad, bad_answer) = call(vec![person(None), person(None)], "");
        let (c, c_answer) = call(vec![person(None)], "accounts");
        settle_group(store.pool(), store.backend(), vec![a, bad, c]).await;

        // ...and then only its own call, retried alone: nothing of it is stored.
        assert!(matches!(a_answer.await.unwrap().unwrap()[..], [Inserted::New]));
        assert!(matches!(bad_answer.await.unwrap(), Err(WriteError::Audit(_))));
        assert!(matches!(c_answer.await.unwrap().unwrap()[..], [Inserted::New]));
        assert_eq!(count(&store, "persons").await, 2);
        assert_eq!(count(&store, "field_values").await, 2);
        assert_eq!(count(&store, "blind_index").await, 2);
        assert_eq!(count(&store, "audit_log").await, 2);
    }

    storage_test!(concurrent_calls_each_hear_their_own_people, concurrent_calls);
    async fn concurrent_calls(backend: TestBackend) {
        let db = TestDb::create(backend, "vault_group_many").await;
        let store = Store::connect(&db.url, 4).await.unwrap();
        let calls: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let people: Vec<NewPerson> = (0..1 + i % 3).map(|_| person(Some(digest()))).collect();
                    let ids: Vec<[u8; 16]> = people.iter().map(|p| p.person_id).collect();
                    let outcomes = store.insert_people(people, entries_of("accounts")).await.unwrap();
                    (ids, outcomes)
                })
            })
            .collect();
        let mut stored = 0;
        for call in calls {
            let (ids, outcomes) = call.await.unwrap();
            assert_eq!(outcomes.len(), ids.len(), "an outcome for each of the call's own people");
            assert!(outcomes.iter().all(|o| matches!(o, Inserted::New)));
            stored += ids.len();
        }
        let stored = i64::try_from(stored).unwrap();
        assert_eq!(count(&store, "persons").await, stored);
        let report = store.audit_ledger().verify(None).await.unwrap();
        assert_eq!((report.entries, report.problem), (stored, None));
    }
}
