//! The consent ledger and policy versions against a real database: every test runs on
//! SQLite and, when `QUPIA_TEST_POSTGRES_URL` is set, on PostgreSQL.

use std::collections::HashMap;

use qupia_domain::Purpose;
use qupia_gateway::consent::{ConsentAction, ConsentCheck, ConsentError, ConsentStore, NewConsentEvent, now_ms};
use qupia_test_support::{Backend, TestDb, storage_test};
use sqlx::{Connection, Row};

const ACCOUNTS: &str = "spiffe://qupia/ns/test/sa/accounts";
const SECURITY: &str = "spiffe://qupia/ns/test/sa/security";
const MINUTE_MS: i64 = 60_000;

/// A well-formed person token for test person `i` (canonical: ends in `A`).
fn person(i: usize) -> String {
    format!("qpp_{i:0>34}A")
}

fn sha(byte: char) -> String {
    byte.to_string().repeat(64)
}

async fn store(backend: Backend, stem: &str) -> (TestDb, ConsentStore) {
    let db = TestDb::create(backend, stem).await;
    let store = ConsentStore::connect(&db.url, 4).await.expect("connect the consent store");
    (db, store)
}

/// A store with policy version 1 published, requiring nothing.
async fn published(backend: Backend, stem: &str) -> (TestDb, ConsentStore) {
    let (db, store) = store(backend, stem).await;
    store.publish_policy_version(&sha('1'), &[], SECURITY).await.expect("publish v1");
    (db, store)
}

fn grant(person_token: &str, purpose: Purpose, policy_version: i64) -> NewConsentEvent {
    NewConsentEvent {
        person_token: person_token.to_owned(),
        purpose,
        recipient: String::new(),
        action: ConsentAction::Granted,
        policy_version,
        channel: "web".into(),
        evidence: "form-registration-7".into(),
        expires_at_ms: None,
        recorded_by: ACCOUNTS.into(),
    }
}

fn withdraw(person_token: &str, purpose: Purpose, policy_version: i64) -> NewConsentEvent {
    NewConsentEvent {
        action: ConsentAction::Withdrawn,
        evidence: String::new(),
        ..grant(person_token, purpose, policy_version)
    }
}

fn inactive(reason: &str) -> ConsentCheck {
    ConsentCheck::Inactive { reason: reason.to_owned() }
}

fn active(consent_id: &str) -> ConsentCheck {
    ConsentCheck::Active { consent_id: consent_id.to_owned() }
}

/// The field of an `Invalid` error; panics on any other outcome.
fn invalid_field<T: std::fmt::Debug>(result: Result<T, ConsentError>) -> &'static str {
    match result {
        Err(ConsentError::Invalid { field, .. }) => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

fn is_failed_precondition<T>(result: &Result<T, ConsentError>) -> bool {
    matches!(result, Err(ConsentError::FailedPrecondition(_)))
}

async fn event_count(store: &ConsentStore) -> i64 {
    sqlx::query("SELECT COUNT(*) AS n FROM consent_events")
        .fetch_one(store.pool())
        .await
        .expect("count events")
        .try_get("n")
        .expect("n")
}

storage_test!(grant_withdraw_and_grant_again, grant_withdraw_and_grant_again_body);
async fn grant_withdraw_and_grant_again_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_cycle").await;
    let p = person(1);
    assert_eq!(
        store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"),
        inactive("no consent recorded")
    );

    let first = store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant");
    assert_eq!(first.policy_version, 1);
    assert_eq!(uuid::Uuid::parse_str(&first.id).map(|u| u.get_version_num()).ok(), Some(4));
    assert_eq!(store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"), active(&first.id));

    let withdrawal = store.record(withdraw(&p, Purpose::Advertising, 1)).await.expect("withdraw");
    assert!(withdrawal.seq > first.seq);
    assert_eq!(
        store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"),
        inactive("consent withdrawn"),
        "a withdrawal counts on the very next check"
    );

    let second = store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant again");
    assert_ne!(second.id, first.id);
    assert_eq!(store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"), active(&second.id));

    let history = store.history(&p).await.expect("history");
    assert_eq!(history, vec![first, withdrawal, second]);
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        history.iter().map(|e| e.action).collect::<Vec<_>>(),
        [ConsentAction::Granted, ConsentAction::Withdrawn, ConsentAction::Granted]
    );
    assert!(store.history(&person(2)).await.expect("history").is_empty());
}

storage_test!(a_grant_lapses_at_its_expiry, a_grant_lapses_at_its_expiry_body);
async fn a_grant_lapses_at_its_expiry_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_expiry").await;
    let p = person(1);
    let expires = now_ms() + MINUTE_MS;
    let event = store
        .record(NewConsentEvent { expires_at_ms: Some(expires), ..grant(&p, Purpose::Statistics, 1) })
        .await
        .expect("grant");
    assert_eq!(event.expires_at_ms, Some(expires));
    assert_eq!(store.check(&p, Purpose::Statistics, "", expires - 1).await.expect("check"), active(&event.id));
    assert_eq!(
        store.check(&p, Purpose::Statistics, "", expires + 1).await.expect("check"),
        inactive("consent expired")
    );

    let past = NewConsentEvent { expires_at_ms: Some(now_ms() - 1), ..grant(&p, Purpose::Statistics, 1) };
    assert_eq!(invalid_field(store.record(past).await), "expires_at_ms");
    let withdrawal_with_expiry =
        NewConsentEvent { expires_at_ms: Some(expires), ..withdraw(&p, Purpose::Statistics, 1) };
    assert_eq!(invalid_field(store.record(withdrawal_with_expiry).await), "expires_at_ms");
    assert_eq!(event_count(&store).await, 1);
}

