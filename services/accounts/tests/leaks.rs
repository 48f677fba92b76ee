//! Nothing personal reaches the accounts database or the logs: after people register,
//! sign in, read, rectify, export, download and delete, and after bad requests full of
//! personal data, a byte scan of the accounts database (every table and column; on
//! SQLite the file and its WAL, on PostgreSQL every column as text) and of everything
//! the three services logged finds none of the names, e-mails, phones or scan bytes.
//! Runs on SQLite and on PostgreSQL.

mod common;

use common::*;
use qupia_api::accounts::v1::*;
use qupia_api::types::v1::Purpose;
use qupia_test_support::captured_logs;
use qupia_test_support::people::{PEOPLE, needles};
use qupia_test_support::{AccountsSuite, Backend, scan_database, scan_text, storage_test};

/// The new phone number the rectification enters, in the spellings it could leak in.
const NEW_PHONE: [&str; 2] = ["+77015551234", "7015551234"];

storage_test!(nothing_personal_in_the_accounts_database_or_the_logs, no_leaks);
async fn no_leaks(backend: Backend) {
    let logs = captured_logs();
    let mut suite = AccountsSuite::start(backend).await;
    let mut accounts = suite.accounts_as("web").await;
    let mut errors: Vec<String> = Vec::new();

    let mut registered = Vec::new();
    for i in 0..PEOPLE.len() {
        registered.push(register(&suite, i, &[(Purpose::Advertising, "")]).await);
    }
    let (_, _, _, email, phone) = PEOPLE[0];
    sign_in(&suite, sign_in_request::Key::Email(email.to_uppercase())).await.expect("sign in by e-mail");
    sign_in(&suite, sign_in_request::Key::Phone(phone.into())).await.expect("sign in by phone");
    for account in &registered {
        profile(&suite, &account.account_id).await.expect("profile");
    }
    accounts
        .update_profile(UpdateProfileRequest {
            account_id: registered[0].account_id.clone(),
            phone: Some(NEW_PHONE[0].into()),
            ..Default::default()
        })
        .await
        .expect("rectify");
    accounts
        .export_account(ExportAccountRequest { account_id: registered[1].account_id.clone() })
        .await
        .expect("export");
    let mut download = accounts
        .download_document(DownloadDocumentRequest {
            account_id: registered[2].account_id.clone(),
            document_token: String::new(),
        })
        .await
        .expect("download")
        .into_inner();
    while download.message().await.expect("download stream").is_some() {}
    accounts
        .delete_account(DeleteAccountRequest { account_id: registered[2].account_id.clone() })
        .await
        .expect("delete");

    // Bad input that carries personal data must not echo it.
    let bad_email = format!("{} {}", PEOPLE[0].1, PEOPLE[0].3);
    errors.push(
        register_messages(
            &suite,
            messages(
                RegistrationHeader { email: bad_email.clone(), ..header(0, suite.policy_version, &[]) },
                &pdf(SCAN_MARKER),
                None,
            ),
        )
        .await
        .unwrap_err()
        .message()
        .to_owned(),
    );
    errors.push(
        accounts
            .update_profile(UpdateProfileRequest {
                account_id: registered[1].account_id.clone(),
                given_name: Some(format!("{}1", PEOPLE[1].1)),
                ..Default::default()
            })
            .await
            .unwrap_err()
            .message()
            .to_owned(),
    );
    errors.push(
        sign_in(&suite, sign_in_request::Key::Phone(format!("{} ext", PEOPLE[1].4)))
            .await
            .unwrap_err()
            .message()
            .to_owned(),
    );
    errors.push(
        sign_in(&suite, sign_in_request::Key::Email("nobody.at.all@example.org".into()))
            .await
            .unwrap_err()
            .message()
            .to_owned(),
    );
    suite.stop().await;

    let mut needles = needles();
    needles.extend(NEW_PHONE);
    needles.extend([SCAN_MARKER, AUTHORITY_MARKER, "nobody.at.all@example.org"]);
    let leaks = scan_database(&suite.db, &needles).await;
    assert!(leaks.is_empty(), "personal data in the accounts database: {leaks:?}");
    let leaks = scan_text("errors", &errors.join("\n"), &needles);
    assert!(leaks.is_empty(), "personal data in error messages: {leaks:?}");
    let log_text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(log_text.contains("account registered"), "the services' logs were captured");
    let leaks = scan_text("logs", &log_text, &needles);
    assert!(leaks.is_empty(), "personal data in the logs: {leaks:?}");
    // The gateway's database holds tokens and consents only, registration or not.
    let leaks = scan_database(&suite.suite.gateway_db, &needles).await;
    assert!(leaks.is_empty(), "personal data in the gateway database: {leaks:?}");
    // And the vault keeps the scans encrypted like every other value.
    let leaks = scan_database(&suite.suite.vault.db, &needles).await;
    assert!(leaks.is_empty(), "plaintext in the vault database: {leaks:?}");
}
