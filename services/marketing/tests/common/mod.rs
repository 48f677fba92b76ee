//! Helpers shared by the marketing service's tests.
#![allow(dead_code)]

use std::time::Duration;

use qupia_api::marketing::v1::*;
use qupia_api::vault::v1::PersonInput;
use qupia_marketing::{EmailSender, SmtpConfig, SmtpTls};
#[allow(unused_imports)]
pub use qupia_test_support::captured_logs;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{MarketingSuite, TestDb};
use sqlx::Connection;

/// Person `i` of the shared test people, who look like real personal data.
pub fn person(i: usize) -> PersonInput {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[i];
    PersonInput {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: patronymic.into(),
        email: email.into(),
        phone: phone.into(),
    }
}

/// Every e-mail, phone and name part these tests store, for leak scans.
pub fn needles() -> Vec<&'static str> {
    let mut needles = qupia_test_support::people::needles();
    needles.extend(EXTRA_PEOPLE.iter().flat_map(|(a, b, c, d)| [*a, *b, *c, *d]));
    needles
}

/// More people for statistics: (surname, given name, e-mail, phone).
pub const EXTRA_PEOPLE: [(&str, &str, &str, &str); 10] = [
    ("Сейітов", "Арман", "arman.seitov@mail.kz", "+77015550101"),
    ("Жақсыбекова", "Дана", "dana.zh@mail.kz", "+77015550102"),
    ("Омаров", "Ерлан", "erlan.omarov@mail.kz", "+77015550103"),
    ("Ким", "Алина", "alina.kim@mail.kz", "+77015550104"),
    ("Беков", "Тимур", "timur.bekov@mail.kz", "+77015550105"),
    ("Смагулова", "Айгүл", "aigul.s@edu.kz", "+77015550106"),
    ("Петров", "Игорь", "igor.petrov@edu.kz", "+77015550107"),
    ("Нурлан", "Асель", "asel.n@edu.kz", "+77015550108"),
    ("Ли", "Виктор", "viktor.li@inbox.kz", "+77015550109"),
    ("Әлиев", "Бауыржан", "baurzhan.aliev@inbox.kz", "+77015550110"),
];

pub fn extra_person(i: usize) -> PersonInput {
    let (surname, given_name, email, phone) = EXTRA_PEOPLE[i];
    PersonInput {
        surname: surname.into(),
        given_name: given_name.into(),
        patronymic: String::new(),
        email: email.into(),
        phone: phone.into(),
    }
}

/// An SMTP relay configuration for a plaintext test server on `port`.
pub fn smtp_to(port: u16) -> EmailSender {
    EmailSender::Smtp(SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        tls: SmtpTls::None,
        credentials: None,
        from: "EDU Stream Plus <news@edustream.kz>".into(),
        ca: None,
        timeout: Duration::from_secs(10),
    })
}

pub const UNSUBSCRIBE_URL: &str = "https://edustream.kz/unsubscribe";

pub async fn create_audience(suite: &MarketingSuite, name: &str, tokens: &[String]) -> Audience {
    suite
        .marketing()
        .await
        .create_audience(CreateAudienceRequest { name: name.into(), person_tokens: tokens.to_vec() })
        .await
        .expect("create an audience")
        .into_inner()
        .audience
        .expect("audience")
}

pub async fn create_campaign(
    suite: &MarketingSuite,
    audience_id: &str,
    channel: Channel,
    subject: &str,
    body: &str,
) -> Campaign {
    suite
        .marketing()
        .await
        .create_campaign(CreateCampaignRequest {
            name: "Spring courses".into(),
            audience_id: audience_id.into(),
            channel: channel as i32,
            subject: subject.into(),
            body: body.into(),
        })
        .await
        .expect("create a campaign")
        .into_inner()
        .campaign
        .expect("campaign")
}

/// Sends and waits for delivery; returns (queued now, counters after).
pub async fn send_and_wait(suite: &MarketingSuite, campaign_id: &str) -> (u64, CampaignCounters) {
    let response = suite
        .marketing()
        .await
        .send_campaign(SendCampaignRequest { campaign_id: campaign_id.into(), wait: true })
        .await
        .expect("send a campaign")
        .into_inner();
    let counters = response.campaign.expect("campaign").counters.expect("counters");
    assert_eq!(counters.pending, 0, "delivery finished within the wait");
    (response.queued, counters)
}

pub async fn counters(suite: &MarketingSuite, campaign_id: &str) -> CampaignCounters {
    suite
        .marketing()
        .await
        .get_campaign(GetCampaignRequest { campaign_id: campaign_id.into() })
        .await
        .expect("get a campaign")
        .into_inner()
        .campaign
        .expect("campaign")
        .counters
        .expect("counters")
}

/// A connection to the marketing database as its administrator, to look at rows.
pub async fn raw_db(db: &TestDb) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&db.admin_url).await.expect("connect to the marketing database")
}

/// Rows in each of the marketing tables.
pub async fn row_counts(db: &TestDb) -> Vec<(&'static str, i64)> {
    let mut conn = raw_db(db).await;
    let mut counts = Vec::new();
    for table in ["audiences", "audience_members", "campaigns", "outbox"] {
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("count {table}: {e}"));
        counts.push((table, n));
    }
    counts
}

pub fn log_text() -> String {
    qupia_test_support::captured_log_text()
}
