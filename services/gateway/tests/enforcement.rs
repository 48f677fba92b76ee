//! The gateway enforces the purpose policy and consent, and every decision is in the
//! access log. Each test runs on SQLite and on PostgreSQL.

mod common;

use common::*;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{Field, Purpose};
use qupia_test_support::{Backend, Suite, storage_test};
use tonic::Code;

const NAME_AND_CONTACTS: &[Field] = &[Field::Surname, Field::GivenName, Field::Patronymic, Field::Email, Field::Phone];
const CONTACTS: &[Field] = &[Field::Email, Field::Phone];

/// What the shipped policy lets each caller see for each purpose (DESIGN.md's table);
/// everything else is denied. Legal disclosure also needs an approved request, which
/// none of these calls has, so it is denied for everyone here.
fn allowed(caller: &str, purpose: Purpose) -> &'static [Field] {
    match (caller, purpose) {
        ("accounts", Purpose::ServiceDelivery | Purpose::Identification) => NAME_AND_CONTACTS,
        ("accounts", Purpose::Communication | Purpose::ThirdPartyTransfer) => CONTACTS,
        ("marketing", Purpose::Advertising) => CONTACTS,
        _ => &[],
    }
}

const PURPOSES: [Purpose; 7] = [
    Purpose::ServiceDelivery,
    Purpose::Identification,
    Purpose::Communication,
    Purpose::Advertising,
    Purpose::Statistics,
    Purpose::LegalDisclosure,
    Purpose::ThirdPartyTransfer,
];

storage_test!(caller_purpose_field_matrix, matrix);
async fn matrix(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let version = publish(&suite, &[]).await;
    // Consent everywhere it can be given, so that only the policy decides here.
    grant(&suite, &person, Purpose::Advertising, "", version).await;
    grant(&suite, &person, Purpose::Statistics, "", version).await;
    grant(&suite, &person, Purpose::ThirdPartyTransfer, "bank-a", version).await;

    for caller in ["accounts", "marketing", "qupiactl", "reporting"] {
        for purpose in PURPOSES {
            let recipient = if purpose == Purpose::ThirdPartyTransfer { "bank-a" } else { "" };
            let expected = allowed(caller, purpose);
            // Without naming fields: exactly the purpose's fields, or a denial.
            let outcome = reveal(&suite, caller, &person, purpose, &[], recipient).await;
            if expected.is_empty() {
                let err = outcome.expect_err(&format!("{caller} × {purpose:?} must be denied"));
                assert_eq!(err.code(), Code::PermissionDenied, "{caller} × {purpose:?}: {}", err.message());
            } else {
                let fields: Vec<i32> = outcome.expect("allowed").into_iter().map(|(f, _)| f).collect();
                let expected_fields: Vec<i32> = expected.iter().map(|f| *f as i32).collect();
                assert_eq!(fields, expected_fields, "{caller} × {purpose:?} returns exactly the purpose's fields");
            }
            // Naming each field: allowed only if the purpose allows it to this caller.
            for field in NAME_AND_CONTACTS {
                let outcome = reveal(&suite, caller, &person, purpose, &[*field], recipient).await;
                if expected.contains(field) {
                    let values = outcome.unwrap_or_else(|e| panic!("{caller} × {purpose:?} × {field:?}: {e}"));
                    assert_eq!(values.len(), 1);
                    assert_eq!(values[0].0, *field as i32);
                } else {
                    let err = outcome.expect_err(&format!("{caller} × {purpose:?} × {field:?} must be denied"));
                    assert_eq!(err.code(), Code::PermissionDenied);
                }
            }
        }
    }

    // Every one of those calls, denials included, is in the access log, with its
    // caller, purpose, decision and reason.
    let entries = audit_of(&suite, &person).await;
    let reveals: Vec<_> = entries.iter().filter(|e| e.operation == "reveal").collect();
    assert_eq!(reveals.len(), 4 * 7 * 6, "one entry per reveal call");
    let mut expected_allowed = 0;
    for caller in ["accounts", "marketing", "qupiactl", "reporting"] {
        for purpose in PURPOSES {
            let n = allowed(caller, purpose).len();
            let per_call = if n == 0 { 0 } else { 1 + n };
            expected_allowed += per_call;
            let logged: Vec<_> = reveals
                .iter()
                .filter(|e| {
                    e.caller.ends_with(&format!("/sa/{caller}"))
                        && format!("PURPOSE_{}", e.purpose.to_uppercase()) == purpose.as_str_name()
                })
                .collect();
            assert_eq!(logged.len(), 6, "{caller} × {purpose:?} logged six times");
            assert_eq!(logged.iter().filter(|e| e.allowed).count(), per_call, "{caller} × {purpose:?} allowed count");
        }
    }
    assert_eq!(reveals.iter().filter(|e| e.allowed).count(), expected_allowed);
    for entry in &reveals {
        assert!(!entry.reason.is_empty(), "every decision says why");
        assert!(!entry.decision_id.is_empty(), "every decision has an id");
        if entry.allowed {
            assert!(entry.reason.starts_with("permitted by"), "{}", entry.reason);
        }
    }
}

