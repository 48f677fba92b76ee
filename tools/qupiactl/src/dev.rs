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
    },
}

/// The service identities a development suite issues certificates for.
const SERVICES: &[&str] = &["vault", "gateway", "accounts", "marketing", "qupiactl"];

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
        pki.write_service_files(
            &dev_dir.join("tls"),
            service,
            &identity,
            &[service, "localhost"],
        )
        .with_context(|| format!("issue the {service} certificate"))?;
    }
    Ok(())
}

fn sqlite_url(path: &Path) -> anyhow::Result<String> {
    let absolute: PathBuf = std::path::absolute(path).context("resolve the database path")?;
    Ok(format!("sqlite://{}?mode=rwc", absolute.display()))
}

pub async fn run(command: DevCommand, dev_dir: &Path) -> anyhow::Result<()> {
    match command {
        DevCommand::Up { vault_addr } => up(dev_dir, vault_addr).await,
    }
}

async fn up(dev_dir: &Path, vault_addr: SocketAddr) -> anyhow::Result<()> {
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
        keyring_path: dev_dir.join("keyring.json"),
        tls: TlsMode::Mtls(tls_files(dev_dir, "vault")),
        trusted_callers: vec![ServiceIdentity::for_service("default", "gateway")],
        limits: qupia_vault::Limits::default(),
    };
    let listener = tokio::net::TcpListener::bind(vault_addr)
        .await
        .with_context(|| format!("listen on {vault_addr}"))?;

    println!("Qupia development suite (SQLite, mTLS with a development CA)");
    println!("  vault      https://{vault_addr}");
    println!("  files      {}", dev_dir.display());
    println!("  CA         {}", tls_files(dev_dir, "vault").ca.display());
    println!("Press Ctrl-C to stop.");

    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    qupia_vault::serve(vault_config, listener, shutdown)
        .await
        .context("run the vault")?;
    Ok(())
}
