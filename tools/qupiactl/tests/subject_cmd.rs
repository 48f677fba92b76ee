//! `qupiactl subject` against a running vault, gateway and accounts service: the
//! register's commands, serving an access and an erasure request, and the exit codes a
//! cron job relies on.

use std::process::Output;

use qupia_test_support::people::PEOPLE;
use qupia_test_support::{AccountsSuite, Backend, storage_test};

/// Runs qupiactl as `service` against the suite.
async fn qupiactl(suite: &AccountsSuite, service: &str, args: &[&str]) -> Output {
    let files = suite.suite.pki.service(service);
    tokio::process::Command::new(env!("CARGO_BIN_EXE_qupiactl"))
        .args(["--gateway", &suite.suite.gateway_addr.to_string()])
        .args(["--accounts-addr", &suite.addr.to_string()])
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .args(args)
        .output()
        .await
        .expect("run qupiactl")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The one JSON line a `--json` command printed.
fn json(output: &Output) -> serde_json::Value {
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_str(stdout(output).trim()).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// Records a request of `kind` received on 2026-01-05 (due 2026-02-17: long overdue);
/// returns its id.
async fn record(suite: &AccountsSuite, kind: &str, person: &str) -> String {
    let recorded = json(
        &qupiactl(
            suite,
            "qupiactl",
            &[
                "--json",
                "subject",
                "requests",
                "record",
                "--kind",
                kind,
                "--person",
                person,
                "--channel",
                "paper",
                "--evidence",
                "in-2026/5",
                "--received-on",
                "2026-01-05",
            ],
        )
        .await,
    );
    assert_eq!((recorded["due_on"].as_str(), recorded["overdue"].as_bool()), (Some("2026-02-17"), Some(true)));
    recorded["id"].as_str().expect("id").to_owned()
}

storage_test!(subject_commands_serve_requests_and_report_the_overdue, subject_commands);
async fn subject_commands(backend: Backend) {
    let suite = AccountsSuite::start(backend).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let scan = dir.path().join("scan.pdf");
    std::fs::write(&scan, b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
        .expect("write the scan");
    let (surname, given_name, patronymic, email, phone) = PEOPLE[0];
    let registered = json(
        &qupiactl(
            &suite,
            "qupiactl",
            &[
                "--json",
                "account",
                "register",
                "--surname",
                surname,
                "--given-name",
                given_name,
                "--patronymic",
                patronymic,
                "--email",
                email,
                "--phone",
                phone,
                "--document",
            ]
            .into_iter()
            .chain([scan.to_str().expect("a utf-8 path")])
            .collect::<Vec<_>>(),
        )
        .await,
    );
    let account = registered["account_id"].as_str().expect("account_id").to_owned();
    let person = registered["person_token"].as_str().expect("person_token").to_owned();

    let access = record(&suite, "access", &person).await;
    let erasure = record(&suite, "erasure", &person).await;

    // Overdue: listed, and a cron job's --fail-if-any exits 3.
    let listed = qupiactl(&suite, "qupiactl", &["subject", "requests", "list", "--overdue", "--fail-if-any"]).await;
    assert_eq!(listed.status.code(), Some(3), "{listed:?}");
    let table = stdout(&listed);
    assert!(table.starts_with("ID ") && table.contains(&access) && table.contains(&erasure), "{table}");
    assert!(String::from_utf8_lossy(&listed.stderr).contains("2 subject request(s) overdue"), "{listed:?}");
    assert_eq!(
        qupiactl(&suite, "qupiactl", &["subject", "requests", "list", "--overdue"]).await.status.code(),
        Some(0)
    );

    // The wrong request for the job is refused before anything is done or printed.
    let wrong =
        qupiactl(&suite, "qupiactl", &["subject", "export", "--account", &account, "--request", &erasure]).await;
    assert_eq!(wrong.status.code(), Some(2), "{wrong:?}");
    assert!(stdout(&wrong).is_empty(), "nothing exported: {wrong:?}");

    // An access request served: the export printed, the request completed.
    let exported = qupiactl(
        &suite,
        "qupiactl",
        &["--json", "subject", "export", "--account", &account, "--request", &access, "--evidence", "out-2026/8"],
    )
    .await;
    assert_eq!(json(&exported)["data"]["email"].as_str(), Some(email));
    let shown = json(&qupiactl(&suite, "qupiactl", &["--json", "subject", "requests", "show", &access]).await);
    assert_eq!((shown["status"].as_str(), shown["overdue"].as_bool()), (Some("completed"), Some(false)));
    assert_eq!(shown["history"][1]["evidence"].as_str(), Some("out-2026/8"));

    // An erasure needs --yes, and is then carried out and marked completed.
    let unconfirmed =
        qupiactl(&suite, "qupiactl", &["subject", "erase", "--account", &account, "--request", &erasure]).await;
    assert_eq!(unconfirmed.status.code(), Some(2), "{unconfirmed:?}");
    let erased =
        qupiactl(&suite, "qupiactl", &["subject", "erase", "--account", &account, "--request", &erasure, "--yes"])
            .await;
    assert_eq!(erased.status.code(), Some(0), "{erased:?}");
    let shown = json(&qupiactl(&suite, "qupiactl", &["--json", "subject", "requests", "show", &erasure]).await);
    assert_eq!(shown["status"].as_str(), Some("completed"));
    let history: Vec<_> = shown["history"].as_array().expect("history").iter().map(|e| e["status"].clone()).collect();
    assert_eq!(history, ["received", "completed"]);
    let gone = qupiactl(&suite, "qupiactl", &["account", "export", &account]).await;
    assert_eq!(gone.status.code(), Some(2), "the account is gone: {gone:?}");

    // Nothing is overdue any more; a completed request does not reopen.
    assert_eq!(
        qupiactl(&suite, "qupiactl", &["subject", "requests", "list", "--overdue", "--fail-if-any"])
            .await
            .status
            .code(),
        Some(0)
    );
    let reopened =
        qupiactl(&suite, "qupiactl", &["subject", "requests", "update", &erasure, "--status", "in_progress"]).await;
    assert_eq!(reopened.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&reopened.stderr).contains("FailedPrecondition"), "{reopened:?}");

    let denied = qupiactl(&suite, "marketing", &["subject", "requests", "list"]).await;
    assert_eq!(denied.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"), "{denied:?}");
}
