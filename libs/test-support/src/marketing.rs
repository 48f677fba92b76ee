//! The vault, the gateway and the marketing service together, in-process, over real
//! mTLS on one test PKI, with the privacy policy published so consents can be given.
//! Tests act as the accounts service does (tokenize, grant, withdraw through the
//! gateway) and as the operator CLI calls marketing.

use std::net::SocketAddr;
use std::time::Duration;

use qupia_api::gateway::v1::{
    EraseRequest, GrantConsentRequest, PublishPolicyVersionRequest, TokenizeRequest, WithdrawConsentRequest,
};
use qupia_api::marketing::v1::marketing_service_client::MarketingServiceClient;
use qupia_api::types::v1::Purpose;
use qupia_api::vault::v1::PersonInput;
use qupia_transport::TlsMode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::{Backend, Suite, TestDb, connect};

/// A running vault, gateway and marketing service.
#[derive(Debug)]
pub struct MarketingSuite {
    pub suite: Suite,
    pub addr: SocketAddr,
    pub db: TestDb,
    /// The privacy-policy version in force (published at start).
    pub policy_version: i64,
    /// The configuration the marketing service was started with.
    pub config: qupia_marketing::Config,
    instance: MarketingInstance,
    channels: tokio::sync::Mutex<std::collections::HashMap<String, Channel>>,
}

/// One marketing process: the suite's, or another replica on the same database.
#[derive(Debug)]
pub struct MarketingInstance {
    pub addr: SocketAddr,
    ops: qupia_ops::BoundAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), qupia_marketing::ServeError>>>,
}

impl MarketingInstance {
    /// Starts `serve(config)` on `127.0.0.1:0` and waits until it accepts calls.
    pub async fn start(config: qupia_marketing::Config) -> MarketingInstance {
        let ops = config.ops.bound.clone();
        let runs_ops = config.ops.listen.is_some();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(qupia_marketing::serve(config, listener, async {
            let _ = stopped.await;
        }));
        for _ in 0..800 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() && (!runs_ops || ops.get().is_some()) {
                break;
            }
            if task.is_finished() {
                match (&mut task).await {
                    Ok(Err(err)) => panic!("the marketing service did not start: {err}"),
                    other => panic!("the marketing service stopped while starting: {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        MarketingInstance { addr, ops, stop: Some(stop), task: Some(task) }
    }

    /// The ops HTTP server's address, if it runs.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.get()
    }

    /// Stops the process: drains its calls, lets its worker finish its round.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("marketing task").expect("marketing stopped cleanly");
        }
    }
}

impl Drop for MarketingInstance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl MarketingSuite {
    pub async fn start(backend: Backend) -> MarketingSuite {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the suite after `adjust` has changed the marketing configuration. The
    /// defaults here deliver quickly: a 20 ms poll and short retry backoffs.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut qupia_marketing::Config)) -> MarketingSuite {
        Self::start_with_gateway(backend, |_| {}, adjust).await
    }

    /// Starts the suite after `adjust_gateway` and `adjust` have changed the gateway's
    /// and the marketing service's configurations.
    pub async fn start_with_gateway(
        backend: Backend,
        adjust_gateway: impl FnOnce(&mut qupia_gateway::Config),
        adjust: impl FnOnce(&mut qupia_marketing::Config),
    ) -> MarketingSuite {
        let suite = Suite::start_with(backend, adjust_gateway).await;
        let policy_version = suite
            .consents_as("qupiactl")
            .await
            .publish_policy_version(PublishPolicyVersionRequest {
                text_sha256: format!("{:064x}", 1),
                reconsent_purposes: vec![],
            })
            .await
            .expect("publish the privacy policy")
            .into_inner()
            .version
            .expect("a version")
            .version;
        let db = TestDb::create(backend, "marketing").await;
        let mut config = qupia_marketing::Config::new(
            db.url.clone(),
            TlsMode::Mtls(suite.pki.service("marketing")),
            suite.gateway_addr.to_string(),
        );
        config.max_connections = 4;
        config.ops = qupia_ops::OpsOptions::ephemeral();
        config.delivery.poll_interval = Duration::from_millis(20);
        config.delivery.retry_backoff = Duration::from_millis(20);
        config.delivery.max_backoff = Duration::from_millis(100);
        config.delivery.send_wait = Duration::from_secs(60);
        adjust(&mut config);
        let instance = MarketingInstance::start(config.clone()).await;
        MarketingSuite {
            suite,
            addr: instance.addr,
            db,
            policy_version,
            config,
            instance,
            channels: Default::default(),
        }
    }

    /// Starts another marketing process on the same database, with the suite's
    /// configuration after `adjust` (e.g. a worker replica beside an API-only one).
    pub async fn start_replica(&self, adjust: impl FnOnce(&mut qupia_marketing::Config)) -> MarketingInstance {
        let mut config = self.config.clone();
        config.ops = qupia_ops::OpsOptions::ephemeral();
        adjust(&mut config);
        MarketingInstance::start(config).await
    }

    /// The marketing service's ops HTTP server, if it runs.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.instance.ops_addr()
    }

    /// A client of the marketing service as `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn marketing_as(&self, service: &str) -> MarketingServiceClient<Channel> {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(service) {
            return MarketingServiceClient::new(channel.clone());
        }
        let channel = connect(self.addr, &self.suite.pki.service(service), "marketing")
            .await
            .unwrap_or_else(|err| panic!("connect to the marketing service as {service}: {err:?}"));
        channels.insert(service.to_owned(), channel.clone());
        MarketingServiceClient::new(channel)
    }

    /// The operator CLI's client: the caller marketing admits by default.
    pub async fn marketing(&self) -> MarketingServiceClient<Channel> {
        self.marketing_as("qupiactl").await
    }

    /// Stores a person through the gateway as the accounts service; returns the person token.
    pub async fn register(&self, person: PersonInput) -> String {
        self.suite
            .gateway_as("accounts")
            .await
            .tokenize(TokenizeRequest { person: Some(person), idempotency_key: String::new() })
            .await
            .expect("tokenize through the gateway")
            .into_inner()
            .tokens
            .expect("tokens")
            .person_token
    }

    /// Records the person's consent to `purpose` under the policy in force, as accounts.
    pub async fn grant(&self, person_token: &str, purpose: Purpose) {
        self.suite
            .consents_as("accounts")
            .await
            .grant_consent(GrantConsentRequest {
                person_token: person_token.to_owned(),
                purpose: purpose as i32,
                recipient: String::new(),
                policy_version: self.policy_version,
                channel: "web".into(),
                evidence: "form-2026-101".into(),
                expires_at_ms: 0,
            })
            .await
            .expect("grant a consent");
    }

    /// Records the withdrawal of the person's consent to `purpose`, as accounts.
    pub async fn withdraw(&self, person_token: &str, purpose: Purpose) {
        self.suite
            .consents_as("accounts")
            .await
            .withdraw_consent(WithdrawConsentRequest {
                person_token: person_token.to_owned(),
                purpose: purpose as i32,
                recipient: String::new(),
                channel: "web".into(),
                evidence: "form-2026-102".into(),
            })
            .await
            .expect("withdraw a consent");
    }

    /// Erases the person through the gateway, as accounts.
    pub async fn erase(&self, person_token: &str) {
        self.suite
            .gateway_as("accounts")
            .await
            .erase(EraseRequest { person_token: person_token.to_owned() })
            .await
            .expect("erase a person");
    }

    /// Stops marketing (its worker after its round), then the gateway and the vault.
    pub async fn stop(&mut self) {
        self.instance.stop().await;
        self.suite.stop().await;
    }
}
