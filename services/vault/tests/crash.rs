//! Acknowledged writes are durable: a tokenize that returned survives `kill -9`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

fn spawn(db: &TestDb, pki: &TestPki, keys: &TestKeys, port: u16) -> VaultProcess {
    let files = pki.service("vault");
    let (key_args, key_env) = keys.command_line();
    let child = Command::new(env!("CARGO_BIN_EXE_qupia-vault"))
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

    let mut process = spawn(&db, &pki, &keys, port);
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

    let _process = spawn(&db, &pki, &keys, port);
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
