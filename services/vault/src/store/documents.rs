//! Every SQL statement about documents: their rows, their chunks, and their removal.
//!
//! A document is written in one transaction with its access-log entry, after the whole
//! upload has been received and sealed, so no transaction waits on a client's stream
//! (SQLite has a single connection) and a failed upload leaves nothing behind.

use qupia_audit::{AuditLedger, NewEntry};
use sqlx::Row;

use super::{PersonKey, Store, WriteError, id16, now_millis, u32_of};

/// Chunks per INSERT: a few hundred kilobytes per statement, few round trips.
const CHUNKS_PER_INSERT: usize = 8;

/// A sealed document to store.
#[derive(Debug)]
pub struct NewDocument {
    pub document_id: [u8; 16],
    pub person_id: [u8; 16],
    pub kind: &'static str,
    pub content_type: &'static str,
    pub size_bytes: u64,
    pub dek_version: u32,
    /// Sealed chunks, in order.
    pub chunks: Vec<Vec<u8>>,
}

/// A stored document, described without its content.
#[derive(Debug, Clone)]
pub struct DocumentRow {
    pub document_id: [u8; 16],
    pub person_id: [u8; 16],
    pub kind: String,
    pub content_type: String,
    pub size_bytes: u64,
    pub chunk_count: u64,
    pub dek_version: u32,
    pub uploaded_at: i64,
}

const DOCUMENT_COLUMNS: &str = "d.document_id, d.person_id, d.kind, d.content_type, d.size_bytes, d.chunk_count, \
     d.dek_version, d.uploaded_at";

fn document_row(row: &sqlx::any::AnyRow) -> Result<DocumentRow, sqlx::Error> {
    let count = |name: &str| -> Result<u64, sqlx::Error> {
        u64::try_from(row.try_get::<i64, _>(name)?)
            .map_err(|_| sqlx::Error::Decode("a stored document size is negative".into()))
    };
    Ok(DocumentRow {
        document_id: id16(row.try_get("document_id")?)?,
        person_id: id16(row.try_get("person_id")?)?,
        kind: row.try_get("kind")?,
        content_type: row.try_get("content_type")?,
        size_bytes: count("size_bytes")?,
        chunk_count: count("chunk_count")?,
        dek_version: u32_of(row.try_get("dek_version")?)?,
        uploaded_at: row.try_get("uploaded_at")?,
    })
}

impl Store {
    /// A person's wrapped data key, to seal a document under; `None` when there is no
    /// such person.
    pub async fn person_key(&self, person_id: &[u8; 16]) -> Result<Option<PersonKey>, sqlx::Error> {
        let row = sqlx::query("SELECT dek_wrapped, kek_version, dek_version FROM persons WHERE person_id = $1")
            .bind(person_id.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| {
            Ok(PersonKey {
                dek_wrapped: row.try_get("dek_wrapped")?,
                kek_version: u32_of(row.try_get("kek_version")?)?,
                dek_version: u32_of(row.try_get("dek_version")?)?,
            })
        })
        .transpose()
    }

