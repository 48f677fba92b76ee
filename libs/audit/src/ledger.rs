//! Appending to and reading the ledger: every SQL statement but verification's.
//!
//! One SQL text serves SQLite and PostgreSQL through sqlx's `Any` driver; only the way
//! the head row is locked differs, which is what [`Backend`] is for.

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::chain::{self, LinkInput};
use crate::entry::{Checkpoint, Entry, Filter, NewEntry, Outcome};
use crate::error::Error;

/// Most entries `query` returns at once.
pub const MAX_QUERY_LIMIT: u32 = 1000;

/// Rows per multi-row INSERT: 15 parameters each, far below either database's limit,
/// and one round trip for a typical group commit.
const INSERT_CHUNK: usize = 64;

/// The columns of `audit_log`, in the order rows are read.
pub(crate) const COLUMNS: &str = "seq, at_ms, caller, operation, purpose, person, fields, \
     decision, reason, consent_id, request_id, decision_id, trace_id, prev_hash, hash";

/// The database the ledger lives in; decides how appenders serialise on the head row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Most entries one group commit writes; the rest wait for the next.
const MAX_GROUP_ENTRIES: usize = 4096;

/// The audit ledger in the vault's database. Cheap to clone: a pool handle and the
/// queue of its group committer.
#[derive(Debug, Clone)]
pub struct AuditLedger {
    pub(crate) pool: AnyPool,
    pub(crate) backend: Backend,
    /// The group committer's queue, started by the first [`AuditLedger::append`].
    group: Arc<OnceLock<mpsc::UnboundedSender<Pending>>>,
}

/// One caller's entries waiting for a group commit, and where its answer goes.
#[derive(Debug)]
struct Pending {
    entries: Vec<NewEntry>,
    answer: oneshot::Sender<Result<Vec<i64>, Error>>,
}

impl AuditLedger {
    /// A ledger over `pool`, whose database has the vault's migrations applied.
    pub fn new(pool: AnyPool, backend: Backend) -> AuditLedger {
        AuditLedger { pool, backend, group: Arc::default() }
    }

    /// Appends `entries` in one transaction and returns their seqs, in order, once that
    /// transaction has committed.
    ///
    /// Either every entry is committed or none is: an invalid entry, a refusing database
    /// or a failed commit returns an error, and the caller must then not reveal anything.
    ///
    /// Concurrent calls share a commit (group commit): one task takes every append
    /// waiting at the time, chains them in arrival order and writes them in one
    /// transaction, then answers each caller. Every appender would otherwise queue on
    /// the head row for a commit of its own; this way a commit's flush is paid once per
    /// group. If the shared transaction fails, each caller's entries are retried in a
    /// transaction of their own, so one caller's failure is never another's.
    pub async fn append(&self, entries: &[NewEntry]) -> Result<Vec<i64>, Error> {
        validate_all(entries)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let queue = self.group.get_or_init(|| {
            let (sender, receiver) = mpsc::unbounded_channel();
            tokio::spawn(commit_groups(self.pool.clone(), self.backend, receiver));
            sender
        });
        let (answer, answered) = oneshot::channel();
        let pending = Pending { entries: entries.to_vec(), answer };
        if queue.send(pending).is_err() {
            return Err(Error::Storage(sqlx::Error::PoolClosed));
        }
        // A committer that went away (its runtime shut down) wrote nothing it did not answer.
        answered.await.unwrap_or(Err(Error::Storage(sqlx::Error::PoolClosed)))
    }

    /// Appends `entries` inside the caller's open transaction, so that a vault write and
    /// its entry commit (or roll back) together. Until the caller commits, other
    /// appenders wait on the head row: keep the transaction short.
    pub async fn append_in(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        backend: Backend,
        entries: &[NewEntry],
    ) -> Result<Vec<i64>, Error> {
        validate_all(entries)?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        append_validated(tx, backend, entries).await
    }

    /// Entries matching `filter` with seq greater than `after_seq`, in ascending seq, at
    /// most `limit` of them (capped at [`MAX_QUERY_LIMIT`]). Page by passing the last seq
    /// returned as the next `after_seq`.
    pub async fn query(&self, filter: &Filter, after_seq: i64, limit: u32) -> Result<Vec<Entry>, Error> {
        let limit = limit.min(MAX_QUERY_LIMIT);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let sql = query_sql(filter);
        let mut query = sqlx::query(&sql).bind(after_seq);
        // Bound in the order query_sql numbered them: the texts, then the times.
        for text in [&filter.person, &filter.caller, &filter.purpose, &filter.operation].into_iter().flatten() {
            query = query.bind(text.as_str());
        }
        for time in [filter.from_ms, filter.to_ms].into_iter().flatten() {
            query = query.bind(time);
        }
        let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(entry_of).collect()
    }

