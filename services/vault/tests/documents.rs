//! Documents in the vault on SQLite and PostgreSQL: byte-identical round trips, every
//! kind of tampering caught as DATA_LOSS, bad uploads refused with nothing stored,
//! erasure destroying documents, and downloads only for the purposes that allow them.

use base64::Engine;
use qupia_api::types::v1::{DocumentInfo, DocumentKind, DocumentType, Purpose};
use qupia_api::vault::v1::vault_document_service_client::VaultDocumentServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{Backend, VaultHarness, storage_test};
use qupia_vault::Limits;
use sqlx::{Connection, Row};
use tonic::Code;
use tonic::transport::Channel;

const CHUNK: usize = 64 * 1024;

/// Bytes that start as a real PDF does, then vary, so a misplaced chunk shows.
fn pdf(len: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n".to_vec();
    let mut state: u32 = 0x9e37_79b9;
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

fn jpeg() -> Vec<u8> {
    let mut bytes = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, b'J', b'F', b'I', b'F', 0x00, 0x01];
    bytes.extend((0..5000u32).map(|i| (i % 253) as u8));
    bytes.extend_from_slice(&[0xFF, 0xD9]);
    bytes
}

fn png() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x10\0\0\0\x10\x08\x02\0\0\0".to_vec();
    bytes.extend((0..3000u32).map(|i| (i * 7 % 256) as u8));
    bytes
}

fn elf() -> Vec<u8> {
    let mut bytes = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    bytes.resize(4096, 0x90);
    bytes
}

fn access(purpose: Purpose) -> Option<AccessContext> {
    Some(AccessContext {
        purpose: purpose as i32,
        decision_id: "test-decision".into(),
        caller: "spiffe://qupia/ns/default/sa/accounts".into(),
        ..Default::default()
    })
}

async fn person(vault: &VaultHarness, i: usize) -> String {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
    vault
        .gateway()
        .await
        .tokenize(TokenizeRequest {
            person: Some(PersonInput {
                surname: surname.into(),
                given_name: given_name.into(),
                patronymic: patronymic.into(),
                email: email.into(),
                phone: phone.into(),
            }),
            ..Default::default()
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
        .expect("tokens")
        .person_token
}

fn header(person: &str, kind: DocumentKind, declared_type: DocumentType, declared_size: u64) -> UploadDocumentRequest {
    UploadDocumentRequest {
        part: Some(upload_document_request::Part::Header(DocumentUploadHeader {
            person_token: person.into(),
            kind: kind as i32,
            declared_type: declared_type as i32,
            declared_size_bytes: declared_size,
        })),
        access: Some(AccessContext { caller: "spiffe://qupia/ns/default/sa/accounts".into(), ..Default::default() }),
    }
}

fn chunk(bytes: &[u8]) -> UploadDocumentRequest {
    UploadDocumentRequest { part: Some(upload_document_request::Part::Chunk(bytes.to_vec())), access: None }
}

/// The header, then `content` in pieces of `piece` bytes.
fn messages(person: &str, declared_type: DocumentType, content: &[u8], piece: usize) -> Vec<UploadDocumentRequest> {
    let mut messages = vec![header(person, DocumentKind::Identity, declared_type, content.len() as u64)];
    messages.extend(content.chunks(piece).map(chunk));
    messages
}

async fn upload(
    client: &mut VaultDocumentServiceClient<Channel>,
    messages: Vec<UploadDocumentRequest>,
) -> Result<DocumentInfo, tonic::Status> {
    let response = client.upload_document(tokio_stream::iter(messages)).await?.into_inner();
    Ok(response.document.expect("a stored document is described"))
}

/// A download's description, the content received, and the error that ended it, if any.
struct Downloaded {
    info: Option<DocumentInfo>,
    content: Vec<u8>,
    error: Option<tonic::Status>,
}

async fn download(
    client: &mut VaultDocumentServiceClient<Channel>,
    token: &str,
    purpose: Purpose,
) -> Result<Downloaded, tonic::Status> {
    let mut stream = client
        .download_document(DownloadDocumentRequest { document_token: token.into(), access: access(purpose) })
        .await?
        .into_inner();
    let mut downloaded = Downloaded { info: None, content: Vec::new(), error: None };
    loop {
        match stream.message().await {
            Ok(Some(message)) => match message.part {
                Some(download_document_response::Part::Info(info)) => {
                    assert!(downloaded.info.is_none() && downloaded.content.is_empty(), "the description comes first");
                    downloaded.info = Some(info);
                }
                Some(download_document_response::Part::Chunk(bytes)) => downloaded.content.extend_from_slice(&bytes),
                None => panic!("an empty download message"),
            },
            Ok(None) => break,
            Err(status) => {
                downloaded.error = Some(status);
                break;
            }
        }
    }
    Ok(downloaded)
}

async fn raw(vault: &VaultHarness) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&vault.db.admin_url).await.expect("raw connection")
}

