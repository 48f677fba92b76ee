//! Documents in the vault: sealed while they are received, stored in one transaction
//! with their access-log entry, and opened chunk by chunk on download only after the
//! download is in the access log.

use std::sync::Arc;

use qupia_audit::{NewEntry, Operation, Outcome};
use qupia_crypto::{DataKey, Token, TokenKind};
use qupia_domain::Purpose;
use zeroize::Zeroizing;

use super::{AccessRecord, Vault};
use crate::Error;
use crate::document::{self, ChunkPlace, ChunkSealer, DocumentKind, DocumentType, SNIFF_BYTES};
use crate::store::{DocumentRow, NewDocument};

/// How the access log names what a document operation touched.
const DOCUMENT_FIELD: &str = "document";

/// Chunks read from the database per query on download (1 MiB of content).
const CHUNKS_PER_READ: u32 = 16;

/// A document described for a caller: tokens, never ids.
#[derive(Debug, Clone)]
pub struct DocumentInfo {
    pub document_token: String,
    pub person_token: String,
    pub content_type: DocumentType,
    pub kind: DocumentKind,
    pub size_bytes: u64,
    pub uploaded_at_ms: i64,
}

/// What an upload's first message says.
#[derive(Debug, Clone)]
pub struct UploadHeader {
    pub person: Token,
    pub kind: DocumentKind,
    pub declared_type: Option<DocumentType>,
    pub declared_size: Option<u64>,
}

/// An upload being received: its content is sealed chunk by chunk as it arrives and
/// held, sealed, in memory; nothing touches the database until [`Vault::store_document`].
#[derive(Debug)]
pub struct DocumentUpload {
    dek: Arc<DataKey>,
    place: ChunkPlace,
    header: UploadHeader,
    limit: u64,
    sealer: ChunkSealer,
    /// The first bytes, kept (zeroized on drop) until the type is judged from them.
    sniff: Zeroizing<Vec<u8>>,
    judged: Option<DocumentType>,
}

impl DocumentUpload {
    /// Takes the next piece of content. Refuses at once, before sealing it, a piece that
    /// takes the document past the size limit or its declared size, and content whose
    /// first bytes are not a PDF, JPEG or PNG.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let total = self.sealer.total().saturating_add(bytes.len() as u64);
        if total > self.limit {
            return Err(Error::invalid("chunk", format!("the document is over the limit of {} bytes", self.limit)));
        }
        if let Some(declared) = self.header.declared_size
            && total > declared
        {
            return Err(Error::invalid("header.declared_size_bytes", "is smaller than the content"));
        }
        if self.judged.is_none() {
            let wanted = SNIFF_BYTES - self.sniff.len();
            self.sniff.extend_from_slice(&bytes[..wanted.min(bytes.len())]);
            if self.sniff.len() == SNIFF_BYTES {
                self.judge()?;
            }
        }
        self.sealer.push(&self.dek, bytes)
    }

    fn judge(&mut self) -> Result<(), Error> {
        let judged = document::judge_type(&self.sniff)?;
        if let Some(declared) = self.header.declared_type
            && declared != judged
        {
            return Err(Error::invalid(
                "header.declared_type",
                format!("does not match the content, which is {}", judged.as_str()),
            ));
        }
        self.judged = Some(judged);
        self.sniff.clear();
        Ok(())
    }

    /// Ends the upload: refuses an empty document and a declared size not reached, and
    /// seals the last chunk.
    pub fn finish(mut self) -> Result<SealedDocument, Error> {
        let size = self.sealer.total();
        if size == 0 {
            return Err(Error::invalid("chunk", "the document is empty"));
        }
        if let Some(declared) = self.header.declared_size
            && declared != size
        {
            return Err(Error::invalid("header.declared_size_bytes", "is larger than the content"));
        }
        if self.judged.is_none() {
            self.judge()?;
        }
        let content_type = self.judged.ok_or(Error::invalid("chunk", "the content type was not judged"))?;
        let chunks = self.sealer.finish(&self.dek)?;
        Ok(SealedDocument {
            document: NewDocument {
                document_id: self.place.document_id,
                person_id: self.place.person_id,
                kind: self.header.kind.as_str(),
                content_type: content_type.as_str(),
                size_bytes: size,
                dek_version: self.place.dek_version,
                chunks,
            },
            kind: self.header.kind,
            content_type,
        })
    }
}

/// A received, sealed document, ready to store.
#[derive(Debug)]
pub struct SealedDocument {
    document: NewDocument,
    kind: DocumentKind,
    content_type: DocumentType,
}

/// A download under way: the decision is in the access log and the data key is
/// unwrapped; chunks are read and opened one batch at a time.
#[derive(Debug)]
pub struct DocumentDownload {
    vault: Vault,
    dek: Arc<DataKey>,
    row: DocumentRow,
    place: ChunkPlace,
    info: DocumentInfo,
    next: u32,
    count: u32,
    batch: std::collections::VecDeque<(u32, Vec<u8>)>,
}