    /// The head: the last entry's seq and hash (0 and zeros for an empty ledger).
    pub async fn head(&self) -> Result<(i64, [u8; 32]), Error> {
        let row = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&self.pool)
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        head_of(&row)
    }

    /// Records a checkpoint of the current head in `audit_checkpoints` and returns it,
    /// for the caller to keep outside the database as well.
    pub async fn checkpoint(&self) -> Result<Checkpoint, Error> {
        let (seq, hash) = self.head().await?;
        let at_ms = now_millis();
        // Two checkpoints of the same head in the same millisecond are the same one.
        sqlx::query(
            "INSERT INTO audit_checkpoints (seq, hash, at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(seq)
        .bind(hash.to_vec())
        .bind(at_ms)
        .execute(&self.pool)
        .await?;
        Ok(Checkpoint { seq, hash: hex::encode(hash), at_ms })
    }

    /// The checkpoint with the highest seq in `audit_checkpoints`, if any.
    pub async fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, Error> {
        let row = sqlx::query("SELECT seq, hash, at_ms FROM audit_checkpoints ORDER BY seq DESC, at_ms DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let hash: Vec<u8> = row.try_get("hash")?;
        Ok(Some(Checkpoint { seq: row.try_get("seq")?, hash: hex::encode(hash), at_ms: row.try_get("at_ms")? }))
    }
}

/// The group committer: until every sender is gone, takes all appends waiting (up to
/// [`MAX_GROUP_ENTRIES`]), commits them together, and answers each.
async fn commit_groups(pool: AnyPool, backend: Backend, mut queue: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = queue.recv().await {
        let mut count = first.entries.len();
        let mut group = vec![first];
        while count < MAX_GROUP_ENTRIES {
            match queue.try_recv() {
                Ok(pending) => {
                    count += pending.entries.len();
                    group.push(pending);
                }
                Err(_) => break,
            }
        }
        if group.len() == 1 {
            let pending = group.pop().expect("one pending append");
            let result = append_alone(&pool, backend, &pending.entries).await;
            let _ = pending.answer.send(result);
            continue;
        }
        let all: Vec<NewEntry> = group.iter().flat_map(|p| p.entries.iter().cloned()).collect();
        match append_alone(&pool, backend, &all).await {
            Ok(seqs) => {
                let mut seqs = seqs.into_iter();
                for pending in group {
                    let mine = seqs.by_ref().take(pending.entries.len()).collect();
                    let _ = pending.answer.send(Ok(mine));
                }
            }
            Err(_) => {
                for pending in group {
                    let result = append_alone(&pool, backend, &pending.entries).await;
                    let _ = pending.answer.send(result);
                }
            }
        }
    }
}

/// Appends validated `entries` in a transaction of their own.
async fn append_alone(pool: &AnyPool, backend: Backend, entries: &[NewEntry]) -> Result<Vec<i64>, Error> {
    let mut tx = pool.begin().await?;
    let seqs = append_validated(&mut tx, backend, entries).await?;
    tx.commit().await?;
    Ok(seqs)
}

fn validate_all(entries: &[NewEntry]) -> Result<(), Error> {
    entries.iter().try_for_each(NewEntry::validate)
}

/// Locks the head, chains and inserts `entries`, and moves the head, all on `conn`
/// inside a transaction the caller owns.
async fn append_validated(conn: &mut AnyConnection, backend: Backend, entries: &[NewEntry]) -> Result<Vec<i64>, Error> {
    let (head_seq, head_hash) = lock_head(conn, backend).await?;
    let at_ms = now_millis();

    let mut seqs = Vec::with_capacity(entries.len());
    let mut prev = head_hash;
    let mut seq = head_seq;
    for chunk in entries.chunks(INSERT_CHUNK) {
        let sql = insert_sql(chunk.len());
        let mut insert = sqlx::query(&sql);
        for entry in chunk {
            seq = seq.checked_add(1).ok_or(Error::Invalid("the ledger has run out of sequence numbers"))?;
            let fields = entry.fields_text();
            let hash = chain::link_hash(
                &prev,
                &LinkInput {
                    seq,
                    at_ms,
                    caller: &entry.caller,
                    operation: &entry.operation,
                    purpose: &entry.purpose,
                    person: &entry.person,
                    fields: &fields,
                    decision: entry.outcome.as_str(),
                    reason: &entry.reason,
                    consent_id: &entry.consent_id,
                    request_id: &entry.request_id,
                    decision_id: &entry.decision_id,
                    trace_id: &entry.trace_id,
                },
            );
            insert = insert
                .bind(seq)
                .bind(at_ms)
                .bind(entry.caller.as_str())
                .bind(entry.operation.as_str())
                .bind(entry.purpose.as_str())
                .bind(entry.person.as_str())
                .bind(fields)
                .bind(entry.outcome.as_str())
                .bind(entry.reason.as_str())
                .bind(entry.consent_id.as_str())
                .bind(entry.request_id.as_str())
                .bind(entry.decision_id.as_str())
                .bind(entry.trace_id.as_str())
                .bind(prev.to_vec())
                .bind(hash.to_vec());
            seqs.push(seq);
            prev = hash;
        }
        insert.execute(&mut *conn).await?;
    }

    let moved = sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
        .bind(seq)
        .bind(prev.to_vec())
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if moved != 1 {
        return Err(sqlx::Error::RowNotFound.into());
    }
    Ok(seqs)
}

/// Reads the head so that no other appender can move it before this transaction ends.
async fn lock_head(conn: &mut AnyConnection, backend: Backend) -> Result<(i64, [u8; 32]), Error> {
    let sql = match backend {
        // A row lock: concurrent appenders queue here, and each reads the head its
        // predecessor committed.
        Backend::Postgres => "SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE",
        // SQLite has no row locks; its lock is the database write lock, taken by the
        // first write of a transaction. Writing before reading takes it before the head
        // is read, so no other connection can append in between, and a deferred
        // transaction never has to upgrade a stale read snapshot (SQLITE_BUSY_SNAPSHOT).
        Backend::Sqlite => "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
    };
    let row = sqlx::query(sql).fetch_optional(&mut *conn).await?.ok_or(sqlx::Error::RowNotFound)?;
    head_of(&row)
}

fn head_of(row: &AnyRow) -> Result<(i64, [u8; 32]), Error> {
    let seq: i64 = row.try_get("seq")?;
    let hash: Vec<u8> = row.try_get("hash")?;
    let hash =
        <[u8; 32]>::try_from(hash).map_err(|_| sqlx::Error::Decode("the audit head hash is not 32 bytes".into()))?;
    Ok((seq, hash))
}

fn insert_sql(rows: usize) -> String {
    const PER_ROW: usize = 15;
    let values: Vec<String> = (0..rows)
        .map(|row| {
            let params: Vec<String> = (1..=PER_ROW).map(|column| format!("${}", row * PER_ROW + column)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    format!("INSERT INTO audit_log ({COLUMNS}) VALUES {}", values.join(", "))
}

/// `SELECT ... WHERE seq > $1 [AND person = $n ...] ORDER BY seq LIMIT $last`, numbering
/// the set filters in the order `query` binds them.
fn query_sql(filter: &Filter) -> String {
    let mut clauses = vec!["seq > $1".to_owned()];
    let mut param = 1;
    let conditions = [
        ("person = ", filter.person.is_some()),
        ("caller = ", filter.caller.is_some()),
        ("purpose = ", filter.purpose.is_some()),
        ("operation = ", filter.operation.is_some()),
        ("at_ms >= ", filter.from_ms.is_some()),
        ("at_ms < ", filter.to_ms.is_some()),
    ];
    for (condition, set) in conditions {
        if set {
            param += 1;
            clauses.push(format!("{condition}${param}"));
        }
    }
    format!("SELECT {COLUMNS} FROM audit_log WHERE {} ORDER BY seq LIMIT ${}", clauses.join(" AND "), param + 1)
}

fn entry_of(row: &AnyRow) -> Result<Entry, Error> {
    let decision: String = row.try_get("decision")?;
    let outcome = Outcome::parse(&decision)
        .ok_or_else(|| sqlx::Error::Decode("a stored decision is neither allowed nor denied".into()))?;
    let fields: String = row.try_get("fields")?;
    let prev_hash: Vec<u8> = row.try_get("prev_hash")?;
    let hash: Vec<u8> = row.try_get("hash")?;
    Ok(Entry {
        seq: row.try_get("seq")?,
        at_ms: row.try_get("at_ms")?,
        caller: row.try_get("caller")?,
        operation: row.try_get("operation")?,
        purpose: row.try_get("purpose")?,
        person: row.try_get("person")?,
        fields: split_fields(&fields),
        outcome,
        reason: row.try_get("reason")?,
        consent_id: row.try_get("consent_id")?,
        request_id: row.try_get("request_id")?,
        decision_id: row.try_get("decision_id")?,
        trace_id: row.try_get("trace_id")?,
        prev_hash: hex::encode(prev_hash),
        hash: hex::encode(hash),
    })
}

/// The stored comma-joined names back as a list; no names is the empty text.
fn split_fields(text: &str) -> Vec<String> {
    if text.is_empty() { Vec::new() } else { text.split(',').map(str::to_owned).collect() }
}

pub(crate) fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_numbers_every_parameter_once() {
        let sql = insert_sql(2);
        assert!(sql.contains("($1, $2,"));
        assert!(sql.contains("$15), ($16,"));
        assert!(sql.ends_with("$30)"));
    }

    #[test]
    fn query_numbers_the_set_filters_in_bind_order() {
        let filter = Filter { caller: Some("c".into()), to_ms: Some(5), ..Filter::default() };
        assert_eq!(
            query_sql(&filter),
            format!(
                "SELECT {COLUMNS} FROM audit_log WHERE seq > $1 AND caller = $2 AND at_ms < $3 \
                 ORDER BY seq LIMIT $4"
            )
        );
    }

    #[test]
    fn fields_round_trip_through_their_stored_text() {
        assert!(split_fields("").is_empty());
        assert_eq!(split_fields("email,phone"), ["email", "phone"]);
    }
}