storage_test!(
    a_new_version_requires_reconsent_only_for_its_purposes,
    a_new_version_requires_reconsent_only_for_its_purposes_body
);
async fn a_new_version_requires_reconsent_only_for_its_purposes_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_reconsent").await;
    let p = person(1);
    let advertising = store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant");
    let statistics = store.record(grant(&p, Purpose::Statistics, 1)).await.expect("grant");

    let v2 = store.publish_policy_version(&sha('2'), &[Purpose::Advertising], SECURITY).await.expect("publish v2");
    assert_eq!((v2.version, v2.reconsent_purposes.clone()), (2, vec![Purpose::Advertising]));
    assert_eq!(store.current_policy_version().await.expect("current"), Some(v2.clone()));

    assert_eq!(
        store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"),
        inactive("consent predates policy version 2, which requires re-consent for advertising")
    );
    assert_eq!(store.check(&p, Purpose::Statistics, "", now_ms()).await.expect("check"), active(&statistics.id));

    // A grant must name the text in force.
    let stale = store.record(grant(&p, Purpose::Advertising, 1)).await;
    assert!(is_failed_precondition(&stale), "{stale:?}");
    let unknown = store.record(grant(&p, Purpose::Advertising, 3)).await;
    assert!(is_failed_precondition(&unknown), "{unknown:?}");

    let again = store.record(grant(&p, Purpose::Advertising, 2)).await.expect("re-consent");
    assert_ne!(again.id, advertising.id);
    assert_eq!(store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"), active(&again.id));

    // A later version that requires nothing keeps the re-consent counting.
    store.publish_policy_version(&sha('3'), &[], SECURITY).await.expect("publish v3");
    assert_eq!(store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"), active(&again.id));
}

storage_test!(withdrawals_name_any_published_version, withdrawals_name_any_published_version_body);
async fn withdrawals_name_any_published_version_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_withdrawal_version").await;
    let p = person(1);
    store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant");
    store.publish_policy_version(&sha('2'), &[], SECURITY).await.expect("publish v2");

    let under_v1 = store.record(withdraw(&p, Purpose::Advertising, 1)).await.expect("withdraw");
    assert_eq!(under_v1.policy_version, 1);
    let under_current = store.record(withdraw(&p, Purpose::Advertising, 0)).await.expect("withdraw");
    assert_eq!(under_current.policy_version, 2, "0 means the version in force");
    let unknown = store.record(withdraw(&p, Purpose::Advertising, 9)).await;
    assert!(is_failed_precondition(&unknown), "{unknown:?}");

    assert_eq!(invalid_field(store.record(grant(&p, Purpose::Advertising, 0)).await), "policy_version");
    assert_eq!(invalid_field(store.record(withdraw(&p, Purpose::Advertising, -1)).await), "policy_version");
    assert_eq!(event_count(&store).await, 3);
}

