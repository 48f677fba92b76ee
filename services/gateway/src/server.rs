//! Assembles the gateway: policy, consent store, vault client, and its APIs.

use std::future::Future;
use std::sync::Arc;

use qupia_api::audit::v1::audit_service_client::AuditServiceClient;
use qupia_api::audit::v1::audit_service_server::AuditServiceServer;
use qupia_api::gateway::v1::access_history_service_server::AccessHistoryServiceServer;
use qupia_api::gateway::v1::consent_service_server::ConsentServiceServer;
use qupia_api::gateway::v1::disclosure_service_server::DisclosureServiceServer;
use qupia_api::gateway::v1::document_service_server::DocumentServiceServer;
use qupia_api::gateway::v1::gateway_service_server::GatewayServiceServer;
use qupia_api::gateway::v1::policy_service_server::PolicyServiceServer;
use qupia_api::gateway::v1::statistics_service_server::StatisticsServiceServer;
use qupia_api::gateway::v1::subject_request_service_server::SubjectRequestServiceServer;
use qupia_api::keys::v1::key_admin_service_client::KeyAdminServiceClient;
use qupia_api::keys::v1::key_admin_service_server::KeyAdminServiceServer;
use qupia_api::vault::v1::vault_document_service_client::VaultDocumentServiceClient;
use qupia_api::vault::v1::vault_service_client::VaultServiceClient;
use qupia_api::vault::v1::vault_statistics_service_client::VaultStatisticsServiceClient;
use qupia_policy::PolicyStore;
use qupia_transport::{Admission, TlsMode, admit};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};

use crate::Config;
use crate::access_history::AccessHistoryApi;
use crate::audit_proxy::AuditProxy;
use crate::consent::{ConsentError, ConsentStore};
use crate::consent_api::ConsentApi;
use crate::disclosure::DisclosureStore;
use crate::disclosure_api::DisclosureApi;
use crate::document_api::DocumentApi;
use crate::enforce::Enforcer;
use crate::gateway_api::GatewayApi;
use crate::key_proxy::KeyAdminProxy;
use crate::policy_api::PolicyApi;
use crate::rate_limit::CallerLimits;
use crate::statistics_api::StatisticsApi;
use crate::subject::{CalendarError, HolidayCalendar, SubjectRequestStore};
use crate::subject_api::SubjectRequestApi;

