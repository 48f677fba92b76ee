//! The access log is tamper-evident and fail-closed; identities cannot be spoofed;
//! the policy file is validated and reloaded safely; nothing personal leaks into
//! logs, the access log or the gateway's database.

mod common;

use common::*;
use qupia_api::audit::v1::{Checkpoint, CreateCheckpointRequest, VerifyAuditRequest};
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::{Field, Purpose};
use qupia_test_support::captured_logs;
use qupia_test_support::people::{PEOPLE, needles};
use qupia_test_support::{Backend, Suite, TestPki, connect, scan_database, scan_text, storage_test};
use sqlx::Connection;
use tonic::Code;

async fn raw_vault(suite: &Suite) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&suite.vault.db.admin_url).await.expect("connect to the vault database")
}

async fn exec(conn: &mut sqlx::AnyConnection, sql: &str) {
    sqlx::raw_sql(sql).execute(conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// What an attacker with database access does first: drop the append-only triggers.
async fn disarm(conn: &mut sqlx::AnyConnection, backend: Backend) {
    match backend {
        Backend::Sqlite => {
            for trigger in [
                "audit_log_no_update",
                "audit_log_no_delete",
                "audit_checkpoints_no_update",
                "audit_checkpoints_no_delete",
            ] {
                exec(conn, &format!("DROP TRIGGER IF EXISTS {trigger}")).await;
            }
        }
        Backend::Postgres => {
            exec(conn, "DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log").await;
            exec(conn, "DROP TRIGGER IF EXISTS audit_checkpoints_append_only ON audit_checkpoints").await;
        }
    }
}

async fn verify(suite: &Suite, external: Option<Checkpoint>) -> qupia_api::audit::v1::VerifyAuditResponse {
    suite.audit_as("qupiactl").await.verify_audit(VerifyAuditRequest { external }).await.expect("verify").into_inner()
}

/// Ten entries in the log: a person stored and revealed, a denial.
async fn some_history(suite: &Suite) -> String {
    let person = register(suite, 0).await;
    for _ in 0..6 {
        reveal(suite, "accounts", &person, Purpose::ServiceDelivery, &[Field::Email], "").await.unwrap();
    }
    for _ in 0..3 {
        reveal(suite, "marketing", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    }
    person
}

storage_test!(tampering_is_detected, tampering);
async fn tampering(backend: Backend) {
    let suite = Suite::start(backend).await;
    some_history(&suite).await;
    let intact = verify(&suite, None).await;
    assert!(intact.intact, "an untouched log verifies: {}", intact.problem);
    assert_eq!(intact.entries, 10);

    let mut conn = raw_vault(&suite).await;
    disarm(&mut conn, backend).await;

    // One field of one entry changed.
    exec(&mut conn, "UPDATE audit_log SET purpose = 'statistics' WHERE seq = 5").await;
    let report = verify(&suite, None).await;
    assert!(!report.intact);
    assert_eq!(report.first_bad_seq, 5, "{}", report.problem);
    exec(&mut conn, "UPDATE audit_log SET purpose = 'service_delivery' WHERE seq = 5").await;
    assert!(verify(&suite, None).await.intact, "restored");

    // Two entries swapped (their contents, keeping the numbering).
    exec(&mut conn, "UPDATE audit_log SET seq = -4 WHERE seq = 4").await;
    exec(&mut conn, "UPDATE audit_log SET seq = 4 WHERE seq = 5").await;
    exec(&mut conn, "UPDATE audit_log SET seq = 5 WHERE seq = -4").await;
    let report = verify(&suite, None).await;
    assert!(!report.intact);
    assert_eq!(report.first_bad_seq, 4, "{}", report.problem);
    exec(&mut conn, "UPDATE audit_log SET seq = -4 WHERE seq = 4").await;
    exec(&mut conn, "UPDATE audit_log SET seq = 4 WHERE seq = 5").await;
    exec(&mut conn, "UPDATE audit_log SET seq = 5 WHERE seq = -4").await;
    assert!(verify(&suite, None).await.intact, "restored");

    // The tail cut off after a checkpoint, the head rewritten to match.
    let checkpoint = suite
        .audit_as("qupiactl")
        .await
        .create_checkpoint(CreateCheckpointRequest {})
        .await
        .unwrap()
        .into_inner()
        .checkpoint
        .unwrap();
    assert_eq!(checkpoint.seq, 10);
    let (hash7,): (Vec<u8>,) =
        sqlx::query_as("SELECT hash FROM audit_log WHERE seq = 7").fetch_one(&mut conn).await.unwrap();
    exec(&mut conn, "DELETE FROM audit_log WHERE seq > 7").await;
    sqlx::query("UPDATE audit_head SET seq = 7, hash = $1 WHERE id = 1").bind(hash7).execute(&mut conn).await.unwrap();
    let report = verify(&suite, None).await;
    assert!(!report.intact, "truncation is caught by the stored checkpoint");
    assert!(report.problem.contains('7') && report.problem.contains("10"), "{}", report.problem);
    // The attacker deletes the stored checkpoints too: the one kept outside still catches it.
    exec(&mut conn, "DELETE FROM audit_checkpoints").await;
    let report = verify(&suite, Some(checkpoint)).await;
    assert!(!report.intact, "truncation is caught by the external checkpoint");

    // One entry deleted from the middle.
    exec(&mut conn, "DELETE FROM audit_log WHERE seq = 3").await;
    let report = verify(&suite, None).await;
    assert!(!report.intact);
    assert_eq!(report.first_bad_seq, 3, "{}", report.problem);
}

storage_test!(an_unwritable_log_reveals_nothing, fail_closed);
async fn fail_closed(backend: Backend) {
    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[], "")
        .await
        .expect("works while the log is writable");

    let mut conn = raw_vault(&suite).await;
    match backend {
        Backend::Postgres => {
            let role = suite.vault.db.role.clone().expect("a PostgreSQL test database has a role");
            exec(&mut conn, &format!("REVOKE INSERT ON audit_log FROM {role}")).await;
        }
        Backend::Sqlite => {
            exec(
                &mut conn,
                "CREATE TRIGGER audit_log_down BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'disk full'); END",
            )
            .await;
        }
    }
    let err = reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for (_, _, _, email, phone) in PEOPLE {
        assert!(!err.message().contains(email) && !err.message().contains(phone));
    }
    // Lookups and denials are refused too, since they cannot be recorded.
    let err = suite
        .gateway_as("accounts")
        .await
        .lookup(LookupRequest { key: Some(lookup_request::Key::Email(PEOPLE[0].3.into())) })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = reveal(&suite, "marketing", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test]
async fn identity_comes_from_the_certificate_only() {
    let suite = Suite::start(Backend::Sqlite).await;
    let person = register(&suite, 0).await;

    // Marketing claiming to be accounts in every header it can think of.
    let mut request = tonic::Request::new(RevealRequest {
        token: person.clone(),
        purpose: Purpose::ServiceDelivery as i32,
        fields: vec![Field::Surname as i32],
        recipient: String::new(),
        disclosure_request_id: String::new(),
    });
    for header in ["x-spiffe-id", "x-caller", "x-forwarded-client-cert", "x-client-identity"] {
        request.metadata_mut().insert(header, ACCOUNTS.parse().unwrap());
    }
    let err = suite.gateway_as("marketing").await.reveal(request).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A caller with no allowed purpose.
    let err = reveal(&suite, "reporting", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // A certificate from a foreign CA, even with the accounts identity, cannot call.
    let foreign = TestPki::named("Foreign CA");
    let files = foreign.service("accounts");
    std::fs::write(&files.ca, suite.pki.ca.ca_pem()).unwrap();
    let outcome = async {
        let channel = connect(suite.gateway_addr, &files, "gateway").await?;
        Ok::<_, Box<dyn std::error::Error>>(
            qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient::new(channel)
                .reveal(RevealRequest {
                    token: person.clone(),
                    purpose: Purpose::ServiceDelivery as i32,
                    fields: vec![],
                    recipient: String::new(),
                    disclosure_request_id: String::new(),
                })
                .await?,
        )
    }
    .await;
    assert!(outcome.is_err(), "a foreign certificate got an answer");

    // Marketing may not call the vault directly, even with a certificate from our CA.
    let mut vault = suite.vault.client_as("marketing").await;
    let err = vault
        .reveal(qupia_api::vault::v1::RevealRequest { token: person.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
}

#[tokio::test]
async fn callers_are_rate_limited() {
    let suite = Suite::start_with(Backend::Sqlite, |config| {
        config.rate_limit = qupia_gateway::RateLimit { per_second: 1, burst: 5 };
    })
    .await;
    let person = register(&suite, 0).await;
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        outcomes
            .push(reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[Field::Email], "").await.map(|_| ()));
    }
    let limited = outcomes.iter().filter(|o| matches!(o, Err(e) if e.code() == Code::ResourceExhausted)).count();
    assert!(limited >= 4, "{limited} of 10 calls limited");
    // Another caller has its own budget.
    reveal(&suite, "marketing", &person, Purpose::ServiceDelivery, &[], "")
        .await
        .unwrap_err()
        .code()
        .eq(&Code::PermissionDenied)
        .then_some(())
        .expect("marketing is not rate-limited by accounts' calls");
}

#[tokio::test]
async fn a_broken_policy_file_stops_start_up_and_a_broken_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.cedar");

    // Broken at start: the gateway refuses to start and says where.
    let broken = format!(
        "{}\npermit (principal, action, resource) when {{ resource.nonsense ",
        qupia_policy::Policy::DEFAULT_TEXT
    );
    let broken_line = broken.lines().count();
    std::fs::write(&path, &broken).unwrap();
    let db = qupia_test_support::TestDb::create(Backend::Sqlite, "gateway").await;
    let pki = TestPki::new();
    let mut config = qupia_gateway::Config::new(
        db.url.clone(),
        qupia_transport::TlsMode::Mtls(pki.service("gateway")),
        "127.0.0.1:1".into(),
    );
    config.policy_path = Some(path.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = qupia_gateway::serve(config, listener, async {}).await.expect_err("a broken policy must not start");
    let message = err.to_string();
    assert!(message.contains(&format!("policy.cedar:{broken_line}:")), "the error names the line: {message}");

    // A good file at start, broken later: the old policy keeps deciding.
    std::fs::write(&path, qupia_policy::Policy::DEFAULT_TEXT).unwrap();
    let policy_path = path.clone();
    let suite = Suite::start_with(Backend::Sqlite, move |config| {
        config.policy_path = Some(policy_path);
        config.policy_reload_interval = std::time::Duration::from_millis(50);
    })
    .await;
    let person = register(&suite, 0).await;
    std::fs::write(&path, &broken).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[], "")
        .await
        .expect("still answering with the old policy");
    let err = reveal(&suite, "marketing", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "and still denying what it denied");

    // A valid change is picked up without a restart.
    let opened = qupia_policy::Policy::DEFAULT_TEXT.replace(
        "principal == Service::\"spiffe://qupia/ns/default/sa/marketing\",\n    action == Action::\"advertising\"",
        "principal == Service::\"spiffe://qupia/ns/default/sa/marketing\",\n    action == Action::\"communication\"",
    );
    assert_ne!(opened, qupia_policy::Policy::DEFAULT_TEXT, "the test edits a rule that exists");
    std::fs::write(&path, &opened).unwrap();
    let mut reloaded = false;
    for _ in 0..40 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if reveal(&suite, "marketing", &person, Purpose::Communication, &[Field::Email], "").await.is_ok() {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "the new policy took effect without a restart");
}

storage_test!(nothing_personal_in_logs_audit_or_gateway_db, no_leaks);
async fn no_leaks(backend: Backend) {
    let logs = captured_logs();
    let mut suite = Suite::start(backend).await;
    let version = publish(&suite, &[]).await;
    let mut people = Vec::new();
    for i in 0..PEOPLE.len() {
        people.push(register(&suite, i).await);
    }
    grant(&suite, &people[0], Purpose::Advertising, "", version).await;
    for person in &people {
        reveal(&suite, "accounts", person, Purpose::ServiceDelivery, &[], "").await.unwrap();
        let _ = reveal(&suite, "marketing", person, Purpose::Advertising, &[], "").await;
        let _ = reveal(&suite, "marketing", person, Purpose::ServiceDelivery, &[], "").await;
    }
    for (_, _, _, email, phone) in PEOPLE {
        for key in [lookup_request::Key::Email(email.into()), lookup_request::Key::Phone(phone.into())] {
            let _ = suite.gateway_as("accounts").await.lookup(LookupRequest { key: Some(key.clone()) }).await;
            let _ = suite.gateway_as("marketing").await.lookup(LookupRequest { key: Some(key) }).await;
        }
    }
    // Bad input that carries personal data must not echo it either.
    let _ = suite
        .gateway_as("accounts")
        .await
        .tokenize(TokenizeRequest {
            person: Some(qupia_api::vault::v1::PersonInput { email: format!("{} broken", PEOPLE[0].3), ..person(0) }),
            idempotency_key: String::new(),
        })
        .await
        .unwrap_err();

    let mut entries = Vec::new();
    for person in &people {
        entries.extend(audit_of(&suite, person).await);
    }
    assert!(entries.len() >= 9);
    suite.stop().await;

    let needles = needles();
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(!log_text.is_empty(), "logs were captured");
    let leaks = scan_text("logs", &log_text, &needles);
    assert!(leaks.is_empty(), "personal data in logs: {leaks:?}");
    let leaks = scan_text("access log", &format!("{entries:?}"), &needles);
    assert!(leaks.is_empty(), "personal data in the access log: {leaks:?}");
    let leaks = scan_database(&suite.gateway_db, &needles).await;
    assert!(leaks.is_empty(), "personal data in the gateway database: {leaks:?}");
    let leaks = scan_database(&suite.vault.db, &needles).await;
    assert!(leaks.is_empty(), "plaintext in the vault database: {leaks:?}");
}

storage_test!(the_access_log_can_be_followed_and_queried, tail_and_query);
async fn tail_and_query(backend: Backend) {
    use qupia_api::audit::v1::{AuditFilter, QueryAuditRequest, TailAuditRequest};

    let suite = Suite::start(backend).await;
    let person = register(&suite, 0).await;
    let mut tail = suite
        .audit_as("qupiactl")
        .await
        .tail_audit(TailAuditRequest {
            filter: Some(AuditFilter { caller: MARKETING.into(), ..Default::default() }),
            after_seq: 0,
        })
        .await
        .expect("tail the access log")
        .into_inner();

    reveal(&suite, "accounts", &person, Purpose::ServiceDelivery, &[], "").await.unwrap();
    reveal(&suite, "marketing", &person, Purpose::ServiceDelivery, &[], "").await.unwrap_err();
    let next = tokio::time::timeout(std::time::Duration::from_secs(10), tail.message()).await;
    let entry = next.expect("an entry arrives").expect("the stream is healthy").expect("an entry").entry.unwrap();
    assert_eq!(entry.caller, MARKETING, "the filter holds: only marketing's entries");
    assert!(!entry.allowed);
    assert_eq!(entry.person_token, person);

    // Only the security team may read the log.
    let err = suite
        .audit_as("marketing")
        .await
        .query_audit(QueryAuditRequest { filter: None, after_seq: 0, limit: 10 })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);

    // Query by purpose and time range, a page at a time.
    let mut audit = suite.audit_as("qupiactl").await;
    let all = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { purpose: "service_delivery".into(), ..Default::default() }),
            after_seq: 0,
            limit: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 1);
    assert_ne!(all.next_after_seq, 0, "a second page exists");
    let second = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { purpose: "service_delivery".into(), ..Default::default() }),
            after_seq: all.next_after_seq,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.entries.len(), 1);
    assert!(second.entries[0].seq > all.entries[0].seq);
    let future = audit
        .query_audit(QueryAuditRequest {
            filter: Some(AuditFilter { from_ms: entry.at_ms + 3_600_000, ..Default::default() }),
            after_seq: 0,
            limit: 10,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(future.entries.is_empty(), "nothing written an hour from now");
}
