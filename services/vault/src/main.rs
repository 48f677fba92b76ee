//! The `qupia-vault` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};
use qupia_vault::{Config, Limits};

#[derive(Debug, clap::Parser)]
#[command(name = "qupia-vault", version, about = "Qupia's vault: encrypted personal data behind tokens")]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "QUPIA_VAULT_LISTEN", default_value = "127.0.0.1:7101")]
    listen: String,
    /// Database URL: sqlite:///path/vault.db?mode=rwc or postgres://user@host/db.
    #[arg(long, env = "QUPIA_VAULT_DATABASE_URL")]
    database_url: String,
    /// Connections in the PostgreSQL pool.
    #[arg(long, env = "QUPIA_VAULT_MAX_CONNECTIONS", default_value_t = 16)]
    max_connections: u32,
    /// The keyring file (created with mode 0600 if missing).
    #[arg(long, env = "QUPIA_VAULT_KEYRING")]
    keyring: PathBuf,
    /// CA certificate (PEM) that signs every Qupia certificate.
    #[arg(long, env = "QUPIA_VAULT_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This service's certificate (PEM).
    #[arg(long, env = "QUPIA_VAULT_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// This service's private key (PEM).
    #[arg(long, env = "QUPIA_VAULT_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Identities allowed to call the vault (the gateway's), comma-separated.
    #[arg(
        long,
        env = "QUPIA_VAULT_TRUSTED_CALLERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/gateway"
    )]
    trusted_callers: Vec<String>,
    /// INSECURE: serve plaintext and take every caller to be this identity.
    #[arg(long, env = "QUPIA_VAULT_INSECURE_DEV_CALLER", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_dev_caller: Option<String>,
    /// Address of the plaintext ops HTTP server (/metrics, /livez, /readyz).
    #[arg(long, env = "QUPIA_VAULT_OPS_LISTEN", default_value = "127.0.0.1:7111")]
    ops_listen: std::net::SocketAddr,
    /// Seconds to keep serving after reporting NOT_SERVING at shutdown, while load
    /// balancers deregister this instance.
    #[arg(long, env = "QUPIA_VAULT_DEREGISTRATION_DELAY_SECS", default_value_t = 5.0)]
    deregistration_delay_secs: f64,
    /// Seconds in-flight calls get to finish once the service stops accepting.
    #[arg(long, env = "QUPIA_VAULT_GRACE_PERIOD_SECS", default_value_t = 25.0)]
    grace_period_secs: f64,
    /// Seconds start-up waits for the database to accept connections.
    #[arg(long, env = "QUPIA_VAULT_DATABASE_WAIT_SECS", default_value_t = 30.0)]
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
    let trusted_callers =
        args.trusted_callers.iter().map(|value| identity(value, "trusted_callers")).collect::<Result<_, _>>()?;
    Ok(Config {
        database_url: args.database_url.clone(),
        max_connections: args.max_connections,
        keyring_path: args.keyring.clone(),
        tls,
        trusted_callers,
        limits: Limits::default(),
        ops: ops_options(args)?,
    })
}

/// The ops options from the flags.
fn ops_options(args: &Args) -> anyhow::Result<qupia_ops::OpsOptions> {
    qupia_ops::OpsOptions::from_flags(
        args.ops_listen,
        args.deregistration_delay_secs,
        args.grace_period_secs,
        args.database_wait_secs,
    )
    .map_err(anyhow::Error::msg)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Defaults, then the file (--config or QUPIA_VAULT_CONFIG), then the environment, then flags.
    let parsed = qupia_config::parse::<Args>("QUPIA_VAULT_CONFIG");
    if parsed.dump_requested() {
        print!("{}", parsed.dump());
        return Ok(());
    }
    let args = parsed.settings;
    // Logs, and spans over OTLP when the OTEL_* environment asks for them.
    let telemetry = qupia_telemetry::init("qupia-vault", args.log_json);
    let config = config(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let served = qupia_vault::serve(config, listener, qupia_ops::terminated()).await;
    telemetry.shutdown();
    served?;
    Ok(())
}
