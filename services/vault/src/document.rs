//! Documents as the vault keeps them: what kind and type a document is, how its type is
//! judged from its content (never from a name the uploader chose), and how its content
//! is cut into 64 KiB chunks, each sealed under the person's data key with its place in
//! the document bound as associated data (`qupia_crypto::chunk_aad`).
//!
//! Everything here holds plaintext document bytes only in buffers that zeroize
//! themselves, and no error message carries a byte of content.

use qupia_api::types::v1 as types;
use qupia_crypto::{DataKey, chunk_aad};
use zeroize::Zeroizing;

use crate::Error;

/// Plaintext bytes per chunk; every chunk but the last holds exactly this many.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// How much of the start of a document its type is judged from. Enough for every
/// signature `infer` knows; PDF in particular must start the document (see
/// [`judge_type`]).
pub const SNIFF_BYTES: usize = 1024;

/// What a document is, judged from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentType {
    Pdf,
    Jpeg,
    Png,
}

impl DocumentType {
    /// The stored name (`documents.content_type`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::Pdf => "pdf",
            DocumentType::Jpeg => "jpeg",
            DocumentType::Png => "png",
        }
    }

    pub fn from_stored(name: &str) -> Option<DocumentType> {
        [DocumentType::Pdf, DocumentType::Jpeg, DocumentType::Png].into_iter().find(|t| t.as_str() == name)
    }

    pub fn to_proto(self) -> types::DocumentType {
        match self {
            DocumentType::Pdf => types::DocumentType::Pdf,
            DocumentType::Jpeg => types::DocumentType::Jpeg,
            DocumentType::Png => types::DocumentType::Png,
        }
    }

    /// A declared type: `None` when the uploader left it unspecified.
    pub fn from_proto(value: i32, name: &str) -> Result<Option<DocumentType>, Error> {
        match types::DocumentType::try_from(value) {
            Ok(types::DocumentType::Unspecified) => Ok(None),
            Ok(types::DocumentType::Pdf) => Ok(Some(DocumentType::Pdf)),
            Ok(types::DocumentType::Jpeg) => Ok(Some(DocumentType::Jpeg)),
            Ok(types::DocumentType::Png) => Ok(Some(DocumentType::Png)),
            Err(_) => Err(Error::invalid(name, "is not a known document type")),
        }
    }
}

/// Why a document is held (policy clauses 1.6 and 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    Identity,
    Authorisation,
}

impl DocumentKind {
    /// The stored name (`documents.kind`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::Identity => "identity",
            DocumentKind::Authorisation => "authorisation",
        }
    }

    pub fn from_stored(name: &str) -> Option<DocumentKind> {
        [DocumentKind::Identity, DocumentKind::Authorisation].into_iter().find(|k| k.as_str() == name)
    }

    pub fn to_proto(self) -> types::DocumentKind {
        match self {
            DocumentKind::Identity => types::DocumentKind::Identity,
            DocumentKind::Authorisation => types::DocumentKind::Authorisation,
        }
    }

    pub fn from_proto(value: i32, name: &str) -> Result<DocumentKind, Error> {
        match types::DocumentKind::try_from(value) {
            Ok(types::DocumentKind::Identity) => Ok(DocumentKind::Identity),
            Ok(types::DocumentKind::Authorisation) => Ok(DocumentKind::Authorisation),
            Ok(types::DocumentKind::Unspecified) => Err(Error::invalid(name, "must name a document kind")),
            Err(_) => Err(Error::invalid(name, "is not a known document kind")),
        }
    }
}

/// Judges a document's type from its first bytes (up to [`SNIFF_BYTES`], or all of a
/// shorter document), with the signatures of the `infer` crate.
///
/// Only PDF, JPEG and PNG are accepted. Executables and scripts are named as such in the
/// refusal, whatever the uploader called the file. A PDF must start with `%PDF-`:
/// readers accept the header anywhere in the first kilobyte, which is exactly what lets
/// a file be an executable and a "PDF" at once.
pub fn judge_type(prefix: &[u8]) -> Result<DocumentType, Error> {
    if infer::is_app(prefix) || infer::text::is_shellscript(prefix) {
        return Err(Error::invalid("chunk", "the content is an executable or a script, not a PDF, JPEG or PNG"));
    }
    match infer::get(prefix).map(|kind| kind.mime_type()) {
        Some("application/pdf") if prefix.starts_with(b"%PDF-") => Ok(DocumentType::Pdf),
        Some("image/jpeg") => Ok(DocumentType::Jpeg),
        Some("image/png") => Ok(DocumentType::Png),
        _ => Err(Error::invalid("chunk", "the content is not a PDF, JPEG or PNG document")),
    }
}

