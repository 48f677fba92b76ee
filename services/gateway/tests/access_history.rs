//! A person's access history: the access-log entries about them and nobody else, for
//! the writers and the security team only. Each test runs on SQLite and PostgreSQL.

mod common;

use common::*;
use qupia_api::gateway::v1::{GetAccessHistoryRequest, GetAccessHistoryResponse};
use qupia_api::types::v1::Purpose;
use qupia_test_support::{Backend, Suite, storage_test};
use tonic::Code;

async fn history(
    suite: &Suite,
    caller: &str,
    person: &str,
    after_seq: i64,
    limit: u32,
) -> Result<GetAccessHistoryResponse, tonic::Status> {
    suite
        .access_history_as(caller)
        .await
        .get_access_history(GetAccessHistoryRequest { person_token: person.into(), after_seq, limit })
        .await
        .map(tonic::Response::into_inner)
}

storage_test!(a_persons_access_history_is_theirs_alone, own_entries);
async fn own_entries(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let other = register(&suite, 1).await;
    reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[], "").await.expect("a profile read");
    reveal(&suite, "marketing", &person, Purpose::ServiceDelivery, &[], "").await.expect_err("a denied read");
    reveal(&suite, "accounts", &other, Purpose::ServiceDelivery, &[], "").await.expect("another person's read");

    let page = history(&suite, "accounts", &person, 0, 0).await.expect("accounts reads a person's history");
    assert!(!page.entries.is_empty());
    assert!(page.entries.iter().all(|e| e.person_token == person), "only this person's entries");
    assert_eq!(page.next_after_seq, 0, "everything fits on one page");
    let reads: Vec<_> = page.entries.iter().filter(|e| e.operation == "reveal").collect();
    assert_eq!(reads.len(), 2, "the allowed read and the denied one: {reads:?}");
    assert!(reads[0].allowed && reads[0].caller == ACCOUNTS && reads[0].purpose == "service_delivery");
    assert!(!reads[1].allowed && reads[1].caller == MARKETING, "denials are part of the history");
    assert!(reads.iter().all(|e| e.at_ms > 0 && !e.reason.is_empty()), "when, and why");

    // The same entries, a page at a time, for the security team too.
    let first = history(&suite, "qupiactl", &person, 0, 1).await.expect("the security team reads it");
    assert_eq!(first.entries.len(), 1);
    assert_eq!(first.entries[0].seq, page.entries[0].seq);
    assert_eq!(first.next_after_seq, first.entries[0].seq, "a next page exists");
    let rest = history(&suite, "qupiactl", &person, first.next_after_seq, 1000).await.unwrap();
    assert_eq!(rest.entries.len(), page.entries.len() - 1);
    assert!(rest.entries.iter().all(|e| e.seq > first.entries[0].seq));

    // Nobody else reads it, not even a service the policy lets reveal.
    for caller in ["marketing", "reporting"] {
        let err = history(&suite, caller, &person, 0, 10).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{caller}: {}", err.message());
    }

    // A request that cannot name one person's entries is refused, naming the field.
    for (token, after_seq, field) in
        [("", 0, "person_token"), ("qpf_x", 0, "person_token"), (&*person, -1, "after_seq")]
    {
        let err = history(&suite, "accounts", token, after_seq, 10).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(field), "{}", err.message());
    }
}
