//! The `qupia-accounts` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use qupia_accounts::Config;
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};

#[derive(Debug, clap::Parser)]
#[command(
    name = "qupia-accounts",
    version,
    about = "Qupia's accounts service: registration and people's rights, tokens only"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "QUPIA_ACCOUNTS_LISTEN", default_value = "127.0.0.1:7103")]
    listen: String,
    /// Database URL: sqlite:///path/accounts.db?mode=rwc or postgres://user@host/db.
    #[arg(long, env = "QUPIA_ACCOUNTS_DATABASE_URL")]
    database_url: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "QUPIA_ACCOUNTS_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// The gateway's address.
    #[arg(long, env = "QUPIA_ACCOUNTS_GATEWAY_ADDR", default_value = "127.0.0.1:7102")]
    gateway_addr: String,
    /// The DNS name in the gateway's certificate.
    #[arg(long, env = "QUPIA_ACCOUNTS_GATEWAY_SERVER_NAME", default_value = "gateway")]
    gateway_server_name: String,
    /// CA certificate (PEM) that signs every Qupia certificate.
    #[arg(long, env = "QUPIA_ACCOUNTS_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This service's certificate (PEM), for `spiffe://qupia/ns/<ns>/sa/accounts`.
    #[arg(long, env = "QUPIA_ACCOUNTS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This service's private key (PEM).
    #[arg(long, env = "QUPIA_ACCOUNTS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// INSECURE: serve and call the gateway in plaintext, taking every caller to be this identity.
    #[arg(long, env = "QUPIA_ACCOUNTS_INSECURE_DEV_CALLER", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_dev_caller: Option<String>,
    /// Identities that may call this service (comma-separated).
    #[arg(
        long,
        env = "QUPIA_ACCOUNTS_CALLERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/web,spiffe://qupia/ns/default/sa/qupiactl"
    )]
    callers: Vec<String>,
    /// The largest document accepted at registration, in bytes (registration holds it in memory).
    #[arg(long, env = "QUPIA_ACCOUNTS_MAX_DOCUMENT_BYTES", default_value_t = 20 * 1024 * 1024)]
    max_document_bytes: usize,
    /// Address of the plaintext ops HTTP server (/metrics, /livez, /readyz).
    #[arg(long, env = "QUPIA_ACCOUNTS_OPS_LISTEN", default_value = "127.0.0.1:7113")]
    ops_listen: std::net::SocketAddr,
    /// Seconds to keep serving after reporting NOT_SERVING at shutdown, while load
    /// balancers deregister this instance.
    #[arg(long, env = "QUPIA_ACCOUNTS_DEREGISTRATION_DELAY_SECS", default_value_t = 5.0)]
    deregistration_delay_secs: f64,
    /// Seconds in-flight calls get to finish once the service stops accepting.
    #[arg(long, env = "QUPIA_ACCOUNTS_GRACE_PERIOD_SECS", default_value_t = 25.0)]
    grace_period_secs: f64,
    /// Seconds start-up waits for the database to accept connections.
    #[arg(long, env = "QUPIA_ACCOUNTS_DATABASE_WAIT_SECS", default_value_t = 30.0)]
    database_wait_secs: f64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "QUPIA_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    config: qupia_config::ConfigFlags,
}

fn config(args: &Args) -> anyhow::Result<Config> {
    let identity = |value: &str, key: &str| ServiceIdentity::parse(value).map_err(|e| anyhow::anyhow!("{key}: {e}"));
    let tls = match (&args.insecure_dev_caller, &args.tls_ca, &args.tls_cert, &args.tls_key) {
        (Some(caller), ..) => TlsMode::InsecureDev { assumed_caller: identity(caller, "insecure_dev_caller")? },
        (None, Some(ca), Some(cert), Some(key)) => {
            TlsMode::Mtls(TlsFiles { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
        }
        _ => anyhow::bail!("tls_ca, tls_cert and tls_key are all required unless insecure_dev_caller is set"),
    };
    if args.max_document_bytes == 0 {
        anyhow::bail!("max_document_bytes: must be at least 1");
    }
    let mut config = Config::new(args.database_url.clone(), tls, args.gateway_addr.clone());
    config.max_connections = args.max_connections;
    config.gateway_server_name = args.gateway_server_name.clone();
    config.callers = args.callers.iter().map(|value| identity(value, "callers")).collect::<Result<_, _>>()?;
    config.max_document_bytes = args.max_document_bytes;
    config.ops = qupia_ops::OpsOptions::from_flags(
        args.ops_listen,
        args.deregistration_delay_secs,
        args.grace_period_secs,
        args.database_wait_secs,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Defaults, then the file (--config or QUPIA_ACCOUNTS_CONFIG), then the environment, then flags.
    let parsed = qupia_config::parse::<Args>("QUPIA_ACCOUNTS_CONFIG");
    if parsed.dump_requested() {
        print!("{}", parsed.dump());
        return Ok(());
    }
    let args = parsed.settings;
    // Logs, and spans over OTLP when the OTEL_* environment asks for them.
    let telemetry = qupia_telemetry::init("qupia-accounts", args.log_json);
    let config = config(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let served = qupia_accounts::serve(config, listener, qupia_ops::terminated()).await;
    telemetry.shutdown();
    served?;
    Ok(())
}
