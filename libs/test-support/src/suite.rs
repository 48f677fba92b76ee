//! The vault and the gateway together, in-process, over real mTLS.

use std::net::SocketAddr;
use std::sync::Arc;

use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::gateway::v1::access_history_service_client::AccessHistoryServiceClient;
use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
use qupia_api::gateway::v1::disclosure_service_client::DisclosureServiceClient;
use qupia_api::gateway::v1::document_service_client::DocumentServiceClient;
use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::gateway::v1::policy_service_client::PolicyServiceClient;
use qupia_api::gateway::v1::statistics_service_client::StatisticsServiceClient;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_transport::TlsMode;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::{Backend, TestDb, TestPki, VaultHarness, connect};

/// A running vault and gateway.
#[derive(Debug)]
pub struct Suite {
    pub vault: VaultHarness,
    pub gateway_addr: SocketAddr,
    pub gateway_db: TestDb,
    gateway_ops: qupia_ops::BoundAddr,
    pub pki: Arc<TestPki>,
    /// One connection per identity, reused by every client a test asks for.
    channels: tokio::sync::Mutex<std::collections::HashMap<String, Channel>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), qupia_gateway::ServeError>>>,
}

impl Suite {
    pub async fn start(backend: Backend) -> Suite {
        Self::start_with(backend, |_| {}).await
    }

    /// Starts the suite after `adjust` has changed the gateway's configuration.
    pub async fn start_with(backend: Backend, adjust: impl FnOnce(&mut qupia_gateway::Config)) -> Suite {
        let pki = Arc::new(TestPki::new());
        let vault = VaultHarness::start_in(backend, qupia_vault::Limits::default(), pki.clone()).await;
        let gateway_db = TestDb::create(backend, "gateway").await;
        let mut config = qupia_gateway::Config::new(
            gateway_db.url.clone(),
            TlsMode::Mtls(pki.service("gateway")),
            vault.addr.to_string(),
        );
        config.max_connections = 4;
        config.ops = qupia_ops::OpsOptions::ephemeral();
        adjust(&mut config);
        let gateway_ops = config.ops.bound.clone();
        let runs_ops = config.ops.listen.is_some();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let gateway_addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(qupia_gateway::serve(config, listener, async {
            let _ = stopped.await;
        }));
        let mut task = task;
        for _ in 0..800 {
            // The listener is bound before serving starts; the ops server is up once
            // the database is open and serving is about to begin.
            if tokio::net::TcpStream::connect(gateway_addr).await.is_ok() && (!runs_ops || gateway_ops.get().is_some())
            {
                break;
            }
            if task.is_finished() {
                // Say why, rather than let the test fail later on a refused connection.
                match (&mut task).await {
                    Ok(Err(err)) => panic!("the gateway did not start: {err}"),
                    other => panic!("the gateway stopped while starting: {other:?}"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        Suite {
            vault,
            gateway_addr,
            gateway_db,
            gateway_ops,
            pki,
            channels: Default::default(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The gateway's ops HTTP server (`/metrics`, `/livez`, `/readyz`), if it runs.
    pub fn gateway_ops_addr(&self) -> Option<SocketAddr> {
        self.gateway_ops.get()
    }

    /// A channel to the gateway as `spiffe://qupia/ns/default/sa/<service>`.
    pub async fn channel_as(&self, service: &str) -> Channel {
        let mut channels = self.channels.lock().await;
        if let Some(channel) = channels.get(service) {
            return channel.clone();
        }
        let channel = match connect(self.gateway_addr, &self.pki.service(service), "gateway").await {
            Ok(channel) => channel,
            Err(err) => {
                let stopped = self.task.as_ref().is_some_and(JoinHandle::is_finished);
                panic!("connect to the gateway as {service} (gateway task stopped: {stopped}): {err:?}")
            }
        };
        channels.insert(service.to_owned(), channel.clone());
        channel
    }

    pub async fn gateway_as(&self, service: &str) -> GatewayServiceClient<Channel> {
        GatewayServiceClient::new(self.channel_as(service).await)
    }

    pub async fn consents_as(&self, service: &str) -> ConsentServiceClient<Channel> {
        ConsentServiceClient::new(self.channel_as(service).await)
    }

    pub async fn policy_as(&self, service: &str) -> PolicyServiceClient<Channel> {
        PolicyServiceClient::new(self.channel_as(service).await)
    }

    pub async fn audit_as(&self, service: &str) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel_as(service).await)
    }

    pub async fn access_history_as(&self, service: &str) -> AccessHistoryServiceClient<Channel> {
        AccessHistoryServiceClient::new(self.channel_as(service).await)
    }

    pub async fn keys_as(&self, service: &str) -> KeyAdminServiceClient<Channel> {
        KeyAdminServiceClient::new(self.channel_as(service).await)
    }

    pub async fn documents_as(&self, service: &str) -> DocumentServiceClient<Channel> {
        DocumentServiceClient::new(self.channel_as(service).await)
    }

    pub async fn statistics_as(&self, service: &str) -> StatisticsServiceClient<Channel> {
        StatisticsServiceClient::new(self.channel_as(service).await)
    }

    pub async fn disclosures_as(&self, service: &str) -> DisclosureServiceClient<Channel> {
        DisclosureServiceClient::new(self.channel_as(service).await)
    }

    /// Stops the gateway and the vault, draining both.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("gateway task").expect("gateway stopped cleanly");
        }
        self.vault.stop().await;
    }
}

impl Drop for Suite {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
