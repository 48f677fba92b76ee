//! The person's rights (policy clause 3.1): access to everything held about them,
//! erasure, and their documents; and who may call the accounts service at all. Each
//! test runs on SQLite and on PostgreSQL.

mod common;

use common::*;
use qupia_api::accounts::v1::*;
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::{RevealRequest, lookup_request};
use qupia_api::types::v1::{DocumentKind, DocumentType, Purpose};
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{AccountsSuite, Backend, storage_test};
use tonic::Code;

storage_test!(an_export_holds_everything_about_the_person, export);
async fn export(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let registered = register(&suite, 0, &[(Purpose::Advertising, "")]).await;
    let mut accounts = suite.accounts_as("web").await;
    let read = profile(&suite, &registered.account_id).await.expect("a profile read");
    accounts
        .change_consent(ChangeConsentRequest {
            account_id: registered.account_id.clone(),
            action: ConsentAction::Withdraw as i32,
            purpose: Purpose::Advertising as i32,
            recipient: String::new(),
            policy_version: 0,
        })
        .await
        .expect("withdraw");

    let export = accounts
        .export_account(ExportAccountRequest { account_id: registered.account_id.clone() })
        .await
        .expect("export")
        .into_inner();
    assert_eq!(export.data, read.data, "their data, as the profile shows it");
    assert_eq!(export.account, read.account, "the account's own state");

    // Their documents, described.
    assert_eq!(export.documents.len(), 1);
    let scan = &export.documents[0];
    assert_eq!(scan.document_token, registered.identity_document_token);
    assert_eq!(scan.person_token, registered.person_token);
    assert_eq!(scan.kind, DocumentKind::Identity as i32);
    assert_eq!(scan.r#type, DocumentType::Pdf as i32);
    assert_eq!(scan.size_bytes, pdf(SCAN_MARKER).len() as u64);

    // Consents now, and their whole history.
    assert_eq!(export.consents.len(), 1);
    assert!(!export.consents[0].active, "withdrawn");
    let history: Vec<(i32, bool, &str)> =
        export.consent_history.iter().map(|e| (e.purpose, e.granted, e.channel.as_str())).collect();
    assert_eq!(
        history,
        vec![(Purpose::Advertising as i32, true, "registration"), (Purpose::Advertising as i32, false, "web")],
        "the grant at registration, then the withdrawal"
    );

    // Who accessed their data, when and why: the profile read is there, with its
    // caller, purpose and time, and so is the export's own read.
    let reads: Vec<_> =
        export.access_history.iter().filter(|e| e.operation == "reveal" && e.purpose == "service_delivery").collect();
    assert_eq!(reads.len(), 2, "the profile read and the export's read: {:?}", export.access_history);
    for entry in &reads {
        assert_eq!(entry.caller, ACCOUNTS);
        assert!(entry.allowed);
        assert_eq!(entry.person_token, registered.person_token);
        assert!(entry.at_ms >= read.account.as_ref().unwrap().registered_at_ms && entry.at_ms <= export.exported_at_ms);
    }
    assert!(export.access_history.iter().all(|e| e.person_token == registered.person_token), "theirs only");
    assert!(export.access_history.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");
    assert!(export.access_history.iter().any(|e| e.operation == "tokenize"), "the registration itself");
}

storage_test!(deleting_an_account_erases_the_person, delete);
async fn delete(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let registered = register(&suite, 1, &[(Purpose::Statistics, "")]).await;
    let other = register(&suite, 2, &[]).await;
    let mut accounts = suite.accounts_as("web").await;
    let deleted = accounts
        .delete_account(DeleteAccountRequest { account_id: registered.account_id.clone() })
        .await
        .expect("delete")
        .into_inner();
    assert!(deleted.deleted_at_ms > 0);

    let err = profile(&suite, &registered.account_id).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "the account was deleted");
    // Every token of the person answers NOT_FOUND at the gateway.
    let err = suite
        .suite
        .gateway_as("accounts")
        .await
        .reveal(RevealRequest {
            token: registered.person_token.clone(),
            purpose: Purpose::ServiceDelivery as i32,
            fields: vec![],
            recipient: String::new(),
            disclosure_request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the person token: {}", err.message());
    let err = DocumentServiceClient::new(suite.suite.channel_as("accounts").await)
        .download_document(qupia_api::gateway::v1::DownloadDocumentRequest {
            document_token: registered.identity_document_token.clone(),
            purpose: Purpose::Identification as i32,
            disclosure_request_id: String::new(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "the document token: {}", err.message());
    let (_, _, _, email, phone) = PEOPLE[1];
    for key in [sign_in_request::Key::Email(email.into()), sign_in_request::Key::Phone(phone.into())] {
        assert_eq!(sign_in(&suite, key).await.unwrap_err().code(), Code::NotFound, "sign-in finds nobody");
    }
    let found = suite
        .suite
        .gateway_as("accounts")
        .await
        .lookup(qupia_api::gateway::v1::LookupRequest { key: Some(lookup_request::Key::Email(email.into())) })
        .await
        .unwrap()
        .into_inner();
    assert!(found.person_tokens.is_empty(), "the vault's index forgot them too");

    // Only a tombstone is left: the id and the time.
    assert_eq!(count(&suite.db, "accounts").await, 1, "the other account stays");
    assert_eq!(count(&suite.db, "deleted_accounts").await, 1);
    let again =
        accounts.delete_account(DeleteAccountRequest { account_id: registered.account_id.clone() }).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(again.message(), "the account was already deleted");
    profile(&suite, &other.account_id).await.expect("the other person is untouched");
}

storage_test!(documents_are_the_accounts_own, documents);
async fn documents(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let first = register(&suite, 0, &[]).await;
    let second = register(&suite, 1, &[]).await;
    let mut accounts = suite.accounts_as("web").await;
    // Another account's document is not found through this one.
    let err = accounts
        .download_document(DownloadDocumentRequest {
            account_id: first.account_id.clone(),
            document_token: second.identity_document_token.clone(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = accounts
        .download_document(DownloadDocumentRequest {
            account_id: first.account_id.clone(),
            document_token: "qpd_not-a-token".into(),
        })
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("document_token:"), "{}", err.message());
    // Its own, by token.
    let mut stream = accounts
        .download_document(DownloadDocumentRequest {
            account_id: second.account_id.clone(),
            document_token: second.identity_document_token.clone(),
        })
        .await
        .expect("download by token")
        .into_inner();
    let mut size = 0;
    while let Some(message) = stream.message().await.expect("the stream") {
        if let Some(download_document_response::Part::Chunk(chunk)) = message.part {
            size += chunk.len();
        }
    }
    assert_eq!(size, pdf(SCAN_MARKER).len());
}

storage_test!(only_the_configured_callers_are_admitted, admission);
async fn admission(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let unknown = "acc_AAAAAAAAAAAAAAAAAAAAAA";
    for caller in ["marketing", "accounts", "gateway", "reporting"] {
        let mut client = suite.accounts_as(caller).await;
        let err = client.get_profile(GetProfileRequest { account_id: unknown.into() }).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}: {}", err.message());
        let err = client
            .register(tokio_stream::iter(messages(header(0, suite.policy_version, &[]), &pdf(SCAN_MARKER), None)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{caller} may not register people");
    }
    // The web front end and the operator's CLI get past admission (to an unknown account).
    for caller in ["web", "qupiactl"] {
        let err = suite
            .accounts_as(caller)
            .await
            .get_profile(GetProfileRequest { account_id: unknown.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{caller}: {}", err.message());
    }
    assert_nothing_stored(&suite).await;
    // A malformed account id is refused before anything is looked up.
    let err = profile(&suite, "acc_short").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "account_id: is not a well-formed account id");
}
