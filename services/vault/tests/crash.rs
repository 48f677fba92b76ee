//! Acknowledged writes are durable: a tokenize that returned survives `kill -9`; a
//! rewrap killed half-way resumes from its cursor after a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::keys::v1::{GetKeyStatusRequest, JobKind, JobState, RewrapRequest, RotateKekRequest};
use qupia_api::types::v1::Purpose;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{Backend, TestDb, TestKeys, TestPki, connect, storage_test};
use tonic::transport::Channel;

struct VaultProcess(Child);

impl Drop for VaultProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(db: &TestDb, pki: &TestPki, keys: &TestKeys, dir: &Path, port: u16) -> VaultProcess {
    spawn_with(db, pki, keys, dir, port, &[])
}

/// Starts the binary; the erasure ledger is a SQLite file in `dir` (named explicitly:
/// with the keys in a PKCS#11 token there is no keyring file to put it beside).
fn spawn_with(db: &TestDb, pki: &TestPki, keys: &TestKeys, dir: &Path, port: u16, extra: &[&str]) -> VaultProcess {
    let files = pki.service("vault");
    let (key_args, key_env) = keys.command_line();
    let ledger = format!("sqlite://{}?mode=rwc", dir.join("erasure-ledger.db").display());
    let child = Command::new(env!("CARGO_BIN_EXE_qupia-vault"))
        .args(extra)
        .args(["--erasure-ledger-url", &ledger])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        // Tests run side by side: no fixed ops port.
        .args(["--ops-listen", "127.0.0.1:0"])
        .args(["--database-url", &db.url])
        .args(key_args)
        .envs(key_env)
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qupia-vault");
    VaultProcess(child)
}