impl DocumentDownload {
    pub fn info(&self) -> &DocumentInfo {
        &self.info
    }

    /// The next chunk's plaintext, or `None` after the last. A chunk that is missing,
    /// out of place or fails authentication is [`Error::Integrity`]; so is a first chunk
    /// whose content is not of the stored type.
    pub async fn next_chunk(&mut self) -> Result<Option<Zeroizing<Vec<u8>>>, Error> {
        if self.next == self.count {
            return Ok(None);
        }
        if self.batch.is_empty() {
            let to = self.next.saturating_add(CHUNKS_PER_READ).min(self.count);
            self.batch = self.vault.store.document_chunks(&self.row.document_id, self.next, to).await?.into();
            if self.batch.is_empty() && self.vault.store.document_owner(&self.row.document_id).await?.is_none() {
                return Err(Error::NotFound("document"));
            }
        }
        let Some((index, sealed)) = self.batch.pop_front() else {
            // A dropped chunk row.
            return Err(Error::Integrity);
        };
        if index != self.next {
            return Err(Error::Integrity);
        }
        let plaintext = document::open_chunk(&self.dek, &self.place, self.row.size_bytes, index, &sealed)?;
        if index == 0
            && document::judge_type(&plaintext[..plaintext.len().min(SNIFF_BYTES)]).ok() != Some(self.info.content_type)
        {
            // The stored type was rewritten: the content says otherwise.
            return Err(Error::Integrity);
        }
        self.next += 1;
        Ok(Some(plaintext))
    }
}

/// An access-log entry about a document.
fn document_entry(
    access: &AccessRecord,
    operation: Operation,
    person: &str,
    outcome: Outcome,
    reason: &str,
) -> NewEntry {
    let mut entry = access.entry(operation, person, &[], reason);
    entry.fields = vec![DOCUMENT_FIELD.to_owned()];
    entry.outcome = outcome;
    entry
}

impl Vault {
    /// Starts an upload for a person who exists: the document gets its id and the
    /// person's data key is unwrapped to seal it.
    pub async fn begin_upload(&self, header: UploadHeader, limit: u64) -> Result<DocumentUpload, Error> {
        if header.person.kind() != TokenKind::Person {
            return Err(Error::invalid("header.person_token", "must be a person token"));
        }
        if let Some(declared) = header.declared_size {
            if declared == 0 {
                return Err(Error::invalid("chunk", "the document is empty"));
            }
            if declared > limit {
                return Err(Error::invalid(
                    "header.declared_size_bytes",
                    format!("is over the limit of {limit} bytes"),
                ));
            }
        }
        let person_id = *header.person.id();
        let key = self.store.person_key(&person_id).await?.ok_or(Error::NotFound("person"))?;
        let dek = self.unwrap_key(&person_id, &key)?;
        let place = ChunkPlace {
            person_id,
            document_id: *Token::generate(TokenKind::Document).id(),
            dek_version: key.dek_version,
        };
        Ok(DocumentUpload {
            dek,
            place,
            header,
            limit,
            sealer: ChunkSealer::new(place),
            sniff: Zeroizing::new(Vec::with_capacity(SNIFF_BYTES)),
            judged: None,
        })
    }

    /// Stores a sealed document with its access-log entry, in one transaction.
    pub async fn store_document(&self, access: &AccessRecord, sealed: SealedDocument) -> Result<DocumentInfo, Error> {
        let document = &sealed.document;
        let person_token = self.encode(TokenKind::Person, document.person_id);
        let document_token = self.encode(TokenKind::Document, document.document_id);
        let reason = format!(
            "stored document {document_token}: {} {}, {} bytes",
            sealed.kind.as_str(),
            sealed.content_type.as_str(),
            document.size_bytes
        );
        let entry = document_entry(access, Operation::DocumentUpload, &person_token, Outcome::Allowed, &reason);
        let uploaded_at_ms = self.store.insert_document(document, &entry).await?.ok_or(Error::NotFound("person"))?;
        Ok(DocumentInfo {
            document_token,
            person_token,
            content_type: sealed.content_type,
            kind: sealed.kind,
            size_bytes: document.size_bytes,
            uploaded_at_ms,
        })
    }