storage_test!(nothing_is_recorded_before_a_policy_is_published, nothing_is_recorded_before_a_policy_is_published_body);
async fn nothing_is_recorded_before_a_policy_is_published_body(backend: Backend) {
    let (_db, store) = store(backend, "consent_no_policy").await;
    assert_eq!(store.current_policy_version().await.expect("current"), None);
    assert!(store.policy_versions().await.expect("versions").is_empty());
    let result = store.record(grant(&person(1), Purpose::Advertising, 1)).await;
    assert!(is_failed_precondition(&result), "{result:?}");
    let result = store.record(withdraw(&person(1), Purpose::Advertising, 0)).await;
    assert!(is_failed_precondition(&result), "{result:?}");
    assert_eq!(event_count(&store).await, 0);
}

storage_test!(transfer_consent_is_per_recipient, transfer_consent_is_per_recipient_body);
async fn transfer_consent_is_per_recipient_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_recipient").await;
    let p = person(1);
    let to_bank_a = store
        .record(NewConsentEvent { recipient: "bank-a".into(), ..grant(&p, Purpose::ThirdPartyTransfer, 1) })
        .await
        .expect("grant");
    assert_eq!(to_bank_a.recipient, "bank-a");
    let now = now_ms();
    assert_eq!(
        store.check(&p, Purpose::ThirdPartyTransfer, "bank-a", now).await.expect("check"),
        active(&to_bank_a.id)
    );
    assert_eq!(
        store.check(&p, Purpose::ThirdPartyTransfer, "bank-b", now).await.expect("check"),
        inactive("no consent recorded")
    );
    let without_recipient = grant(&p, Purpose::ThirdPartyTransfer, 1);
    assert_eq!(invalid_field(store.record(without_recipient).await), "recipient");
    let odd_recipient = NewConsentEvent { recipient: "Bank A".into(), ..grant(&p, Purpose::ThirdPartyTransfer, 1) };
    assert_eq!(invalid_field(store.record(odd_recipient).await), "recipient");
    assert_eq!(invalid_field(store.check(&p, Purpose::ThirdPartyTransfer, "", now).await), "recipient");
}

storage_test!(a_recipient_belongs_only_to_transfers, a_recipient_belongs_only_to_transfers_body);
async fn a_recipient_belongs_only_to_transfers_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_stray_recipient").await;
    let p = person(1);
    let event = NewConsentEvent { recipient: "bank-a".into(), ..grant(&p, Purpose::Advertising, 1) };
    assert_eq!(invalid_field(store.record(event).await), "recipient");
    assert_eq!(invalid_field(store.check(&p, Purpose::Advertising, "bank-a", now_ms()).await), "recipient");
    assert_eq!(event_count(&store).await, 0);
}

storage_test!(contract_purposes_take_no_consent, contract_purposes_take_no_consent_body);
async fn contract_purposes_take_no_consent_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_contract_purpose").await;
    let p = person(1);
    for purpose in Purpose::ALL.into_iter().filter(|p| !p.requires_consent()) {
        assert_eq!(invalid_field(store.record(grant(&p, purpose, 1)).await), "purpose", "{purpose}");
        assert_eq!(invalid_field(store.check(&p, purpose, "", now_ms()).await), "purpose", "{purpose}");
    }
    assert_eq!(event_count(&store).await, 0);
}