storage_test!(consent_gates_advertising_and_statistics, consent_flow);
async fn consent_flow(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 1).await;
    let version = publish(&suite, &[]).await;

    let denied = reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("no active consent for advertising"), "{}", denied.message());

    let consent_id = grant(&suite, &person, Purpose::Advertising, "", version).await;
    let values =
        reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.expect("allowed after a grant");
    assert_eq!(values.iter().map(|v| v.0).collect::<Vec<_>>(), vec![Field::Email as i32, Field::Phone as i32]);

    withdraw(&suite, &person, Purpose::Advertising).await;
    let denied = reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "the very next call after a withdrawal is denied");
    assert!(denied.message().contains("withdrawn"), "{}", denied.message());

    // Re-consent under a new version: older consents stop counting for the purposes it names only.
    let version = publish(&suite, &[]).await;
    grant(&suite, &person, Purpose::Advertising, "", version).await;
    grant(&suite, &person, Purpose::ThirdPartyTransfer, "bank-a", version).await;
    reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.expect("consented again");
    let version3 = publish(&suite, &[Purpose::Advertising]).await;
    let denied = reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    assert!(denied.message().contains("re-consent"), "{}", denied.message());
    reveal(&suite, "accounts", &person, Purpose::ThirdPartyTransfer, &[], "bank-a")
        .await
        .expect("a purpose the new version does not name keeps its consent");
    grant(&suite, &person, Purpose::Advertising, "", version3).await;
    reveal(&suite, "marketing", &person, Purpose::Advertising, &[], "").await.expect("consented under the new version");

    // Statistics never reveals a value, consent or not.
    grant(&suite, &person, Purpose::Statistics, "", version3).await;
    let err = reveal(&suite, "marketing", &person, Purpose::Statistics, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // The access log has each call with its caller, purpose, decision and reason.
    let reveals: Vec<_> = audit_of(&suite, &person).await.into_iter().filter(|e| e.operation == "reveal").collect();
    let summary: Vec<(&str, &str, bool)> =
        reveals.iter().map(|e| (e.caller.as_str(), e.purpose.as_str(), e.allowed)).collect();
    assert_eq!(
        summary,
        vec![
            (MARKETING, "advertising", false),
            (MARKETING, "advertising", true),
            (MARKETING, "advertising", false),
            (MARKETING, "advertising", true),
            (MARKETING, "advertising", false),
            (ACCOUNTS, "third_party_transfer", true),
            (MARKETING, "advertising", true),
            (MARKETING, "statistics", false),
        ]
    );
    assert!(reveals[0].reason.contains("no consent recorded"));
    assert_eq!(reveals[1].consent_id, consent_id, "the allowed reveal names the consent it relied on");
    assert!(reveals[2].reason.contains("withdrawn"));
    assert!(reveals[4].reason.contains("re-consent"));
}

storage_test!(batch_reveal_denies_per_item, batch_consent);
async fn batch_consent(backend: Backend) {
    let suite = Suite::start(backend).await;
    let version = publish(&suite, &[]).await;
    let a = register(&suite, 0).await;
    let b = register(&suite, 1).await;
    let c = register(&suite, 2).await;
    grant(&suite, &a, Purpose::Advertising, "", version).await;
    grant(&suite, &c, Purpose::Advertising, "", version).await;
    let response = suite
        .gateway_as("marketing")
        .await
        .batch_reveal(BatchRevealRequest {
            tokens: vec![a.clone(), b.clone(), c.clone()],
            purpose: Purpose::Advertising as i32,
            fields: vec![],
            recipient: String::new(),
            disclosure_request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let outcome: Vec<Result<Vec<String>, i32>> = response
        .results
        .into_iter()
        .map(|r| match r.result.unwrap() {
            batch_reveal_result::Result::Revealed(v) => Ok(v.values.into_iter().map(|v| v.value).collect()),
            batch_reveal_result::Result::Error(e) => Err(e.code),
        })
        .collect();
    let people = qupia_test_support::people::PEOPLE;
    assert_eq!(
        outcome,
        vec![
            Ok(vec![people[0].3.to_owned(), people[0].4.to_owned()]),
            Err(Code::PermissionDenied as i32),
            Ok(vec![people[2].3.to_owned(), people[2].4.to_owned()]),
        ]
    );
}

storage_test!(lookup_is_identification, lookup);
async fn lookup(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let found = suite
        .gateway_as("accounts")
        .await
        .lookup(LookupRequest { key: Some(lookup_request::Key::Phone("8 (701) 123-45-67".into())) })
        .await
        .unwrap()
        .into_inner()
        .person_tokens;
    assert_eq!(found, vec![person.clone()]);
    let denied = suite
        .gateway_as("marketing")
        .await
        .lookup(LookupRequest { key: Some(lookup_request::Key::Email(qupia_test_support::people::PEOPLE[0].3.into())) })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let entries = audit_of(&suite, &person).await;
    assert!(
        entries
            .iter()
            .any(|e| e.operation == "lookup" && e.allowed && e.caller == ACCOUNTS && e.purpose == "identification")
    );
}
