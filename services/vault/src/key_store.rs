//! The SQL of key administration: the minimum decryption version, the rewrap and
//! reindex jobs with their cursors, the encryption counts, the bulk rewrap and reindex
//! statements, and the replay of the erasure ledger.
//!
//! The bulk statements carry a whole batch in one round trip (a `VALUES` list in a
//! CTE, one SQL text for SQLite and PostgreSQL) and compare-and-set against what the
//! job read, so a person erased or rectified meanwhile is neither resurrected nor
//! clobbered.

use std::collections::BTreeMap;

use qupia_audit::{AuditLedger, NewEntry};
use qupia_domain::Field;
use sqlx::Row;

use crate::erasure_ledger::LedgerEntry;
use crate::store::{Backend, Store, WriteError, id16, now_millis, u32_of};

/// The two background jobs of key administration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    Rewrap,
    Reindex,
}

impl JobKind {
    pub const ALL: [JobKind; 2] = [JobKind::Rewrap, JobKind::Reindex];

    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Rewrap => "rewrap",
            JobKind::Reindex => "reindex",
        }
    }
}

/// A job as stored in `key_jobs`, and as its progress is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    pub kind: JobKind,
    pub running: bool,
    pub target_version: u32,
    /// The last person id done in this pass; `None` before the first.
    pub cursor: Option<[u8; 16]>,
    pub pass: u32,
    pub done: u64,
    pub skipped: u64,
    pub total: u64,
    pub rate_per_second: u32,
    pub requested_by: String,
    pub started_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A person's wrapped data key, as the rewrap job reads it.
#[derive(Debug, Clone)]
pub struct DekRow {
    pub person_id: [u8; 16],
    pub kek_version: u32,
    pub dek_wrapped: Vec<u8>,
}

/// A data key rewrapped in memory, to be written if the row still holds `old_wrapped`.
#[derive(Debug, Clone)]
pub struct Rewrapped {
    pub person_id: [u8; 16],
    pub old_version: u32,
    pub old_wrapped: Vec<u8>,
    pub new_version: u32,
    pub new_wrapped: Vec<u8>,
}

/// A person's key and the ciphertexts the blind index is computed from.
#[derive(Debug, Clone)]
pub struct ReindexRow {
    pub person_id: [u8; 16],
    pub kek_version: u32,
    pub dek_wrapped: Vec<u8>,
    pub dek_version: u32,
    pub email: Option<Vec<u8>>,
    pub phone: Option<Vec<u8>>,
}

/// A new blind-index entry, to be written if the field still holds `ciphertext`.
#[derive(Debug, Clone)]
pub struct ReindexEntry {
    pub person_id: [u8; 16],
    pub field: Field,
    pub digest: [u8; 32],
    pub ciphertext: Vec<u8>,
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `($1, $2, …), ($k, …)`: `rows` tuples of `width` placeholders, numbered from `first`.
fn placeholders(rows: usize, width: usize, first: usize) -> String {
    let mut text = String::with_capacity(rows * width * 6);
    for row in 0..rows {
        if row > 0 {
            text.push_str(", ");
        }
        text.push('(');
        for column in 0..width {
            if column > 0 {
                text.push_str(", ");
            }
            text.push('$');
            text.push_str(&(first + row * width + column).to_string());
        }
        text.push(')');
    }
    text
}

/// The pass-two condition of a reindex: the person has an entry under another version
/// with no counterpart for the same field under the target (a write that raced the
/// first pass).
const NEEDS_REINDEX: &str = "EXISTS (SELECT 1 FROM blind_index b WHERE b.person_id = p.person_id \
     AND b.index_version <> $3 AND NOT EXISTS (SELECT 1 FROM blind_index n \
     WHERE n.person_id = b.person_id AND n.field = b.field AND n.index_version = $3))";

impl Store {
    /// The minimum decryption version; 0 when none is set.
    pub async fn min_decrypt_version(&self) -> Result<u32, sqlx::Error> {
        let row =
            sqlx::query("SELECT min_decrypt_version FROM key_settings WHERE id = 1").fetch_one(self.pool()).await?;
        u32_of(row.try_get("min_decrypt_version")?)
    }

