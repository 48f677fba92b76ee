//! Disclosure to state bodies (policy clause 3.4), on SQLite and PostgreSQL: a request
//! filed by one officer counts only once a second officer approves it, reveals only
//! the people and fields it names and only before it expires, and the access log names
//! the request for every decision taken under it.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{Field, Purpose};
use qupia_test_support::{Backend, Suite, storage_test};
use sqlx::Connection;
use tonic::Code;

const OFFICER_A: &str = "spiffe://qupia/ns/default/sa/officer-a";
const OFFICER_B: &str = "spiffe://qupia/ns/default/sa/officer-b";

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as i64
}

fn request(people: &[&str], fields: &[Field], documents: bool, expires_in_ms: i64) -> CreateDisclosureRequest {
    CreateDisclosureRequest {
        authority: "Prosecutor's Office of Almaty".into(),
        legal_basis: "Criminal Procedure Code of the Republic of Kazakhstan, art. 122".into(),
        reference_number: "2-1704-26/4417".into(),
        person_tokens: people.iter().map(|p| (*p).to_owned()).collect(),
        fields: fields.iter().map(|f| *f as i32).collect(),
        documents,
        expires_at_ms: now_ms() + expires_in_ms,
    }
}

async fn create(suite: &Suite, as_: &str, request: CreateDisclosureRequest) -> Result<Disclosure, tonic::Status> {
    let response = suite.disclosures_as(as_).await.create_disclosure(request).await?.into_inner();
    Ok(response.disclosure.expect("the filed request"))
}

async fn approve(suite: &Suite, as_: &str, id: &str) -> Result<Disclosure, tonic::Status> {
    let response =
        suite.disclosures_as(as_).await.approve_disclosure(ApproveDisclosureRequest { id: id.into() }).await?;
    Ok(response.into_inner().disclosure.expect("the approved request"))
}

async fn get(suite: &Suite, id: &str) -> Disclosure {
    let response = suite.disclosures_as("qupiactl").await.get_disclosure(GetDisclosureRequest { id: id.into() }).await;
    response.expect("get the request").into_inner().disclosure.expect("the request")
}

async fn list(suite: &Suite, state: DisclosureState) -> Vec<Disclosure> {
    let request = ListDisclosuresRequest { state: state as i32, page_token: String::new(), limit: 0 };
    let response = suite.disclosures_as("qupiactl").await.list_disclosures(request).await;
    response.expect("list the register").into_inner().disclosures
}

async fn disclose(
    suite: &Suite,
    as_: &str,
    token: &str,
    fields: &[Field],
    request_id: &str,
) -> Result<Vec<(i32, String)>, tonic::Status> {
    let response = suite
        .gateway_as(as_)
        .await
        .reveal(RevealRequest {
            token: token.into(),
            purpose: Purpose::LegalDisclosure as i32,
            fields: fields.iter().map(|f| *f as i32).collect(),
            recipient: String::new(),
            disclosure_request_id: request_id.into(),
        })
        .await?
        .into_inner();
    Ok(response.values.into_iter().map(|v| (v.field, v.value)).collect())
}

fn a_scan() -> Vec<u8> {
    let mut pdf = b"%PDF-1.7\n".to_vec();
    pdf.extend((0..20_000u32).map(|i| (i * 7 % 251) as u8));
    pdf.extend_from_slice(b"\n%%EOF\n");
    pdf
}

