//! SIGTERM drains the gateway as it does the vault: NOT_SERVING on `/readyz` and gRPC
//! health while the port still serves, every call that started completes, exit 0
//! within the grace period. The calls are consent grants, which the gateway writes to
//! its own database (no vault needed).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::*;
use qupia_api::types::v1::Purpose;
use qupia_test_support::ops::http_get;
use qupia_test_support::{Backend, TestDb, TestPki, connect, storage_test};
use tonic::Code;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

struct GatewayProcess(Child);

impl Drop for GatewayProcess {
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
const TASKS: usize = 6;

fn spawn(db: &TestDb, pki: &TestPki, port: u16, ops_port: u16) -> GatewayProcess {
    let files = pki.service("gateway");
    let child = Command::new(env!("CARGO_BIN_EXE_qupia-gateway"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
        .args(["--deregistration-delay-secs", &DEREGISTRATION_DELAY.as_secs_f64().to_string()])
        .args(["--grace-period-secs", &GRACE_PERIOD.as_secs_f64().to_string()])
        .args(["--database-url", &db.url])
        // Nothing listens there: consent calls never reach the vault.
        .args(["--vault-addr", &format!("127.0.0.1:{}", free_port())])
        .arg("--tls-ca")
        .arg(&files.ca)
        .arg("--tls-cert")
        .arg(&files.cert)
        .arg("--tls-key")
        .arg(&files.key)
        .env_remove("QUPIA_GATEWAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start qupia-gateway");
    GatewayProcess(child)
}

async fn channel(pki: &TestPki, port: u16, caller: &str) -> Channel {
    let files = pki.service(caller);
    // `connect` itself retries a refused connection for 2 s: half a minute in all, then
    // say so rather than wait (a process that refused to start never listens).
    for _ in 0..15 {
        if let Ok(channel) = connect(([127, 0, 0, 1], port).into(), &files, "gateway").await {
            return channel;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the gateway process did not come up");
}

fn grant(task: usize, call: usize) -> GrantConsentRequest {
    GrantConsentRequest {
        // The last character carries no data bits: A keeps the token canonical.
        person_token: format!("qpp_{task:0>2}{call:0>32}A"),
        purpose: Purpose::Advertising as i32,
        recipient: String::new(),
        policy_version: 1,
        channel: "web".into(),
        evidence: format!("form-{task}-{call}"),
        expires_at_ms: 0,
    }
}

#[derive(Debug, Default)]
struct Outcomes {
    succeeded: AtomicUsize,
    succeeded_after_signal: AtomicUsize,
    undelivered: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

storage_test!(sigterm_reports_not_serving_then_drains_and_exits_0, drains);
async fn drains(backend: Backend) {
    let db = TestDb::create(backend, "gateway_drain").await;
    let pki = TestPki::new();
    let (port, ops_port) = (free_port(), free_port());
    let ops: std::net::SocketAddr = ([127, 0, 0, 1], ops_port).into();
    let mut process = spawn(&db, &pki, port, ops_port);

    let security = channel(&pki, port, "qupiactl").await;
    ConsentServiceClient::new(security.clone())
        .publish_policy_version(PublishPolicyVersionRequest {
            text_sha256: "ab".repeat(32),
            reconsent_purposes: vec![],
        })
        .await
        .expect("publish the policy");
    assert_eq!(http_get(ops, "/readyz").await.expect("GET /readyz").0, 200);
    let mut health = HealthClient::new(security);
    let serving = |service: &str| HealthCheckRequest { service: service.into() };
    let gateway_service = "qupia.gateway.v1.GatewayService";
    assert_eq!(
        health.check(serving(gateway_service)).await.expect("health").into_inner().status,
        ServingStatus::Serving as i32
    );

    let signalled = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Outcomes::default());
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        // A connection per task, as separate accounts replicas would have.
        let mut consents = ConsentServiceClient::new(channel(&pki, port, "accounts").await);
        let (signalled, outcomes) = (signalled.clone(), outcomes.clone());
        tasks.push(tokio::spawn(async move {
            for call in 0.. {
                let after_signal = signalled.load(Ordering::SeqCst);
                match consents.grant_consent(grant(task, call)).await {
                    Ok(_) => {
                        outcomes.succeeded.fetch_add(1, Ordering::SeqCst);
                        if after_signal {
                            outcomes.succeeded_after_signal.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    // Refused or cut at the HTTP/2 layer as the server went away
                    // (tonic: INTERNAL "h2 protocol error"), before the call ran.
                    Err(status)
                        if (matches!(status.code(), Code::Unavailable | Code::Cancelled)
                            || status.message().starts_with("h2 protocol error"))
                            && signalled.load(Ordering::SeqCst) =>
                    {
                        outcomes.undelivered.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    Err(status) => {
                        outcomes.failed.lock().unwrap().push(format!(
                            "task {task} call {call}: {:?} {}",
                            status.code(),
                            status.message()
                        ));
                        return;
                    }
                }
            }
        }));
    }
    while outcomes.succeeded.load(Ordering::SeqCst) < TASKS * 2 {
        assert!(outcomes.failed.lock().unwrap().is_empty(), "{:?}", outcomes.failed.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    signalled.store(true, Ordering::SeqCst);
    let signal_sent = Instant::now();
    let killed = Command::new("kill").args(["-TERM", &process.0.id().to_string()]).status().expect("run kill");
    assert!(killed.success());

    // NOT_SERVING on both probes within the deregistration delay, while calls go on.
    let mut readyz_503 = false;
    let mut health_not_serving = false;
    while !readyz_503 || !health_not_serving {
        assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY, "NOT_SERVING was not reported within the delay");
        readyz_503 = readyz_503 || http_get(ops, "/readyz").await.expect("GET /readyz").0 == 503;
        if !health_not_serving {
            let status = health.check(serving(gateway_service)).await.expect("health while draining").into_inner();
            health_not_serving = status.status == ServingStatus::NotServing as i32;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut late = ConsentServiceClient::new(channel(&pki, port, "accounts").await);
    late.grant_consent(grant(TASKS, 0)).await.expect("a call during the deregistration delay succeeds");
    assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY, "the checks outlasted the delay; the test proves nothing");

    let status = loop {
        if let Some(status) = process.0.try_wait().expect("wait for the gateway") {
            break status;
        }
        assert!(signal_sent.elapsed() < DEREGISTRATION_DELAY + GRACE_PERIOD, "the gateway did not exit in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "the gateway exited with {status}");
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("callers stop").expect("caller task");
    }
    let failed = outcomes.failed.lock().unwrap().clone();
    assert!(failed.is_empty(), "calls that started failed: {failed:#?}");
    assert!(outcomes.succeeded_after_signal.load(Ordering::SeqCst) > 0, "calls went on while draining: {outcomes:?}");
    assert_eq!(outcomes.undelivered.load(Ordering::SeqCst), TASKS, "every caller was turned away in the end");
    drop(process);
}