async fn count(vault: &VaultHarness, sql: &str) -> i64 {
    let mut conn = raw(vault).await;
    sqlx::query(sql).fetch_one(&mut conn).await.expect("count").try_get("n").expect("n")
}

/// The 16-byte id inside a token (its text is a prefix, then base64url of id and tag).
fn token_id(token: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[4..]).expect("base64")[..16].to_vec()
}

storage_test!(documents_round_trip_byte_identical, round_trip);
async fn round_trip(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let owner = person(&vault, 0).await;
    let mut client = vault.documents_as("gateway").await;

    // A 10 MiB scan, sent in pieces that do not line up with the 64 KiB chunks.
    let scan = pdf(10 * 1024 * 1024);
    let info = upload(&mut client, messages(&owner, DocumentType::Pdf, &scan, 300_001)).await.expect("upload the scan");
    assert!(info.document_token.starts_with("qpd_"), "a document token");
    assert_eq!(info.person_token, owner);
    assert_eq!(info.r#type, DocumentType::Pdf as i32);
    assert_eq!(info.kind, DocumentKind::Identity as i32);
    assert_eq!(info.size_bytes, scan.len() as u64);
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM document_chunks").await, 160, "10 MiB in 64 KiB chunks");

    let got = download(&mut client, &info.document_token, Purpose::Identification).await.expect("download");
    assert!(got.error.is_none(), "{:?}", got.error);
    assert_eq!(got.info.as_ref().map(|i| &i.document_token), Some(&info.document_token));
    assert!(got.content == scan, "the scan comes back byte for byte ({} of {} bytes)", got.content.len(), scan.len());

    // Small images, without a declared type or size (both are optional).
    for (content, kind) in [(jpeg(), DocumentType::Jpeg), (png(), DocumentType::Png)] {
        let mut sent = messages(&owner, DocumentType::Unspecified, &content, 1000);
        if let Some(upload_document_request::Part::Header(h)) = &mut sent[0].part {
            h.declared_size_bytes = 0;
            h.kind = DocumentKind::Authorisation as i32;
        }
        let info = upload(&mut client, sent).await.expect("upload an image");
        assert_eq!(info.r#type, kind as i32, "the type is judged from the content");
        assert_eq!(info.kind, DocumentKind::Authorisation as i32);
        let got = download(&mut client, &info.document_token, Purpose::LegalDisclosure).await;
        // legal_disclosure needs the request the gateway approved it under.
        assert_eq!(got.err().map(|s| s.code()), Some(Code::InvalidArgument));
        let got = download(&mut client, &info.document_token, Purpose::Identification).await.expect("download");
        assert_eq!(got.content, content);
    }

    // The listing describes all three, decrypting nothing.
    let listed = client
        .list_documents(ListDocumentsRequest { person_token: owner.clone(), access: None })
        .await
        .expect("list")
        .into_inner()
        .documents;
    assert_eq!(listed.len(), 3);
    assert_eq!(listed.iter().map(|d| d.size_bytes).sum::<u64>(), (scan.len() + jpeg().len() + png().len()) as u64);

    // Each upload, download and listing is in the access log, under the person.
    for (operation, n) in [("document_upload", 3), ("document_download", 3), ("document_list", 1)] {
        let sql = format!(
            "SELECT COUNT(*) AS n FROM audit_log WHERE operation = '{operation}' AND person = '{owner}' \
             AND fields = 'document' AND decision = 'allowed'"
        );
        assert_eq!(count(&vault, &sql).await, n, "{operation}");
    }
}

/// What an attacker with database access does to one stored document.
#[derive(Debug, Clone, Copy)]
enum Tamper {
    ChangeChunk,
    DeleteChunk,
    SwapChunks,
    TruncateTail,
    RewriteType,
}

async fn tamper(vault: &VaultHarness, token: &str, how: Tamper) {
    let id = token_id(token);
    let mut conn = raw(vault).await;
    let read = |index: i64| {
        sqlx::query("SELECT ciphertext FROM document_chunks WHERE document_id = $1 AND chunk_index = $2")
            .bind(id.clone())
            .bind(index)
    };
    let write = |index: i64, bytes: Vec<u8>| {
        sqlx::query("UPDATE document_chunks SET ciphertext = $1 WHERE document_id = $2 AND chunk_index = $3")
            .bind(bytes)
            .bind(id.clone())
            .bind(index)
    };
    match how {
        Tamper::ChangeChunk => {
            let mut bytes: Vec<u8> = read(2).fetch_one(&mut conn).await.expect("read").get("ciphertext");
            bytes[100] ^= 0x01;
            write(2, bytes).execute(&mut conn).await.expect("change a chunk");
        }
        Tamper::DeleteChunk => {
            sqlx::query("DELETE FROM document_chunks WHERE document_id = $1 AND chunk_index = 2")
                .bind(id.clone())
                .execute(&mut conn)
                .await
                .expect("delete a chunk");
        }
        Tamper::SwapChunks => {
            let one: Vec<u8> = read(1).fetch_one(&mut conn).await.expect("read").get("ciphertext");
            let two: Vec<u8> = read(2).fetch_one(&mut conn).await.expect("read").get("ciphertext");
            write(1, two).execute(&mut conn).await.expect("swap");
            write(2, one).execute(&mut conn).await.expect("swap");
        }
        Tamper::TruncateTail => {
            // Cut the last two chunks and rewrite the count and size to match.
            sqlx::query("DELETE FROM document_chunks WHERE document_id = $1 AND chunk_index >= 3")
                .bind(id.clone())
                .execute(&mut conn)
                .await
                .expect("cut the tail");
            sqlx::query("UPDATE documents SET chunk_count = 3, size_bytes = $1 WHERE document_id = $2")
                .bind((3 * CHUNK) as i64)
                .bind(id.clone())
                .execute(&mut conn)
                .await
                .expect("rewrite the count");
        }
        Tamper::RewriteType => {
            sqlx::query("UPDATE documents SET content_type = 'png' WHERE document_id = $1")
                .bind(id.clone())
                .execute(&mut conn)
                .await
                .expect("rewrite the type");
        }
    }
}

storage_test!(tampered_documents_fail_with_data_loss, tampered);
async fn tampered(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let owner = person(&vault, 1).await;
    let mut client = vault.documents_as("gateway").await;
    // Five chunks: 4 full, one short.
    let content = pdf(4 * CHUNK + 1234);
    for how in [Tamper::ChangeChunk, Tamper::DeleteChunk, Tamper::SwapChunks, Tamper::TruncateTail, Tamper::RewriteType]
    {
        let info = upload(&mut client, messages(&owner, DocumentType::Pdf, &content, 50_000)).await.expect("upload");
        let intact = download(&mut client, &info.document_token, Purpose::Identification).await.expect("download");
        assert_eq!(intact.content, content, "{how:?}: intact before tampering");

        tamper(&vault, &info.document_token, how).await;
        let got = download(&mut client, &info.document_token, Purpose::Identification).await;
        let error = match got {
            Ok(got) => {
                // What was sent before the failure is a true prefix of the content,
                // never a byte of a misplaced chunk.
                assert!(got.content.len() < content.len(), "{how:?}: the whole document was sent");
                assert_eq!(got.content[..], content[..got.content.len()], "{how:?}: only authenticated bytes");
                got.error.unwrap_or_else(|| panic!("{how:?}: the stream ended without an error"))
            }
            Err(status) => status,
        };
        assert_eq!(error.code(), Code::DataLoss, "{how:?}: {error:?}");
        assert_eq!(error.message(), "a stored value failed its integrity check", "{how:?}");
    }
}

storage_test!(bad_uploads_are_refused_and_store_nothing, bad_uploads);
async fn bad_uploads(backend: Backend) {
    let limit = 256 * 1024;
    let vault = VaultHarness::start_with(backend, Limits { max_document_bytes: limit, ..Limits::default() }).await;
    let owner = person(&vault, 0).await;
    let mut client = vault.documents_as("gateway").await;
    let scan = pdf(100_000);

    let mut without_kind = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    if let Some(upload_document_request::Part::Header(h)) = &mut without_kind[0].part {
        h.kind = DocumentKind::Unspecified as i32;
    }
    let mut header_twice = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    header_twice.insert(3, header(&owner, DocumentKind::Identity, DocumentType::Pdf, scan.len() as u64));
    let mut empty_message = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    empty_message.insert(3, UploadDocumentRequest { part: None, access: None });
    let mut access_later = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    access_later[2].access = access(Purpose::Identification);
    let mut wrong_size = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    if let Some(upload_document_request::Part::Header(h)) = &mut wrong_size[0].part {
        h.declared_size_bytes = scan.len() as u64 + 1;
    }
    let mut smaller_size = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    if let Some(upload_document_request::Part::Header(h)) = &mut smaller_size[0].part {
        h.declared_size_bytes = 5000;
    }
    let oversize = pdf(limit as usize + 1);
    let mut oversize_undeclared = messages(&owner, DocumentType::Pdf, &oversize, 64 * 1024);
    if let Some(upload_document_request::Part::Header(h)) = &mut oversize_undeclared[0].part {
        h.declared_size_bytes = 0;
    }
    let mut missing_header = messages(&owner, DocumentType::Pdf, &scan, 10_000);
    missing_header.remove(0);

    let cases: Vec<(&str, Vec<UploadDocumentRequest>, &str)> = vec![
        (
            "an ELF renamed .pdf",
            messages(&owner, DocumentType::Pdf, &elf(), 1000),
            "chunk: the content is an executable",
        ),
        (
            "a script",
            messages(&owner, DocumentType::Pdf, b"#!/bin/sh\nrm -rf /\n", 1000),
            "chunk: the content is an executable",
        ),
        (
            "a GIF",
            messages(&owner, DocumentType::Unspecified, b"GIF89a\x01\0\x01\0\x80\0\0", 1000),
            "chunk: the content is not a PDF",
        ),
        (
            "a declared type that does not match",
            messages(&owner, DocumentType::Jpeg, &png(), 1000),
            "header.declared_type: does not match the content, which is png",
        ),
        ("a declared size the content passes", smaller_size, "header.declared_size_bytes: is smaller than the content"),
        (
            "a declared size the content does not reach",
            wrong_size,
            "header.declared_size_bytes: is larger than the content",
        ),
        (
            "an empty document",
            vec![header(&owner, DocumentKind::Identity, DocumentType::Pdf, 0)],
            "chunk: the document is empty",
        ),
        (
            "empty chunks only",
            vec![header(&owner, DocumentKind::Identity, DocumentType::Pdf, 0), chunk(b""), chunk(b"")],
            "chunk: the document is empty",
        ),
        ("no header", missing_header, "header: must be the first message"),
        ("no message at all", Vec::new(), "header: is required"),
        ("the header twice", header_twice, "header: must be sent once"),
        ("an empty message after the header", empty_message, "chunk: is required in every message after the header"),
        ("the access context after the header", access_later, "access: belongs on the first message only"),
        ("no kind", without_kind, "header.kind: must name a document kind"),
        (
            "over the limit, declared",
            messages(&owner, DocumentType::Pdf, &oversize, 64 * 1024),
            "header.declared_size_bytes: is over the limit of 262144 bytes",
        ),
        ("over the limit, undeclared", oversize_undeclared, "chunk: the document is over the limit of 262144 bytes"),
        (
            "a field token for the person",
            messages("qpf_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", DocumentType::Pdf, &scan, 10_000),
            "header.person_token",
        ),
    ];
    for (what, messages, expected) in cases {
        let err = upload(&mut client, messages).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().starts_with(expected), "{what}: {}", err.message());
    }

    // Exactly at the limit is accepted; nothing else was stored.
    let at_limit = pdf(limit as usize);
    let info =
        upload(&mut client, messages(&owner, DocumentType::Pdf, &at_limit, 100_000)).await.expect("at the limit");
    assert_eq!(info.size_bytes, limit);
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM documents").await, 1, "only the document at the limit");
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM document_chunks").await, 4);
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM audit_log WHERE operation = 'document_upload'").await, 1);

    // A person who does not exist.
    let erased = person(&vault, 2).await;
    vault.gateway().await.erase(EraseRequest { person_token: erased.clone(), access: None }).await.expect("erase");
    let err = upload(&mut client, messages(&erased, DocumentType::Pdf, &scan, 10_000)).await.expect_err("erased");
    assert_eq!(err.code(), Code::NotFound);
}

storage_test!(the_default_limit_is_twenty_mebibytes, default_limit);
async fn default_limit(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let owner = person(&vault, 0).await;
    let mut client = vault.documents_as("gateway").await;
    let limit = Limits::DEFAULT_MAX_DOCUMENT_BYTES as usize;
    assert_eq!(limit, 20 * 1024 * 1024);
    let mut content = pdf(limit + 1);
    let mut over = messages(&owner, DocumentType::Pdf, &content, 512 * 1024);
    if let Some(upload_document_request::Part::Header(h)) = &mut over[0].part {
        h.declared_size_bytes = 0;
    }
    let err = upload(&mut client, over).await.expect_err("one byte over the default limit");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "chunk: the document is over the limit of 20971520 bytes");
    content.pop();
    let info =
        upload(&mut client, messages(&owner, DocumentType::Pdf, &content, 512 * 1024)).await.expect("at the limit");
    assert_eq!(info.size_bytes, limit as u64);
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM documents").await, 1);
}

