//! Helpers shared by the accounts service's tests: registration requests built from
//! the test people, test documents, and raw counts of what each database holds.
#![allow(dead_code)]

use qupia_api::accounts::v1::*;
use qupia_api::types::v1::Purpose;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{AccountsSuite, TestDb};
use sqlx::{Connection, Row};

pub const ACCOUNTS: &str = "spiffe://qupia/ns/default/sa/accounts";

/// Marks the content of every test scan, so that a byte scan can look for it.
pub const SCAN_MARKER: &str = "QUPIA-TEST-IDENTITY-SCAN-5b1e0c7d";
pub const AUTHORITY_MARKER: &str = "QUPIA-TEST-AUTHORITY-LETTER-93af21";

/// A small but well-formed PDF whose content carries `marker`, padded past one gRPC
/// message so that it travels in several chunks.
pub fn pdf(marker: &str) -> Vec<u8> {
    let mut pdf = format!(
        "%PDF-1.4\n% {marker}\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
         2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
         3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] >> endobj\n"
    )
    .into_bytes();
    let line = format!("% {marker} padding\n");
    while pdf.len() < 300 * 1024 {
        pdf.extend_from_slice(line.as_bytes());
    }
    pdf.extend_from_slice(b"trailer << /Root 1 0 R >>\n%%EOF\n");
    pdf
}

/// The registration header of test person `i`, attesting their own data, under
/// `policy_version`, with the consents given.
pub fn header(i: usize, policy_version: i64, consents: &[(Purpose, &str)]) -> RegistrationHeader {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
    RegistrationHeader {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: patronymic.into(),
        email: email.into(),
        phone: phone.into(),
        consents: consents
            .iter()
            .map(|(purpose, recipient)| ConsentChoice { purpose: *purpose as i32, recipient: (*recipient).into() })
            .collect(),
        policy_version,
        attestation: Attestation::OwnData as i32,
        idempotency_key: String::new(),
    }
}

/// The messages of a registration: the header, then each document in 64 KiB pieces.
pub fn messages(header: RegistrationHeader, identity: &[u8], authorisation: Option<&[u8]>) -> Vec<RegisterRequest> {
    use register_request::Part;
    let mut messages = vec![RegisterRequest { part: Some(Part::Header(header)) }];
    for chunk in identity.chunks(64 * 1024) {
        messages.push(RegisterRequest { part: Some(Part::IdentityDocumentChunk(chunk.to_vec())) });
    }
    for chunk in authorisation.unwrap_or_default().chunks(64 * 1024) {
        messages.push(RegisterRequest { part: Some(Part::AuthorisationDocumentChunk(chunk.to_vec())) });
    }
    messages
}

/// Sends a registration as the web front end.
pub async fn register_messages(
    suite: &AccountsSuite,
    messages: Vec<RegisterRequest>,
) -> Result<RegisterResponse, tonic::Status> {
    let mut client = suite.accounts_as("web").await;
    client.register(tokio_stream::iter(messages)).await.map(tonic::Response::into_inner)
}

/// Registers test person `i` with a scan and the consents given.
pub async fn register(suite: &AccountsSuite, i: usize, consents: &[(Purpose, &str)]) -> RegisterResponse {
    let header = header(i, suite.policy_version, consents);
    register_messages(suite, messages(header, &pdf(SCAN_MARKER), None)).await.expect("register")
}

pub async fn profile(suite: &AccountsSuite, account_id: &str) -> Result<GetProfileResponse, tonic::Status> {
    suite
        .accounts_as("web")
        .await
        .get_profile(GetProfileRequest { account_id: account_id.into() })
        .await
        .map(tonic::Response::into_inner)
}

pub async fn sign_in(suite: &AccountsSuite, key: sign_in_request::Key) -> Result<Vec<Account>, tonic::Status> {
    suite.accounts_as("web").await.sign_in(SignInRequest { key: Some(key) }).await.map(|r| r.into_inner().accounts)
}

/// Rows in `table`, read straight from a database as an operator would.
pub async fn count(db: &TestDb, table: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.admin_url).await.expect("connect to a test database");
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count rows")
        .try_get("n")
        .expect("n")
}

/// Asserts that nothing of a registration was kept anywhere: no account, no person in
/// the vault (no key, no field value).
pub async fn assert_nothing_stored(suite: &AccountsSuite) {
    assert_eq!(count(&suite.db, "accounts").await, 0, "no account row");
    assert_eq!(count(&suite.suite.vault.db, "persons").await, 0, "no person in the vault");
    assert_eq!(count(&suite.suite.vault.db, "field_values").await, 0, "no field value in the vault");
}