async fn client(pki: &TestPki, port: u16) -> VaultServiceClient<Channel> {
    let files = pki.service("gateway");
    for _ in 0..400 {
        if let Ok(channel) = connect(([127, 0, 0, 1], port).into(), &files, "vault").await {
            return VaultServiceClient::new(channel);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the vault process did not come up");
}

storage_test!(tokenized_people_survive_kill_9, survives_kill);
async fn survives_kill(backend: Backend) {
    let db = TestDb::create(backend, "crash").await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new(dir.path());
    let port = free_port();

    let mut process = spawn(&db, &pki, &keys, dir.path(), port);
    let mut vault = client(&pki, port).await;
    let mut stored = Vec::new();
    for (i, (surname, given_name, patronymic, email, phone)) in PEOPLE.iter().enumerate() {
        let tokens = vault
            .tokenize(TokenizeRequest {
                person: Some(PersonInput {
                    surname: (*surname).into(),
                    given_name: (*given_name).into(),
                    patronymic: (*patronymic).into(),
                    email: (*email).into(),
                    phone: (*phone).into(),
                }),
                idempotency_key: format!("crash-{i}"),
                ..Default::default()
            })
            .await
            .expect("tokenize")
            .into_inner()
            .tokens
            .unwrap();
        stored.push((tokens.person_token, *email, *phone));
    }

    // SIGKILL: no shutdown hook, no flush, no goodbye.
    process.0.kill().expect("kill -9");
    process.0.wait().unwrap();
    drop(vault);

    let _process = spawn(&db, &pki, &keys, dir.path(), port);
    let mut vault = client(&pki, port).await;
    for (token, email, phone) in stored {
        let values = vault
            .reveal(RevealRequest {
                token,
                fields: vec![qupia_api::types::v1::Field::Email as i32, qupia_api::types::v1::Field::Phone as i32],
                access: Some(AccessContext {
                    purpose: Purpose::ServiceDelivery as i32,
                    decision_id: "t".into(),
                    caller: "spiffe://qupia/ns/default/sa/accounts".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("reveal after restart")
            .into_inner()
            .values;
        let values: Vec<&str> = values.iter().map(|v| v.value.as_str()).collect();
        assert_eq!(values, vec![email, phone]);
    }
}

fn person(i: usize) -> PersonInput {
    PersonInput {
        surname: "Жұмабаев".into(),
        given_name: "Арман".into(),
        patronymic: String::new(),
        email: format!("arman.{i}@example.kz"),
        phone: format!("+7702{:07}", 2_000_000 + i),
    }
}

async fn keys_client(pki: &TestPki, port: u16) -> KeyAdminServiceClient<Channel> {
    let files = pki.service("gateway");
    KeyAdminServiceClient::new(connect(([127, 0, 0, 1], port).into(), &files, "vault").await.expect("connect"))
}

storage_test!(a_killed_rewrap_resumes_from_its_cursor, rewrap_resumes);
async fn rewrap_resumes(backend: Backend) {
    let db = TestDb::create(backend, "rewrapcrash").await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let test_keys = TestKeys::new(dir.path());
    let port = free_port();
    // Slow: 20 data keys a second, 4 per transaction.
    let slow = ["--rewrap-rate", "20", "--key-job-batch", "4"];

    let mut process = spawn_with(&db, &pki, &test_keys, dir.path(), port, &slow);
    let mut vault = client(&pki, port).await;
    let items = (0..60).map(|i| BatchTokenizeItem { person: Some(person(i)), idempotency_key: String::new() });
    let results = vault
        .batch_tokenize(BatchTokenizeRequest { items: items.collect(), access: None })
        .await
        .expect("batch tokenize")
        .into_inner()
        .results;
    let tokens: Vec<String> = results
        .into_iter()
        .map(|r| match r.result {
            Some(batch_tokenize_result::Result::Tokens(tokens)) => tokens.person_token,
            other => panic!("tokenize failed: {other:?}"),
        })
        .collect();
    let mut keys = keys_client(&pki, port).await;
    keys.rotate_kek(RotateKekRequest { requester: String::new() }).await.expect("rotate");
    let mut stream = keys
        .rewrap(RewrapRequest { requester: String::new(), rate_per_second: 0 })
        .await
        .expect("start the rewrap")
        .into_inner();
    let mut seen = 0;
    while let Some(message) = stream.message().await.expect("progress") {
        let progress = message.progress.expect("progress");
        assert_eq!(progress.total, 60);
        seen = progress.done;
        if seen >= 20 {
            break;
        }
    }
    assert!((20..60).contains(&seen), "killed half-way, at {seen}");

    // SIGKILL in the middle of the job.
    process.0.kill().expect("kill -9");
    process.0.wait().unwrap();
    drop((vault, keys, stream));

    let _process = spawn_with(&db, &pki, &test_keys, dir.path(), port, &slow);
    let mut keys = keys_client(&pki, port).await;
    let status =
        keys.get_key_status(GetKeyStatusRequest { requester: String::new() }).await.expect("status").into_inner();
    let job = status.jobs.iter().find(|j| j.kind == JobKind::Rewrap as i32).expect("the rewrap job is known");
    assert!(job.done >= seen, "resumed at {} after {seen} were done: progress does not restart from 0", job.done);
    let mut stream = keys
        .rewrap(RewrapRequest { requester: String::new(), rate_per_second: 0 })
        .await
        .expect("join the resumed rewrap")
        .into_inner();
    let mut first = None;
    let mut last = None;
    while let Some(message) = stream.message().await.expect("progress") {
        let progress = message.progress.expect("progress");
        first.get_or_insert(progress.done);
        last = Some(progress);
    }
    assert!(first.expect("progress") >= seen, "joined the resumed job, not a new one");
    let last = last.expect("progress");
    assert_eq!(last.state, JobState::Finished as i32);
    assert_eq!((last.done, last.total, last.target_version), (60, 60, 2), "every data key moved exactly once");
    let status =
        keys.get_key_status(GetKeyStatusRequest { requester: String::new() }).await.expect("status").into_inner();
    let v1 = status.kek_versions.iter().find(|k| k.version == 1).expect("version 1");
    assert_eq!(v1.wrapped_deks, 0);

    let mut vault = client(&pki, port).await;
    for (i, token) in tokens.into_iter().enumerate() {
        let values = vault
            .reveal(RevealRequest {
                token,
                fields: vec![qupia_api::types::v1::Field::Email as i32],
                access: Some(AccessContext {
                    purpose: Purpose::ServiceDelivery as i32,
                    decision_id: "t".into(),
                    caller: "spiffe://qupia/ns/default/sa/accounts".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("reveal after the resumed rewrap")
            .into_inner()
            .values;
        assert_eq!(values[0].value, person(i).email);
    }
}
