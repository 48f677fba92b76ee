//! `qupiactl dev up`: the suite in one process on SQLite, with a generated CA,
//! service certificates and keyring: nothing to install.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use qupia_transport::{DevPki, ServiceIdentity, TlsFiles, TlsMode};

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Start every service on 127.0.0.1 and stay up until Ctrl-C.
    Up {
        /// The vault's address.
        #[arg(long, default_value = "127.0.0.1:7101")]
        vault_addr: SocketAddr,
        /// The gateway's address.
        #[arg(long, default_value = "127.0.0.1:7102")]
        gateway_addr: SocketAddr,
    },
}

/// The service identities a development suite issues certificates for.
/// `officer-a` and `officer-b` are two disclosure officers: one files a request, the
/// other approves it (`qupiactl --as officer-a disclosure request …`).
const SERVICES: &[&str] = &["vault", "gateway", "accounts", "marketing", "web", "qupiactl", "officer-a", "officer-b"];

/// The TLS files of `service` in a development directory.
pub fn tls_files(dev_dir: &Path, service: &str) -> TlsFiles {
    let dir = dev_dir.join("tls");
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{service}.pem")),
        key: dir.join(format!("{service}-key.pem")),
    }
}

fn issue_certificates(dev_dir: &Path) -> anyhow::Result<()> {
    // A fresh CA on every start: nothing long-lived to protect on a laptop.
    let pki = DevPki::generate().context("generate the development CA")?;
    for service in SERVICES {
        let identity = ServiceIdentity::for_service("default", service);
        pki.write_service_files(&dev_dir.join("tls"), service, &identity, &[service, "localhost"])
            .with_context(|| format!("issue the {service} certificate"))?;
    }
    Ok(())
}

fn sqlite_url(path: &Path) -> anyhow::Result<String> {
    let absolute: PathBuf = std::path::absolute(path).context("resolve the database path")?;
    Ok(format!("sqlite://{}?mode=rwc", absolute.display()))
}

/// Where the suite's accounts and marketing services listen is where the `account` and
/// `marketing` commands look for them: the global `--accounts-addr` and `--marketing-addr`.
pub async fn run(command: DevCommand, dev_dir: &Path, accounts_addr: &str, marketing_addr: &str) -> anyhow::Result<()> {
    let accounts_addr: SocketAddr =
        accounts_addr.parse().map_err(|_| anyhow::anyhow!("accounts_addr: is not an address (host:port)"))?;
    let marketing_addr: SocketAddr =
        marketing_addr.parse().map_err(|_| anyhow::anyhow!("marketing_addr: is not an address (host:port)"))?;
    match command {
        DevCommand::Up { vault_addr, gateway_addr } => {
            up(dev_dir, vault_addr, gateway_addr, accounts_addr, marketing_addr).await
        }
    }
}

/// The privacy policy the suite enforces first; its SHA-256 is version 1.
const PRIVACY_POLICY: &str = include_str!("../../../policies/privacy-policy.en.md");

/// No ops port and no shutdown delays: nothing probes or load-balances a developer's suite.
fn dev_ops() -> qupia_ops::OpsOptions {
    qupia_ops::OpsOptions { listen: None, ..qupia_ops::OpsOptions::ephemeral() }
}

