//! The trust boundaries, across the whole suite, on SQLite and PostgreSQL: marketing
//! calling the vault directly is refused whatever it asks, and marketing asking the
//! gateway for a name is refused even for a person who consented to advertising; both
//! refusals leave a trace, and neither reveals anything.

use qupia_api::gateway::v1 as gateway;
use qupia_api::types::v1::{AggregateDimension, Field, Purpose};
use qupia_api::vault::v1 as vault;
use qupia_api::vault::v1::vault_document_service_client::VaultDocumentServiceClient;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::vault_statistics_service_client::VaultStatisticsServiceClient;
use qupia_e2e::{Everything, PEOPLE};
use qupia_test_support::{Backend, connect, storage_test};
use tonic::Code;

storage_test!(marketing_reaches_no_value_around_the_gateway, boundaries);
async fn boundaries(backend: Backend) {
    let mut suite = Everything::start(backend).await;
    let her = suite.register(0, 8 * 1024, &[Purpose::Advertising, Purpose::Statistics]).await.expect("register");

    // Straight to the vault with marketing's own certificate: refused at the door, for
    // a reveal, a lookup, a document and an aggregate alike.
    let core = &suite.accounts.suite;
    let channel = connect(core.vault.addr, &core.pki.service("marketing"), "vault").await.expect("a TLS connection");
    let access = || {
        Some(vault::AccessContext {
            purpose: Purpose::Advertising as i32,
            decision_id: "forged".into(),
            caller: "spiffe://qupia/ns/default/sa/marketing".into(),
            ..Default::default()
        })
    };
    let refusals = [
        VaultServiceClient::new(channel.clone())
            .reveal(vault::RevealRequest { token: her.person_token.clone(), fields: vec![], access: access() })
            .await
            .map(|_| ()),
        VaultServiceClient::new(channel.clone())
            .lookup(vault::LookupRequest {
                key: Some(vault::lookup_request::Key::Email(PEOPLE[0].3.into())),
                access: access(),
            })
            .await
            .map(|_| ()),
        VaultDocumentServiceClient::new(channel.clone())
            .download_document(vault::DownloadDocumentRequest {
                document_token: her.identity_document_token.clone(),
                access: access(),
            })
            .await
            .map(|_| ()),
        VaultStatisticsServiceClient::new(channel.clone())
            .aggregate(vault::AggregateRequest {
                subjects: vec![vault::AggregateSubject {
                    person_token: her.person_token.clone(),
                    consent_id: String::new(),
                }],
                dimension: AggregateDimension::EmailDomain as i32,
                min_group_size: 2,
                access: access(),
            })
            .await
            .map(|_| ()),
    ];
    for refused in refusals {
        let status = refused.expect_err("the vault answers the gateway only");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(!status.message().contains(PEOPLE[0].3), "no value in the refusal");
    }

    // Through the gateway, a name is never marketing's, consent or not, for any purpose.
    let mut gateway_as_marketing = core.gateway_as("marketing").await;
    for (purpose, field) in [
        (Purpose::Advertising, Field::Surname),
        (Purpose::Advertising, Field::GivenName),
        (Purpose::ServiceDelivery, Field::Surname),
        (Purpose::Statistics, Field::Surname),
    ] {
        let status = gateway_as_marketing
            .reveal(gateway::RevealRequest {
                token: her.person_token.clone(),
                purpose: purpose as i32,
                fields: vec![field as i32],
                ..Default::default()
            })
            .await
            .expect_err("marketing may not see a name");
        assert_eq!(status.code(), Code::PermissionDenied, "{purpose:?} {field:?}: {status:?}");
        assert!(!status.message().contains(PEOPLE[0].0), "no value in the refusal");
    }
    // What it may see, it sees: her e-mail, for advertising, with her consent.
    let revealed = gateway_as_marketing
        .reveal(gateway::RevealRequest {
            token: her.person_token.clone(),
            purpose: Purpose::Advertising as i32,
            fields: vec![Field::Email as i32],
            ..Default::default()
        })
        .await
        .expect("her e-mail for advertising")
        .into_inner();
    assert_eq!(revealed.values.iter().map(|v| v.value.as_str()).collect::<Vec<_>>(), [PEOPLE[0].3]);

    // Each refusal at the gateway is in the access log, as a denial naming marketing.
    let denials = Everything::count(
        &core.vault.db,
        "SELECT COUNT(*) FROM audit_log WHERE caller = 'spiffe://qupia/ns/default/sa/marketing' \
         AND decision = 'denied' AND operation = 'reveal'",
    )
    .await;
    assert_eq!(denials, 4);
    suite.stop().await;
}