    /// Stores a document, its chunks and its access-log entry in one transaction.
    /// Returns the upload time, or `None` (nothing written) when the person was erased
    /// while the document was being received.
    pub async fn insert_document(&self, document: &NewDocument, audit: &NewEntry) -> Result<Option<i64>, WriteError> {
        let uploaded_at = now_millis();
        let size = i64::try_from(document.size_bytes)
            .map_err(|_| sqlx::Error::Protocol("a document size does not fit a database integer".into()))?;
        let count = i64::try_from(document.chunks.len())
            .map_err(|_| sqlx::Error::Protocol("a chunk count does not fit a database integer".into()))?;
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 AS one FROM persons WHERE person_id = $1")
            .bind(document.person_id.to_vec())
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !exists {
            tx.rollback().await?;
            return Ok(None);
        }
        sqlx::query(
            "INSERT INTO documents \
             (document_id, person_id, kind, content_type, size_bytes, chunk_count, dek_version, uploaded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(document.document_id.to_vec())
        .bind(document.person_id.to_vec())
        .bind(document.kind)
        .bind(document.content_type)
        .bind(size)
        .bind(count)
        .bind(i64::from(document.dek_version))
        .bind(uploaded_at)
        .execute(&mut *tx)
        .await?;
        for (batch_number, batch) in document.chunks.chunks(CHUNKS_PER_INSERT).enumerate() {
            let first = batch_number * CHUNKS_PER_INSERT;
            let values: Vec<String> =
                (0..batch.len()).map(|i| format!("(${}, ${}, ${})", 3 * i + 1, 3 * i + 2, 3 * i + 3)).collect();
            let sql = format!(
                "INSERT INTO document_chunks (document_id, chunk_index, ciphertext) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for (offset, chunk) in batch.iter().enumerate() {
                let index = i64::try_from(first + offset)
                    .map_err(|_| sqlx::Error::Protocol("a chunk index does not fit a database integer".into()))?;
                query = query.bind(document.document_id.to_vec()).bind(index).bind(chunk.clone());
            }
            query.execute(&mut *tx).await?;
        }
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(Some(uploaded_at))
    }

    /// One document and its owner's wrapped data key.
    pub async fn document(&self, document_id: &[u8; 16]) -> Result<Option<(DocumentRow, PersonKey)>, sqlx::Error> {
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS}, p.dek_wrapped, p.kek_version, p.dek_version AS person_dek_version \
             FROM documents d JOIN persons p ON p.person_id = d.person_id WHERE d.document_id = $1"
        );
        let row = sqlx::query(&sql).bind(document_id.to_vec()).fetch_optional(&self.pool).await?;
        row.map(|row| {
            let key = PersonKey {
                dek_wrapped: row.try_get("dek_wrapped")?,
                kek_version: u32_of(row.try_get("kek_version")?)?,
                dek_version: u32_of(row.try_get("person_dek_version")?)?,
            };
            Ok((document_row(&row)?, key))
        })
        .transpose()
    }

    /// The owner of a document, if it exists.
    pub async fn document_owner(&self, document_id: &[u8; 16]) -> Result<Option<[u8; 16]>, sqlx::Error> {
        let row = sqlx::query("SELECT person_id FROM documents WHERE document_id = $1")
            .bind(document_id.to_vec())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| id16(row.try_get("person_id")?)).transpose()
    }

    /// The sealed chunks `from..to` of a document that exist, in order, with their
    /// indexes; a missing one is for the caller to notice.
    pub async fn document_chunks(
        &self,
        document_id: &[u8; 16],
        from: u32,
        to: u32,
    ) -> Result<Vec<(u32, Vec<u8>)>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT chunk_index, ciphertext FROM document_chunks \
             WHERE document_id = $1 AND chunk_index >= $2 AND chunk_index < $3 ORDER BY chunk_index",
        )
        .bind(document_id.to_vec())
        .bind(i64::from(from))
        .bind(i64::from(to))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|row| Ok((u32_of(row.try_get("chunk_index")?)?, row.try_get("ciphertext")?))).collect()
    }

    /// A person's documents, oldest first; `None` when there is no such person.
    pub async fn documents_of(&self, person_id: &[u8; 16]) -> Result<Option<Vec<DocumentRow>>, sqlx::Error> {
        let exists = sqlx::query("SELECT 1 AS one FROM persons WHERE person_id = $1")
            .bind(person_id.to_vec())
            .fetch_optional(&self.pool)
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        let sql = format!(
            "SELECT {DOCUMENT_COLUMNS} FROM documents d WHERE d.person_id = $1 ORDER BY d.uploaded_at, d.document_id"
        );
        let rows = sqlx::query(&sql).bind(person_id.to_vec()).fetch_all(&self.pool).await?;
        rows.iter().map(document_row).collect::<Result<Vec<_>, _>>().map(Some)
    }

    /// Deletes a document and its chunks, with its access-log entry, in one
    /// transaction. Returns false (nothing written) when there was no such document.
    pub async fn delete_document(&self, document_id: &[u8; 16], audit: &NewEntry) -> Result<bool, WriteError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM document_chunks WHERE document_id = $1")
            .bind(document_id.to_vec())
            .execute(&mut *tx)
            .await?;
        let removed = sqlx::query("DELETE FROM documents WHERE document_id = $1")
            .bind(document_id.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed == 0 {
            tx.rollback().await?;
            return Ok(false);
        }
        AuditLedger::append_in(&mut tx, self.audit_backend(), std::slice::from_ref(audit)).await?;
        tx.commit().await?;
        Ok(true)
    }
}
