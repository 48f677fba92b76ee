//! Documents through the gateway, on SQLite and PostgreSQL: stored by the writers,
//! downloaded only for identification by the callers the policy allows, every refusal
//! in the access log, and no byte of a document in the gateway's database or logs.

mod common;

use common::*;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{DocumentType, Field, Purpose};
use qupia_test_support::captured_logs;
use qupia_test_support::{Backend, Suite, scan_database, scan_text, storage_test};
use sqlx::{Connection, Row};
use tonic::Code;

/// Text that stands for what a scan shows: it must never reach the gateway's database,
/// its logs, or the vault's database in clear.
const SCAN_TEXT: &str = "PASSPORT N 012345678 NURLANOVA AIGERIM SERIKKYZY";

/// A PDF-typed scan of `len` bytes with [`SCAN_TEXT`] written through it.
fn scan(len: usize) -> Vec<u8> {
    let mut bytes = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n".to_vec();
    while bytes.len() < len {
        bytes.extend_from_slice(b"BT /F1 12 Tf (");
        bytes.extend_from_slice(SCAN_TEXT.as_bytes());
        bytes.extend_from_slice(b") Tj ET\n");
        bytes.extend((0..200u32).map(|i| (i * 13 % 251) as u8));
    }
    bytes.truncate(len);
    bytes
}

async fn vault_count(suite: &Suite, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&suite.vault.db.admin_url).await.expect("connect to the vault db");
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

storage_test!(accounts_downloads_a_scan_for_identification, identification);
async fn identification(backend: Backend) {
    let logs = captured_logs();
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let mut accounts = suite.documents_as("accounts").await;

    // Sent as one 3 MiB message: the gateway passes it on in pieces the vault accepts.
    let content = scan(3 * 1024 * 1024 + 777);
    let stored = upload(&mut accounts, &person, &content, 3 * 1024 * 1024).await.expect("upload");
    assert_eq!(stored.person_token, person);
    assert_eq!(stored.size_bytes, content.len() as u64);
    assert_eq!(stored.r#type, DocumentType::Pdf as i32);

    let (info, decision_id, got) =
        download(&mut accounts, &stored.document_token, Purpose::Identification, "").await.expect("download");
    assert_eq!(info.document_token, stored.document_token);
    assert!(!decision_id.is_empty(), "the decision is named");
    assert!(got == content, "byte-identical ({} of {} bytes)", got.len(), content.len());

    let listed = accounts
        .list_documents(ListDocumentsRequest { person_token: person.clone() })
        .await
        .expect("list")
        .into_inner()
        .documents;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].document_token, stored.document_token);

    // The download is in the access log, under the person, with the gateway's decision.
    let entries = audit_of(&suite, &person).await;
    let downloads: Vec<_> = entries.iter().filter(|e| e.operation == "document_download").collect();
    assert_eq!(downloads.len(), 1);
    assert_eq!(downloads[0].caller, ACCOUNTS);
    assert_eq!(downloads[0].purpose, "identification");
    assert_eq!(downloads[0].decision_id, decision_id);
    assert_eq!(downloads[0].fields, ["document"]);
    assert!(entries.iter().any(|e| e.operation == "document_upload" && e.caller == ACCOUNTS));

    // Deleting, then the token answers NOT_FOUND.
    accounts
        .delete_document(DeleteDocumentRequest { document_token: stored.document_token.clone() })
        .await
        .expect("delete");
    let err = download(&mut accounts, &stored.document_token, Purpose::Identification, "").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);

    // Not one byte of the scan in the gateway's database, the logs, or the vault's
    // database in clear.
    let needles = [SCAN_TEXT, "NURLANOVA AIGERIM"];
    let leaks = scan_database(&suite.gateway_db, &needles).await;
    assert!(leaks.is_empty(), "{leaks:?}");
    let leaks = scan_database(&suite.vault.db, &needles).await;
    assert!(leaks.is_empty(), "{leaks:?}");
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!log_text.is_empty(), "logs were captured");
    let leaks = scan_text("logs", &log_text, &needles);
    assert!(leaks.is_empty(), "{leaks:?}");
}

/// A well-formed disclosure-request id that names no request.
const UNKNOWN_REQUEST: &str = "dr-00000000-0000-4000-8000-000000000000";

