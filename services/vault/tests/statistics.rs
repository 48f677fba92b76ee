//! Aggregates computed inside the vault, on SQLite and PostgreSQL: every dimension,
//! small groups suppressed, unknown and erased people not counted, one access-log entry
//! per person counted, and only for the purpose statistics.

use qupia_api::types::v1::{AggregateDimension, AggregateGroup, Purpose};
use qupia_api::vault::v1::*;
use qupia_test_support::{Backend, VaultHarness, storage_test};
use sqlx::{Connection, Row};
use tonic::Code;

fn access(purpose: Purpose) -> Option<AccessContext> {
    Some(AccessContext {
        purpose: purpose as i32,
        decision_id: "stats-decision".into(),
        caller: "spiffe://qupia/ns/default/sa/marketing".into(),
        ..Default::default()
    })
}

async fn store(vault: &VaultHarness, email: &str, phone: &str) -> String {
    vault
        .gateway()
        .await
        .tokenize(TokenizeRequest {
            person: Some(PersonInput {
                surname: "Сейтқали".into(),
                given_name: "Дана".into(),
                patronymic: String::new(),
                email: email.into(),
                phone: phone.into(),
            }),
            ..Default::default()
        })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
        .expect("tokens")
        .person_token
}

fn subjects(tokens: &[String]) -> Vec<AggregateSubject> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, token)| AggregateSubject { person_token: token.clone(), consent_id: format!("consent-{i}") })
        .collect()
}

async fn aggregate(
    vault: &VaultHarness,
    tokens: &[String],
    dimension: AggregateDimension,
    k: u32,
) -> Result<AggregateResponse, tonic::Status> {
    vault
        .statistics_as("gateway")
        .await
        .aggregate(AggregateRequest {
            subjects: subjects(tokens),
            dimension: dimension as i32,
            min_group_size: k,
            access: access(Purpose::Statistics),
        })
        .await
        .map(tonic::Response::into_inner)
}

fn groups(response: &AggregateResponse) -> Vec<(&str, u64)> {
    response.groups.iter().map(|AggregateGroup { key, count }| (key.as_str(), *count)).collect()
}

async fn aggregate_entries(vault: &VaultHarness) -> Vec<(String, String, String)> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&vault.db.admin_url).await.expect("raw connection");
    sqlx::query("SELECT person, consent_id, fields FROM audit_log WHERE operation = 'aggregate' ORDER BY seq")
        .fetch_all(&mut conn)
        .await
        .expect("read the access log")
        .iter()
        .map(|row| (row.get("person"), row.get("consent_id"), row.get("fields")))
        .collect()
}

storage_test!(aggregates_count_by_every_dimension_and_suppress_small_groups, dimensions);
async fn dimensions(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    // Five at mail.kz on Kcell, three at gmail.com on Beeline, one Russian number at
    // yandex.ru, one Tele2 number typed in another spelling of mail.kz.
    let mut people = Vec::new();
    for i in 0..5 {
        people.push(store(&vault, &format!("student{i}@mail.kz"), &format!("+7 701 555 00 0{i}")).await);
    }
    for i in 0..3 {
        people.push(store(&vault, &format!("parent{i}@gmail.com"), &format!("8 777 555 10 1{i}")).await);
    }
    people.push(store(&vault, "guest@yandex.ru", "+7 916 123 45 67").await);
    people.push(store(&vault, "Teacher@MAIL.KZ", "+7 747 555 20 20").await);

    let by_domain = aggregate(&vault, &people, AggregateDimension::EmailDomain, 3).await.expect("by domain");
    assert_eq!(groups(&by_domain), [("mail.kz", 6), ("gmail.com", 3)]);
    assert_eq!(by_domain.suppressed_groups, 1, "yandex.ru alone is suppressed");

    let by_country = aggregate(&vault, &people, AggregateDimension::PhoneCountry, 2).await.expect("by country");
    assert_eq!(groups(&by_country), [("KZ", 9)]);
    assert_eq!(by_country.suppressed_groups, 1, "one Russian number");

    let by_operator = aggregate(&vault, &people, AggregateDimension::PhoneOperator, 2).await.expect("by operator");
    assert_eq!(groups(&by_operator), [("Kcell", 5), ("Beeline", 3)]);
    assert_eq!(by_operator.suppressed_groups, 2, "Tele2 and other, one each");

    let by_month = aggregate(&vault, &people, AggregateDimension::RegistrationMonth, 2).await.expect("by month");
    assert_eq!(by_month.groups.len() + by_month.suppressed_groups as usize, 1, "all stored just now");
    let month = &by_month.groups[0];
    assert_eq!(month.count, 10);
    assert!(month.key.len() == 7 && month.key.as_bytes()[4] == b'-', "YYYY-MM, got {}", month.key);

    // Every counted person has one entry per aggregate, with their consent and the one
    // field decrypted; the month needs none.
    let entries = aggregate_entries(&vault).await;
    assert_eq!(entries.len(), 40);
    assert!(entries[..10].iter().all(|(_, _, fields)| fields == "email"));
    assert!(entries[10..30].iter().all(|(_, _, fields)| fields == "phone"));
    assert!(entries[30..].iter().all(|(_, _, fields)| fields.is_empty()));
    for (i, token) in people.iter().enumerate() {
        let mine: Vec<_> = entries.iter().filter(|(person, _, _)| person == token).collect();
        assert_eq!(mine.len(), 4, "person {i}");
        assert!(mine.iter().all(|(_, consent, _)| *consent == format!("consent-{i}")));
    }
}

