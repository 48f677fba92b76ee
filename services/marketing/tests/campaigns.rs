//! Campaigns reach exactly the people with an active advertising consent, decided by
//! the gateway at delivery; the marketing database and the logs never hold a contact;
//! an unreachable relay ends in `failed` after the configured attempts. Each test runs
//! on SQLite and on PostgreSQL against a real SMTP server (aiosmtpd).

mod common;

use std::time::Duration;

use common::*;
use qupia_api::marketing::v1::*;
use qupia_api::types::v1::Purpose;
use qupia_marketing::{EmailSender, SmtpConfig, SmtpCredentials, SmtpTls};
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{Backend, MarketingSuite, SmtpServer, TestPki, scan_database, scan_text, storage_test};

const SUBJECT: &str = "Spring courses, {{email}}";
const BODY: &str = "Hello {{ email }}!\nNew courses start in March.\nUnsubscribe: {{unsubscribe}}\n";

storage_test!(campaign_reaches_only_people_with_consent, consent_decides_delivery);
async fn consent_decides_delivery(backend: Backend) {
    captured_logs();
    let smtp = SmtpServer::start();
    let suite = MarketingSuite::start_with(backend, |config| {
        config.email_sender = smtp_to(smtp.port);
        config.unsubscribe_url = Some(UNSUBSCRIBE_URL.into());
    })
    .await;
    let consented = suite.register(person(0)).await;
    let never = suite.register(person(1)).await;
    let withdrawn = suite.register(person(2)).await;
    suite.grant(&consented, Purpose::Advertising).await;
    suite.grant(&withdrawn, Purpose::Advertising).await;
    suite.withdraw(&withdrawn, Purpose::Advertising).await;

    let audience = create_audience(&suite, "Spring 2026", &[consented.clone(), never.clone(), withdrawn.clone()]).await;
    assert_eq!(audience.member_count, 3);
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, SUBJECT, BODY).await;

    let (queued, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!(queued, 3);
    assert_eq!((counters.sent, counters.skipped_no_consent, counters.failed), (1, 2, 0));
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1, "exactly one message reached the SMTP server");
    let email = PEOPLE[0].3;
    assert_eq!(mail[0].rcpt_tos, vec![email.to_owned()], "to the consented address only");
    assert_eq!(mail[0].mail_from, "news@edustream.kz");
    assert_eq!(mail[0].subject, format!("Spring courses, {email}"));
    let expected_start = format!("Hello {email}!\nNew courses start in March.\nUnsubscribe: {UNSUBSCRIBE_URL}?m=msg_");
    assert!(mail[0].body.starts_with(&expected_start), "rendered body: {:?}", mail[0].body);

    // A consent given later: sending again reaches that person, and only them.
    suite.grant(&never, Purpose::Advertising).await;
    let (queued, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!(queued, 2, "the two skipped people are queued again, the one reached is not");
    assert_eq!((counters.queued, counters.sent, counters.skipped_no_consent), (3, 2, 1));
    let mail = smtp.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[1].rcpt_tos, vec![PEOPLE[1].3.to_owned()]);

    // A withdrawal holds for the next campaign at once.
    suite.withdraw(&consented, Purpose::Advertising).await;
    let second = create_campaign(&suite, &audience.id, Channel::Email, "News", "Hello {{email}}").await;
    let (_, counters) = send_and_wait(&suite, &second.id).await;
    assert_eq!((counters.sent, counters.skipped_no_consent), (1, 2));
    let mail = smtp.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 3);
    assert_eq!(mail[2].rcpt_tos, vec![PEOPLE[1].3.to_owned()], "only the person still consenting");

    // The counters are the same in the campaign list.
    let listed = suite.marketing().await.list_campaigns(ListCampaignsRequest {}).await.unwrap().into_inner();
    let sent: Vec<u64> = listed.campaigns.iter().map(|c| c.counters.unwrap().sent).collect();
    assert_eq!(sent, vec![2, 1]);

    // No address, phone or name in the marketing database (every table and column;
    // the SQLite file and its WAL) or in anything logged.
    let needles = needles();
    let leaks = scan_database(&suite.db, &needles).await;
    assert!(leaks.is_empty(), "personal data in the marketing database: {leaks:?}");
    let leaks = scan_text("logs", &log_text(), &needles);
    assert!(leaks.is_empty(), "personal data in the logs: {leaks:?}");
}

