//! Helpers shared by the gateway's tests.
#![allow(dead_code)]

use qupia_api::audit::v1::{AuditEntry, AuditFilter, QueryAuditRequest};
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{DocumentInfo, DocumentKind, DocumentType, Field, Purpose};
use qupia_api::vault::v1::{DocumentUploadHeader, PersonInput};
use qupia_test_support::Suite;
use qupia_test_support::people::PEOPLE;
use tonic::transport::Channel;

pub const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";
pub const MARKETING: &str = "spiffe://qupia/ns/default/sa/marketing";

pub fn person(i: usize) -> PersonInput {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
    PersonInput {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: patronymic.into(),
        email: email.into(),
        phone: phone.into(),
    }
}

/// Stores person `i` through the gateway as the accounts service; returns the person token.
pub async fn register(suite: &Suite, i: usize) -> String {
    suite
        .gateway_as("accounts")
        .await
        .tokenize(TokenizeRequest { person: Some(person(i)), idempotency_key: String::new() })
        .await
        .expect("tokenize through the gateway")
        .into_inner()
        .tokens
        .expect("tokens")
        .person_token
}

pub async fn publish(suite: &Suite, reconsent: &[Purpose]) -> i64 {
    suite
        .consents_as("qupiactl")
        .await
        .publish_policy_version(PublishPolicyVersionRequest {
            text_sha256: format!("{:064x}", reconsent.len() + 1),
            reconsent_purposes: reconsent.iter().map(|p| *p as i32).collect(),
        })
        .await
        .expect("publish a policy version")
        .into_inner()
        .version
        .expect("version")
        .version
}

pub async fn grant(suite: &Suite, person: &str, purpose: Purpose, recipient: &str, version: i64) -> String {
    suite
        .consents_as("accounts")
        .await
        .grant_consent(GrantConsentRequest {
            person_token: person.into(),
            purpose: purpose as i32,
            recipient: recipient.into(),
            policy_version: version,
            channel: "web".into(),
            evidence: "form-2026-001".into(),
            expires_at_ms: 0,
        })
        .await
        .expect("grant consent")
        .into_inner()
        .event
        .expect("event")
        .id
}

pub async fn withdraw(suite: &Suite, person: &str, purpose: Purpose) {
    suite
        .consents_as("accounts")
        .await
        .withdraw_consent(WithdrawConsentRequest {
            person_token: person.into(),
            purpose: purpose as i32,
            recipient: String::new(),
            channel: "web".into(),
            evidence: "form-2026-002".into(),
        })
        .await
        .expect("withdraw consent");
}

pub async fn reveal(
    suite: &Suite,
    caller: &str,
    token: &str,
    purpose: Purpose,
    fields: &[Field],
    recipient: &str,
) -> Result<Vec<(i32, String)>, tonic::Status> {
    let response = suite
        .gateway_as(caller)
        .await
        .reveal(RevealRequest {
            token: token.into(),
            purpose: purpose as i32,
            fields: fields.iter().map(|f| *f as i32).collect(),
            recipient: recipient.into(),
            disclosure_request_id: String::new(),
        })
        .await?
        .into_inner();
    Ok(response.values.into_iter().map(|v| (v.field, v.value)).collect())
}

/// Every access-log entry about `person`, oldest first.
pub async fn audit_of(suite: &Suite, person: &str) -> Vec<AuditEntry> {
    suite
        .audit_as("qupiactl")
        .await
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { person_token: person.into(), ..Default::default() }),
            after_seq: 0,
            limit: 1000,
        })
        .await
        .expect("query the access log")
        .into_inner()
        .entries
}

pub fn header(person: &str, declared_type: DocumentType) -> UploadDocumentRequest {
    UploadDocumentRequest {
        part: Some(upload_document_request::Part::Header(DocumentUploadHeader {
            person_token: person.into(),
            kind: DocumentKind::Identity as i32,
            declared_type: declared_type as i32,
            declared_size_bytes: 0,
        })),
    }
}

pub fn chunk(bytes: &[u8]) -> UploadDocumentRequest {
    UploadDocumentRequest { part: Some(upload_document_request::Part::Chunk(bytes.to_vec())) }
}

pub async fn upload(
    client: &mut DocumentServiceClient<Channel>,
    person: &str,
    content: &[u8],
    piece: usize,
) -> Result<DocumentInfo, tonic::Status> {
    let mut messages = vec![header(person, DocumentType::Pdf)];
    messages.extend(content.chunks(piece).map(chunk));
    let response = client.upload_document(tokio_stream::iter(messages)).await?.into_inner();
    Ok(response.document.expect("a stored document is described"))
}

/// The first message's description and decision id, and the content.
pub async fn download(
    client: &mut DocumentServiceClient<Channel>,
    token: &str,
    purpose: Purpose,
    disclosure_request_id: &str,
) -> Result<(DocumentInfo, String, Vec<u8>), tonic::Status> {
    let mut stream = client
        .download_document(DownloadDocumentRequest {
            document_token: token.into(),
            purpose: purpose as i32,
            disclosure_request_id: disclosure_request_id.into(),
        })
        .await?
        .into_inner();
    let first = stream.message().await?.expect("a first message");
    let Some(download_document_response::Part::Info(info)) = first.part else { panic!("the description comes first") };
    let mut content = Vec::new();
    while let Some(message) = stream.message().await? {
        match message.part {
            Some(download_document_response::Part::Chunk(bytes)) => content.extend_from_slice(&bytes),
            other => panic!("expected content, got {other:?}"),
        }
    }
    Ok((info, first.decision_id, content))
}
