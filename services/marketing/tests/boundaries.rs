//! What marketing may not do: reach the vault, see a name, be called by an identity
//! it does not know; and bad input is refused with the field named and nothing stored.
//! Each test runs on SQLite and on PostgreSQL.

mod common;

use common::*;
use qupia_api::gateway::v1::RevealRequest;
use qupia_api::marketing::v1::*;
use qupia_api::types::v1::{Field, Purpose};
use qupia_api::vault::v1 as vault;
use qupia_test_support::{Backend, MarketingSuite, storage_test};
use tonic::Code;

storage_test!(marketing_cannot_reach_the_vault_or_see_a_name, trust_boundaries);
async fn trust_boundaries(backend: Backend) {
    let suite = MarketingSuite::start(backend).await;
    let token = suite.register(person(0)).await;
    suite.grant(&token, Purpose::Advertising).await;

    // The vault answers only the gateway: marketing's own certificate is refused.
    let mut direct = suite.suite.vault.client_as("marketing").await;
    let err = direct
        .reveal(vault::RevealRequest {
            token: token.clone(),
            fields: vec![Field::Email as i32],
            access: Some(vault::AccessContext {
                purpose: Purpose::Advertising as i32,
                caller: "spiffe://qupia/ns/default/sa/marketing".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("the vault refuses marketing");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    // Through the gateway, with consent, advertising still never shows a name.
    let mut gateway = suite.suite.gateway_as("marketing").await;
    for field in [Field::Surname, Field::GivenName, Field::Patronymic] {
        let err = gateway
            .reveal(RevealRequest {
                token: token.clone(),
                purpose: Purpose::Advertising as i32,
                fields: vec![field as i32],
                recipient: String::new(),
                disclosure_request_id: String::new(),
            })
            .await
            .expect_err("a name is never revealed for advertising");
        assert_eq!(err.code(), Code::PermissionDenied, "{field:?}: {}", err.message());
    }
    // While the contact the purpose allows is revealed: the denial above is about the field.
    let email = gateway
        .reveal(RevealRequest {
            token: token.clone(),
            purpose: Purpose::Advertising as i32,
            fields: vec![Field::Email as i32],
            recipient: String::new(),
            disclosure_request_id: String::new(),
        })
        .await
        .expect("the e-mail is allowed for advertising with consent")
        .into_inner();
    assert_eq!(email.values.len(), 1);
}

storage_test!(only_configured_callers_may_call_marketing, admission);
async fn admission(backend: Backend) {
    let suite = MarketingSuite::start(backend).await;
    for stranger in ["accounts", "gateway", "web"] {
        let err = suite
            .marketing_as(stranger)
            .await
            .create_audience(CreateAudienceRequest { name: "x".into(), person_tokens: vec![] })
            .await
            .expect_err("not a configured caller");
        assert_eq!(err.code(), Code::PermissionDenied, "{stranger}: {}", err.message());
    }
    suite.marketing().await.list_audiences(ListAudiencesRequest {}).await.expect("the operator CLI may call");
    assert!(row_counts(&suite.db).await.iter().all(|(_, n)| *n == 0), "nothing stored by refused calls");
}

/// A person token that could exist (the right shape), but was never issued.
fn unknown_token() -> String {
    format!("qpp_{}", "Q".repeat(35))
}

storage_test!(bad_input_is_refused_and_changes_nothing, bad_input);
async fn bad_input(backend: Backend) {
    let suite = MarketingSuite::start(backend).await;
    let mut marketing = suite.marketing().await;
    let token = suite.register(person(0)).await;
    let audience = create_audience(&suite, "Valid", std::slice::from_ref(&token)).await;
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, "Hi", "Hello {{email}}").await;
    let before = row_counts(&suite.db).await;

    // (what, code, field named in the message)
    let mut outcomes: Vec<(&str, Result<(), tonic::Status>, Code, &str)> = Vec::new();
    let audience_request =
        |name: &str, tokens: Vec<String>| CreateAudienceRequest { name: name.into(), person_tokens: tokens };
    outcomes.push((
        "empty audience name",
        marketing.create_audience(audience_request("", vec![token.clone()])).await.map(|_| ()),
        Code::InvalidArgument,
        "name:",
    ));
    outcomes.push((
        "blank audience name",
        marketing.create_audience(audience_request("   ", vec![])).await.map(|_| ()),
        Code::InvalidArgument,
        "name:",
    ));
    outcomes.push((
        "an e-mail where a token belongs",
        marketing
            .create_audience(audience_request("A", vec![token.clone(), "p.ivanov@example.ru".into()]))
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "person_tokens[1]:",
    ));
    outcomes.push((
        "members of an unknown audience",
        marketing
            .add_audience_members(AddAudienceMembersRequest {
                audience_id: format!("aud_{}", "A".repeat(22)),
                person_tokens: vec![unknown_token()],
            })
            .await
            .map(|_| ()),
        Code::NotFound,
        "audience",
    ));
    outcomes.push((
        "a malformed audience id",
        marketing.get_audience(GetAudienceRequest { audience_id: "aud_../../etc".into() }).await.map(|_| ()),
        Code::InvalidArgument,
        "audience_id:",
    ));
    let campaign_request = |channel: Channel, subject: &str, body: &str| CreateCampaignRequest {
        name: "Bad".into(),
        audience_id: audience.id.clone(),
        channel: channel as i32,
        subject: subject.into(),
        body: body.into(),
    };
    for (what, request, field) in [
        ("unknown placeholder", campaign_request(Channel::Email, "Hi", "Hello {{iin}}"), "body:"),
        ("name placeholder", campaign_request(Channel::Email, "Hi", "Dear {{surname}}"), "body:"),
        ("name in the subject", campaign_request(Channel::Email, "Dear {{given_name}}", "Hello"), "subject:"),
        ("SMS with an e-mail placeholder", campaign_request(Channel::Sms, "", "Write to {{email}}"), "body:"),
        ("e-mail with a phone placeholder", campaign_request(Channel::Email, "Hi", "Call {{phone}}"), "body:"),
        ("unclosed placeholder", campaign_request(Channel::Email, "Hi", "Hello {{email"), "body:"),
        ("unsubscribe without a page", campaign_request(Channel::Email, "Hi", "{{unsubscribe}}"), "body:"),
        ("e-mail without a subject", campaign_request(Channel::Email, "", "Hello"), "subject:"),
        ("SMS with a subject", campaign_request(Channel::Sms, "Hi", "Hello"), "subject:"),
        ("subject over two lines", campaign_request(Channel::Email, "Hi\r\nBcc: x", "Hello"), "subject:"),
        ("empty body", campaign_request(Channel::Email, "Hi", " "), "body:"),
        ("no channel", campaign_request(Channel::Unspecified, "Hi", "Hello"), "channel:"),
    ] {
        outcomes.push((what, marketing.create_campaign(request).await.map(|_| ()), Code::InvalidArgument, field));
    }
    let mut unknown_channel = campaign_request(Channel::Email, "Hi", "Hello");
    unknown_channel.channel = 42;
    outcomes.push((
        "unknown channel",
        marketing.create_campaign(unknown_channel).await.map(|_| ()),
        Code::InvalidArgument,
        "channel:",
    ));
    let mut unknown_audience = campaign_request(Channel::Email, "Hi", "Hello");
    unknown_audience.audience_id = format!("aud_{}", "B".repeat(22));
    outcomes.push((
        "campaign for an unknown audience",
        marketing.create_campaign(unknown_audience).await.map(|_| ()),
        Code::NotFound,
        "audience",
    ));
    outcomes.push((
        "send an unknown campaign",
        marketing
            .send_campaign(SendCampaignRequest { campaign_id: format!("cmp_{}", "C".repeat(22)), wait: false })
            .await
            .map(|_| ()),
        Code::NotFound,
        "campaign",
    ));
    outcomes.push((
        "send with an audience id",
        marketing
            .send_campaign(SendCampaignRequest { campaign_id: audience.id.clone(), wait: false })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "campaign_id:",
    ));
    outcomes.push((
        "get an unknown campaign",
        marketing.get_campaign(GetCampaignRequest { campaign_id: format!("cmp_{}", "D".repeat(22)) }).await.map(|_| ()),
        Code::NotFound,
        "campaign",
    ));
    outcomes.push((
        "statistics without a dimension",
        marketing
            .get_statistics(GetStatisticsRequest { audience_id: audience.id.clone(), dimension: 0 })
            .await
            .map(|_| ()),
        Code::InvalidArgument,
        "dimension:",
    ));
    outcomes.push((
        "statistics of an unknown audience",
        marketing
            .get_statistics(GetStatisticsRequest { audience_id: format!("aud_{}", "E".repeat(22)), dimension: 1 })
            .await
            .map(|_| ()),
        Code::NotFound,
        "audience",
    ));

    for (what, outcome, code, field) in outcomes {
        let err = outcome.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().starts_with(field), "{what}: the message names {field}: {}", err.message());
        // The refused value is never repeated back.
        for value in ["p.ivanov@example.ru", "iin", "surname", "given_name", "Bcc", "../../etc"] {
            assert!(!err.message().contains(value), "{what}: echoes {value}: {}", err.message());
        }
    }
    assert_eq!(row_counts(&suite.db).await, before, "no bad request stored anything");
    // And the valid campaign from before is untouched.
    assert_eq!(counters(&suite, &campaign.id).await.queued, 0);
}
