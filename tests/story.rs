//! The whole story, through all four services over real mTLS, on SQLite and on
//! PostgreSQL: register with a scan → sign in by e-mail → read the profile → a campaign
//! skips the person (no consent) → grant → the campaign reaches them (the SMTP server
//! receives the message) → withdraw → skipped again → statistics return only
//! aggregates, with a group of 3 suppressed → the export holds their data, their
//! consents with history and the access entries → delete → every token NOT_FOUND, the
//! document gone. Then a byte scan of the accounts, marketing and gateway databases
//! (every table, every column) and of every service's log finds none of the people's
//! names, e-mails, phones or scan bytes.

use qupia_api::accounts::v1 as accounts;
use qupia_api::gateway::v1 as gateway;
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::marketing::v1 as marketing;
use qupia_api::types::v1::{AggregateDimension, Purpose};
use qupia_e2e::{Everything, PEOPLE, needles};
use qupia_test_support::{Backend, captured_log_text, captured_logs, scan_database, scan_text, storage_test};
use tonic::Code;

storage_test!(the_whole_story_on_tokens_alone, whole_story);
async fn whole_story(backend: Backend) {
    captured_logs();
    let mut suite = Everything::start(backend).await;
    let mut web = suite.web().await;
    let mut marketing = suite.marketing().await;

    // Registration with a scan: she chose statistics, not advertising.
    let her = suite.register(0, 300 * 1024, &[Purpose::Statistics]).await.expect("register");
    let (surname, given_name, patronymic, email, phone) = PEOPLE[0];

    // Sign-in by e-mail, whatever the spelling.
    let found = web
        .sign_in(accounts::SignInRequest {
            key: Some(accounts::sign_in_request::Key::Email(format!("  {}  ", email.to_uppercase()))),
        })
        .await
        .expect("sign in")
        .into_inner()
        .accounts;
    assert_eq!(found.iter().map(|a| a.account_id.as_str()).collect::<Vec<_>>(), [her.account_id.as_str()]);

    // The profile is what she entered.
    let profile = web
        .get_profile(accounts::GetProfileRequest { account_id: her.account_id.clone() })
        .await
        .expect("profile")
        .into_inner();
    let data = profile.data.expect("data");
    assert_eq!(
        (data.surname.as_str(), data.given_name.as_str(), data.patronymic.as_str(), data.email.as_str()),
        (surname, given_name, patronymic, email)
    );
    assert_eq!(data.phone, phone);

    // Her classmates: four more at mail.kz and three at example.com consent to
    // statistics; the last consents to nothing.
    let mut audience = vec![her.person_token.clone()];
    for i in 1..PEOPLE.len() {
        let consents: &[Purpose] = if i == PEOPLE.len() - 1 { &[] } else { &[Purpose::Statistics] };
        audience.push(suite.register(i, 4 * 1024, consents).await.expect("register").person_token);
    }
    let audience_id = marketing
        .create_audience(marketing::CreateAudienceRequest { name: "Spring intake".into(), person_tokens: audience })
        .await
        .expect("audience")
        .into_inner()
        .audience
        .expect("an audience")
        .id;

    // A campaign skips her: she never consented to advertising.
    let spring = campaign(&mut marketing, &audience_id, "Spring courses").await;
    let counters = send(&mut marketing, &spring).await;
    assert_eq!((counters.sent, counters.skipped_no_consent), (0, 9), "{counters:?}");
    assert!(suite.smtp.messages().is_empty(), "nothing is delivered without consent");

    // She consents: the campaign, sent again, reaches her and only her.
    suite.advertising(&her.account_id, true).await;
    let counters = send(&mut marketing, &spring).await;
    assert_eq!((counters.sent, counters.skipped_no_consent), (1, 8), "{counters:?}");
    let mail = suite.smtp.wait_for(1, std::time::Duration::from_secs(30)).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].rcpt_tos, [email.to_owned()]);
    assert_eq!(mail[0].subject, "Spring courses: enrolment is open");
    assert!(mail[0].body.contains(&format!("Sent to {email}")), "{}", mail[0].body);

    // She withdraws: the next campaign skips her again.
    suite.advertising(&her.account_id, false).await;
    let summer = campaign(&mut marketing, &audience_id, "Summer school").await;
    let counters = send(&mut marketing, &summer).await;
    assert_eq!((counters.sent, counters.skipped_no_consent), (0, 9), "{counters:?}");
    assert_eq!(suite.smtp.messages().len(), 1, "nothing more was delivered");

    // Statistics: aggregates only; the group of 3 is suppressed, the person without
    // consent left out.
    let statistics = marketing
        .get_statistics(marketing::GetStatisticsRequest {
            audience_id: audience_id.clone(),
            dimension: AggregateDimension::EmailDomain as i32,
        })
        .await
        .expect("statistics")
        .into_inner();
    let groups: Vec<(&str, u64)> = statistics.groups.iter().map(|g| (g.key.as_str(), g.count)).collect();
    assert_eq!(groups, [("mail.kz", 5)]);
    assert_eq!(statistics.suppressed_groups, 1);
    assert_eq!(statistics.skipped_without_consent, 1);
    assert_eq!(statistics.min_group_size, 5);

    // The export: her data, her consents with their history, who accessed her data.
    let export = web
        .export_account(accounts::ExportAccountRequest { account_id: her.account_id.clone() })
        .await
        .expect("export")
        .into_inner();
    let exported = export.data.expect("data");
    assert_eq!((exported.surname.as_str(), exported.email.as_str()), (surname, email));
    assert_eq!(export.documents.len(), 1);
    assert_eq!(export.documents[0].document_token, her.identity_document_token);
    let history: Vec<(i32, bool)> = export.consent_history.iter().map(|e| (e.purpose, e.granted)).collect();
    assert_eq!(
        history,
        [(Purpose::Statistics as i32, true), (Purpose::Advertising as i32, true), (Purpose::Advertising as i32, false)]
    );
    let advertising_state = export
        .consents
        .iter()
        .find(|c| c.purpose == Purpose::Advertising as i32)
        .expect("the advertising consent's state");
    assert!(!advertising_state.active);
    let marketing_id = "spiffe://qupia/ns/default/sa/marketing";
    let accessed = |caller: &str, purpose: &str, operation: &str, allowed: bool| {
        export.access_history.iter().any(|e| {
            e.caller == caller
                && e.purpose == purpose
                && e.operation == operation
                && e.allowed == allowed
                && e.person_token == her.person_token
                && e.at_ms > 0
        })
    };
    assert!(accessed(marketing_id, "advertising", "reveal", true), "the delivery's reveal is in her history");
    assert!(accessed(marketing_id, "advertising", "reveal", false), "so are the refusals");
    assert!(accessed(marketing_id, "statistics", "aggregate", true), "and the statistics that counted her");
    assert!(accessed("spiffe://qupia/ns/default/sa/accounts", "service_delivery", "reveal", true));

    // Deletion: every token of hers answers NOT_FOUND and her document is gone.
    let documents_before = Everything::count(&suite.accounts.suite.vault.db, "SELECT COUNT(*) FROM documents").await;
    web.delete_account(accounts::DeleteAccountRequest { account_id: her.account_id.clone() })
        .await
        .expect("delete the account");
    let status = web
        .get_profile(accounts::GetProfileRequest { account_id: her.account_id.clone() })
        .await
        .expect_err("profile after deletion");
    assert_eq!(status.code(), Code::NotFound);
    let status = web
        .sign_in(accounts::SignInRequest { key: Some(accounts::sign_in_request::Key::Email(email.into())) })
        .await
        .expect_err("sign-in after deletion");
    assert_eq!(status.code(), Code::NotFound);
    let mut gateway_as_accounts = suite.accounts.suite.gateway_as("accounts").await;
    let status = gateway_as_accounts
        .reveal(gateway::RevealRequest {
            token: her.person_token.clone(),
            purpose: Purpose::ServiceDelivery as i32,
            ..Default::default()
        })
        .await
        .expect_err("the person token after deletion");
    assert_eq!(status.code(), Code::NotFound);
    let mut documents = DocumentServiceClient::new(suite.accounts.suite.channel_as("accounts").await);
    let status = match documents
        .download_document(gateway::DownloadDocumentRequest {
            document_token: her.identity_document_token.clone(),
            purpose: Purpose::Identification as i32,
            disclosure_request_id: String::new(),
        })
        .await
    {
        Ok(stream) => stream.into_inner().message().await.expect_err("the document after deletion"),
        Err(status) => status,
    };
    assert_eq!(status.code(), Code::NotFound);
    let documents_after = Everything::count(&suite.accounts.suite.vault.db, "SELECT COUNT(*) FROM documents").await;
    assert_eq!(documents_after, documents_before - 1, "her document's rows are gone from the vault");

    // Nothing personal anywhere but in the vault: the three other services' databases,
    // every table and column, and everything every service logged.
    let needles = needles();
    let mut leaks = scan_database(&suite.accounts.db, &needles).await;
    leaks.extend(scan_database(&suite.marketing_db, &needles).await);
    leaks.extend(scan_database(&suite.accounts.suite.gateway_db, &needles).await);
    let logs = captured_log_text();
    assert!(logs.contains("qupia_marketing"), "the logs were captured");
    leaks.extend(scan_text("the services' logs", &logs, &needles));
    assert!(leaks.is_empty(), "personal data outside the vault: {leaks:?}");
    suite.stop().await;
}

async fn campaign(
    client: &mut qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient<tonic::transport::Channel>,
    audience_id: &str,
    name: &str,
) -> String {
    client
        .create_campaign(marketing::CreateCampaignRequest {
            name: name.into(),
            audience_id: audience_id.into(),
            channel: marketing::Channel::Email as i32,
            subject: format!("{name}: enrolment is open"),
            body: "Enrolment is open. Sent to {{email}}, as you asked for news.".into(),
        })
        .await
        .expect("create a campaign")
        .into_inner()
        .campaign
        .expect("a campaign")
        .id
}

async fn send(
    client: &mut qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient<tonic::transport::Channel>,
    campaign_id: &str,
) -> marketing::CampaignCounters {
    client
        .send_campaign(marketing::SendCampaignRequest { campaign_id: campaign_id.into(), wait: true })
        .await
        .expect("send")
        .into_inner()
        .campaign
        .and_then(|c| c.counters)
        .expect("counters")
}
