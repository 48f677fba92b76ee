//! Reading the ledger back: filters and paging return exactly the matching entries.

use std::time::Duration;

use qupia_audit::{AuditLedger, Filter};
use qupia_test_support::{Backend as TestBackend, storage_test};

use crate::support::{all_entries, entries, fixture};

/// All seqs matching `filter`, read `page` at a time; also checks each page's size.
async fn paged_seqs(ledger: &AuditLedger, filter: &Filter, page: u32) -> Vec<i64> {
    let mut seqs = Vec::new();
    loop {
        let after = seqs.last().copied().unwrap_or(0);
        let got = ledger.query(filter, after, page).await.expect("query");
        assert!(got.len() <= page as usize);
        if got.is_empty() {
            return seqs;
        }
        seqs.extend(got.iter().map(|e| e.seq));
    }
}

/// Seqs 1..=n whose entry index `i` (seq - 1) satisfies `keep`.
fn seqs_where(n: usize, keep: impl Fn(usize) -> bool) -> Vec<i64> {
    (0..n).filter(|&i| keep(i)).map(|i| i64::try_from(i + 1).expect("small")).collect()
}

storage_test!(filters_and_paging_return_exactly_the_matches, filters_and_paging_return_exactly_the_matches_body);
async fn filters_and_paging_return_exactly_the_matches_body(backend: TestBackend) {
    let f = fixture(backend, "audit_query", 1).await;
    // Three batches at distinct times: entries 0..10, 10..20, 20..30.
    for batch in 0..3 {
        f.ledger.append(&entries(batch * 10..batch * 10 + 10)).await.expect("append");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stored = all_entries(&f.ledger).await;
    let (second, third) = (stored[10].at_ms, stored[20].at_ms);
    assert!(stored[9].at_ms < second && second < third, "batches have distinct times");

    let person = Filter { person: Some("qpp_person1".into()), ..Filter::default() };
    assert_eq!(paged_seqs(&f.ledger, &person, 2).await, seqs_where(30, |i| i % 4 == 1));

    let caller = Filter { caller: Some("spiffe://qupia/ns/test/sa/marketing".into()), ..Filter::default() };
    assert_eq!(paged_seqs(&f.ledger, &caller, 4).await, seqs_where(30, |i| i % 2 == 1));

    let purpose_and_operation =
        Filter { purpose: Some("service_delivery".into()), operation: Some("reveal".into()), ..Filter::default() };
    assert_eq!(paged_seqs(&f.ledger, &purpose_and_operation, 3).await, seqs_where(30, |i| i % 6 == 0));

    // from_ms is inclusive, to_ms exclusive: exactly the second batch.
    let window = Filter { from_ms: Some(second), to_ms: Some(third), ..Filter::default() };
    assert_eq!(paged_seqs(&f.ledger, &window, 3).await, (11..=20).collect::<Vec<i64>>());
    let person_in_window = Filter { person: Some("qpp_person2".into()), ..window.clone() };
    assert_eq!(
        paged_seqs(&f.ledger, &person_in_window, 1).await,
        seqs_where(30, |i| (10..20).contains(&i) && i % 4 == 2)
    );
    let since_third = Filter { from_ms: Some(third), ..Filter::default() };
    assert_eq!(paged_seqs(&f.ledger, &since_third, 7).await, (21..=30).collect::<Vec<i64>>());

    // A filter nothing matches, a zero limit, a cursor past the end.
    let nobody = Filter { person: Some("qpp_nobody".into()), ..Filter::default() };
    assert!(f.ledger.query(&nobody, 0, 10).await.expect("query").is_empty());
    assert!(f.ledger.query(&Filter::default(), 0, 0).await.expect("query").is_empty());
    assert!(f.ledger.query(&Filter::default(), 30, 10).await.expect("query").is_empty());
    // A filter value is bound, never spliced into the SQL.
    let injection = Filter { person: Some("x' OR '1'='1".into()), ..Filter::default() };
    assert!(f.ledger.query(&injection, 0, 10).await.expect("query").is_empty());
}

storage_test!(query_caps_its_page, query_caps_its_page_body);
async fn query_caps_its_page_body(backend: TestBackend) {
    let f = fixture(backend, "audit_query_cap", 1).await;
    f.ledger.append(&entries(0..1005)).await.expect("append");
    let page = f.ledger.query(&Filter::default(), 0, u32::MAX).await.expect("query");
    assert_eq!(page.len(), qupia_audit::MAX_QUERY_LIMIT as usize);
    let rest = f.ledger.query(&Filter::default(), 1000, u32::MAX).await.expect("query");
    assert_eq!(rest.iter().map(|e| e.seq).collect::<Vec<_>>(), (1001..=1005).collect::<Vec<i64>>());
}
