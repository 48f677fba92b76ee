//! Registration, sign-in, the profile, rectification and consents, as a person goes
//! through them; and registrations that must store nothing. Each test runs on SQLite
//! and on PostgreSQL, with the vault and the gateway in-process over real mTLS.

mod common;

use common::*;
use qupia_api::accounts::v1::*;
use qupia_api::gateway::v1::RevealRequest;
use qupia_api::types::v1::{DocumentKind, DocumentType, Field, Purpose};
use qupia_test_support::{AccountsSuite, Backend, publish_policy_version, storage_test};
use tonic::Code;

storage_test!(register_sign_in_read_and_rectify, journey);
async fn journey(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    // Person 0, typed carelessly: spaces, capitals, a national phone spelling.
    let mut typed = header(0, suite.policy_version, &[]);
    typed.surname = "  Нұрланова ".into();
    typed.email = " Aigerim.Nurlanova@Mail.KZ ".into();
    typed.phone = "8 (701) 123-45-67".into();
    let scan = pdf(SCAN_MARKER);
    let registered = register_messages(&suite, messages(typed, &scan, None)).await.expect("register");
    assert!(registered.account_id.starts_with("acc_") && registered.account_id.len() == 26, "an opaque account id");
    assert!(registered.person_token.starts_with("qpp_"));
    assert!(registered.identity_document_token.starts_with("qpd_"));
    assert!(registered.authorisation_document_token.is_empty());
    assert!(!registered.replayed);

    // Sign-in by e-mail, whatever its case and spaces, and by phone in any common spelling.
    use sign_in_request::Key;
    for key in [
        Key::Email("aigerim.nurlanova@mail.kz".into()),
        Key::Email("  AIGERIM.NURLANOVA@MAIL.KZ ".into()),
        Key::Phone("+77011234567".into()),
        Key::Phone("+7 (701) 123 45 67".into()),
        Key::Phone("87011234567".into()),
        Key::Phone("701 123-45-67".into()),
    ] {
        let found = sign_in(&suite, key.clone()).await.unwrap_or_else(|e| panic!("sign in by {key:?}: {e}"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].account_id, registered.account_id);
        assert_eq!(found[0].person_token, registered.person_token);
    }

    // The profile is what was entered, normalised.
    let read = profile(&suite, &registered.account_id).await.expect("profile");
    let data = read.data.expect("data");
    assert_eq!(data.surname, "Нұрланова");
    assert_eq!(data.given_name, "Әйгерім");
    assert_eq!(data.patronymic, "Серікқызы");
    assert_eq!(data.email, "Aigerim.Nurlanova@mail.kz", "the local part as typed, the domain lower-cased");
    assert_eq!(data.phone, "+77011234567");
    let account = read.account.expect("account");
    assert_eq!(account.account_id, registered.account_id);
    assert_eq!(account.person_token, registered.person_token);
    assert_eq!(account.attestation, Attestation::OwnData as i32);
    assert_eq!(account.policy_version, suite.policy_version);
    assert_eq!(account.identity_document_token, registered.identity_document_token);
    assert!(account.registered_at_ms > 0);
    assert!(read.consents.is_empty(), "no consent was chosen");

    // Rectification: a new phone.
    let mut accounts = suite.accounts_as("web").await;
    let updated = accounts
        .update_profile(UpdateProfileRequest {
            account_id: registered.account_id.clone(),
            phone: Some("+7 701 555 12 34".into()),
            ..Default::default()
        })
        .await
        .expect("update the phone")
        .into_inner();
    assert_eq!(updated.updated_fields, vec![Field::Phone as i32]);
    let read = profile(&suite, &registered.account_id).await.expect("profile");
    assert_eq!(read.data.as_ref().unwrap().phone, "+77015551234");
    assert_eq!(read.data.as_ref().unwrap().email, "Aigerim.Nurlanova@mail.kz", "the other fields stay");
    assert!(read.account.unwrap().updated_at_ms >= account.registered_at_ms);
    let old = sign_in(&suite, Key::Phone("+77011234567".into())).await.unwrap_err();
    assert_eq!(old.code(), Code::NotFound, "the old phone finds nobody");
    assert_eq!(old.message(), "no account has this phone number");
    let new = sign_in(&suite, Key::Phone("8 701 555 1234".into())).await.expect("the new phone finds the account");
    assert_eq!(new[0].account_id, registered.account_id);

    // A bad value names its field, never echoes the value, and changes nothing.
    let err = accounts
        .update_profile(UpdateProfileRequest {
            account_id: registered.account_id.clone(),
            surname: Some("Иванова".into()),
            email: Some("aigerim at mail".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("email:"), "{}", err.message());
    assert!(!err.message().contains("aigerim"), "{}", err.message());
    assert_eq!(profile(&suite, &registered.account_id).await.unwrap().data.unwrap().surname, "Нұрланова");

    // The scan comes back whole, described first.
    let mut stream = accounts
        .download_document(DownloadDocumentRequest {
            account_id: registered.account_id.clone(),
            document_token: "".into(),
        })
        .await
        .expect("download the scan")
        .into_inner();
    let first = stream.message().await.expect("a first message").expect("the description");
    let Some(download_document_response::Part::Info(info)) = first.part else { panic!("the description comes first") };
    assert_eq!(info.document_token, registered.identity_document_token);
    assert_eq!(info.kind, DocumentKind::Identity as i32);
    assert_eq!(info.r#type, DocumentType::Pdf as i32);
    assert_eq!(info.size_bytes, scan.len() as u64);
    let mut content = Vec::new();
    while let Some(message) = stream.message().await.expect("the content") {
        let Some(download_document_response::Part::Chunk(chunk)) = message.part else { panic!("then only content") };
        content.extend_from_slice(&chunk);
    }
    assert!(content == scan, "the scan is returned byte for byte");
}

storage_test!(consents_chosen_at_registration_hold_until_withdrawn, consents);
async fn consents(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let registered = register(&suite, 1, &[(Purpose::Advertising, ""), (Purpose::ThirdPartyTransfer, "bank-a")]).await;
    let read = profile(&suite, &registered.account_id).await.unwrap();
    let state = |consents: &[qupia_api::gateway::v1::ConsentState], purpose: Purpose| {
        consents.iter().find(|c| c.purpose == purpose as i32).cloned()
    };
    let advertising = state(&read.consents, Purpose::Advertising).expect("advertising was chosen");
    assert!(advertising.active, "{}", advertising.reason);
    let latest = advertising.latest.expect("the grant");
    assert_eq!(latest.policy_version, suite.policy_version);
    assert_eq!(latest.channel, "registration");
    assert_eq!(latest.evidence, registered.account_id, "the evidence is the account, not personal data");
    let transfer = state(&read.consents, Purpose::ThirdPartyTransfer).expect("the transfer was chosen");
    assert!(transfer.active && transfer.recipient == "bank-a");
    assert!(state(&read.consents, Purpose::Statistics).is_none(), "statistics was not chosen");

    // The consent counts at the gateway: marketing may reach the person for advertising.
    let advertise = || async {
        suite
            .suite
            .gateway_as("marketing")
            .await
            .reveal(RevealRequest {
                token: registered.person_token.clone(),
                purpose: Purpose::Advertising as i32,
                fields: vec![],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await
    };
    advertise().await.expect("advertising is allowed with the consent");

    // Withdrawal holds at once.
    let mut accounts = suite.accounts_as("web").await;
    let change = |action: ConsentAction, purpose: Purpose, version: i64| ChangeConsentRequest {
        account_id: registered.account_id.clone(),
        action: action as i32,
        purpose: purpose as i32,
        recipient: String::new(),
        policy_version: version,
    };
    let event = accounts
        .change_consent(change(ConsentAction::Withdraw, Purpose::Advertising, 0))
        .await
        .expect("withdraw")
        .into_inner()
        .event
        .unwrap();
    assert!(!event.granted);
    assert_eq!(event.channel, "web", "the calling service is the channel");
    let denied = advertise().await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "the very next call is denied");
    let read = profile(&suite, &registered.account_id).await.unwrap();
    let advertising = state(&read.consents, Purpose::Advertising).unwrap();
    assert!(!advertising.active);
    assert_eq!(advertising.reason, "consent withdrawn");
    assert!(state(&read.consents, Purpose::ThirdPartyTransfer).unwrap().active, "the other consent stays");

    // A grant names the version shown; a version no longer in force is refused.
    accounts
        .change_consent(change(ConsentAction::Grant, Purpose::Statistics, suite.policy_version))
        .await
        .expect("grant statistics under the version in force");
    let newer = publish_policy_version(&suite.suite).await;
    let stale = accounts.change_consent(change(ConsentAction::Grant, Purpose::Advertising, suite.policy_version)).await;
    let stale = stale.unwrap_err();
    assert_eq!(stale.code(), Code::FailedPrecondition, "{}", stale.message());
    assert!(stale.message().contains(&format!("({newer})")), "{}", stale.message());
    let err = accounts.change_consent(change(ConsentAction::Grant, Purpose::ServiceDelivery, 0)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("purpose:"), "{}", err.message());
    let read = profile(&suite, &registered.account_id).await.unwrap();
    assert!(state(&read.consents, Purpose::Statistics).unwrap().active);
    assert!(!state(&read.consents, Purpose::Advertising).unwrap().active, "the refused grant changed nothing");
}

storage_test!(a_stale_policy_version_stores_nothing, stale_version);
async fn stale_version(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let accepted = suite.policy_version;
    let current = publish_policy_version(&suite.suite).await;
    for version in [accepted, current + 1] {
        let err =
            register_messages(&suite, messages(header(0, version, &[]), &pdf(SCAN_MARKER), None)).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "version {version}: {}", err.message());
        assert!(err.message().contains(&format!("must accept version {current}")), "{}", err.message());
    }
    assert_nothing_stored(&suite).await;
}

storage_test!(bad_registrations_store_nothing, bad_registrations);
async fn bad_registrations(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let version = suite.policy_version;
    let scan = pdf(SCAN_MARKER);
    let authorised = || RegistrationHeader { attestation: Attestation::Authorised as i32, ..header(0, version, &[]) };
    let cases: Vec<(&str, Vec<RegisterRequest>, &str)> = vec![
        ("authorised without its document", messages(authorised(), &scan, None), "authorisation_document_chunk"),
        (
            "an authorisation document for one's own data",
            messages(header(0, version, &[]), &scan, Some(&pdf(AUTHORITY_MARKER))),
            "authorisation_document_chunk",
        ),
        ("no scan", messages(header(0, version, &[]), &[], None), "identity_document_chunk"),
        (
            "a scan that is no PDF, JPEG or PNG",
            messages(header(0, version, &[]), b"plain text", None),
            "identity_document_chunk",
        ),
        ("no header", messages(header(0, version, &[]), &scan, None).split_off(1), "header"),
        (
            "a bad e-mail",
            messages(RegistrationHeader { email: "aigerim@".into(), ..header(0, version, &[]) }, &scan, None),
            "header.email",
        ),
        (
            "a consent that needs no consent",
            messages(header(0, version, &[(Purpose::ServiceDelivery, "")]), &scan, None),
            "header.consents[0].purpose",
        ),
        (
            "no attestation",
            messages(RegistrationHeader { attestation: 0, ..header(0, version, &[]) }, &scan, None),
            "header.attestation",
        ),
    ];
    for (case, messages, field) in cases {
        let err = register_messages(&suite, messages).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{case}: {}", err.message());
        assert!(err.message().starts_with(&format!("{field}:")), "{case}: {}", err.message());
    }
    // A document past the size limit is refused as it arrives.
    let mut small = AccountsSuite::start_with(backend, |config| config.max_document_bytes = 1024).await;
    let err = register_messages(&small, messages(header(0, small.policy_version, &[]), &scan, None)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "identity_document_chunk: the document is larger than 1024 bytes");
    assert_nothing_stored(&small).await;
    small.stop().await;
    assert_nothing_stored(&suite).await;
}

storage_test!(an_authorised_registration_keeps_its_authority, authorised);
async fn authorised(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let header = RegistrationHeader {
        attestation: Attestation::Authorised as i32,
        ..header(2, suite.policy_version, &[(Purpose::Statistics, "")])
    };
    let registered = register_messages(&suite, messages(header, &pdf(SCAN_MARKER), Some(&pdf(AUTHORITY_MARKER))))
        .await
        .expect("an authorised registration with its document");
    assert!(registered.authorisation_document_token.starts_with("qpd_"));
    assert_ne!(registered.authorisation_document_token, registered.identity_document_token);
    let account = profile(&suite, &registered.account_id).await.unwrap().account.unwrap();
    assert_eq!(account.attestation, Attestation::Authorised as i32);
    assert_eq!(account.authorisation_document_token, registered.authorisation_document_token);
}

storage_test!(a_retried_registration_is_the_first_one, idempotent);
async fn idempotent(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let header = RegistrationHeader { idempotency_key: "form-7f3a".into(), ..header(0, suite.policy_version, &[]) };
    let first = register_messages(&suite, messages(header.clone(), &pdf(SCAN_MARKER), None)).await.unwrap();
    let again = register_messages(&suite, messages(header, &pdf(SCAN_MARKER), None)).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.account_id, first.account_id);
    assert_eq!(again.identity_document_token, first.identity_document_token);
    assert_eq!(count(&suite.db, "accounts").await, 1);
    assert_eq!(count(&suite.suite.vault.db, "persons").await, 1);
}

storage_test!(a_failed_step_undoes_the_registration, undone);
async fn undone(backend: Backend) {
    // A gateway that will not take consents from the accounts service: the person and
    // the scan are stored, then recording the consent fails.
    let suite = AccountsSuite::start_configured(
        backend,
        |gateway| gateway.roles.consent_managers.retain(|id| !id.as_str().ends_with("/sa/accounts")),
        |_| {},
    )
    .await;
    let err = register_messages(
        &suite,
        messages(header(0, suite.policy_version, &[(Purpose::Advertising, "")]), &pdf(SCAN_MARKER), None),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().starts_with("the registration was undone (the stored person was erased): failed to record"),
        "{}",
        err.message()
    );
    assert_nothing_stored(&suite).await;
    use sign_in_request::Key;
    let err = sign_in(&suite, Key::Email(qupia_test_support::people::PEOPLE[0].3.into())).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
