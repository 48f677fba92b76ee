//! Assembles the accounts service: its database, the gateway client, the API and the
//! transport.

use std::future::Future;

use qupia_api::accounts::v1::accounts_service_server::AccountsServiceServer;
use qupia_transport::{Admission, TlsMode, admit};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};

use crate::Config;
use crate::accounts_api::AccountsApi;
use crate::gateway::Gateway;
use crate::register::Registrar;
use crate::store::{Store, StoreError};

/// Why the accounts service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to open the accounts database: {0}")]
    Store(#[from] StoreError),
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] qupia_transport::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("failed to build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("gateway_addr: is not a valid address")]
    GatewayAddress,
    #[error("no caller is configured: nobody could call the accounts service")]
    NoCallers,
    #[error(transparent)]
    Ops(#[from] qupia_ops::Error),
}

/// Runs the accounts service on `listener` until `shutdown` resolves, then reports
/// NOT_SERVING, waits out the deregistration delay and drains in-flight calls (see
/// `qupia_ops::Lifecycle`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if config.callers.is_empty() {
        return Err(ServeError::NoCallers);
    }
    qupia_ops::wait_for_database(&config.database_url, config.ops.database_wait).await?;
    let store = Store::connect(&config.database_url, config.max_connections).await?;
    let metrics = qupia_ops::Metrics::new();
    metrics.observe_pool(store.pool().clone());

    // The gateway channel connects lazily: this service may start before the gateway.
    let (scheme, insecure_dev) = match &config.tls {
        TlsMode::Mtls(_) => ("https", None),
        TlsMode::InsecureDev { assumed_caller } => ("http", Some(assumed_caller.clone())),
    };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{}", config.gateway_addr)).map_err(|_| ServeError::GatewayAddress)?;
    if let TlsMode::Mtls(files) = &config.tls {
        endpoint = endpoint.tls_config(files.client_config(&config.gateway_server_name)?)?;
    }
    // Every call to the gateway carries the current trace context, so one request is
    // one trace from here to the vault.
    let channel = tower::Layer::layer(&qupia_telemetry::client_layer(), endpoint.connect_lazy());
    let gateway = Gateway::new(channel);
    let api = AccountsApi {
        store: store.clone(),
        gateway: gateway.clone(),
        registrar: Registrar { store: store.clone(), gateway },
        max_document_bytes: config.max_document_bytes,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let lifecycle = qupia_ops::Lifecycle::new(health_reporter);
    lifecycle.serving::<AccountsServiceServer<AccountsApi>>().await;
    // Up before the gRPC port serves, so probes and scrapes see the whole start-up.
    let _ops_server = qupia_ops::OpsServer::start(&config.ops, metrics.clone(), lifecycle.clone()).await?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qupia_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    // Only the configured callers (the web front end, the operator's CLI): the person
    // behind a call is theirs to authenticate, so nobody else may act for a person here.
    let admission = admit(Admission::Only(config.callers.clone().into()), insecure_dev, "accounts service");
    let accounts = InterceptedService::new(AccountsServiceServer::new(api), admission);

    let mut builder = Server::builder();
    match &config.tls {
        TlsMode::Mtls(files) => builder = builder.tls_config(files.server_config()?)?,
        TlsMode::InsecureDev { assumed_caller } => tracing::warn!(
            %assumed_caller,
            "INSECURE-DEV MODE: plaintext transport, every caller is taken to be the assumed caller; never use this outside a developer's machine"
        ),
    }
    tracing::info!(address = ?listener.local_addr().ok(), gateway = %config.gateway_addr, "accounts service listening");
    let served = lifecycle
        .run(&config.ops, shutdown, |stop_accepting| {
            builder
                // Outermost, so every call is counted, including those admission refuses.
                .layer(metrics.grpc_layer())
                // Joins the caller's trace (W3C traceparent) and opens the server span.
                .layer(qupia_telemetry::server_layer())
                .add_service(health_service)
                .add_service(reflection)
                .add_service(accounts)
                .serve_with_incoming_shutdown(qupia_transport::incoming(listener), stop_accepting)
        })
        .await;
    store.close().await;
    served?;
    Ok(())
}