    /// Opens a download: only for the purposes that may see a document
    /// (identification, legal_disclosure under a request), and only after the decision
    /// is in the access log. Refusals are logged too.
    pub async fn open_download(&self, access: &AccessRecord, token: &Token) -> Result<DocumentDownload, Error> {
        if token.kind() != TokenKind::Document {
            return Err(Error::invalid("document_token", "must be a document token"));
        }
        let document_token = self.encode(TokenKind::Document, *token.id());
        let purpose_allows =
            access.purpose == Purpose::Identification.as_str() || access.purpose == Purpose::LegalDisclosure.as_str();
        if access.purpose == Purpose::LegalDisclosure.as_str() && access.request_id.is_empty() {
            return Err(Error::invalid("access.request_id", "is required for legal_disclosure"));
        }
        let found = self.store.document(token.id()).await?;
        let person_token =
            found.as_ref().map(|(row, _)| self.encode(TokenKind::Person, row.person_id)).unwrap_or_default();
        if !purpose_allows {
            // The gateway never asks this; if it does, the vault refuses on its own and
            // says so in the access log.
            let reason = format!(
                "document {document_token} not revealed: documents are only for identification or legal_disclosure"
            );
            let entry = document_entry(access, Operation::DocumentDownload, &person_token, Outcome::Denied, &reason);
            self.append_audit(&[entry]).await?;
            return Err(Error::PermissionDenied(format!(
                "documents are revealed only for identification or legal_disclosure, not {}",
                access.purpose
            )));
        }
        let Some((row, key)) = found else {
            let reason = format!("document {document_token} not revealed: not_found");
            let entry = document_entry(access, Operation::DocumentDownload, "", Outcome::Allowed, &reason);
            self.append_audit(&[entry]).await?;
            return Err(Error::NotFound("document"));
        };
        // Fail-closed: no byte is decrypted before the download is in the access log.
        let reason = format!("downloaded document {document_token}");
        let entry = document_entry(access, Operation::DocumentDownload, &person_token, Outcome::Allowed, &reason);
        self.append_audit(&[entry]).await?;

        let info = self.describe(&row)?;
        let count = u32::try_from(row.chunk_count).map_err(|_| Error::Integrity)?;
        if row.chunk_count != document::chunk_count(row.size_bytes) {
            // The stored size and chunk count disagree: one of them was rewritten.
            return Err(Error::Integrity);
        }
        let dek = self.unwrap_key(&row.person_id, &key)?;
        let place = ChunkPlace { person_id: row.person_id, document_id: row.document_id, dek_version: row.dek_version };
        Ok(DocumentDownload {
            vault: self.clone(),
            dek,
            row,
            place,
            info,
            next: 0,
            count,
            batch: std::collections::VecDeque::new(),
        })
    }

    /// A person's documents, described without decrypting anything. The listing is in
    /// the access log (operation `document_list`): it says which documents a person has,
    /// which is about them even though no content leaves.
    pub async fn list_documents(&self, access: &AccessRecord, person: &Token) -> Result<Vec<DocumentInfo>, Error> {
        if person.kind() != TokenKind::Person {
            return Err(Error::invalid("person_token", "must be a person token"));
        }
        let rows = self.store.documents_of(person.id()).await?.ok_or(Error::NotFound("person"))?;
        let person_token = self.encode(TokenKind::Person, *person.id());
        let reason = format!("listed {} documents; nothing decrypted", rows.len());
        let entry = document_entry(access, Operation::DocumentList, &person_token, Outcome::Allowed, &reason);
        self.append_audit(&[entry]).await?;
        rows.iter().map(|row| self.describe(row)).collect()
    }

    /// Destroys one document, with its access-log entry in the same transaction.
    pub async fn delete_document(&self, access: &AccessRecord, token: &Token) -> Result<(), Error> {
        if token.kind() != TokenKind::Document {
            return Err(Error::invalid("document_token", "must be a document token"));
        }
        let owner = self.store.document_owner(token.id()).await?.ok_or(Error::NotFound("document"))?;
        let person_token = self.encode(TokenKind::Person, owner);
        let reason = format!("deleted document {}", self.encode(TokenKind::Document, *token.id()));
        let entry = document_entry(access, Operation::DocumentDelete, &person_token, Outcome::Allowed, &reason);
        if !self.store.delete_document(token.id(), &entry).await? {
            return Err(Error::NotFound("document"));
        }
        Ok(())
    }

    /// The person token of a document's owner, if the document exists.
    pub async fn document_owner_token(&self, token: &Token) -> Result<Option<String>, Error> {
        if token.kind() != TokenKind::Document {
            return Ok(None);
        }
        Ok(self.store.document_owner(token.id()).await?.map(|owner| self.encode(TokenKind::Person, owner)))
    }

    fn describe(&self, row: &DocumentRow) -> Result<DocumentInfo, Error> {
        Ok(DocumentInfo {
            document_token: self.encode(TokenKind::Document, row.document_id),
            person_token: self.encode(TokenKind::Person, row.person_id),
            content_type: DocumentType::from_stored(&row.content_type).ok_or(Error::Integrity)?,
            kind: DocumentKind::from_stored(&row.kind).ok_or(Error::Integrity)?,
            size_bytes: row.size_bytes,
            uploaded_at_ms: row.uploaded_at,
        })
    }
}