storage_test!(smtp_relay_with_starttls_and_login, starttls_relay);
async fn starttls_relay(backend: Backend) {
    captured_logs();
    // The relay's certificate comes from a CA of its own, trusted through smtp_ca; the
    // relay requires STARTTLS and then a login.
    let relay_pki = TestPki::named("SMTP relay test CA");
    let relay_tls = relay_pki.service("smtp");
    let smtp = SmtpServer::start_tls(&relay_tls, "news", RELAY_PASSWORD);
    let suite = MarketingSuite::start_with(backend, |config| {
        config.email_sender = EmailSender::Smtp(SmtpConfig {
            host: "localhost".into(),
            port: smtp.port,
            tls: SmtpTls::StartTls,
            credentials: Some(SmtpCredentials { username: "news".into(), password: RELAY_PASSWORD.to_owned().into() }),
            from: "news@edustream.kz".into(),
            ca: Some(relay_tls.ca.clone()),
            timeout: Duration::from_secs(10),
        });
    })
    .await;
    let token = suite.register(person(1)).await;
    suite.grant(&token, Purpose::Advertising).await;
    let audience = create_audience(&suite, "One", std::slice::from_ref(&token)).await;
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, "Hi", "Hello {{email}}").await;
    let (_, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!((counters.sent, counters.failed), (1, 0));
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    assert!(mail[0].tls, "the message went over TLS");
    assert_eq!(mail[0].login, "news", "after logging in");
    assert_eq!(mail[0].rcpt_tos, vec![PEOPLE[1].3.to_owned()]);
    let mut needles = needles();
    needles.push(RELAY_PASSWORD);
    assert!(scan_text("logs", &log_text(), &needles).is_empty(), "no address or password in the logs");
}

const RELAY_PASSWORD: &str = "relay-pass-2026";

storage_test!(withdrawal_after_queueing_stops_the_message, withdrawal_between_queue_and_delivery);
async fn withdrawal_between_queue_and_delivery(backend: Backend) {
    captured_logs();
    let smtp = SmtpServer::start();
    // An API-only process queues; a worker replica on the same database delivers later.
    let suite = MarketingSuite::start_with(backend, |config| {
        config.email_sender = smtp_to(smtp.port);
        config.delivery.worker = false;
    })
    .await;
    let a = suite.register(person(0)).await;
    let b = suite.register(person(1)).await;
    suite.grant(&a, Purpose::Advertising).await;
    suite.grant(&b, Purpose::Advertising).await;
    let audience = create_audience(&suite, "Both consented", &[a.clone(), b.clone()]).await;
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, "Hi", "Hello {{email}}").await;
    let queued = suite
        .marketing()
        .await
        .send_campaign(SendCampaignRequest { campaign_id: campaign.id.clone(), wait: false })
        .await
        .expect("queue")
        .into_inner();
    assert_eq!(queued.queued, 2);
    assert_eq!(queued.campaign.unwrap().counters.unwrap().pending, 2, "queued, not delivered: no worker");

    suite.withdraw(&a, Purpose::Advertising).await;
    let mut worker = suite.start_replica(|config| config.delivery.worker = true).await;
    let mut after = counters(&suite, &campaign.id).await;
    for _ in 0..500 {
        if after.pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        after = counters(&suite, &campaign.id).await;
    }
    assert_eq!((after.pending, after.sent, after.skipped_no_consent), (0, 1, 1));
    let mail = smtp.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].rcpt_tos, vec![PEOPLE[1].3.to_owned()], "the person who withdrew after queueing is skipped");
    worker.stop().await;
}