/// How many chunks a document of `size` bytes is cut into.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64)
}

/// Where a document's chunks belong: the parts of their associated data that do not
/// change from chunk to chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlace {
    pub person_id: [u8; 16],
    pub document_id: [u8; 16],
    pub dek_version: u32,
}

impl ChunkPlace {
    fn aad(&self, index: u32, last: bool) -> Vec<u8> {
        chunk_aad(&self.person_id, &self.document_id, self.dek_version, index, last)
    }
}

/// Cuts a stream of bytes into chunks and seals each as soon as it is known whether
/// another follows: a full chunk is held until more bytes arrive (then it is not the
/// last) or the stream ends (then it is). The key is lent on each call rather than
/// kept, so the caller decides how long it lives.
#[derive(Debug)]
pub struct ChunkSealer {
    place: ChunkPlace,
    pending: Zeroizing<Vec<u8>>,
    sealed: Vec<Vec<u8>>,
    total: u64,
}

impl ChunkSealer {
    pub fn new(place: ChunkPlace) -> ChunkSealer {
        ChunkSealer { place, pending: Zeroizing::new(Vec::with_capacity(CHUNK_BYTES)), sealed: Vec::new(), total: 0 }
    }

    /// Plaintext bytes taken so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn push(&mut self, key: &DataKey, mut bytes: &[u8]) -> Result<(), Error> {
        while !bytes.is_empty() {
            if self.pending.len() == CHUNK_BYTES {
                // More bytes follow, so the held chunk is not the last.
                self.seal_pending(key, false)?;
            }
            let take = (CHUNK_BYTES - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            self.total += take as u64;
            bytes = &bytes[take..];
        }
        Ok(())
    }

    /// Seals what is held as the last chunk; the sealed chunks in order. An empty
    /// document has no chunk at all: callers refuse it before this.
    pub fn finish(mut self, key: &DataKey) -> Result<Vec<Vec<u8>>, Error> {
        if !self.pending.is_empty() {
            self.seal_pending(key, true)?;
        }
        Ok(self.sealed)
    }

    fn seal_pending(&mut self, key: &DataKey, last: bool) -> Result<(), Error> {
        let index = u32::try_from(self.sealed.len())
            .map_err(|_| Error::invalid("chunk", "the document has more chunks than the vault can number"))?;
        self.sealed.push(key.seal(&self.pending, &self.place.aad(index, last)));
        self.pending.clear();
        Ok(())
    }
}