async fn up(
    dev_dir: &Path,
    vault_addr: SocketAddr,
    gateway_addr: SocketAddr,
    accounts_addr: SocketAddr,
    marketing_addr: SocketAddr,
) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    std::fs::create_dir_all(dev_dir).with_context(|| format!("create {}", dev_dir.display()))?;
    issue_certificates(dev_dir)?;

    let vault_config = qupia_vault::Config {
        database_url: sqlite_url(&dev_dir.join("vault.db"))?,
        max_connections: 1,
        keys: qupia_vault::KeyProviderConfig::keyring(dev_dir.join("keyring.json")),
        tls: TlsMode::Mtls(tls_files(dev_dir, "vault")),
        trusted_callers: vec![ServiceIdentity::for_service("default", "gateway")],
        limits: qupia_vault::Limits::default(),
        ops: dev_ops(),
        // Beside the keyring, apart from the vault database.
        erasure_ledger_url: None,
        key_lifecycle: qupia_vault::KeyLifecycleOptions::default(),
    };
    let mut gateway_config = qupia_gateway::Config::new(
        sqlite_url(&dev_dir.join("gateway.db"))?,
        TlsMode::Mtls(tls_files(dev_dir, "gateway")),
        vault_addr.to_string(),
    );
    gateway_config.ops = dev_ops();
    let mut accounts_config = qupia_accounts::Config::new(
        sqlite_url(&dev_dir.join("accounts.db"))?,
        TlsMode::Mtls(tls_files(dev_dir, "accounts")),
        gateway_addr.to_string(),
    );
    accounts_config.ops = dev_ops();
    // Messages go to the log (campaign, person token, channel; never an address).
    let mut marketing_config = qupia_marketing::Config::new(
        sqlite_url(&dev_dir.join("marketing.db"))?,
        TlsMode::Mtls(tls_files(dev_dir, "marketing")),
        gateway_addr.to_string(),
    );
    marketing_config.ops = dev_ops();
    let vault_listener =
        tokio::net::TcpListener::bind(vault_addr).await.with_context(|| format!("listen on {vault_addr}"))?;
    let gateway_listener =
        tokio::net::TcpListener::bind(gateway_addr).await.with_context(|| format!("listen on {gateway_addr}"))?;
    let accounts_listener =
        tokio::net::TcpListener::bind(accounts_addr).await.with_context(|| format!("listen on {accounts_addr}"))?;
    let marketing_listener =
        tokio::net::TcpListener::bind(marketing_addr).await.with_context(|| format!("listen on {marketing_addr}"))?;

    let (stop, _) = tokio::sync::broadcast::channel::<()>(1);
    let stopped = |stop: &tokio::sync::broadcast::Sender<()>| {
        let mut receiver = stop.subscribe();
        async move {
            let _ = receiver.recv().await;
        }
    };
    let vault = tokio::spawn(qupia_vault::serve(vault_config, vault_listener, stopped(&stop)));
    let gateway = tokio::spawn(qupia_gateway::serve(gateway_config, gateway_listener, stopped(&stop)));
    let accounts = tokio::spawn(qupia_accounts::serve(accounts_config, accounts_listener, stopped(&stop)));
    let marketing = tokio::spawn(qupia_marketing::serve(marketing_config, marketing_listener, stopped(&stop)));
    publish_first_version(dev_dir, gateway_addr).await?;

    println!("Qupia development suite (SQLite, mTLS with a development CA)");
    println!("  accounts   https://{accounts_addr}   ← the web front end calls this (`qupiactl account …`)");
    println!("  gateway    https://{gateway_addr}   ← internal services call this");
    println!("  vault      https://{vault_addr}   (answers the gateway only)");
    println!("  marketing  https://{marketing_addr}   (qupiactl marketing …; messages go to the log)");
    println!("  files      {}", dev_dir.display());
    println!("Press Ctrl-C to stop.");

    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        outcome = vault => anyhow::bail!("the vault stopped: {outcome:?}"),
        outcome = gateway => anyhow::bail!("the gateway stopped: {outcome:?}"),
        outcome = accounts => anyhow::bail!("the accounts service stopped: {outcome:?}"),
        outcome = marketing => anyhow::bail!("the marketing service stopped: {outcome:?}"),
    }
    let _ = stop.send(());
    Ok(())
}

/// Publishes the privacy policy as version 1 when nothing is published yet, so that
/// consents can be recorded at once.
async fn publish_first_version(dev_dir: &Path, gateway_addr: SocketAddr) -> anyhow::Result<()> {
    use qupia_api::gateway::v1::consent_service_client::ConsentServiceClient;
    use qupia_api::gateway::v1::{ListPolicyVersionsRequest, PublishPolicyVersionRequest};
    use sha2::{Digest, Sha256};

    let tls = tls_files(dev_dir, "qupiactl").client_config("gateway")?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{gateway_addr}"))?.tls_config(tls)?;
    let mut last_error = None;
    for _ in 0..100 {
        match endpoint.connect().await {
            Ok(channel) => {
                let mut consents = ConsentServiceClient::new(channel);
                let versions = consents.list_policy_versions(ListPolicyVersionsRequest {}).await?.into_inner().versions;
                if versions.is_empty() {
                    consents
                        .publish_policy_version(PublishPolicyVersionRequest {
                            text_sha256: hex::encode(Sha256::digest(PRIVACY_POLICY.as_bytes())),
                            reconsent_purposes: vec![],
                        })
                        .await?;
                }
                return Ok(());
            }
            Err(err) => last_error = Some(err),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    anyhow::bail!("the gateway did not come up: {last_error:?}")
}