/// The largest message a caller may send in a document upload.
const MAX_DOCUMENT_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to load the purpose policy: {0}")]
    Policy(#[from] qupia_policy::PolicyError),
    #[error("failed to open the gateway database: {0}")]
    Store(#[from] ConsentError),
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] qupia_transport::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("failed to build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("vault_addr: is not a valid address")]
    VaultAddress,
    #[error(transparent)]
    Ops(#[from] qupia_ops::Error),
    #[error("statistics_min_group_size: must be at least 2, or a group of one would name its person; it is {0}")]
    StatisticsMinGroupSize(u32),
    #[error("failed to load the holiday calendar (holidays_path): {0}")]
    Holidays(#[from] CalendarError),
}

/// Runs the gateway on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// waits out the deregistration delay and drains in-flight calls (see `qupia_ops::Lifecycle`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if config.statistics_min_group_size < 2 {
        return Err(ServeError::StatisticsMinGroupSize(config.statistics_min_group_size));
    }
    // A bad policy refuses to start; later reloads keep the last good one.
    let policy = Arc::new(PolicyStore::load(config.policy_path.as_deref())?);
    tracing::info!(policy_sha256 = %policy.current().hash_hex(), "purpose policy loaded");
    let reloader = config.policy_path.is_some().then(|| policy.clone().spawn_reloader(config.policy_reload_interval));
    // A malformed holiday file refuses to start, naming its line: due dates depend on it.
    let holidays = Arc::new(HolidayCalendar::load(config.holidays_path.as_deref())?);
    qupia_ops::wait_for_database(&config.database_url, config.ops.database_wait).await?;
    let consents = ConsentStore::connect(&config.database_url, config.max_connections).await?;
    let metrics = qupia_ops::Metrics::new();
    metrics.observe_pool(consents.pool().clone());

    // The vault channel connects lazily: the gateway may start before the vault.
    let (scheme, insecure_dev) = match &config.tls {
        TlsMode::Mtls(_) => ("https", None),
        TlsMode::InsecureDev { assumed_caller } => ("http", Some(assumed_caller.clone())),
    };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{}", config.vault_addr)).map_err(|_| ServeError::VaultAddress)?;
    if let TlsMode::Mtls(files) = &config.tls {
        endpoint = endpoint.tls_config(files.client_config(&config.vault_server_name)?)?;
    }
    // Every call to the vault carries the current trace context.
    let channel = tower::Layer::layer(&qupia_telemetry::client_layer(), endpoint.connect_lazy());

    let roles = &config.roles;
    let disclosures = DisclosureStore::new(consents.pool().clone());
    let enforcer = Enforcer {
        policy: policy.clone(),
        consents: consents.clone(),
        vault: VaultServiceClient::new(channel.clone()),
        disclosures: disclosures.clone(),
        metrics: metrics.clone(),
    };
    let limits = Arc::new(CallerLimits::new(config.rate_limit, &config.rate_limits));
    let documents = DocumentApi {
        enforcer: enforcer.clone(),
        documents: VaultDocumentServiceClient::new(channel.clone()),
        limits: limits.clone(),
        writers: roles.writers.clone().into(),
    };
    let statistics = StatisticsApi {
        enforcer: enforcer.clone(),
        statistics: VaultStatisticsServiceClient::new(channel.clone()),
        limits: limits.clone(),
        min_group_size: config.statistics_min_group_size,
    };
    let gateway =
        GatewayApi { enforcer, limits, writers: roles.writers.clone().into(), max_batch_items: config.max_batch_items };
    let subject_requests = SubjectRequestApi {
        store: SubjectRequestStore::new(consents.pool().clone(), holidays),
        writers: roles.writers.clone().into(),
        security: roles.security.clone().into(),
    };
    let consent = ConsentApi {
        store: consents,
        managers: roles.consent_managers.clone().into(),
        security: roles.security.clone().into(),
    };
    let disclosure = DisclosureApi {
        store: disclosures,
        officers: roles.disclosure_officers.clone().into(),
        security: roles.security.clone().into(),
    };
    let explain = PolicyApi { policy: policy.clone(), security: roles.security.clone().into() };
    // A person's own history goes to the writers (acting on the person's request) and
    // to the security team; the whole log to the security team only.
    let history = AccessHistoryApi {
        vault: AuditServiceClient::new(channel.clone()),
        readers: roles.writers.iter().chain(&roles.security).cloned().collect(),
    };
    let keys =
        KeyAdminProxy { vault: KeyAdminServiceClient::new(channel.clone()), security: roles.security.clone().into() };
    let audit = AuditProxy { vault: AuditServiceClient::new(channel), security: roles.security.clone().into() };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let lifecycle = qupia_ops::Lifecycle::new(health_reporter);
    lifecycle.serving::<GatewayServiceServer<GatewayApi>>().await;
    lifecycle.serving::<DocumentServiceServer<DocumentApi>>().await;
    lifecycle.serving::<StatisticsServiceServer<StatisticsApi>>().await;
    // Up before the gRPC port serves, so probes and scrapes see the whole start-up.
    let _ops_server = qupia_ops::OpsServer::start(&config.ops, metrics.clone(), lifecycle.clone()).await?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qupia_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // Every API authenticates the caller by certificate first; each then authorises
    // per call (purpose policy, roles).
    let gate = || admit(Admission::AnyIdentity, insecure_dev.clone(), "gateway");
    let mut builder = Server::builder();
    match &config.tls {
        TlsMode::Mtls(files) => builder = builder.tls_config(files.server_config()?)?,
        TlsMode::InsecureDev { assumed_caller } => tracing::warn!(
            %assumed_caller,
            "INSECURE-DEV MODE: plaintext transport, every caller is taken to be the assumed caller; never use this outside a developer's machine"
        ),
    }
    tracing::info!(address = ?listener.local_addr().ok(), vault = %config.vault_addr, "gateway listening");
    let served = lifecycle
        .run(&config.ops, shutdown, |stop_accepting| {
            builder
                // Outermost, so every call is counted, including those admission refuses.
                .layer(metrics.grpc_layer())
                // Joins the caller's trace (W3C traceparent) and opens the server span.
                .layer(qupia_telemetry::server_layer())
                .add_service(health_service)
                .add_service(reflection)
                .add_service(InterceptedService::new(GatewayServiceServer::new(gateway), gate()))
                // Each message of an upload may be up to 4 MiB (tonic's default, stated
                // here); the gateway passes content on to the vault in smaller pieces.
                .add_service(InterceptedService::new(
                    DocumentServiceServer::new(documents).max_decoding_message_size(MAX_DOCUMENT_MESSAGE_BYTES),
                    gate(),
                ))
                .add_service(InterceptedService::new(StatisticsServiceServer::new(statistics), gate()))
                .add_service(InterceptedService::new(ConsentServiceServer::new(consent), gate()))
                .add_service(InterceptedService::new(DisclosureServiceServer::new(disclosure), gate()))
                .add_service(InterceptedService::new(SubjectRequestServiceServer::new(subject_requests), gate()))
                .add_service(InterceptedService::new(PolicyServiceServer::new(explain), gate()))
                .add_service(InterceptedService::new(AuditServiceServer::new(audit), gate()))
                .add_service(InterceptedService::new(AccessHistoryServiceServer::new(history), gate()))
                .add_service(InterceptedService::new(KeyAdminServiceServer::new(keys), gate()))
                .serve_with_incoming_shutdown(qupia_transport::incoming(listener), stop_accepting)
        })
        .await;
    if let Some(reloader) = reloader {
        reloader.abort();
    }
    served?;
    Ok(())
}