storage_test!(unknown_and_erased_people_are_not_counted, not_counted);
async fn not_counted(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut people = Vec::new();
    for i in 0..4 {
        people.push(store(&vault, &format!("s{i}@edu.kz"), &format!("+7 702 555 00 0{i}")).await);
    }
    let erased = people.pop().expect("four");
    vault.gateway().await.erase(EraseRequest { person_token: erased.clone(), access: None }).await.expect("erase");
    let mut asked = people.clone();
    asked.push(erased.clone());
    // The same person twice counts once.
    asked.push(people[0].clone());

    let response = aggregate(&vault, &asked, AggregateDimension::EmailDomain, 2).await.expect("aggregate");
    assert_eq!(groups(&response), [("edu.kz", 3)]);
    let entries = aggregate_entries(&vault).await;
    assert_eq!(entries.len(), 3, "one entry per person counted");
    assert!(entries.iter().all(|(person, _, _)| *person != erased), "the erased person is not in the log");

    // Nobody to count: an empty answer and no entry.
    let response = aggregate(&vault, &[], AggregateDimension::EmailDomain, 2).await.expect("empty");
    assert!(response.groups.is_empty() && response.suppressed_groups == 0);
    assert_eq!(aggregate_entries(&vault).await.len(), 3);
}

storage_test!(aggregates_only_for_statistics_with_a_real_minimum, refusals);
async fn refusals(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let people = vec![store(&vault, "a@mail.kz", "+7 701 000 00 01").await];
    let mut client = vault.statistics_as("gateway").await;
    let request = |purpose: Purpose, k: u32, dimension: AggregateDimension| AggregateRequest {
        subjects: subjects(&people),
        dimension: dimension as i32,
        min_group_size: k,
        access: access(purpose),
    };

    let err = client.aggregate(request(Purpose::Advertising, 5, AggregateDimension::EmailDomain)).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    for k in [0, 1] {
        let err = client.aggregate(request(Purpose::Statistics, k, AggregateDimension::EmailDomain)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(err.message(), "min_group_size: must be at least 2");
    }
    let err = client.aggregate(request(Purpose::Statistics, 5, AggregateDimension::Unspecified)).await.unwrap_err();
    assert_eq!(err.message(), "dimension: must name a dimension");
    let mut without_consent = request(Purpose::Statistics, 5, AggregateDimension::EmailDomain);
    without_consent.subjects[0].consent_id.clear();
    let err = client.aggregate(without_consent).await.unwrap_err();
    assert_eq!(err.message(), "subjects[0].consent_id: is required");
    let mut no_access = request(Purpose::Statistics, 5, AggregateDimension::EmailDomain);
    no_access.access = None;
    assert_eq!(client.aggregate(no_access).await.unwrap_err().code(), Code::InvalidArgument);
    assert!(aggregate_entries(&vault).await.is_empty(), "nothing refused was counted");

    // Only the gateway may ask.
    let err = vault
        .statistics_as("marketing")
        .await
        .aggregate(request(Purpose::Statistics, 5, AggregateDimension::EmailDomain))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}
