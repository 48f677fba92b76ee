//! The vault's API on SQLite and PostgreSQL: round trips, lookup, rectification,
//! erasure, idempotency, integrity, bad input, and no plaintext at rest.

use qupia_api::types::v1::{Field, Purpose};
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::people::{PEOPLE, needles};
use qupia_test_support::{Backend, VaultHarness, scan_database, storage_test};
use sqlx::{Connection, Row};
use tonic::Code;
use tonic::transport::Channel;

fn person(i: usize) -> PersonInput {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
    PersonInput {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: patronymic.into(),
        email: email.into(),
        phone: phone.into(),
    }
}

fn access() -> Option<AccessContext> {
    Some(AccessContext {
        purpose: Purpose::ServiceDelivery as i32,
        decision_id: "test".into(),
        caller: "spiffe://qupia/ns/default/sa/accounts".into(),
        ..Default::default()
    })
}

async fn tokenize(client: &mut VaultServiceClient<Channel>, input: PersonInput, key: &str) -> PersonTokens {
    client
        .tokenize(TokenizeRequest { person: Some(input), idempotency_key: key.into(), ..Default::default() })
        .await
        .expect("tokenize")
        .into_inner()
        .tokens
        .expect("tokens")
}

async fn reveal(
    client: &mut VaultServiceClient<Channel>,
    token: &str,
    fields: &[Field],
) -> Result<Vec<(i32, String)>, tonic::Status> {
    let response = client
        .reveal(RevealRequest {
            token: token.into(),
            fields: fields.iter().map(|f| *f as i32).collect(),
            access: access(),
        })
        .await?
        .into_inner();
    Ok(response.values.into_iter().map(|v| (v.field, v.value)).collect())
}

async fn lookup(client: &mut VaultServiceClient<Channel>, key: lookup_request::Key) -> Vec<String> {
    client.lookup(LookupRequest { key: Some(key), access: access() }).await.expect("lookup").into_inner().person_tokens
}

/// Opens a raw connection to the vault's database, as an attacker or operator would.
async fn raw(vault: &VaultHarness) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&vault.db.admin_url).await.expect("raw connection")
}

async fn count(vault: &VaultHarness, table: &str) -> i64 {
    let mut conn = raw(vault).await;
    sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
        .fetch_one(&mut conn)
        .await
        .expect("count")
        .try_get("n")
        .expect("n")
}

storage_test!(round_trip_of_every_field, round_trip);
async fn round_trip(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let tokens = tokenize(&mut client, person(0), "").await;
    assert_eq!(tokens.field_tokens.len(), 5, "surname, given name, patronymic, e-mail, phone");

    let values = reveal(&mut client, &tokens.person_token, &[]).await.expect("reveal");
    let (surname, given, patronymic, email, phone) = PEOPLE[0];
    assert_eq!(
        values,
        vec![
            (Field::Surname as i32, surname.to_owned()),
            (Field::GivenName as i32, given.to_owned()),
            (Field::Patronymic as i32, patronymic.to_owned()),
            (Field::Email as i32, email.to_owned()),
            (Field::Phone as i32, phone.to_owned()),
        ]
    );

    // Only the fields asked for.
    let values = reveal(&mut client, &tokens.person_token, &[Field::Email]).await.expect("reveal e-mail");
    assert_eq!(values, vec![(Field::Email as i32, email.to_owned())]);

    // Each field token reveals its own field, and nothing else.
    for field_token in &tokens.field_tokens {
        let values = reveal(&mut client, &field_token.token, &[]).await.expect("reveal field token");
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].0, field_token.field);
    }
    let phone_token = &tokens.field_tokens.iter().find(|t| t.field == Field::Phone as i32).unwrap().token;
    let err = reveal(&mut client, phone_token, &[Field::Surname]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A person without a patronymic has no patronymic token.
    let tokens = tokenize(&mut client, person(2), "").await;
    assert_eq!(tokens.field_tokens.len(), 4);
    assert!(tokens.field_tokens.iter().all(|t| t.field != Field::Patronymic as i32));
}