storage_test!(smtp_down_retries_then_fails, relay_unreachable);
async fn relay_unreachable(backend: Backend) {
    captured_logs();
    // A port nothing listens on: every connection is refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let suite = MarketingSuite::start_with(backend, |config| {
        config.email_sender = smtp_to(port);
        config.delivery.max_attempts = 3;
    })
    .await;
    let token = suite.register(person(0)).await;
    suite.grant(&token, Purpose::Advertising).await;
    let audience = create_audience(&suite, "One", std::slice::from_ref(&token)).await;
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, "Hi", "Hello {{email}}").await;
    let (_, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!((counters.sent, counters.failed), (0, 1));

    let mut conn = raw_db(&suite.db).await;
    let (state, attempts, code): (String, i64, Option<String>) =
        sqlx::query_as("SELECT state, attempts, last_error_code FROM outbox").fetch_one(&mut conn).await.unwrap();
    assert_eq!((state.as_str(), attempts, code.as_deref()), ("failed", 3, Some("smtp_unavailable")));

    // Two retries, then the failure, in the metrics.
    let (status, text) =
        qupia_test_support::ops::http_get(suite.ops_addr().unwrap(), "/metrics").await.expect("scrape");
    assert_eq!(status, 200);
    let metrics = qupia_test_support::ops::parse_metrics(&text).expect("valid exposition");
    let count =
        |outcome| metrics.value("qupia_marketing_messages_total", &[("channel", "email"), ("outcome", outcome)]);
    assert_eq!((count("retried"), count("failed"), count("sent")), (2.0, 1.0, 0.0));

    let needles = needles();
    assert!(scan_text("logs", &log_text(), &needles).is_empty(), "no address in the logs");
    assert!(scan_database(&suite.db, &needles).await.is_empty(), "no address in the database");
}

storage_test!(the_gateway_rate_limit_delays_but_does_not_fail_messages, throttled);
async fn throttled(backend: Backend) {
    captured_logs();
    // The gateway lets marketing reveal one person at a time, one a second; marketing
    // takes one message per round and has a single attempt per message. Being
    // throttled must not use it up.
    let marketing = qupia_transport::ServiceIdentity::for_service("default", "marketing");
    let suite = MarketingSuite::start_with_gateway(
        backend,
        |gateway| {
            gateway.rate_limits.insert(marketing, qupia_gateway::RateLimit { per_second: 1, burst: 1 });
        },
        |config| {
            config.delivery.batch_size = 1;
            config.delivery.max_attempts = 1;
        },
    )
    .await;
    let mut tokens = Vec::new();
    for i in 0..3 {
        let token = suite.register(person(i)).await;
        suite.grant(&token, Purpose::Advertising).await;
        tokens.push(token);
    }
    let audience = create_audience(&suite, "Three", &tokens).await;
    let campaign = create_campaign(&suite, &audience.id, Channel::Email, "Hi", "Hello {{email}}").await;
    let (_, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!((counters.sent, counters.failed), (3, 0), "every message sent in the end");
    let mut conn = raw_db(&suite.db).await;
    let attempts: Vec<i64> =
        sqlx::query_scalar("SELECT attempts FROM outbox ORDER BY attempts").fetch_all(&mut conn).await.unwrap();
    assert_eq!(attempts, vec![1, 1, 1], "a throttled round is not an attempt");
}

storage_test!(sms_reaches_consented_people_and_skips_the_erased, sms_and_erasure);
async fn sms_and_erasure(backend: Backend) {
    captured_logs();
    let suite = MarketingSuite::start(backend).await;
    let kept = suite.register(person(0)).await;
    let erased = suite.register(person(1)).await;
    suite.grant(&kept, Purpose::Advertising).await;
    suite.grant(&erased, Purpose::Advertising).await;
    suite.erase(&erased).await;
    let audience = create_audience(&suite, "SMS", &[kept.clone(), erased.clone()]).await;
    let campaign =
        create_campaign(&suite, &audience.id, Channel::Sms, "", "Courses start Monday. Reply STOP to {{phone}}").await;
    let (_, counters) = send_and_wait(&suite, &campaign.id).await;
    assert_eq!((counters.sent, counters.skipped_erased, counters.skipped_no_consent), (1, 1, 0));
    // The log sender names the message by token and channel, never by number.
    let logs = log_text();
    assert!(logs.contains(&kept) && logs.contains("message handed to the log sender"));
    assert!(scan_text("logs", &logs, &needles()).is_empty(), "no phone in the logs");
}
