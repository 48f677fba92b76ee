//! Assembles the marketing service: its database, the gateway channel, the senders,
//! the delivery worker and the API.

use std::future::Future;
use std::sync::Arc;

use qupia_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use qupia_api::gateway::v1::statistics_service_client::StatisticsServiceClient;
use qupia_api::marketing::v1::marketing_service_server::MarketingServiceServer;
use qupia_transport::{Admission, TlsMode, admit};
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Endpoint, Server};

use crate::Config;
use crate::api::MarketingApi;
use crate::config::{EmailSender, SmsSender};
use crate::delivery::{Delivery, Senders};
use crate::sender::{LogSender, Sender, SmtpSender, SmtpSetupError};
use crate::store::{Store, StoreError};

/// Why the marketing service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to open the marketing database: {0}")]
    Store(#[from] StoreError),
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] qupia_transport::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("failed to build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("failed to set up the SMTP sender: {0}")]
    Smtp(#[from] SmtpSetupError),
    #[error("gateway_addr: is not a valid address")]
    GatewayAddress,
    #[error("callers: no caller is configured: nobody could call the marketing service")]
    NoCallers,
    #[error("{0}")]
    Config(&'static str),
    #[error(transparent)]
    Ops(#[from] qupia_ops::Error),
}

fn check(config: &Config) -> Result<(), ServeError> {
    if config.callers.is_empty() {
        return Err(ServeError::NoCallers);
    }
    let delivery = &config.delivery;
    if delivery.batch_size == 0 || delivery.batch_size > 1000 {
        return Err(ServeError::Config("delivery_batch_size: must be between 1 and 1000"));
    }
    if delivery.max_attempts == 0 {
        return Err(ServeError::Config("delivery_max_attempts: must be at least 1"));
    }
    if delivery.poll_interval.is_zero() {
        return Err(ServeError::Config("delivery_poll_interval_secs: must be more than 0"));
    }
    if delivery.lease.is_zero() {
        return Err(ServeError::Config("delivery_lease_secs: must be more than 0"));
    }
    if let Some(url) = &config.unsubscribe_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err(ServeError::Config("unsubscribe_url: must be an http:// or https:// URL"));
    }
    Ok(())
}

fn senders(config: &Config) -> Result<Senders, ServeError> {
    let email: Arc<dyn Sender> = match &config.email_sender {
        EmailSender::Log => {
            tracing::warn!("e-mail goes to the log sender: nothing is delivered");
            Arc::new(LogSender)
        }
        EmailSender::Smtp(smtp) => {
            tracing::info!(host = %smtp.host, port = smtp.port, tls = ?smtp.tls, "e-mail goes to an SMTP relay");
            Arc::new(SmtpSender::new(smtp)?)
        }
    };
    let sms: Arc<dyn Sender> = match config.sms_sender {
        SmsSender::Log => Arc::new(LogSender),
    };
    Ok(Senders { email, sms })
}

/// Runs the marketing service on `listener` until `shutdown` resolves: reports
/// NOT_SERVING, waits out the deregistration delay, drains in-flight calls, then stops
/// the delivery worker after its current round.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    check(&config)?;
    let senders = senders(&config)?;
    qupia_ops::wait_for_database(&config.database_url, config.ops.database_wait).await?;
    let store = Store::connect(&config.database_url, config.max_connections).await?;
    tracing::info!(backend = ?store.backend(), "marketing database ready");
    let metrics = qupia_ops::Metrics::new();
    metrics.observe_pool(store.pool().clone());

    // The gateway channel connects lazily: marketing may start before the gateway.
    let (scheme, insecure_dev) = match &config.tls {
        TlsMode::Mtls(_) => ("https", None),
        TlsMode::InsecureDev { assumed_caller } => ("http", Some(assumed_caller.clone())),
    };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{}", config.gateway_addr)).map_err(|_| ServeError::GatewayAddress)?;
    if let TlsMode::Mtls(files) = &config.tls {
        endpoint = endpoint.tls_config(files.client_config(&config.gateway_server_name)?)?;
    }
    // Every call to the gateway carries the current trace context.
    let channel = tower::Layer::layer(&qupia_telemetry::client_layer(), endpoint.connect_lazy());

    let (delivery, handle) = Delivery::new(
        store.clone(),
        GatewayServiceClient::new(channel.clone()),
        senders,
        config.delivery.clone(),
        metrics.clone(),
        config.unsubscribe_url.clone(),
    );
    let api = MarketingApi {
        store: store.clone(),
        statistics: StatisticsServiceClient::new(channel),
        delivery: handle,
        unsubscribe_configured: config.unsubscribe_url.is_some(),
        max_tokens_per_call: config.max_tokens_per_call,
        send_wait: config.delivery.send_wait,
        poll_interval: config.delivery.poll_interval,
    };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let lifecycle = qupia_ops::Lifecycle::new(health_reporter);
    lifecycle.serving::<MarketingServiceServer<MarketingApi>>().await;
    // Up before the gRPC port serves, so probes and scrapes see the whole start-up.
    let _ops_server = qupia_ops::OpsServer::start(&config.ops, metrics.clone(), lifecycle.clone()).await?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qupia_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let mut builder = Server::builder();
    match &config.tls {
        TlsMode::Mtls(files) => builder = builder.tls_config(files.server_config()?)?,
        TlsMode::InsecureDev { assumed_caller } => tracing::warn!(
            %assumed_caller,
            "INSECURE-DEV MODE: plaintext transport, every caller is taken to be the assumed caller; never use this outside a developer's machine"
        ),
    }
    // Only the configured callers (the operator CLI by default) reach the API.
    let gate = admit(Admission::Only(config.callers.clone().into()), insecure_dev, "marketing service");

    let (stop_worker, worker_stopped) = tokio::sync::watch::channel(false);
    let worker = if config.delivery.worker {
        Some(tokio::spawn(delivery.run(worker_stopped)))
    } else {
        tracing::info!("no delivery worker in this process: messages wait for a worker replica");
        None
    };
    tracing::info!(address = ?listener.local_addr().ok(), gateway = %config.gateway_addr, "marketing listening");
    let served = lifecycle
        .run(&config.ops, shutdown, |stop_accepting| {
            builder
                // Outermost, so every call is counted, including those admission refuses.
                .layer(metrics.grpc_layer())
                // Joins the caller's trace (W3C traceparent) and opens the server span.
                .layer(qupia_telemetry::server_layer())
                .add_service(health_service)
                .add_service(reflection)
                .add_service(InterceptedService::new(MarketingServiceServer::new(api), gate))
                .serve_with_incoming_shutdown(qupia_transport::incoming(listener), stop_accepting)
        })
        .await;
    // The worker finishes its round, so every message it took is recorded.
    let _ = stop_worker.send(true);
    if let Some(worker) = worker
        && let Err(err) = worker.await
    {
        tracing::error!(error = %err, "the delivery worker panicked");
    }
    store.close().await;
    served?;
    Ok(())
}