storage_test!(lookup_normalises_email_and_phone, lookup_normalises);
async fn lookup_normalises(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut input = person(0);
    input.email = "Aigerim.Nurlanova@Mail.KZ".into();
    input.phone = "8 (701) 123-45-67".into();
    let tokens = tokenize(&mut client, input, "").await;
    tokenize(&mut client, person(1), "").await;

    for email in ["aigerim.nurlanova@mail.kz", "  AIGERIM.NURLANOVA@MAIL.KZ  ", "Aigerim.Nurlanova@mail.kz"] {
        let found = lookup(&mut client, lookup_request::Key::Email(email.into())).await;
        assert_eq!(found, vec![tokens.person_token.clone()], "e-mail spelled {email:?}");
    }
    for phone in ["+7 701 123 45 67", "8 (701) 123-45-67", "+77011234567"] {
        let found = lookup(&mut client, lookup_request::Key::Phone(phone.into())).await;
        assert_eq!(found, vec![tokens.person_token.clone()], "phone spelled {phone:?}");
    }
    let nobody = lookup(&mut client, lookup_request::Key::Email("nobody@mail.kz".into())).await;
    assert!(nobody.is_empty());
}

storage_test!(rectification_keeps_the_token, rectification);
async fn rectification(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let tokens = tokenize(&mut client, person(1), "").await;
    let email_token = tokens.field_tokens.iter().find(|t| t.field == Field::Email as i32).unwrap().token.clone();

    let updated = client
        .update_field(UpdateFieldRequest {
            person_token: tokens.person_token.clone(),
            field: Field::Email as i32,
            value: "Petr.Ivanov@New.kz".into(),
            ..Default::default()
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(updated.field_token, email_token, "the field keeps its token");
    let values = reveal(&mut client, &email_token, &[]).await.unwrap();
    assert_eq!(values, vec![(Field::Email as i32, "Petr.Ivanov@new.kz".to_owned())]);

    // The blind index follows: the new address is found, the old one is not.
    let found = lookup(&mut client, lookup_request::Key::Email("petr.ivanov@new.kz".into())).await;
    assert_eq!(found, vec![tokens.person_token.clone()]);
    assert!(lookup(&mut client, lookup_request::Key::Email(PEOPLE[1].3.into())).await.is_empty());

    // Clearing the patronymic removes it.
    client
        .update_field(UpdateFieldRequest {
            person_token: tokens.person_token.clone(),
            field: Field::Patronymic as i32,
            value: String::new(),
            ..Default::default()
        })
        .await
        .expect("clear patronymic");
    let values = reveal(&mut client, &tokens.person_token, &[Field::Patronymic]).await.unwrap();
    assert!(values.is_empty());
}

storage_test!(erase_makes_every_token_not_found, erase);
async fn erase(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let gone = tokenize(&mut client, person(0), "").await;
    let kept = tokenize(&mut client, person(1), "").await;

    let erased = client
        .erase(EraseRequest { person_token: gone.person_token.clone(), ..Default::default() })
        .await
        .expect("erase")
        .into_inner();
    assert_eq!(erased.erased_fields, 5);

    for token in std::iter::once(&gone.person_token).chain(gone.field_tokens.iter().map(|t| &t.token)) {
        let err = reveal(&mut client, token, &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "token of the erased person");
    }
    assert!(lookup(&mut client, lookup_request::Key::Email(PEOPLE[0].3.into())).await.is_empty());
    assert!(lookup(&mut client, lookup_request::Key::Phone(PEOPLE[0].4.into())).await.is_empty());
    let again =
        client.erase(EraseRequest { person_token: gone.person_token.clone(), ..Default::default() }).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound);

    // Nobody else is touched.
    assert_eq!(reveal(&mut client, &kept.person_token, &[]).await.unwrap().len(), 5);
    assert_eq!(
        lookup(&mut client, lookup_request::Key::Email(PEOPLE[1].3.into())).await,
        vec![kept.person_token.clone()]
    );
    // The erased person's key and ciphertexts are gone from the database.
    assert_eq!(count(&vault, "persons").await, 1);
    assert_eq!(count(&vault, "field_values").await, 5);
    assert_eq!(count(&vault, "erasures").await, 1);
}

storage_test!(idempotency_key_stores_one_person, idempotency);
async fn idempotency(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let first = client
        .tokenize(TokenizeRequest {
            person: Some(person(0)),
            idempotency_key: "signup-42".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);

    // Retries, some of them at the same time, get the same tokens.
    let mut retries = Vec::new();
    for _ in 0..4 {
        let mut client = client.clone();
        retries.push(tokio::spawn(async move {
            client
                .tokenize(TokenizeRequest {
                    person: Some(person(0)),
                    idempotency_key: "signup-42".into(),
                    ..Default::default()
                })
                .await
        }));
    }
    for retry in retries {
        let retry = retry.await.unwrap().expect("retry").into_inner();
        assert!(retry.replayed);
        assert_eq!(retry.tokens, first.tokens);
    }
    assert_eq!(count(&vault, "persons").await, 1);

    // The same key with other data is refused, and stores nothing.
    let err = client
        .tokenize(TokenizeRequest {
            person: Some(person(1)),
            idempotency_key: "signup-42".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(count(&vault, "persons").await, 1);
}

storage_test!(moved_ciphertext_fails_to_reveal, moved_ciphertext);
async fn moved_ciphertext(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let a = tokenize(&mut client, person(0), "").await;
    let b = tokenize(&mut client, person(1), "").await;
    let field_token =
        |t: &PersonTokens, f: Field| t.field_tokens.iter().find(|x| x.field == f as i32).unwrap().token.clone();

    let mut conn = raw(&vault).await;
    // A's e-mail ciphertext copied over B's e-mail: another person's slot.
    sqlx::query(
        "UPDATE field_values SET ciphertext = (SELECT ciphertext FROM field_values WHERE token_id = $1) WHERE token_id = $2",
    )
    .bind(token_id(&field_token(&a, Field::Email)))
    .bind(token_id(&field_token(&b, Field::Email)))
    .execute(&mut conn)
    .await
    .unwrap();
    // A's e-mail ciphertext copied over A's phone: another field's slot.
    sqlx::query(
        "UPDATE field_values SET ciphertext = (SELECT ciphertext FROM field_values WHERE token_id = $1) WHERE token_id = $2",
    )
    .bind(token_id(&field_token(&a, Field::Email)))
    .bind(token_id(&field_token(&a, Field::Phone)))
    .execute(&mut conn)
    .await
    .unwrap();

    for token in [field_token(&b, Field::Email), field_token(&a, Field::Phone), b.person_token.clone()] {
        let err = reveal(&mut client, &token, &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::DataLoss);
        assert_eq!(err.message(), "a stored value failed its integrity check");
    }
    // Untouched fields still reveal.
    let ok = reveal(&mut client, &a.person_token, &[Field::Email, Field::Surname]).await.unwrap();
    assert_eq!(ok.len(), 2);
}

/// The id inside a token, found the way the vault stores it: by asking the database
/// which row the token's field value is in is not possible from outside, so the test
/// decodes the token (base64url of id || tag after a 4-character prefix).
fn token_id(token: &str) -> Vec<u8> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(&token[4..]).unwrap();
    bytes[..16].to_vec()
}

storage_test!(no_plaintext_at_rest, no_plaintext);
async fn no_plaintext(backend: Backend) {
    let mut vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let mut kept = Vec::new();
    for i in 0..PEOPLE.len() {
        kept.push(tokenize(&mut client, person(i), &format!("k{i}")).await);
    }
    // Rectify, erase, look up: every write path.
    client
        .update_field(UpdateFieldRequest {
            person_token: kept[1].person_token.clone(),
            field: Field::Surname as i32,
            value: "Петров".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client.erase(EraseRequest { person_token: kept[2].person_token.clone(), ..Default::default() }).await.unwrap();
    lookup(&mut client, lookup_request::Key::Email(PEOPLE[0].3.into())).await;
    drop(client);
    vault.stop().await;

    let mut needles = needles();
    needles.push("Петров");
    // The phone's national digits too, in case a number were stored unformatted.
    needles.extend(["7011234567", "7757654321", "7019876543"]);
    let leaks = scan_database(&vault.db, &needles).await;
    assert!(leaks.is_empty(), "personal data found at rest: {leaks:?}");
}

storage_test!(bad_input_is_refused_and_changes_nothing, bad_input);
async fn bad_input(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let good = tokenize(&mut client, person(0), "").await;
    let before = count(&vault, "field_values").await;

    let long = "Ә".repeat(10_000);
    let cases: Vec<(&str, PersonInput)> = vec![
        ("person.surname", PersonInput { surname: String::new(), ..person(1) }),
        ("person.given_name", PersonInput { given_name: long.clone(), ..person(1) }),
        ("person.surname", PersonInput { surname: "Иванов2".into(), ..person(1) }),
        ("person.given_name", PersonInput { given_name: "Пё\u{202E}тр".into(), ..person(1) }),
        ("person.email", PersonInput { email: "p.ivanov@@example".into(), ..person(1) }),
        ("person.email", PersonInput { email: "not an address".into(), ..person(1) }),
        ("person.phone", PersonInput { phone: "12345".into(), ..person(1) }),
        ("person.phone", PersonInput { phone: "+7 701 ABC 45 67".into(), ..person(1) }),
    ];
    for (field, input) in cases {
        let secret_bits = [input.surname.clone(), input.given_name.clone(), input.email.clone(), input.phone.clone()];
        let err = client
            .tokenize(TokenizeRequest { person: Some(input), idempotency_key: String::new(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert!(err.message().starts_with(&format!("{field}: ")), "{} names {field}", err.message());
        for bit in secret_bits.iter().filter(|b| b.len() > 3) {
            assert!(!err.message().contains(bit.as_str()), "the error echoes a value");
        }
    }

    // Unknown fields, malformed and forged tokens.
    let err = reveal(&mut client, &good.person_token, &[]).await.map(|_| ());
    assert!(err.is_ok());
    let bad_field = client
        .reveal(RevealRequest { token: good.person_token.clone(), fields: vec![99], access: access() })
        .await
        .unwrap_err();
    assert_eq!(bad_field.code(), Code::InvalidArgument);
    assert_eq!(bad_field.message(), "fields[0]: is not a known field");
    let unspecified = client
        .reveal(RevealRequest { token: good.person_token.clone(), fields: vec![0], access: access() })
        .await
        .unwrap_err();
    assert_eq!(unspecified.code(), Code::InvalidArgument);

    let mut forged = good.person_token.clone().into_bytes();
    let last = forged.len() - 6;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    for token in
        ["", "qpp_", "not-a-token", &"x".repeat(10_000), &forged, &good.person_token.replacen("qpp_", "qpf_", 1)]
    {
        let err = reveal(&mut client, token, &[]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "token {:.20}", token);
        assert!(err.message().starts_with("token: "));
    }
    let err = client
        .update_field(UpdateFieldRequest {
            person_token: forged.clone(),
            field: Field::Email as i32,
            value: "a@b.kz".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = client
        .update_field(UpdateFieldRequest {
            person_token: good.person_token.clone(),
            field: Field::Phone as i32,
            value: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "value: is not a valid phone number");

    // A purpose is required for a reveal.
    let err = client
        .reveal(RevealRequest { token: good.person_token.clone(), fields: vec![], access: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A message over the request size limit.
    let err = client
        .tokenize(TokenizeRequest {
            person: Some(PersonInput { surname: "Ә".repeat(1024 * 1024), ..person(1) }),
            idempotency_key: String::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("request: "), "{}", err.message());

    // A bad idempotency key.
    let err = client
        .tokenize(TokenizeRequest { person: Some(person(1)), idempotency_key: "k".repeat(129), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    assert_eq!(count(&vault, "persons").await, 1, "nothing was written");
    assert_eq!(count(&vault, "field_values").await, before);
}

storage_test!(batches_answer_per_item, batches);
async fn batches(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let response = client
        .batch_tokenize(BatchTokenizeRequest {
            items: vec![
                BatchTokenizeItem { person: Some(person(0)), idempotency_key: String::new() },
                BatchTokenizeItem {
                    person: Some(PersonInput { email: "broken".into(), ..person(1) }),
                    idempotency_key: String::new(),
                },
                BatchTokenizeItem { person: Some(person(2)), idempotency_key: String::new() },
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.results.len(), 3);
    let tokens: Vec<Option<PersonTokens>> = response
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(batch_tokenize_result::Result::Tokens(t)) => Some(t),
            Some(batch_tokenize_result::Result::Error(e)) => {
                assert_eq!(e.code, Code::InvalidArgument as i32);
                assert_eq!(e.field, "items[1].person.email");
                None
            }
            None => panic!("empty result"),
        })
        .collect();
    assert!(tokens[0].is_some() && tokens[1].is_none() && tokens[2].is_some());
    assert_eq!(count(&vault, "persons").await, 2);

    let revealed = client
        .batch_reveal(BatchRevealRequest {
            items: vec![
                BatchRevealItem {
                    token: tokens[0].as_ref().unwrap().person_token.clone(),
                    fields: vec![Field::Email as i32],
                    ..Default::default()
                },
                BatchRevealItem { token: "garbage".into(), fields: vec![], ..Default::default() },
                BatchRevealItem {
                    token: tokens[2].as_ref().unwrap().person_token.clone(),
                    fields: vec![Field::Phone as i32],
                    ..Default::default()
                },
            ],
            access: access(),
        })
        .await
        .unwrap()
        .into_inner();
    let values: Vec<Result<String, String>> = revealed
        .results
        .into_iter()
        .map(|r| match r.result.unwrap() {
            batch_reveal_result::Result::Revealed(v) => Ok(v.values[0].value.clone()),
            batch_reveal_result::Result::Error(e) => Err(e.field),
        })
        .collect();
    assert_eq!(values, vec![Ok(PEOPLE[0].3.to_owned()), Err("items[1].token".to_owned()), Ok(PEOPLE[2].4.to_owned())]);

    let empty = client.batch_tokenize(BatchTokenizeRequest { items: vec![], ..Default::default() }).await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

storage_test!(batches_settle_replays_and_repeats_per_item, batch_replays);
async fn batch_replays(backend: Backend) {
    let vault = VaultHarness::start(backend).await;
    let mut client = vault.gateway().await;
    let earlier = tokenize(&mut client, person(0), "signup-1").await;
    let item = |i: usize, key: &str| BatchTokenizeItem { person: Some(person(i)), idempotency_key: key.into() };
    // A key stored by an earlier call, a key used twice in this batch, and new people.
    let response = client
        .batch_tokenize(BatchTokenizeRequest {
            items: vec![item(1, "signup-2"), item(0, "signup-1"), item(1, "signup-2"), item(2, "")],
            ..Default::default()
        })
        .await
        .expect("batch tokenize")
        .into_inner();
    let tokens: Vec<PersonTokens> = response
        .results
        .into_iter()
        .map(|r| match r.result {
            Some(batch_tokenize_result::Result::Tokens(t)) => t,
            other => panic!("every item is stored or replayed: {other:?}"),
        })
        .collect();
    assert_eq!(tokens[1], earlier, "the earlier person, not a new one");
    assert_eq!(tokens[2], tokens[0], "a key used twice in one batch answers the first person");
    assert_ne!(tokens[3].person_token, tokens[0].person_token);
    assert_eq!(count(&vault, "persons").await, 3);
    assert_eq!(count(&vault, "blind_index").await, 6, "two index entries per person, none twice");

    // A batch reveal of the same person twice and of an erased person answers per item.
    client.erase(EraseRequest { person_token: tokens[3].person_token.clone(), access: access() }).await.expect("erase");
    let wanted = [&tokens[0], &tokens[0], &tokens[3], &earlier];
    let revealed = client
        .batch_reveal(BatchRevealRequest {
            items: wanted
                .iter()
                .map(|t| BatchRevealItem {
                    token: t.person_token.clone(),
                    fields: vec![Field::Email as i32],
                    ..Default::default()
                })
                .collect(),
            access: access(),
        })
        .await
        .expect("batch reveal")
        .into_inner();
    let values: Vec<Result<String, i32>> = revealed
        .results
        .into_iter()
        .map(|r| match r.result.expect("a result") {
            batch_reveal_result::Result::Revealed(v) => Ok(v.values[0].value.clone()),
            batch_reveal_result::Result::Error(e) => Err(e.code),
        })
        .collect();
    assert_eq!(
        values,
        vec![
            Ok(PEOPLE[1].3.to_owned()),
            Ok(PEOPLE[1].3.to_owned()),
            Err(Code::NotFound as i32),
            Ok(PEOPLE[0].3.to_owned())
        ]
    );
}
