//! The `qupia-gateway` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use clap::Parser;
use qupia_gateway::{Config, RateLimit};
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};

#[derive(Debug, Parser)]
#[command(name = "qupia-gateway", version, about = "Qupia's gateway: purpose policy, consent and the access log")]
struct Args {
    #[arg(long, env = "QUPIA_GATEWAY_LISTEN", default_value = "127.0.0.1:7102")]
    listen: String,
    /// Database URL: sqlite:///path/gateway.db?mode=rwc or postgres://user@host/db.
    #[arg(long, env = "QUPIA_GATEWAY_DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "QUPIA_GATEWAY_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// The vault's address.
    #[arg(long, env = "QUPIA_GATEWAY_VAULT_ADDR", default_value = "127.0.0.1:7101")]
    vault_addr: String,
    /// The DNS name in the vault's certificate.
    #[arg(long, env = "QUPIA_GATEWAY_VAULT_SERVER_NAME", default_value = "vault")]
    vault_server_name: String,
    /// The purpose policy (Cedar); the shipped default when omitted.
    #[arg(long, env = "QUPIA_GATEWAY_POLICY")]
    policy: Option<PathBuf>,
    #[arg(long, env = "QUPIA_GATEWAY_TLS_CA", required_unless_present = "insecure_dev_caller")]
    tls_ca: Option<PathBuf>,
    #[arg(long, env = "QUPIA_GATEWAY_TLS_CERT", required_unless_present = "insecure_dev_caller")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "QUPIA_GATEWAY_TLS_KEY", required_unless_present = "insecure_dev_caller")]
    tls_key: Option<PathBuf>,
    /// INSECURE: serve and call the vault in plaintext, taking every caller to be this identity.
    #[arg(long, env = "QUPIA_GATEWAY_INSECURE_DEV_CALLER", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_dev_caller: Option<String>,
    /// Requests per second each caller may make (a batch counts each item).
    #[arg(long, env = "QUPIA_GATEWAY_RATE_PER_SECOND", default_value_t = 500)]
    rate_per_second: u32,
    #[arg(long, env = "QUPIA_GATEWAY_RATE_BURST", default_value_t = 1000)]
    rate_burst: u32,
    #[arg(long, env = "QUPIA_LOG_JSON")]
    log_json: bool,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let tls = match (&args.insecure_dev_caller, &args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(caller), ..) => TlsMode::InsecureDev {
            assumed_caller: ServiceIdentity::parse(caller).map_err(|e| anyhow::anyhow!("insecure_dev_caller: {e}"))?,
        },
        (None, Some(ca), Some(cert), Some(key)) => {
            TlsMode::Mtls(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
        }
        _ => anyhow::bail!("tls_ca, tls_cert and tls_key are all required unless insecure_dev_caller is set"),
    };
    let mut config = Config::new(args.database_url.clone(), tls, args.vault_addr.clone());
    config.max_connections = args.max_connections;
    config.vault_server_name = args.vault_server_name.clone();
    config.policy_path = args.policy.clone();
    config.rate_limit = RateLimit { per_second: args.rate_per_second, burst: args.rate_burst };
    Ok(config)
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds in a running process");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down: draining in-flight calls");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_json {
        tracing_subscriber::fmt().json().with_env_filter(filter).init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let config = config(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    qupia_gateway::serve(config, listener, shutdown_signal()).await?;
    Ok(())
}