storage_test!(erasing_the_person_destroys_their_documents, erasure);
async fn erasure(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let owner = person(&vault, 0).await;
    let other = person(&vault, 1).await;
    let mut client = vault.documents_as("gateway").await;
    let scan = pdf(3 * CHUNK);
    let doc = upload(&mut client, messages(&owner, DocumentType::Pdf, &scan, 70_000)).await.expect("upload");
    let kept = upload(&mut client, messages(&other, DocumentType::Pdf, &scan, 70_000)).await.expect("upload");

    vault.gateway().await.erase(EraseRequest { person_token: owner.clone(), access: None }).await.expect("erase");

    let err = download(&mut client, &doc.document_token, Purpose::Identification).await.err().expect("not found");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .list_documents(ListDocumentsRequest { person_token: owner.clone(), access: None })
        .await
        .expect_err("the person is gone");
    assert_eq!(err.code(), Code::NotFound);
    let id = hex(&token_id(&doc.document_token));
    let rows =
        count(&vault, &format!("SELECT COUNT(*) AS n FROM document_chunks WHERE {}", id_matches(backend, &id))).await;
    assert_eq!(rows, 0, "no chunk of the erased person's document remains");
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM documents").await, 1, "only the other person's document");
    let got = download(&mut client, &kept.document_token, Purpose::Identification).await.expect("the other person's");
    assert_eq!(got.content, scan);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A WHERE clause matching a document id given in hex, in each backend's spelling.
fn id_matches(backend: Backend, hex: &str) -> String {
    match backend {
        Backend::Sqlite => format!("hex(document_id) = upper('{hex}')"),
        Backend::Postgres => format!("document_id = decode('{hex}', 'hex')"),
    }
}

storage_test!(downloads_only_for_identification_or_legal_disclosure, purposes);
async fn purposes(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let owner = person(&vault, 0).await;
    let mut client = vault.documents_as("gateway").await;
    let doc = upload(&mut client, messages(&owner, DocumentType::Png, &png(), 1000)).await.expect("upload");

    for purpose in [Purpose::ServiceDelivery, Purpose::Advertising, Purpose::Statistics] {
        let err = download(&mut client, &doc.document_token, purpose).await.err().expect("refused");
        assert_eq!(err.code(), Code::PermissionDenied, "{purpose:?}");
    }
    let denied = format!(
        "SELECT COUNT(*) AS n FROM audit_log WHERE operation = 'document_download' AND decision = 'denied' \
         AND person = '{owner}'"
    );
    assert_eq!(count(&vault, &denied).await, 3, "each refusal is in the access log");

    // Without the gateway's decision there is no download at all.
    let err = client
        .download_document(DownloadDocumentRequest { document_token: doc.document_token.clone(), access: None })
        .await
        .expect_err("no access context");
    assert_eq!(err.code(), Code::InvalidArgument);
    // A person token is not a document token; a forged one is refused before any work.
    for token in [owner.clone(), "qpd_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned()] {
        let err = download(&mut client, &token, Purpose::Identification).await.err().expect("refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{token}");
    }

    // Deleting: audited, then gone.
    client
        .delete_document(DeleteDocumentRequest { document_token: doc.document_token.clone(), access: None })
        .await
        .expect("delete");
    let err = download(&mut client, &doc.document_token, Purpose::Identification).await.err().expect("deleted");
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .delete_document(DeleteDocumentRequest { document_token: doc.document_token.clone(), access: None })
        .await
        .expect_err("deleted twice");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(count(&vault, "SELECT COUNT(*) AS n FROM document_chunks").await, 0);
    let deleted =
        format!("SELECT COUNT(*) AS n FROM audit_log WHERE operation = 'document_delete' AND person = '{owner}'");
    assert_eq!(count(&vault, &deleted).await, 1);

    // Only the gateway may call.
    let mut accounts = vault.documents_as("accounts").await;
    let err = accounts
        .list_documents(ListDocumentsRequest { person_token: owner.clone(), access: None })
        .await
        .expect_err("not the gateway");
    assert_eq!(err.code(), Code::PermissionDenied);
}
