//! SIGTERM drains: the vault reports NOT_SERVING on `/readyz` and gRPC health while it
//! still serves, every call that started completes, and the process exits 0.
//!
//! A call a client could not deliver once the server was going away (its connection
//! closed before the request went out, or refused) is allowed to fail; a restart then
//! proves the vault never saw it: its idempotency key is unused.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::*;
use qupia_test_support::ops::http_get;
use qupia_test_support::people::PEOPLE;
use qupia_test_support::{Backend, TestDb, TestKeys, TestPki, connect, storage_test};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

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

const DEREGISTRATION_DELAY: Duration = Duration::from_secs(1);
const GRACE_PERIOD: Duration = Duration::from_secs(10);
const TASKS: usize = 8;

fn spawn(db: &TestDb, pki: &TestPki, keys: &TestKeys, dir: &std::path::Path, port: u16, ops_port: u16) -> VaultProcess {
    let files = pki.service("vault");
    // Its own database, as production's: required with keys in a PKCS#11 token.
    let ledger = format!("sqlite://{}?mode=rwc", dir.join("erasure-ledger.db").display());
    let (key_args, key_env) = keys.command_line();
    let child = Command::new(env!("CARGO_BIN_EXE_qupia-vault"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .args(["--deregistration-delay-secs", &DEREGISTRATION_DELAY.as_secs_f64().to_string()])
        .args(["--grace-period-secs", &GRACE_PERIOD.as_secs_f64().to_string()])
        .args(["--database-url", &db.url])
        .args(["--erasure-ledger-url", &ledger])
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

async fn channel(pki: &TestPki, port: u16) -> Channel {
    let files = pki.service("gateway");
    // `connect` itself retries a refused connection for 2 s: half a minute in all, then
    // say so rather than wait (a process that refused to start never listens).
    for _ in 0..15 {
        if let Ok(channel) = connect(([127, 0, 0, 1], port).into(), &files, "vault").await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the vault process did not come up");
}

fn tokenize_request(task: usize, call: usize) -> TokenizeRequest {
    let (surname, given_name, patronymic, email, phone) = PEOPLE[(task + call) % PEOPLE.len()];
    TokenizeRequest {
        person: Some(PersonInput {
            surname: surname.into(),
            given_name: given_name.into(),
            patronymic: patronymic.into(),
            email: email.into(),
            phone: phone.into(),
        }),
        idempotency_key: format!("drain-{task}-{call}"),
        ..Default::default()
    }
}

/// Whether a failed call may not have reached the vault: refused or cancelled as the
/// server went away, or its connection torn down at the HTTP/2 layer (which tonic
/// reports as INTERNAL "h2 protocol error") before an answer. The restart at the end
/// proves that the vault never ran any of them.
fn not_delivered(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Cancelled)
        || (status.code() == Code::Internal && status.message().starts_with("h2 protocol error"))
}

/// What the callers saw.
#[derive(Debug, Default)]
struct Outcomes {
    succeeded: AtomicUsize,
    succeeded_after_signal: AtomicUsize,
    /// Calls that failed after the signal without reaching the vault (see
    /// [`not_delivered`]): (task, call).
    undelivered: Mutex<Vec<(usize, usize)>>,
    /// Calls that failed any other way, or before the signal: must stay empty.
    failed: Mutex<Vec<String>>,
}

storage_test!(sigterm_reports_not_serving_then_drains_and_exits_0, drains);
async fn drains(backend: Backend) {
    let db = TestDb::create(backend, "drain").await;
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let keys = TestKeys::new(dir.path());
    let (port, ops_port) = (free_port(), free_port());
    let ops: std::net::SocketAddr = ([127, 0, 0, 1], ops_port).into();

    let mut process = spawn(&db, &pki, &keys, dir.path(), port, ops_port);
    let channel = channel(&pki, port).await;
    assert_eq!(http_get(ops, "/readyz").await.expect("GET /readyz").0, 200);
    let mut health = HealthClient::new(channel.clone());
    let serving = |service: &str| HealthCheckRequest { service: service.into() };
    assert_eq!(
        health.check(serving("qupia.vault.v1.VaultService")).await.expect("health").into_inner().status,
        ServingStatus::Serving as i32
    );

    let signalled = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Outcomes::default());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        // A connection per task, as separate gateway replicas would have.
        let mut vault = VaultServiceClient::new(self::channel(&pki, port).await);
        let (signalled, outcomes) = (signalled.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for call in 0.. {
                let after_signal = signalled.load(Ordering::SeqCst);
                match vault.tokenize(tokenize_request(task, call)).await {
                    Ok(_) => {
                        outcomes.succeeded.fetch_add(1, Ordering::SeqCst);
                        if after_signal {
                            outcomes.succeeded_after_signal.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Not delivered because the server is going away: allowed once it is,
                    // and checked after a restart.
                    Err(status) if not_delivered(&status) && signalled.load(Ordering::SeqCst) => {
                        outcomes.undelivered.lock().unwrap().push((task, call));
                        return;
                    }
                    Err(status) => {
                        outcomes.failed.lock().unwrap().push(format!(
                            "task {task} call {call} (signalled: {}): {:?} {}",
                            signalled.load(Ordering::SeqCst),
                            status.code(),
                            status.message()
                        ));
                        return;
                    }
                }
            }
        }));
    }
    // Let the callers get going.
    while outcomes.succeeded.load(Ordering::SeqCst) < TASKS * 2 {
        assert!(outcomes.failed.lock().unwrap().is_empty(), "{:?}", outcomes.failed.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let pid = process.0.id().to_string();
    signalled.store(true, Ordering::SeqCst);
    let signal_sent = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("run kill");
    assert!(killed.success());

    // Within the deregistration delay: NOT_SERVING everywhere while the gRPC port still serves.
    let mut readyz_503 = None;
    let mut health_not_serving = None;
    while readyz_503.is_none() || health_not_serving.is_none() {
        assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY, "NOT_SERVING was not reported within the delay");
        if readyz_503.is_none() && http_get(ops, "/readyz").await.expect("GET /readyz").0 == 503 {
            readyz_503 = Some(signal_sent.elapsed());
        }
        if health_not_serving.is_none() {
            let overall = health.check(serving("")).await.expect("health check while draining").into_inner();
            let vault = health.check(serving("qupia.vault.v1.VaultService")).await.expect("health").into_inner();
            if overall.status == ServingStatus::NotServing as i32 && vault.status == ServingStatus::NotServing as i32 {
                health_not_serving = Some(signal_sent.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The listener still accepts: a new mTLS connection can be made and used.
    let mut late = VaultServiceClient::new(self::channel(&pki, port).await);
    late.tokenize(tokenize_request(TASKS, 0)).await.expect("a call during the deregistration delay succeeds");
    assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY, "the checks outlasted the delay; the test proves nothing");
    assert_eq!(http_get(ops, "/livez").await.expect("GET /livez").0, 200);

    // The process drains and exits 0 within the grace period.
    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait for the vault") {
            break status;
        }
        assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY + GRACE_PERIOD, "the vault did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the vault exited with {status}");
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("callers stop").expect("caller task");
    }
    let failed = outcomes.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "calls that started failed: {failed:#?}");
    assert!(
        outcomes.succeeded_after_signal.load(Ordering::SeqCst) > 0,
        "calls went on during the deregistration delay: {outcomes:?}"
    );
    let undelivered = outcomes.undelivered.lock().unwrap().clone();
    assert_eq!(undelivered.len(), TASKS, "every caller was turned away in the end: {outcomes:?}");
    drop(process);

    // Restarted on the same database: no undelivered call had been written.
    let (port, ops_port) = (free_port(), free_port());
    let _process = spawn(&db, &pki, &keys, dir.path(), port, ops_port);
    let mut vault = VaultServiceClient::new(self::channel(&pki, port).await);
    for (task, call) in undelivered {
        let response = vault.tokenize(tokenize_request(task, call)).await.expect("retry after restart").into_inner();
        assert!(!response.replayed, "task {task} call {call} reached the vault but its caller saw a failure");
    }
}
