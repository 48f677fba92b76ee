//! Assembles the vault's gRPC server: keys, storage, services and transport.

use std::future::Future;
use std::sync::Arc;

use qupia_api::audit::v1::audit_service_server::AuditServiceServer;
use qupia_api::keys::v1::key_admin_service_server::KeyAdminServiceServer;
use qupia_api::vault::v1::vault_document_service_server::VaultDocumentServiceServer;
use qupia_api::vault::v1::vault_service_server::VaultServiceServer;
use qupia_api::vault::v1::vault_statistics_service_server::VaultStatisticsServiceServer;
use qupia_crypto::{KeyStore, Keyring, Pkcs11KeyStore};
use qupia_ops::{Attempt, WaitError};
use qupia_transport::{Admission, TlsMode};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::audit_api::AuditApi;
use crate::dek_cache::DekCache;
use crate::documents_api::DocumentApi;
use crate::erasure_ledger::ErasureLedger;
use crate::grpc::VaultApi;
use crate::key_admin::{EncryptionCounter, KeyAdmin, KeyLifecycle};
use crate::key_api::KeyApi;
use crate::statistics_api::{MAX_SUBJECT_BYTES, StatisticsApi};
use crate::store::Store;
use crate::vault::Vault;
use crate::{Config, Error, KeyProviderConfig};

/// Why the vault could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("failed to open the {provider} key provider: {error}")]
    Keys { provider: &'static str, error: WaitError<qupia_crypto::Error> },
    #[error("failed to open the database: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("failed to open the erasure ledger (erasure_ledger_url): {0}")]
    ErasureLedger(crate::store::StoreError),
    #[error(
        "erasure_ledger_url: required when the keys are in a PKCS#11 token and the vault database is \
         PostgreSQL (a separate database, never restored with the vault's)"
    )]
    ErasureLedgerUrl,
    #[error("failed to set up TLS: {0}")]
    Tls(#[from] qupia_transport::Error),
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("failed to build server reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("no trusted caller is configured: nobody could call the vault")]
    NoTrustedCallers,
    #[error(transparent)]
    Ops(#[from] qupia_ops::Error),
    #[error(transparent)]
    Vault(#[from] Error),
}

/// Runs the vault on `listener` until `shutdown` resolves, then reports NOT_SERVING,
/// waits out the deregistration delay and drains in-flight calls (see `qupia_ops::Lifecycle`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    if config.trusted_callers.is_empty() {
        return Err(ServeError::NoTrustedCallers);
    }
    let keys =
        open_keys(&config.keys).await.map_err(|error| ServeError::Keys { provider: config.keys.kind(), error })?;
    qupia_ops::wait_for_database(&config.database_url, config.ops.database_wait).await?;
    let store = Store::connect(&config.database_url, config.max_connections).await?;
    tracing::info!(
        backend = ?store.backend(),
        key_provider = %keys.name(),
        kek_version = keys.current_version(),
        "vault storage and keys ready"
    );
    let metrics = qupia_ops::Metrics::new();
    metrics.observe_pool(store.pool().clone());
    metrics.set_key_provider(keys.name());
    let ledger_url = config.erasure_ledger_url().ok_or(ServeError::ErasureLedgerUrl)?;
    let erasure_ledger = ErasureLedger::connect(&ledger_url).await.map_err(ServeError::ErasureLedger)?;
    let counter = EncryptionCounter::new(
        store.encryptions().await.map_err(Error::from)?,
        config.key_lifecycle.encryption_alarm_threshold,
        metrics.clone(),
    );
    let deks = DekCache::new(config.key_lifecycle.dek_cache_capacity, config.key_lifecycle.dek_cache_ttl);
    let key_lifecycle =
        Arc::new(KeyLifecycle::new(store.min_decrypt_version().await.map_err(Error::from)?, counter, deks));
    let key_admin = KeyAdmin::new(
        Arc::clone(&keys),
        store.clone(),
        Arc::clone(&key_lifecycle),
        config.key_lifecycle.clone(),
        metrics.clone(),
    );
    let vault = Vault::new(store.clone(), keys)
        .with_metrics(metrics.clone())
        .with_key_lifecycle(Arc::clone(&key_lifecycle))
        .with_erasure_ledger(erasure_ledger.clone());
    // Before anything is served: a database restored from an older backup must not
    // answer for a person erased after that backup.
    vault.replay_erasures().await?;
    key_admin.resume_jobs().await?;
    let counter_flush = spawn_counter_flush(store.clone(), Arc::clone(&key_lifecycle), &config);
    let audit = AuditApi { ledger: vault.ledger().clone() };

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    let lifecycle = qupia_ops::Lifecycle::new(health_reporter);
    lifecycle.serving::<VaultServiceServer<VaultApi>>().await;
    lifecycle.serving::<VaultDocumentServiceServer<DocumentApi>>().await;
    lifecycle.serving::<VaultStatisticsServiceServer<StatisticsApi>>().await;
    // Up before the gRPC port serves, so probes and scrapes see the whole start-up.
    let _ops_server = qupia_ops::OpsServer::start(&config.ops, metrics.clone(), lifecycle.clone()).await?;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(qupia_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let insecure_dev = match &config.tls {
        TlsMode::InsecureDev { assumed_caller } => Some(assumed_caller.clone()),
        TlsMode::Mtls(_) => None,
    };
    let documents = tonic::service::interceptor::InterceptedService::new(
        VaultDocumentServiceServer::new(DocumentApi::new(vault.clone(), config.limits))
            // Documents arrive as a stream of messages, each held to the request limit in
            // `documents_api.rs`; the whole document to `max_document_bytes` as it comes.
            .max_decoding_message_size(config.limits.max_request_bytes.saturating_mul(4)),
        qupia_transport::admit(Admission::Only(config.trusted_callers.clone().into()), insecure_dev.clone(), "vault"),
    );
    let statistics = tonic::service::interceptor::InterceptedService::new(
        VaultStatisticsServiceServer::new(StatisticsApi::new(vault.clone(), config.limits))
            // One subject per person counted: the cap follows the subject limit, which
            // `statistics_api.rs` reports clearly.
            .max_decoding_message_size(
                config.limits.max_aggregate_subjects.saturating_add(1).saturating_mul(MAX_SUBJECT_BYTES),
            ),
        qupia_transport::admit(Admission::Only(config.trusted_callers.clone().into()), insecure_dev.clone(), "vault"),
    );
    let api = tonic::service::interceptor::InterceptedService::new(
        VaultServiceServer::new(VaultApi::new(vault, config.limits))
            // Transport-level cap for memory safety; the smaller, clearly reported
            // request limit is checked per call in `grpc.rs`.
            .max_decoding_message_size(config.limits.max_request_bytes.saturating_mul(4)),
        qupia_transport::admit(Admission::Only(config.trusted_callers.clone().into()), insecure_dev.clone(), "vault"),
    );

    let audit = tonic::service::interceptor::InterceptedService::new(
        AuditServiceServer::new(audit),
        qupia_transport::admit(Admission::Only(config.trusted_callers.clone().into()), insecure_dev.clone(), "vault"),
    );

    let keys = tonic::service::interceptor::InterceptedService::new(
        KeyAdminServiceServer::new(KeyApi { admin: key_admin.clone() }),
        qupia_transport::admit(Admission::Only(config.trusted_callers.clone().into()), insecure_dev.clone(), "vault"),
    );

    let mut builder = Server::builder();
    match &config.tls {
        TlsMode::Mtls(files) => builder = builder.tls_config(files.server_config()?)?,
        TlsMode::InsecureDev { assumed_caller } => tracing::warn!(
            %assumed_caller,
            "INSECURE-DEV MODE: plaintext transport, every caller is taken to be the assumed caller; never use this outside a developer's machine"
        ),
    }
    let address = listener.local_addr().ok();
    tracing::info!(?address, "vault listening");
    let served = lifecycle
        .run(&config.ops, shutdown, |stop_accepting| {
            builder
                // Outermost, so every call is counted, including those the admission
                // interceptors refuse.
                .layer(metrics.grpc_layer())
                // Joins the caller's trace (W3C traceparent) and opens the server span.
                .layer(qupia_telemetry::server_layer())
                .add_service(health_service)
                .add_service(reflection)
                .add_service(api)
                .add_service(documents)
                .add_service(statistics)
                .add_service(audit)
                .add_service(keys)
                .serve_with_incoming_shutdown(qupia_transport::incoming(listener), stop_accepting)
        })
        .await;
    // Jobs stop between batches and resume at the next start; the counts go to disk.
    key_admin.stop_jobs();
    key_admin.join_jobs().await;
    counter_flush.abort();
    if let Err(err) = key_lifecycle.counter.flush(&store).await {
        tracing::warn!(error = %err, "could not save the encryption counts at shutdown");
    }
    store.close().await;
    erasure_ledger.close().await;
    served?;
    Ok(())
}

/// Adds the counted encryptions to the database every flush interval.
fn spawn_counter_flush(store: Store, lifecycle: Arc<KeyLifecycle>, config: &Config) -> tokio::task::JoinHandle<()> {
    let every = config.key_lifecycle.encryption_flush_interval.max(std::time::Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if let Err(err) = lifecycle.counter.flush(&store).await {
                tracing::warn!(error = %err, "could not save the encryption counts; retrying at the next flush");
            }
        }
    })
}