storage_test!(downloads_for_other_callers_and_purposes_are_denied_and_logged, denials);
async fn denials(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 1).await;
    let stored =
        upload(&mut suite.documents_as("accounts").await, &person, &scan(100_000), 40_000).await.expect("upload");

    let cases: [(&str, Purpose, &str, &str); 7] = [
        (
            "marketing",
            Purpose::Identification,
            "",
            "no policy permits spiffe://qupia/ns/default/sa/marketing to see document for identification",
        ),
        (
            "marketing",
            Purpose::Advertising,
            "",
            "documents are revealed only for identification or legal_disclosure, not advertising",
        ),
        (
            "accounts",
            Purpose::ServiceDelivery,
            "",
            "documents are revealed only for identification or legal_disclosure, not service_delivery",
        ),
        (
            "accounts",
            Purpose::LegalDisclosure,
            UNKNOWN_REQUEST,
            "no policy permits spiffe://qupia/ns/default/sa/accounts to see document for legal_disclosure",
        ),
        (
            "qupiactl",
            Purpose::LegalDisclosure,
            UNKNOWN_REQUEST,
            "no policy permits spiffe://qupia/ns/default/sa/qupiactl to see document for legal_disclosure",
        ),
        (
            "officer-a",
            Purpose::LegalDisclosure,
            UNKNOWN_REQUEST,
            "disclosure request dr-00000000-0000-4000-8000-000000000000 does not exist",
        ),
        (
            "officer-a",
            Purpose::LegalDisclosure,
            "",
            "legal disclosure requires the id of an approved disclosure request",
        ),
    ];
    for (caller, purpose, request_id, reason) in cases {
        let mut client = suite.documents_as(caller).await;
        let err = download(&mut client, &stored.document_token, purpose, request_id).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{caller} for {purpose:?}");
        assert_eq!(err.message(), reason, "{caller} for {purpose:?}");
    }

    // Every refusal is in the access log, filed under the document's owner.
    let entries = audit_of(&suite, &person).await;
    let refused: Vec<_> = entries.iter().filter(|e| e.operation == "document_download" && !e.allowed).collect();
    assert_eq!(refused.len(), 7, "{entries:#?}");
    for (entry, (caller, purpose, _, reason)) in refused.iter().zip(cases) {
        assert_eq!(entry.caller, format!("spiffe://qupia/ns/default/sa/{caller}"));
        assert_eq!(entry.purpose, qupia_api::convert::purpose(purpose as i32).expect("purpose").as_str());
        assert_eq!(entry.fields, ["document"]);
        assert!(entry.reason.contains(&stored.document_token) && entry.reason.ends_with(reason), "{}", entry.reason);
    }
    assert!(!entries.iter().any(|e| e.operation == "document_download" && e.allowed));

    // A forged document token is refused and the refusal recorded, not lost.
    let forged = format!("qpd_{}", "A".repeat(35));
    let mut marketing = suite.documents_as("marketing").await;
    let err = download(&mut marketing, &forged, Purpose::Identification, "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Malformed asks are refused before any decision.
    let mut accounts = suite.documents_as("accounts").await;
    let err = download(&mut accounts, &person, Purpose::Identification, "").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "a person token is not a document token");
    let err = download(&mut accounts, &stored.document_token, Purpose::Identification, "dr-1").await.unwrap_err();
    assert_eq!(err.message(), "disclosure_request_id: is only for legal_disclosure");
    let err = download(&mut accounts, &stored.document_token, Purpose::Unspecified, "").await.unwrap_err();
    assert_eq!(err.message(), "purpose: must name a purpose");

    // Marketing cannot reveal a name either: the document rule is the policy's, not a
    // hole in it.
    let err = reveal(&suite, "marketing", &person, Purpose::Identification, &[Field::Surname], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

storage_test!(only_writers_store_list_and_delete_documents, writers_only);
async fn writers_only(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 2).await;
    let mut marketing = suite.documents_as("marketing").await;
    let err = upload(&mut marketing, &person, &scan(10_000), 5_000).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = marketing.list_documents(ListDocumentsRequest { person_token: person.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    let mut accounts = suite.documents_as("accounts").await;
    let stored = upload(&mut accounts, &person, &scan(10_000), 5_000).await.expect("upload");
    let err = marketing
        .delete_document(DeleteDocumentRequest { document_token: stored.document_token.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(vault_count(&suite, "documents").await, 1, "only the writer's upload");
}

storage_test!(refused_or_broken_uploads_store_nothing, broken_uploads);
async fn broken_uploads(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let mut accounts = suite.documents_as("accounts").await;

    // The vault's refusals come back through the gateway as they were worded.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0".to_vec();
    elf.resize(8192, 0x90);
    let err = upload(&mut accounts, &person, &elf, 1000).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "chunk: the content is an executable or a script, not a PDF, JPEG or PNG");
    let err = accounts.upload_document(tokio_stream::iter(vec![chunk(&scan(1000))])).await.unwrap_err();
    assert_eq!(err.message(), "header: must be the first message");

    // A caller message too large for the gateway breaks the caller's stream half-way:
    // what was already passed on must not be stored as a shorter document.
    let content = scan(1024 * 1024);
    let messages =
        vec![header(&person, DocumentType::Unspecified), chunk(&content), chunk(&vec![0u8; 5 * 1024 * 1024])];
    let err = accounts.upload_document(tokio_stream::iter(messages)).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);

    // A complete upload afterwards is the only document stored.
    let stored = upload(&mut accounts, &person, &content, 200_000).await.expect("upload");
    let listed = accounts
        .list_documents(ListDocumentsRequest { person_token: person.clone() })
        .await
        .expect("list")
        .into_inner()
        .documents;
    assert_eq!(listed.iter().map(|d| d.document_token.as_str()).collect::<Vec<_>>(), [stored.document_token.as_str()]);
    assert_eq!(vault_count(&suite, "documents").await, 1);
}