storage_test!(malformed_input_writes_nothing, malformed_input_writes_nothing_body);
async fn malformed_input_writes_nothing_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_malformed").await;
    let good = person(1);
    let tokens = [
        String::new(),
        "qpp_".to_owned(),
        format!("qpf_{}", &good[4..]),
        format!("{good}A"),
        good[..38].to_owned(),
        format!("qpp_{}=", &good[4..38]),
        "aigerim.nurlanova@mail.kz".to_owned(),
    ];
    for token in &tokens {
        let event = grant(token, Purpose::Advertising, 1);
        let err = store.record(event).await.expect_err("refused");
        let text = err.to_string();
        assert!(matches!(err, ConsentError::Invalid { field: "person_token", .. }), "{text}");
        assert!(token.is_empty() || !text.contains(token.as_str()), "the value is echoed: {text}");
        assert_eq!(invalid_field(store.check(token, Purpose::Advertising, "", now_ms()).await), "person_token");
        assert_eq!(invalid_field(store.history(token).await), "person_token");
    }

    let cases: Vec<(&str, NewConsentEvent)> = vec![
        ("channel", NewConsentEvent { channel: String::new(), ..grant(&good, Purpose::Advertising, 1) }),
        ("channel", NewConsentEvent { channel: "Web".into(), ..grant(&good, Purpose::Advertising, 1) }),
        ("channel", NewConsentEvent { channel: "w".repeat(33), ..grant(&good, Purpose::Advertising, 1) }),
        ("evidence", NewConsentEvent { evidence: String::new(), ..grant(&good, Purpose::Advertising, 1) }),
        (
            "evidence",
            NewConsentEvent { evidence: "aigerim.nurlanova@mail.kz".into(), ..grant(&good, Purpose::Advertising, 1) },
        ),
        ("evidence", NewConsentEvent { evidence: "+77011234567".into(), ..grant(&good, Purpose::Advertising, 1) }),
        ("evidence", NewConsentEvent { evidence: "Нұрланова".into(), ..grant(&good, Purpose::Advertising, 1) }),
        ("evidence", NewConsentEvent { evidence: "x".repeat(257), ..grant(&good, Purpose::Advertising, 1) }),
        ("recorded_by", NewConsentEvent { recorded_by: String::new(), ..grant(&good, Purpose::Advertising, 1) }),
    ];
    for (field, event) in cases {
        let value = event.evidence.clone();
        let err = store.record(event).await.expect_err("refused");
        assert!(!err.to_string().contains(&value) || value.is_empty(), "the value is echoed: {err}");
        assert_eq!(invalid_field::<()>(Err(err)), field);
    }
    assert_eq!(event_count(&store).await, 0);

    // The same channel rules let the real channels through.
    for channel in ["web", "mobile", "paper", "call-centre"] {
        let event = NewConsentEvent { channel: channel.into(), ..grant(&good, Purpose::Advertising, 1) };
        assert_eq!(store.record(event).await.expect("recorded").channel, channel);
    }
}

storage_test!(check_many_agrees_with_check, check_many_agrees_with_check_body);
async fn check_many_agrees_with_check_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_check_many").await;
    let expires = now_ms() + MINUTE_MS;
    let people: Vec<String> = (0..200).map(person).collect();
    for (i, p) in people.iter().enumerate() {
        // A mix: none, granted, withdrawn, expiring, and a grant for another purpose.
        match i % 5 {
            0 => {}
            1 => {
                store.record(grant(p, Purpose::Advertising, 1)).await.expect("grant");
            }
            2 => {
                store.record(grant(p, Purpose::Advertising, 1)).await.expect("grant");
                store.record(withdraw(p, Purpose::Advertising, 1)).await.expect("withdraw");
            }
            3 => {
                let event = NewConsentEvent { expires_at_ms: Some(expires), ..grant(p, Purpose::Advertising, 1) };
                store.record(event).await.expect("grant");
            }
            _ => {
                store.record(grant(p, Purpose::Statistics, 1)).await.expect("grant");
            }
        }
    }
    // Duplicates in the request give one entry each.
    let mut asked = people.clone();
    asked.extend(people[..10].iter().cloned());
    for now in [now_ms(), expires + 1] {
        let many = store.check_many(&asked, Purpose::Advertising, "", now).await.expect("check_many");
        assert_eq!(many.len(), people.len());
        let mut one_by_one = HashMap::new();
        for p in &people {
            one_by_one.insert(p.clone(), store.check(p, Purpose::Advertising, "", now).await.expect("check"));
        }
        assert_eq!(many, one_by_one);
        let active_count = many.values().filter(|c| c.is_active()).count();
        assert_eq!(active_count, if now < expires { 80 } else { 40 });
    }
    assert!(store.check_many(&[], Purpose::Advertising, "", now_ms()).await.expect("empty").is_empty());
    let with_bad = vec![people[0].clone(), "qpp_short".to_owned()];
    assert_eq!(invalid_field(store.check_many(&with_bad, Purpose::Advertising, "", now_ms()).await), "person_token");
}