/// Opens the configured key store. A PKCS#11 token that is not present yet is waited
/// for, with the database's bounded retry; a wrong PIN or a missing module is reported at
/// once (retrying a wrong PIN could lock the token).
async fn open_keys(keys: &KeyProviderConfig) -> Result<Arc<dyn KeyStore>, WaitError<qupia_crypto::Error>> {
    match keys {
        KeyProviderConfig::Keyring { path } => {
            let keyring = Keyring::load_or_create(path).map_err(WaitError::Failed)?;
            Ok(Arc::new(keyring))
        }
        KeyProviderConfig::Pkcs11 { options, wait } => {
            let what = format!("the PKCS#11 token '{}' (pkcs11_token_label)", options.token_label);
            let store = qupia_ops::wait_until_ready(&what, *wait, || {
                let options = options.clone();
                async move {
                    // PKCS#11 calls block; a network HSM may take a while to answer.
                    match tokio::task::spawn_blocking(move || Pkcs11KeyStore::open(&options)).await {
                        Ok(Ok(store)) => Attempt::Ready(store),
                        Ok(Err(error @ qupia_crypto::Error::Unavailable(_))) => Attempt::NotYet(error),
                        Ok(Err(error)) => Attempt::Failed(error),
                        Err(panicked) => Attempt::Failed(qupia_crypto::Error::Pkcs11(format!(
                            "opening the PKCS#11 token panicked: {panicked}"
                        ))),
                    }
                }
            })
            .await?;
            Ok(Arc::new(store))
        }
    }
}
