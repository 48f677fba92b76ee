//! Connecting to the gateway, the accounts service or the marketing service with an
//! identity: the development certificates of any service (`--as accounts`), or the
//! operator's own files.

use std::path::{Path, PathBuf};

use anyhow::Context;
use qupia_transport::TlsFiles;
use tonic::transport::{Channel, Endpoint};

use crate::dev::tls_files;

/// Where and as whom to connect.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The gateway's address.
    #[arg(long, global = true, env = "QUPIA_GATEWAY_ADDR", default_value = "127.0.0.1:7102")]
    pub gateway: String,
    /// The accounts service's address (for `account …`).
    #[arg(long, global = true, env = "QUPIA_ACCOUNTS_ADDR", default_value = "127.0.0.1:7103")]
    pub accounts_addr: String,
    /// The marketing service's address.
    #[arg(long, global = true, env = "QUPIA_MARKETING_ADDR", default_value = "127.0.0.1:7104")]
    pub marketing_addr: String,
    /// Call as this service, with its certificate from the development directory.
    #[arg(long = "as", global = true, env = "QUPIA_AS", default_value = "qupiactl")]
    pub identity: String,
    /// CA certificate (PEM); with --tls-cert and --tls-key instead of the development files.
    #[arg(long, global = true, env = "QUPIA_TLS_CA", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, global = true, env = "QUPIA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "QUPIA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl Connection {
    /// A channel to the gateway.
    pub async fn channel(&self, dev_dir: &Path) -> anyhow::Result<Channel> {
        self.connect(dev_dir, &self.gateway, "gateway", "the gateway").await
    }

    /// A channel to the accounts service.
    pub async fn accounts_channel(&self, dev_dir: &Path) -> anyhow::Result<Channel> {
        self.connect(dev_dir, &self.accounts_addr, "accounts", "the accounts service").await
    }

    /// A channel to the marketing service.
    pub async fn marketing_channel(&self, dev_dir: &Path) -> anyhow::Result<Channel> {
        self.connect(dev_dir, &self.marketing_addr, "marketing", "the marketing service").await
    }

    /// Connects to `addr` (`what`), whose certificate must carry the DNS name `server_name`.
    async fn connect(&self, dev_dir: &Path, addr: &str, server_name: &str, what: &str) -> anyhow::Result<Channel> {
        let files = match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() },
            _ => tls_files(dev_dir, &self.identity),
        };
        let tls = files
            .client_config(server_name)
            .with_context(|| format!("read the certificates of {} (is `qupiactl dev up` running?)", self.identity))?;
        Endpoint::from_shared(format!("https://{addr}"))?
            .tls_config(tls)?
            .connect()
            .await
            .with_context(|| format!("connect to {what} at {addr}"))
    }
}

/// A gRPC error as a line for the terminal.
pub fn status(err: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", err.code(), err.message())
}