storage_test!(states_show_each_consent_once, states_show_each_consent_once_body);
async fn states_show_each_consent_once_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_states").await;
    let p = person(1);
    store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant");
    let withdrawn = store.record(withdraw(&p, Purpose::Advertising, 1)).await.expect("withdraw");
    let statistics = store.record(grant(&p, Purpose::Statistics, 1)).await.expect("grant");
    let mut transfers = Vec::new();
    for recipient in ["bank-b", "bank-a"] {
        let event = NewConsentEvent { recipient: recipient.into(), ..grant(&p, Purpose::ThirdPartyTransfer, 1) };
        transfers.push(store.record(event).await.expect("grant"));
    }
    store.record(grant(&person(2), Purpose::Advertising, 1)).await.expect("someone else");

    let states = store.states(&p, now_ms()).await.expect("states");
    let summary: Vec<(Purpose, &str, &ConsentCheck)> =
        states.iter().map(|s| (s.purpose, s.recipient.as_str(), &s.check)).collect();
    assert_eq!(
        summary,
        [
            (Purpose::Advertising, "", &inactive("consent withdrawn")),
            (Purpose::Statistics, "", &active(&statistics.id)),
            (Purpose::ThirdPartyTransfer, "bank-a", &active(&transfers[1].id)),
            (Purpose::ThirdPartyTransfer, "bank-b", &active(&transfers[0].id)),
        ]
    );
    assert_eq!(states[0].latest, withdrawn);
    assert!(store.states(&person(3), now_ms()).await.expect("states").is_empty());
}

storage_test!(policy_versions_are_gapless_and_validated, policy_versions_are_gapless_and_validated_body);
async fn policy_versions_are_gapless_and_validated_body(backend: Backend) {
    let (_db, store) = store(backend, "consent_policy_versions").await;
    for bad in [String::new(), sha('A'), sha('g'), "ab".repeat(31), format!("{}0", sha('a'))] {
        let err = store.publish_policy_version(&bad, &[], SECURITY).await;
        assert_eq!(invalid_field(err), "text_sha256");
    }
    let contract = store.publish_policy_version(&sha('a'), &[Purpose::Communication], SECURITY).await;
    assert_eq!(invalid_field(contract), "reconsent_purposes");
    assert_eq!(invalid_field(store.publish_policy_version(&sha('a'), &[], "").await), "published_by");
    assert!(store.policy_versions().await.expect("versions").is_empty());

    let v1 = store.publish_policy_version(&sha('a'), &[], SECURITY).await.expect("v1");
    let v2 = store
        .publish_policy_version(&sha('b'), &[Purpose::Statistics, Purpose::Advertising, Purpose::Statistics], SECURITY)
        .await
        .expect("v2");
    let v3 = store.publish_policy_version(&sha('c'), &[Purpose::ThirdPartyTransfer], SECURITY).await.expect("v3");
    assert_eq!((v1.version, v2.version, v3.version), (1, 2, 3));
    assert_eq!(v2.reconsent_purposes, [Purpose::Advertising, Purpose::Statistics]);
    assert_eq!(store.policy_versions().await.expect("versions"), vec![v1, v2, v3.clone()]);
    assert_eq!(store.current_policy_version().await.expect("current"), Some(v3));
}

