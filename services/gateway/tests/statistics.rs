//! Statistics through the gateway, on SQLite and PostgreSQL: only consenting people
//! are counted, the others skipped and recorded, small groups suppressed at the
//! gateway's k, and aggregates only for the callers the policy allows.

mod common;

use common::*;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{AggregateDimension, Field, Purpose};
use qupia_api::vault::v1::PersonInput;
use qupia_test_support::{Backend, Suite, storage_test};
use tonic::Code;

async fn store(suite: &Suite, email: &str, phone: &str) -> String {
    suite
        .gateway_as("accounts")
        .await
        .tokenize(TokenizeRequest {
            person: Some(PersonInput {
                surname: "Ахметова".into(),
                given_name: "Жанар".into(),
                patronymic: String::new(),
                email: email.into(),
                phone: phone.into(),
            }),
            idempotency_key: String::new(),
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
        .expect("tokens")
        .person_token
}

async fn aggregate(
    suite: &Suite,
    caller: &str,
    people: &[String],
    dimension: AggregateDimension,
) -> Result<AggregateResponse, tonic::Status> {
    suite
        .statistics_as(caller)
        .await
        .aggregate(AggregateRequest { person_tokens: people.to_vec(), dimension: dimension as i32 })
        .await
        .map(tonic::Response::into_inner)
}

storage_test!(only_consenting_people_are_counted_and_small_groups_suppressed, consenting_only);
async fn consenting_only(backend: Backend) {
    let suite = Suite::start(backend).await;
    let version = publish(&suite, &[]).await;
    // Eight consenting people at mail.kz, three at gmail.com, two more at mail.kz
    // without consent (one never asked, one withdrew).
    let mut consenting = Vec::new();
    for i in 0..8 {
        consenting.push(store(&suite, &format!("learner{i}@mail.kz"), &format!("+7 701 444 00 0{i}")).await);
    }
    for i in 0..3 {
        consenting.push(store(&suite, &format!("parent{i}@gmail.com"), &format!("+7 777 444 10 1{i}")).await);
    }
    for person in &consenting {
        grant(&suite, person, Purpose::Statistics, "", version).await;
    }
    let never = store(&suite, "never@mail.kz", "+7 701 444 20 20").await;
    let withdrew = store(&suite, "withdrew@mail.kz", "+7 701 444 20 21").await;
    grant(&suite, &withdrew, Purpose::Statistics, "", version).await;
    withdraw(&suite, &withdrew, Purpose::Statistics).await;
    // Advertising consent is not statistics consent.
    grant(&suite, &never, Purpose::Advertising, "", version).await;

    let mut audience = consenting.clone();
    audience.push(never.clone());
    audience.push(withdrew.clone());
    let response = aggregate(&suite, "marketing", &audience, AggregateDimension::EmailDomain).await.expect("aggregate");
    let groups: Vec<(&str, u64)> = response.groups.iter().map(|g| (g.key.as_str(), g.count)).collect();
    assert_eq!(groups, [("mail.kz", 8)], "the two without consent are not among them");
    assert_eq!(response.suppressed_groups, 1, "gmail.com, three people, is under k = 5");
    assert_eq!(response.skipped_without_consent, 2);
    assert_eq!(response.min_group_size, 5);
    assert!(!response.decision_id.is_empty());

    // Everyone with an active consent, when no audience is named: the same groups.
    let everyone = aggregate(&suite, "marketing", &[], AggregateDimension::EmailDomain).await.expect("everyone");
    assert_eq!(everyone.groups, response.groups);
    assert_eq!(everyone.suppressed_groups, 1);
    assert_eq!(everyone.skipped_without_consent, 0);
    let by_operator = aggregate(&suite, "marketing", &[], AggregateDimension::PhoneOperator).await.expect("operators");
    assert_eq!(by_operator.groups.iter().map(|g| (g.key.as_str(), g.count)).collect::<Vec<_>>(), [("Kcell", 8)]);

    // The access log: an allowed aggregate entry per counted person and aggregate, with
    // their consent; the two without consent have denials only.
    for person in &consenting {
        let entries = audit_of(&suite, person).await;
        let counted: Vec<_> = entries.iter().filter(|e| e.operation == "aggregate").collect();
        assert_eq!(counted.len(), 3, "three aggregates counted this person");
        assert!(counted.iter().all(|e| e.allowed && e.purpose == "statistics"));
        assert!(counted.iter().all(|e| !e.consent_id.is_empty() && e.caller == MARKETING));
    }
    for person in [&never, &withdrew] {
        let entries = audit_of(&suite, person).await;
        let aggregates: Vec<_> = entries.iter().filter(|e| e.operation == "aggregate").collect();
        assert_eq!(aggregates.len(), 1, "one denial, from the aggregate that named them");
        assert!(!aggregates[0].allowed);
        assert!(aggregates[0].reason.starts_with("not counted: no active consent for statistics"));
    }

    // Marketing may count people but not see who they are.
    let err =
        reveal(&suite, "marketing", &consenting[0], Purpose::Statistics, &[Field::Surname], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    let err =
        reveal(&suite, "marketing", &consenting[0], Purpose::Advertising, &[Field::GivenName], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

storage_test!(aggregates_only_for_callers_the_policy_allows, policy_decides);
async fn policy_decides(backend: Backend) {
    let suite = Suite::start(backend).await;
    let version = publish(&suite, &[]).await;
    let person = store(&suite, "one@mail.kz", "+7 701 444 30 30").await;
    grant(&suite, &person, Purpose::Statistics, "", version).await;

    let err = aggregate(&suite, "accounts", std::slice::from_ref(&person), AggregateDimension::EmailDomain)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(
        err.message(),
        "no policy permits spiffe://qupia/ns/default/sa/accounts to see aggregates for statistics"
    );
    let entries = audit_of(&suite, &person).await;
    let denied: Vec<_> = entries.iter().filter(|e| e.operation == "aggregate").collect();
    assert_eq!(denied.len(), 1);
    assert!(!denied[0].allowed);
    assert_eq!(denied[0].caller, ACCOUNTS);

    // Malformed asks are refused before any decision.
    let err =
        aggregate(&suite, "marketing", &["qpp_nope".to_owned()], AggregateDimension::EmailDomain).await.unwrap_err();
    assert_eq!(err.message(), "person_tokens[0]: is not a well-formed person token");
    let err = aggregate(&suite, "marketing", &[], AggregateDimension::Unspecified).await.unwrap_err();
    assert_eq!(err.message(), "dimension: must name a dimension");

    // One person alone is always a suppressed group, whatever k is configured.
    let alone = aggregate(&suite, "marketing", &[person], AggregateDimension::RegistrationMonth).await.expect("alone");
    assert!(alone.groups.is_empty());
    assert_eq!(alone.suppressed_groups, 1);
}

storage_test!(the_minimum_group_size_is_configured, configured_k);
async fn configured_k(backend: Backend) {
    let suite = Suite::start_with(backend, |config| config.statistics_min_group_size = 2).await;
    let version = publish(&suite, &[]).await;
    let mut people = Vec::new();
    for i in 0..2 {
        let person = store(&suite, &format!("pair{i}@edu.kz"), &format!("+7 702 444 40 4{i}")).await;
        grant(&suite, &person, Purpose::Statistics, "", version).await;
        people.push(person);
    }
    let response = aggregate(&suite, "marketing", &people, AggregateDimension::EmailDomain).await.expect("aggregate");
    assert_eq!(response.min_group_size, 2);
    assert_eq!(response.groups.iter().map(|g| (g.key.as_str(), g.count)).collect::<Vec<_>>(), [("edu.kz", 2)]);
}

#[tokio::test]
async fn a_minimum_group_size_below_two_refuses_to_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("gateway.db").display());
    for k in [0, 1] {
        let mut config = qupia_gateway::Config::new(
            url.clone(),
            qupia_transport::TlsMode::InsecureDev {
                assumed_caller: qupia_transport::ServiceIdentity::for_service("default", "qupiactl"),
            },
            "127.0.0.1:9".to_owned(),
        );
        config.statistics_min_group_size = k;
        config.ops = qupia_ops::OpsOptions::ephemeral();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let err = qupia_gateway::serve(config, listener, std::future::pending()).await.expect_err("refused");
        assert!(err.to_string().starts_with("statistics_min_group_size: must be at least 2"), "{err}");
    }
}
