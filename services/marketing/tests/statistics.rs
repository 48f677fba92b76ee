//! Statistics come from the gateway as aggregates only: small groups suppressed,
//! people without a statistics consent skipped. Each test runs on SQLite and on
//! PostgreSQL.

mod common;

use common::*;
use qupia_api::marketing::v1::*;
use qupia_api::types::v1::{AggregateDimension, Purpose};
use qupia_test_support::{Backend, MarketingSuite, scan_text, storage_test};

storage_test!(statistics_are_aggregates_with_small_groups_suppressed, aggregates);
async fn aggregates(backend: Backend) {
    let suite = MarketingSuite::start(backend).await;
    // Five consenting people at mail.kz, three consenting at edu.kz (below k = 5),
    // two at inbox.kz who never consented to statistics.
    let mut tokens = Vec::new();
    for i in 0..10 {
        let token = suite.register(extra_person(i)).await;
        if i < 8 {
            suite.grant(&token, Purpose::Statistics).await;
        }
        tokens.push(token);
    }
    let audience = create_audience(&suite, "Everyone registered", &tokens).await;
    let stats = suite
        .marketing()
        .await
        .get_statistics(GetStatisticsRequest {
            audience_id: audience.id.clone(),
            dimension: AggregateDimension::EmailDomain as i32,
        })
        .await
        .expect("statistics")
        .into_inner();
    let groups: Vec<(&str, u64)> = stats.groups.iter().map(|g| (g.key.as_str(), g.count)).collect();
    assert_eq!(groups, vec![("mail.kz", 5)], "only the group of at least k comes back");
    assert_eq!(stats.suppressed_groups, 1, "edu.kz, with three people, is suppressed");
    assert_eq!(stats.skipped_without_consent, 2, "the two without a statistics consent are skipped");
    assert_eq!(stats.min_group_size, 5);
    assert!(!stats.decision_id.is_empty(), "the decision is in the access log");
    // Only aggregates: no address, phone or name in the answer.
    assert!(scan_text("statistics", &format!("{stats:?}"), &needles()).is_empty());

    // An empty audience counts nobody (the gateway reads an empty list as everyone).
    let empty = create_audience(&suite, "Nobody", &[]).await;
    let stats = suite
        .marketing()
        .await
        .get_statistics(GetStatisticsRequest {
            audience_id: empty.id,
            dimension: AggregateDimension::EmailDomain as i32,
        })
        .await
        .expect("statistics of an empty audience")
        .into_inner();
    assert!(stats.groups.is_empty() && stats.suppressed_groups == 0 && stats.skipped_without_consent == 0);

    // Everyone with a statistics consent, without an audience.
    let everyone = suite
        .marketing()
        .await
        .get_statistics(GetStatisticsRequest {
            audience_id: String::new(),
            dimension: AggregateDimension::EmailDomain as i32,
        })
        .await
        .expect("statistics of everyone")
        .into_inner();
    let groups: Vec<(&str, u64)> = everyone.groups.iter().map(|g| (g.key.as_str(), g.count)).collect();
    assert_eq!(groups, vec![("mail.kz", 5)]);
    assert_eq!(everyone.suppressed_groups, 1);
}