/// Opens chunk `index` of a document of `size` bytes, and checks it holds exactly the
/// bytes its place calls for. Any failure is [`Error::Integrity`]: the stored document
/// was changed, cut, reordered or rewritten.
pub fn open_chunk(
    key: &DataKey,
    place: &ChunkPlace,
    size: u64,
    index: u32,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let count = chunk_count(size);
    let last = u64::from(index) + 1 == count;
    let plaintext = key.open(sealed, &place.aad(index, last)).map_err(|_| Error::Integrity)?;
    let expected = if last { size - u64::from(index) * CHUNK_BYTES as u64 } else { CHUNK_BYTES as u64 };
    if plaintext.len() as u64 != expected {
        return Err(Error::Integrity);
    }
    Ok(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLACE: ChunkPlace = ChunkPlace { person_id: [1; 16], document_id: [2; 16], dek_version: 1 };

    fn pdf(len: usize) -> Vec<u8> {
        let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
        bytes.extend((0..len.saturating_sub(bytes.len())).map(|i| (i * 31 % 251) as u8));
        bytes.truncate(len);
        bytes
    }

    /// Seals `content` fed in `pieces` pieces, then opens every chunk in place.
    fn round_trip(content: &[u8], pieces: usize) -> (usize, Vec<u8>) {
        let key = DataKey::generate();
        let mut sealer = ChunkSealer::new(PLACE);
        for piece in content.chunks(content.len().div_ceil(pieces).max(1)) {
            sealer.push(&key, piece).expect("push");
        }
        assert_eq!(sealer.total(), content.len() as u64);
        let sealed = sealer.finish(&key).expect("finish");
        let size = content.len() as u64;
        assert_eq!(sealed.len() as u64, chunk_count(size));
        let mut opened = Vec::new();
        for (i, chunk) in sealed.iter().enumerate() {
            opened.extend_from_slice(&open_chunk(&key, &PLACE, size, i as u32, chunk).expect("opens in place"));
        }
        (sealed.len(), opened)
    }

    #[test]
    fn content_round_trips_whatever_the_pieces_it_arrives_in() {
        for (len, pieces, chunks) in [
            (1, 1, 1),
            (CHUNK_BYTES - 1, 3, 1),
            (CHUNK_BYTES, 1, 1),
            (CHUNK_BYTES, 7, 1),
            (CHUNK_BYTES + 1, 2, 2),
            (3 * CHUNK_BYTES, 1000, 3),
            (3 * CHUNK_BYTES + 17, 5, 4),
        ] {
            let content = pdf(len);
            let (count, opened) = round_trip(&content, pieces);
            assert_eq!(count, chunks, "{len} bytes in {pieces} pieces");
            assert_eq!(opened, content, "{len} bytes in {pieces} pieces");
        }
    }

    #[test]
    fn a_chunk_out_of_place_or_cut_short_is_an_integrity_failure() {
        let key = DataKey::generate();
        let content = pdf(3 * CHUNK_BYTES + 5);
        let size = content.len() as u64;
        let mut sealer = ChunkSealer::new(PLACE);
        sealer.push(&key, &content).expect("push");
        let sealed = sealer.finish(&key).expect("finish");
        // Swapped: chunk 1 read as chunk 2.
        assert!(matches!(open_chunk(&key, &PLACE, size, 2, &sealed[1]), Err(Error::Integrity)));
        // Truncated: the document rewritten as three full chunks, chunk 2 now "the last".
        assert!(matches!(open_chunk(&key, &PLACE, 3 * CHUNK_BYTES as u64, 2, &sealed[2]), Err(Error::Integrity)));
        // The size rewritten, the chunks left alone: the last chunk's length gives it away.
        assert!(matches!(open_chunk(&key, &PLACE, size + 1, 3, &sealed[3]), Err(Error::Integrity)));
        // Another document's place.
        let other = ChunkPlace { document_id: [3; 16], ..PLACE };
        assert!(matches!(open_chunk(&key, &other, size, 0, &sealed[0]), Err(Error::Integrity)));
        // A flipped bit.
        let mut changed = sealed[0].clone();
        changed[40] ^= 1;
        assert!(matches!(open_chunk(&key, &PLACE, size, 0, &changed), Err(Error::Integrity)));
    }

    #[test]
    fn judges_the_three_accepted_types_from_their_signatures() {
        assert_eq!(judge_type(&pdf(2000)).expect("pdf"), DocumentType::Pdf);
        assert_eq!(
            judge_type(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10, b'J', b'F', b'I', b'F']).expect("jpeg"),
            DocumentType::Jpeg
        );
        assert_eq!(judge_type(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").expect("png"), DocumentType::Png);
    }

    #[test]
    fn refuses_executables_scripts_and_everything_else_without_echoing_content() {
        // A 64-bit ELF header is 64 bytes; "%PDF" inside it would satisfy a lenient reader.
        let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0%PDF-1.7".to_vec();
        elf.resize(64, 0);
        let pe = b"MZ\x90\0\x03\0\0\0\x04\0\0\0\xff\xff\0\0";
        let mach = b"\xcf\xfa\xed\xfe\x07\0\0\x01";
        let script = b"#!/bin/sh\n# %PDF-1.7\necho hi\n";
        for (what, bytes) in [("elf", &elf[..]), ("pe", &pe[..]), ("mach-o", &mach[..]), ("script", &script[..])] {
            let err = judge_type(bytes).expect_err(what);
            assert_eq!(
                err.to_string(),
                "chunk: the content is an executable or a script, not a PDF, JPEG or PNG",
                "{what}"
            );
        }
        // PDF readers would accept a header further in; the vault does not.
        let mut late = b"junk before the header ".to_vec();
        late.extend_from_slice(&pdf(100));
        for bytes in [&late[..], b"GIF89a\x01\0\x01\0", b"plain text, not a scan", b""] {
            let err = judge_type(bytes).expect_err("refused");
            assert_eq!(err.to_string(), "chunk: the content is not a PDF, JPEG or PNG document");
        }
    }

    #[test]
    fn stored_names_round_trip() {
        for t in [DocumentType::Pdf, DocumentType::Jpeg, DocumentType::Png] {
            assert_eq!(DocumentType::from_stored(t.as_str()), Some(t));
            assert_eq!(DocumentType::from_proto(t.to_proto() as i32, "t").expect("known"), Some(t));
        }
        for k in [DocumentKind::Identity, DocumentKind::Authorisation] {
            assert_eq!(DocumentKind::from_stored(k.as_str()), Some(k));
            assert_eq!(DocumentKind::from_proto(k.to_proto() as i32, "k").expect("known"), k);
        }
        assert!(DocumentKind::from_proto(0, "header.kind").is_err());
        assert_eq!(DocumentType::from_proto(0, "t").expect("unspecified"), None);
        assert!(DocumentType::from_proto(42, "t").is_err());
    }
}