storage_test!(an_approved_request_reveals_its_scope_and_nothing_else, approved_scope);
async fn approved_scope(backend: Backend) {
    let suite = Suite::start(backend).await;
    let named = register(&suite, 0).await;
    let other = register(&suite, 1).await;
    let scan = a_scan();
    let mut documents = suite.documents_as("accounts").await;
    let document = upload(&mut documents, &named, &scan, 8192).await.expect("upload a scan");

    let filed = create(&suite, "officer-a", request(&[&named], &[Field::Surname, Field::Email], true, 3_600_000))
        .await
        .expect("file a request");
    assert_eq!(filed.state, DisclosureState::Pending as i32);
    assert_eq!(filed.requested_by, OFFICER_A);
    assert_eq!(filed.person_tokens, std::slice::from_ref(&named));

    // Pending: nothing is revealed yet.
    let err = disclose(&suite, "officer-a", &named, &[], &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("has not been approved by a second officer"), "{}", err.message());

    // The filer cannot approve their own request; nor can anyone who is not an officer.
    let err = approve(&suite, "officer-a", &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let err = approve(&suite, "qupiactl", &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert_eq!(get(&suite, &filed.id).await.state, DisclosureState::Pending as i32, "refusals changed nothing");

    let approved = approve(&suite, "officer-b", &filed.id).await.expect("a second officer approves");
    assert_eq!(approved.state, DisclosureState::Approved as i32);
    assert_eq!(approved.approved_by, OFFICER_B);
    let err = approve(&suite, "officer-b", &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "approved once only");

    // Within scope: exactly the fields the request names, with the stored values.
    let expected = person(0);
    let values = disclose(&suite, "officer-a", &named, &[], &filed.id).await.expect("disclose within scope");
    assert_eq!(
        values,
        [(Field::Surname as i32, expected.surname.clone()), (Field::Email as i32, expected.email.clone())]
    );
    let values = disclose(&suite, "officer-b", &named, &[Field::Email], &filed.id).await.expect("one field");
    assert_eq!(values, [(Field::Email as i32, expected.email.clone())]);

    // Outside scope: another field, another person, no request, a caller who is no officer.
    let err = disclose(&suite, "officer-a", &named, &[Field::Phone], &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("phone is outside the scope of disclosure request {}", filed.id));
    let err = disclose(&suite, "officer-a", &other, &[], &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("the person is outside the scope of disclosure request {}", filed.id));
    let err = disclose(&suite, "officer-a", &named, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for caller in ["accounts", "marketing", "qupiactl"] {
        let err = disclose(&suite, caller, &named, &[], &filed.id).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}");
    }

    // A batch: the named person revealed, the other refused, in order.
    let batch = suite
        .gateway_as("officer-a")
        .await
        .batch_reveal(BatchRevealRequest {
            tokens: vec![named.clone(), other.clone()],
            purpose: Purpose::LegalDisclosure as i32,
            fields: vec![],
            recipient: String::new(),
            disclosure_request_id: filed.id.clone(),
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    assert!(matches!(&batch[0].result, Some(batch_reveal_result::Result::Revealed(r)) if r.values.len() == 2));
    assert!(
        matches!(&batch[1].result, Some(batch_reveal_result::Result::Error(e)) if e.code == Code::PermissionDenied as i32)
    );

    // The scan of the named person, byte for byte; nobody else's.
    let mut officer = suite.documents_as("officer-a").await;
    let (info, _, content) =
        download(&mut officer, &document.document_token, Purpose::LegalDisclosure, &filed.id).await.expect("download");
    assert_eq!(info.person_token, named);
    assert_eq!(content, scan);
    let other_document = upload(&mut documents, &other, &scan, 8192).await.expect("upload another scan");
    let err =
        download(&mut officer, &other_document.document_token, Purpose::LegalDisclosure, &filed.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("the document is outside the scope of disclosure request {}", filed.id));
    // A request without documents does not reach the scan.
    let fields_only =
        create(&suite, "officer-b", request(&[&named], &[Field::Surname], false, 3_600_000)).await.expect("file");
    approve(&suite, "officer-a", &fields_only.id).await.expect("approve");
    let err =
        download(&mut officer, &document.document_token, Purpose::LegalDisclosure, &fields_only.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().ends_with("does not include documents"), "{}", err.message());

    // The access log names the request on every decision taken under it.
    let entries = audit_of(&suite, &named).await;
    let allowed: Vec<_> = entries
        .iter()
        .filter(|e| e.allowed && e.purpose == "legal_disclosure")
        .filter(|e| e.operation == "reveal" || e.operation == "document_download")
        .collect();
    assert_eq!(allowed.len(), 4, "two reveals, one batch item and one download: {allowed:#?}");
    for entry in &allowed {
        assert_eq!(entry.request_id, filed.id);
        assert!([OFFICER_A, OFFICER_B].contains(&entry.caller.as_str()));
    }
    let refused_other: Vec<_> = audit_of(&suite, &other)
        .await
        .into_iter()
        .filter(|e| !e.allowed && e.purpose == "legal_disclosure" && e.operation == "reveal")
        .collect();
    assert_eq!(refused_other.len(), 2, "the single and the batch refusal");
    assert!(refused_other.iter().all(|e| e.request_id == filed.id));

    // The register shows both requests, newest first, by state.
    let approved_now = list(&suite, DisclosureState::Approved).await;
    assert_eq!(approved_now.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), [&fields_only.id, &filed.id]);
    assert!(list(&suite, DisclosureState::Pending).await.is_empty());
    let reviewed = get(&suite, &filed.id).await;
    assert_eq!(reviewed.authority, "Prosecutor's Office of Almaty");
    assert_eq!(reviewed.reference_number, "2-1704-26/4417");
    assert_eq!(reviewed.fields, [Field::Surname as i32, Field::Email as i32]);
    assert!(reviewed.documents);
}

storage_test!(an_expired_request_reveals_nothing, expired);
async fn expired(backend: Backend) {
    let suite = Suite::start(backend).await;
    let named = register(&suite, 0).await;
    let short = create(&suite, "officer-a", request(&[&named], &[Field::Surname], false, 1_500))
        .await
        .expect("file a short-lived request");
    approve(&suite, "officer-b", &short.id).await.expect("approve in time");
    disclose(&suite, "officer-a", &named, &[], &short.id).await.expect("revealed before expiry");
    let never_approved =
        create(&suite, "officer-a", request(&[&named], &[Field::Surname], false, 1_500)).await.expect("file");

    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let err = disclose(&suite, "officer-a", &named, &[], &short.id).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), format!("disclosure request {} has expired", short.id));
    let err = approve(&suite, "officer-b", &never_approved.id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "too late to approve");
    let expired = list(&suite, DisclosureState::Expired).await;
    assert_eq!(expired.len(), 2);
    assert!(list(&suite, DisclosureState::Approved).await.is_empty());

    let entries = audit_of(&suite, &named).await;
    let after: Vec<_> = entries.iter().filter(|e| e.purpose == "legal_disclosure").collect();
    assert_eq!(after.len(), 2);
    assert!(after[0].allowed && !after[1].allowed, "one reveal before expiry, one refusal after");
    assert!(after[1].reason.ends_with("has expired"));
}

storage_test!(bad_requests_are_refused_and_change_nothing, bad_requests);
async fn bad_requests(backend: Backend) {
    let suite = Suite::start(backend).await;
    let named = register(&suite, 0).await;
    let email = person(0).email;

    let mut contact_in_text = request(&[&named], &[Field::Surname], false, 60_000);
    contact_in_text.authority = format!("call {email}");
    let no_people = request(&[], &[Field::Surname], false, 60_000);
    let mut not_a_token = request(&[&named], &[Field::Surname], false, 60_000);
    not_a_token.person_tokens.push(email.clone());
    let cases = [
        (contact_in_text, "authority"),
        (no_people, "person_tokens"),
        (not_a_token, "person_tokens[1]"),
        (request(&[&named], &[], false, 60_000), "fields"),
        (request(&[&named], &[Field::Surname], false, -1), "expires_at_ms"),
        (request(&[&named], &[Field::Surname], false, 91 * 24 * 3_600_000), "expires_at_ms"),
    ];
    for (bad, field) in cases {
        let err = create(&suite, "officer-a", bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {}", err.message());
        assert!(err.message().starts_with(&format!("{field}:")), "{}", err.message());
        assert!(!err.message().contains(&email), "the refusal repeats no value");
    }
    let err = create(&suite, "marketing", request(&[&named], &[Field::Surname], false, 60_000)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = suite.disclosures_as("marketing").await.list_disclosures(ListDisclosuresRequest::default()).await;
    assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
    let err = approve(&suite, "officer-b", "dr-2026-17").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = approve(&suite, "officer-b", "dr-00000000-0000-4000-8000-000000000000").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = disclose(&suite, "officer-a", &named, &[], "dr-2026-17").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = suite
        .gateway_as("accounts")
        .await
        .reveal(RevealRequest {
            token: named.clone(),
            purpose: Purpose::ServiceDelivery as i32,
            fields: vec![],
            recipient: String::new(),
            disclosure_request_id: "dr-00000000-0000-4000-8000-000000000000".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "disclosure_request_id: is only for legal_disclosure");
    assert!(list(&suite, DisclosureState::Unspecified).await.is_empty(), "nothing was filed");

    // The register cannot be rewritten behind the gateway's back, and the database
    // itself refuses an approval by the filer.
    let filed = create(&suite, "officer-a", request(&[&named], &[Field::Surname], false, 60_000)).await.expect("file");
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&suite.gateway_db.url).await.expect("connect to the gateway db");
    let rewrite = sqlx::query("UPDATE disclosures SET expires_at_ms = expires_at_ms + 1000000").execute(&mut db).await;
    assert!(rewrite.is_err(), "the register is append-only");
    let forged =
        sqlx::query("INSERT INTO disclosure_approvals (disclosure_id, approved_by, approved_at_ms) VALUES ($1, $2, 1)")
            .bind(&filed.id)
            .bind(OFFICER_A)
            .execute(&mut db)
            .await;
    assert!(forged.is_err(), "the filer cannot approve, even in SQL");
    assert_eq!(get(&suite, &filed.id).await.state, DisclosureState::Pending as i32);
}