storage_test!(the_database_refuses_edits_and_deletions, the_database_refuses_edits_and_deletions_body);
async fn the_database_refuses_edits_and_deletions_body(backend: Backend) {
    let (db, store) = published(backend, "consent_append_only").await;
    let p = person(1);
    let event = store.record(grant(&p, Purpose::Advertising, 1)).await.expect("grant");

    // A connection of its own, as a stray tool or an injected statement would have.
    let mut raw = sqlx::AnyConnection::connect(&db.url).await.expect("raw connection");
    let tampering = [
        "UPDATE consent_events SET action = 'withdrawn'",
        "UPDATE consent_events SET policy_version = 1, recorded_at_ms = 0",
        "DELETE FROM consent_events",
        "UPDATE policy_versions SET text_sha256 = text_sha256",
        "DELETE FROM policy_versions",
    ];
    for sql in tampering {
        let err = sqlx::query(sql).execute(&mut raw).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    if backend == Backend::Postgres {
        for sql in ["TRUNCATE consent_events", "TRUNCATE policy_reconsent"] {
            assert!(sqlx::query(sql).execute(&mut raw).await.is_err(), "allowed: {sql}");
        }
    }
    raw.close().await.expect("close");
    assert_eq!(store.history(&p).await.expect("history"), vec![event.clone()]);
    assert_eq!(store.check(&p, Purpose::Advertising, "", now_ms()).await.expect("check"), active(&event.id));
}

storage_test!(a_reopened_store_keeps_its_history, a_reopened_store_keeps_its_history_body);
async fn a_reopened_store_keeps_its_history_body(backend: Backend) {
    let (db, store) = published(backend, "consent_reopen").await;
    let event = store.record(grant(&person(1), Purpose::Advertising, 1)).await.expect("grant");
    store.pool().close().await;
    drop(store);
    // Migrations run again at every start and must find nothing to do.
    let reopened = ConsentStore::connect(&db.url, 2).await.expect("reopen");
    assert_eq!(reopened.history(&person(1)).await.expect("history"), vec![event]);
    assert_eq!(reopened.policy_versions().await.expect("versions").len(), 1);
}

storage_test!(concurrent_publishers_leave_no_gaps, concurrent_publishers_leave_no_gaps_body);
async fn concurrent_publishers_leave_no_gaps_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_concurrent").await;
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        let digest = hex_digit(i).to_string().repeat(64);
        tasks.push(tokio::spawn(async move { store.publish_policy_version(&digest, &[], SECURITY).await.map(|_| ()) }));
    }
    // Grants racing the publications either name the version in force or are refused as
    // stale; none fails otherwise.
    for i in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let current = store.current_policy_version().await?.map_or(1, |v| v.version);
            match store.record(grant(&person(i), Purpose::Statistics, current)).await {
                Err(ConsentError::FailedPrecondition(message)) => {
                    assert!(message.contains("no longer in force") || message.contains("retry"), "{message}");
                    Ok(())
                }
                Err(other) => Err(other),
                Ok(_) => Ok(()),
            }
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("publish or record");
    }
    let versions: Vec<i64> = store.policy_versions().await.expect("versions").iter().map(|v| v.version).collect();
    assert_eq!(versions, (1..=9).collect::<Vec<_>>());
}

fn hex_digit(i: u8) -> char {
    char::from_digit(u32::from(i), 16).unwrap_or('0')
}

storage_test!(active_consents_lists_exactly_who_counts_now, active_consents_lists_exactly_who_counts_now_body);
async fn active_consents_lists_exactly_who_counts_now_body(backend: Backend) {
    let (_db, store) = published(backend, "consent_active").await;
    let granted = store.record(grant(&person(1), Purpose::Statistics, 1)).await.expect("grant");
    let expiring = store
        .record(NewConsentEvent {
            expires_at_ms: Some(now_ms() + MINUTE_MS),
            ..grant(&person(2), Purpose::Statistics, 1)
        })
        .await
        .expect("grant with expiry");
    store.record(grant(&person(3), Purpose::Statistics, 1)).await.expect("grant");
    store.record(withdraw(&person(3), Purpose::Statistics, 1)).await.expect("withdraw");
    store.record(grant(&person(4), Purpose::Advertising, 1)).await.expect("another purpose");
    // Withdrawn, then granted again: counts, with the new grant's id.
    store.record(grant(&person(5), Purpose::Statistics, 1)).await.expect("grant");
    store.record(withdraw(&person(5), Purpose::Statistics, 1)).await.expect("withdraw");
    let again = store.record(grant(&person(5), Purpose::Statistics, 1)).await.expect("grant again");

    let now = now_ms();
    let expected =
        vec![(person(1), granted.id.clone()), (person(2), expiring.id.clone()), (person(5), again.id.clone())];
    assert_eq!(store.active_consents(Purpose::Statistics, "", now).await.expect("active"), expected);
    // After the expiry, the expiring grant no longer counts.
    let later = store.active_consents(Purpose::Statistics, "", now + 2 * MINUTE_MS).await.expect("active");
    assert_eq!(later, vec![(person(1), granted.id.clone()), (person(5), again.id.clone())]);
    // A version that requires re-consent for statistics empties the list at once.
    store.publish_policy_version(&sha('2'), &[Purpose::Statistics], SECURITY).await.expect("publish v2");
    assert!(store.active_consents(Purpose::Statistics, "", now_ms()).await.expect("active").is_empty());
    // The same rules as check: a recipient is only for transfers.
    assert_eq!(invalid_field(store.active_consents(Purpose::Statistics, "bank-a", now).await), "recipient");
}