    /// Sets the minimum decryption version, with its access-log entry, in one transaction.
    pub async fn set_min_decrypt_version(&self, version: u32, audit: &NewEntry) -> Result<(), WriteError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("UPDATE key_settings SET min_decrypt_version = $1 WHERE id = 1")
            .bind(i64::from(version))
            .execute(&mut *tx)
            .await?;
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Data keys per KEK version.
    pub async fn deks_per_version(&self) -> Result<BTreeMap<u32, u64>, sqlx::Error> {
        let rows = sqlx::query("SELECT kek_version, COUNT(*) AS n FROM persons GROUP BY kek_version")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| Ok((u32_of(row.try_get("kek_version")?)?, u64_of(row.try_get("n")?)))).collect()
    }

    /// Data keys wrapped under `version`.
    pub async fn deks_under(&self, version: u32) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM persons WHERE kek_version = $1")
            .bind(i64::from(version))
            .fetch_one(self.pool())
            .await?;
        Ok(u64_of(row.try_get("n")?))
    }

    /// Blind-index entries per index-key version.
    pub async fn index_entries_per_version(&self) -> Result<BTreeMap<u32, u64>, sqlx::Error> {
        let rows = sqlx::query("SELECT index_version, COUNT(*) AS n FROM blind_index GROUP BY index_version")
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(|row| Ok((u32_of(row.try_get("index_version")?)?, u64_of(row.try_get("n")?)))).collect()
    }

    /// Entries under `old` whose person has no entry for the same field under `current`:
    /// what removing `old` would make unfindable.
    pub async fn index_entries_not_reindexed(&self, old: u32, current: u32) -> Result<u64, sqlx::Error> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM blind_index b WHERE b.index_version = $1 AND NOT EXISTS \
             (SELECT 1 FROM blind_index n WHERE n.person_id = b.person_id AND n.field = b.field \
             AND n.index_version = $2)",
        )
        .bind(i64::from(old))
        .bind(i64::from(current))
        .fetch_one(self.pool())
        .await?;
        Ok(u64_of(row.try_get("n")?))
    }

    /// Deletes every blind-index entry under `version`; returns how many.
    pub async fn delete_index_version(&self, version: u32) -> Result<u64, sqlx::Error> {
        let done = sqlx::query("DELETE FROM blind_index WHERE index_version = $1")
            .bind(i64::from(version))
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected())
    }

    /// The encryptions counted per KEK version.
    pub async fn encryptions(&self) -> Result<BTreeMap<u32, u64>, sqlx::Error> {
        let rows = sqlx::query("SELECT kek_version, encryptions FROM kek_encryptions").fetch_all(self.pool()).await?;
        rows.iter().map(|row| Ok((u32_of(row.try_get("kek_version")?)?, u64_of(row.try_get("encryptions")?)))).collect()
    }

    /// Adds counted encryptions, one transaction for all versions.
    pub async fn add_encryptions(&self, counts: &BTreeMap<u32, u64>) -> Result<(), sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        for (version, count) in counts {
            sqlx::query(
                "INSERT INTO kek_encryptions (kek_version, encryptions) VALUES ($1, $2) \
                 ON CONFLICT (kek_version) DO UPDATE SET encryptions = kek_encryptions.encryptions + excluded.encryptions",
            )
            .bind(i64::from(*version))
            .bind(i64_of(*count))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await
    }

    /// The last job of `kind`, if any was ever started.
    pub async fn job(&self, kind: JobKind) -> Result<Option<JobRecord>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT state, target_version, cursor, pass, done, skipped, total, rate_per_second, requested_by, \
             started_at, updated_at FROM key_jobs WHERE kind = $1",
        )
        .bind(kind.as_str())
        .fetch_optional(self.pool())
        .await?;
        let Some(row) = row else { return Ok(None) };
        let cursor: Option<Vec<u8>> = row.try_get("cursor")?;
        Ok(Some(JobRecord {
            kind,
            running: row.try_get::<String, _>("state")? == "running",
            target_version: u32_of(row.try_get("target_version")?)?,
            cursor: cursor.map(id16).transpose()?,
            pass: u32_of(row.try_get("pass")?)?,
            done: u64_of(row.try_get("done")?),
            skipped: u64_of(row.try_get("skipped")?),
            total: u64_of(row.try_get("total")?),
            rate_per_second: u32_of(row.try_get("rate_per_second")?)?,
            requested_by: row.try_get("requested_by")?,
            started_at_ms: row.try_get("started_at")?,
            updated_at_ms: row.try_get("updated_at")?,
        }))
    }

    /// Records a new job (replacing the last one of its kind) with its access-log entry.
    pub async fn start_job(&self, job: &JobRecord, audit: &NewEntry) -> Result<(), WriteError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM key_jobs WHERE kind = $1").bind(job.kind.as_str()).execute(&mut *tx).await?;
        sqlx::query(
            "INSERT INTO key_jobs (kind, state, target_version, cursor, pass, done, skipped, total, \
             rate_per_second, requested_by, started_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(job.kind.as_str())
        .bind(if job.running { "running" } else { "finished" })
        .bind(i64::from(job.target_version))
        .bind(job.cursor.map(|c| c.to_vec()))
        .bind(i64::from(job.pass))
        .bind(i64_of(job.done))
        .bind(i64_of(job.skipped))
        .bind(i64_of(job.total))
        .bind(i64::from(job.rate_per_second))
        .bind(job.requested_by.as_str())
        .bind(job.started_at_ms)
        .bind(job.updated_at_ms)
        .execute(&mut *tx)
        .await?;
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Saves a job's state (and, when it finished, its access-log entry).
    pub async fn save_job(&self, job: &JobRecord, audit: Option<&NewEntry>) -> Result<(), WriteError> {
        let mut tx = self.pool().begin().await?;
        save_job_in(&mut tx, job).await?;
        if let Some(audit) = audit {
            AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Data keys not under `target`: the rewrap job's work.
    pub async fn deks_not_under(&self, target: u32) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM persons WHERE kek_version <> $1")
            .bind(i64::from(target))
            .fetch_one(self.pool())
            .await?;
        Ok(u64_of(row.try_get("n")?))
    }

    /// The next data keys after `cursor` (in person-id order) not under `target`.
    pub async fn rewrap_batch(
        &self,
        cursor: Option<[u8; 16]>,
        target: u32,
        limit: u32,
    ) -> Result<Vec<DekRow>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT person_id, kek_version, dek_wrapped FROM persons \
             WHERE person_id > $1 AND kek_version <> $2 ORDER BY person_id LIMIT $3",
        )
        .bind(cursor.map(|c| c.to_vec()).unwrap_or_default())
        .bind(i64::from(target))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(DekRow {
                    person_id: id16(row.try_get("person_id")?)?,
                    kek_version: u32_of(row.try_get("kek_version")?)?,
                    dek_wrapped: row.try_get("dek_wrapped")?,
                })
            })
            .collect()
    }

    /// Writes rewrapped data keys in one statement, each only if its row still holds
    /// the wrapped key it was read with, and saves the job with the count written.
    /// Returns how many rows were written.
    pub async fn apply_rewrap(&self, batch: &[Rewrapped], job: &mut JobRecord) -> Result<u64, sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        let mut written = 0;
        if !batch.is_empty() {
            let sql = format!(
                "WITH v (person_id, old_version, old_wrapped, new_version, new_wrapped) AS (VALUES {}) \
                 UPDATE persons SET dek_wrapped = v.new_wrapped, kek_version = v.new_version FROM v \
                 WHERE persons.person_id = v.person_id AND persons.kek_version = v.old_version \
                 AND persons.dek_wrapped = v.old_wrapped",
                placeholders(batch.len(), 5, 1)
            );
            let mut query = sqlx::query(&sql);
            for row in batch {
                query = query
                    .bind(row.person_id.to_vec())
                    .bind(i64::from(row.old_version))
                    .bind(row.old_wrapped.clone())
                    .bind(i64::from(row.new_version))
                    .bind(row.new_wrapped.clone());
            }
            written = query.execute(&mut *tx).await?.rows_affected();
        }
        job.done += written;
        job.updated_at_ms = now_millis();
        save_job_in(&mut tx, job).await?;
        tx.commit().await?;
        Ok(written)
    }

    /// The reindex job's work in pass `pass` for `target`: every person in pass 1,
    /// those with an entry not yet under `target` after that.
    pub async fn reindex_work(&self, pass: u32, target: u32) -> Result<u64, sqlx::Error> {
        let sql = if pass <= 1 {
            "SELECT COUNT(*) AS n FROM persons p WHERE $3 = $3".to_owned()
        } else {
            format!("SELECT COUNT(*) AS n FROM persons p WHERE {NEEDS_REINDEX}")
        };
        // $1 and $2 are not used by the count; bind the target as $3 only.
        let sql = sql.replace("$3", "$1");
        let row = sqlx::query(&sql).bind(i64::from(target)).fetch_one(self.pool()).await?;
        Ok(u64_of(row.try_get("n")?))
    }

    /// The next people after `cursor` to reindex, with their key and the ciphertexts of
    /// their e-mail and phone.
    pub async fn reindex_batch(
        &self,
        cursor: Option<[u8; 16]>,
        pass: u32,
        target: u32,
        limit: u32,
    ) -> Result<Vec<ReindexRow>, sqlx::Error> {
        let condition = if pass <= 1 { "$3 = $3" } else { NEEDS_REINDEX };
        let sql = format!(
            "SELECT p.person_id, p.kek_version, p.dek_wrapped, p.dek_version, e.ciphertext AS email, \
             t.ciphertext AS phone FROM persons p \
             LEFT JOIN field_values e ON e.person_id = p.person_id AND e.field = 'email' \
             LEFT JOIN field_values t ON t.person_id = p.person_id AND t.field = 'phone' \
             WHERE p.person_id > $1 AND {condition} ORDER BY p.person_id LIMIT $2"
        );
        let rows = sqlx::query(&sql)
            .bind(cursor.map(|c| c.to_vec()).unwrap_or_default())
            .bind(i64::from(limit))
            .bind(i64::from(target))
            .fetch_all(self.pool())
            .await?;
        rows.into_iter()
            .map(|row| {
                Ok(ReindexRow {
                    person_id: id16(row.try_get("person_id")?)?,
                    kek_version: u32_of(row.try_get("kek_version")?)?,
                    dek_wrapped: row.try_get("dek_wrapped")?,
                    dek_version: u32_of(row.try_get("dek_version")?)?,
                    email: row.try_get("email")?,
                    phone: row.try_get("phone")?,
                })
            })
            .collect()
    }

    /// Writes blind-index entries under `target` in one statement, each only if its
    /// field still holds the ciphertext it was computed from, and saves the job.
    ///
    /// On PostgreSQL the field rows are share-locked until commit, so a rectification
    /// of the same field waits, then deletes the entry it no longer matches (it changes
    /// the value before it deletes the old entries); on SQLite writers are serialised.
    pub async fn apply_reindex(
        &self,
        batch: &[ReindexEntry],
        target: u32,
        job: &mut JobRecord,
        people: u64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.pool().begin().await?;
        if !batch.is_empty() {
            let lock = match self.backend() {
                Backend::Postgres => " FOR SHARE OF f",
                Backend::Sqlite => "",
            };
            // SQLite needs the WHERE to tell the upsert's ON CONFLICT from a join's ON.
            let sql = format!(
                "WITH v (person_id, field, digest, ciphertext) AS (VALUES {}) \
                 INSERT INTO blind_index (field, index_version, digest, person_id) \
                 SELECT v.field, $1, v.digest, v.person_id FROM v JOIN field_values f \
                 ON f.person_id = v.person_id AND f.field = v.field AND f.ciphertext = v.ciphertext \
                 WHERE 1 = 1{lock} ON CONFLICT DO NOTHING",
                placeholders(batch.len(), 4, 2)
            );
            let mut query = sqlx::query(&sql).bind(i64::from(target));
            for entry in batch {
                query = query
                    .bind(entry.person_id.to_vec())
                    .bind(entry.field.as_str())
                    .bind(entry.digest.to_vec())
                    .bind(entry.ciphertext.clone());
            }
            query.execute(&mut *tx).await?;
        }
        job.done += people;
        job.updated_at_ms = now_millis();
        save_job_in(&mut tx, job).await?;
        tx.commit().await
    }

    /// How far the erasure ledger has been applied to this database.
    pub async fn erasure_replay_seq(&self) -> Result<i64, sqlx::Error> {
        sqlx::query("SELECT ledger_seq FROM erasure_replay WHERE id = 1")
            .fetch_one(self.pool())
            .await?
            .try_get("ledger_seq")
    }

    /// Erases the ledgered people still present, records `audit_for` of each erased one
    /// and moves the replay mark to the last entry, in one transaction. Returns the
    /// entries whose person was erased.
    pub async fn replay_erasures(
        &self,
        entries: &[LedgerEntry],
        audit_for: impl Fn(&LedgerEntry) -> NewEntry,
    ) -> Result<Vec<LedgerEntry>, WriteError> {
        let Some(last) = entries.last() else { return Ok(Vec::new()) };
        let mut tx = self.pool().begin().await?;
        let mut erased = Vec::new();
        for entry in entries {
            let id = entry.person_id.to_vec();
            // As `Store::erase`: documents first, not relying on the foreign keys' cascade.
            sqlx::query(
                "DELETE FROM document_chunks WHERE document_id IN \
                 (SELECT document_id FROM documents WHERE person_id = $1)",
            )
            .bind(id.clone())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM documents WHERE person_id = $1").bind(id.clone()).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM field_values WHERE person_id = $1").bind(id.clone()).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM blind_index WHERE person_id = $1").bind(id.clone()).execute(&mut *tx).await?;
            let removed =
                sqlx::query("DELETE FROM persons WHERE person_id = $1").bind(id.clone()).execute(&mut *tx).await?;
            if removed.rows_affected() > 0 && !erased.iter().any(|e: &LedgerEntry| e.person_id == entry.person_id) {
                sqlx::query("INSERT INTO erasures (person_id, erased_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(now_millis())
                    .execute(&mut *tx)
                    .await?;
                erased.push(entry.clone());
            }
        }
        let audit: Vec<NewEntry> = erased.iter().map(&audit_for).collect();
        if !audit.is_empty() {
            AuditLedger::append_in(&mut tx, self.audit_backend(), &audit).await?;
        }
        sqlx::query("UPDATE erasure_replay SET ledger_seq = $1 WHERE id = 1").bind(last.seq).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(erased)
    }
}

async fn save_job_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, job: &JobRecord) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE key_jobs SET state = $2, target_version = $3, cursor = $4, pass = $5, done = $6, skipped = $7, \
         total = $8, rate_per_second = $9, updated_at = $10 WHERE kind = $1",
    )
    .bind(job.kind.as_str())
    .bind(if job.running { "running" } else { "finished" })
    .bind(i64::from(job.target_version))
    .bind(job.cursor.map(|c| c.to_vec()))
    .bind(i64::from(job.pass))
    .bind(i64_of(job.done))
    .bind(i64_of(job.skipped))
    .bind(i64_of(job.total))
    .bind(i64::from(job.rate_per_second))
    .bind(job.updated_at_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::placeholders;

    #[test]
    fn placeholders_number_rows_in_order() {
        assert_eq!(placeholders(2, 3, 1), "($1, $2, $3), ($4, $5, $6)");
        assert_eq!(placeholders(1, 2, 4), "($4, $5)");
    }
}
