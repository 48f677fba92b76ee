//! The vault, the gateway and the accounts service together, in-process, over real
//! mTLS on one PKI, with a privacy policy version published so that consents can be
//! given at once.

use std::net::SocketAddr;

use qupia_api::accounts::v1::accounts_service_client::AccountsServiceClient;
use qupia_api::gateway::v1::PublishPolicyVersionRequest;
use qupia_transport::TlsMode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::{Backend, Suite, TestDb, connect};

/// A running vault, gateway and accounts service.
#[derive(Debug)]
pub struct AccountsSuite {
    /// The vault and the gateway the accounts service calls.
    pub suite: Suite,
    pub addr: SocketAddr,
    pub db: TestDb,
    /// The privacy policy version in force when the suite started.
    pub policy_version: i64,
    ops: qupia_ops::BoundAddr,
    channels: tokio::sync::Mutex<std::collections::HashMap<String, Channel>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), qupia_accounts::ServeError>>>,
}

impl AccountsSuite {
    pub async fn start(backend: Backend) -> AccountsSuite {
        Self::start_configured(backend, |_| {}, |_| {}).await
    }

    /// Starts the suite after `adjust` has changed the accounts service's configuration.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut qupia_accounts::Config)) -> AccountsSuite {
        Self::start_configured(backend, |_| {}, adjust).await
    }

    /// Starts the suite after `gateway` and `accounts` have changed the two services'
    /// configurations.
    pub async fn start_configured(
        backend: Backend,
        gateway: impl FnOnce(&mut qupia_gateway::Config),
        accounts: impl FnOnce(&mut qupia_accounts::Config),
    ) -> AccountsSuite {
        let adjust = accounts;
        let suite = Suite::start_with(backend, gateway).await;
        let policy_version = publish_policy_version(&suite).await;
        let db = TestDb::create(backend, "accounts").await;
        let mut config = qupia_accounts::Config::new(
            db.url.clone(),
            TlsMode::Mtls(suite.pki.service("accounts")),
            suite.gateway_addr.to_string(),
        );
        config.max_connections = 4;
        config.ops = qupia_ops::OpsOptions::ephemeral();
        adjust(&mut config);
        let ops = config.ops.bound.clone();
        let runs_ops = config.ops.listen.is_some();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut task = tokio::spawn(qupia_accounts::serve(config, listener, async {
            let _ = stopped.await;
        }));
        for _ in 0..800 {
            // The ops server is up once the database is open and serving is about to begin.
            if tokio::net::TcpStream::connect(addr).await.is_ok() && (!runs_ops || ops.get().is_some()) {
                break;
            }
            if task.is_finished() {
                match (&mut task).await {
                    Ok(Err(err)) => panic!("the accounts service did not start: {err}"),
                    other => panic!("the accounts service stopped while starting: {other:?}"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        AccountsSuite {
            suite,
            addr,
            db,
            policy_version,
            ops,
            channels: Default::default(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The accounts service's ops HTTP server (`/metrics`, `/livez`, `/readyz`), if it runs.
    pub fn ops_addr(&self) -> Option<SocketAddr> {
        self.ops.get()
    }

    /// A channel to the accounts service as `spiffe://qupia/ns/default/sa/<service>`;
    /// one connection per identity, reused.
    pub async fn channel_as(&self, service: &str) -> Channel {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(service) {
            return channel.clone();
        }
        let channel = connect(self.addr, &self.suite.pki.service(service), "accounts")
            .await
            .unwrap_or_else(|err| panic!("connect to the accounts service as {service}: {err:?}"));
        channels.insert(service.to_owned(), channel.clone());
        channel
    }

    /// A client of the accounts service as `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn accounts_as(&self, service: &str) -> AccountsServiceClient<Channel> {
        AccountsServiceClient::new(self.channel_as(service).await)
    }

    /// Stops the accounts service, then the gateway and the vault, draining each.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("accounts task").expect("accounts service stopped cleanly");
        }
        self.suite.stop().await;
    }
}

impl Drop for AccountsSuite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Publishes a privacy policy version as the security team does (`qupiactl dev up`
/// publishes the policy text's digest as version 1); returns its number.
pub async fn publish_policy_version(suite: &Suite) -> i64 {
    let versions = suite
        .consents_as("qupiactl")
        .await
        .list_policy_versions(qupia_api::gateway::v1::ListPolicyVersionsRequest {})
        .await
        .expect("list policy versions")
        .into_inner()
        .versions;
    suite
        .consents_as("qupiactl")
        .await
        .publish_policy_version(PublishPolicyVersionRequest {
            text_sha256: format!("{:064x}", versions.len() + 1),
            reconsent_purposes: vec![],
        })
        .await
        .expect("publish a policy version")
        .into_inner()
        .version
        .expect("a version")
        .version
}
