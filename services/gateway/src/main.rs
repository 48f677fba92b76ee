//! The `qupia-gateway` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;

use qupia_gateway::{Config, RateLimit, Roles};
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};

#[derive(Debug, clap::Parser)]
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
    #[arg(long, env = "QUPIA_GATEWAY_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, env = "QUPIA_GATEWAY_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "QUPIA_GATEWAY_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// INSECURE: serve and call the vault in plaintext, taking every caller to be this identity.
    #[arg(long, env = "QUPIA_GATEWAY_INSECURE_DEV_CALLER", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_dev_caller: Option<String>,
    /// Requests per second each caller may make (a batch counts each item).
    #[arg(long, env = "QUPIA_GATEWAY_RATE_PER_SECOND", default_value_t = 500)]
    rate_per_second: u32,
    #[arg(long, env = "QUPIA_GATEWAY_RATE_BURST", default_value_t = 1000)]
    rate_burst: u32,
    /// Identities that may store, rectify and erase people (comma-separated).
    #[arg(
        long,
        env = "QUPIA_GATEWAY_WRITERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/accounts"
    )]
    writers: Vec<String>,
    /// Identities that may record and read consents.
    #[arg(
        long,
        env = "QUPIA_GATEWAY_CONSENT_MANAGERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/accounts,spiffe://qupia/ns/default/sa/qupiactl"
    )]
    consent_managers: Vec<String>,
    /// Identities of the security team: policy versions, the access log, explanations.
    #[arg(
        long,
        env = "QUPIA_GATEWAY_SECURITY",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/qupiactl"
    )]
    security: Vec<String>,
    /// Identities that may file, approve and act on disclosure requests of state bodies
    /// (policy clause 3.4); a request needs two of them, the filer and an approver.
    #[arg(
        long,
        env = "QUPIA_GATEWAY_DISCLOSURE_OFFICERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/officer-a,spiffe://qupia/ns/default/sa/officer-b"
    )]
    disclosure_officers: Vec<String>,
    /// Address of the plaintext ops HTTP server (/metrics, /livez, /readyz).
    #[arg(long, env = "QUPIA_GATEWAY_OPS_LISTEN", default_value = "127.0.0.1:7112")]
    ops_listen: std::net::SocketAddr,
    /// Seconds to keep serving after reporting NOT_SERVING at shutdown, while load
    /// balancers deregister this instance.
    #[arg(long, env = "QUPIA_GATEWAY_DEREGISTRATION_DELAY_SECS", default_value_t = 5.0)]
    deregistration_delay_secs: f64,
    /// Seconds in-flight calls get to finish once the service stops accepting.
    #[arg(long, env = "QUPIA_GATEWAY_GRACE_PERIOD_SECS", default_value_t = 25.0)]
    grace_period_secs: f64,
    /// Seconds start-up waits for the database to accept connections.
    #[arg(long, env = "QUPIA_GATEWAY_DATABASE_WAIT_SECS", default_value_t = 30.0)]
    database_wait_secs: f64,
    /// The smallest group a statistics aggregate reports; smaller ones are suppressed.
    #[arg(long, env = "QUPIA_GATEWAY_STATISTICS_MIN_GROUP_SIZE", default_value_t = 5)]
    statistics_min_group_size: u32,
    /// Kazakhstan's non-working days for subject-request due dates; the shipped file when omitted.
    #[arg(long, env = "QUPIA_GATEWAY_HOLIDAYS_PATH")]
    holidays_path: Option<PathBuf>,
    #[arg(long, env = "QUPIA_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    config: qupia_config::ConfigFlags,
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
    let identities = |values: &[String], key: &str| -> anyhow::Result<Vec<ServiceIdentity>> {
        values.iter().map(|v| ServiceIdentity::parse(v).map_err(|e| anyhow::anyhow!("{key}: {e}"))).collect()
    };
    config.roles = Roles {
        writers: identities(&args.writers, "writers")?,
        consent_managers: identities(&args.consent_managers, "consent_managers")?,
        security: identities(&args.security, "security")?,
        disclosure_officers: identities(&args.disclosure_officers, "disclosure_officers")?,
    };
    config.ops = ops_options(args)?;
    config.statistics_min_group_size = args.statistics_min_group_size;
    config.holidays_path = args.holidays_path.clone();
    Ok(config)
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

/// mimalloc rather than the system allocator: a request allocates and frees many small
/// buffers across threads, which glibc's malloc serves with locks and consolidation.
/// Secrets are zeroized before they are freed, whichever allocator frees them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Defaults, then the file (--config or QUPIA_GATEWAY_CONFIG), then the environment, then flags.
    let parsed = qupia_config::parse::<Args>("QUPIA_GATEWAY_CONFIG");
    if parsed.dump_requested() {
        print!("{}", parsed.dump());
        return Ok(());
    }
    let args = parsed.settings;
    // Logs, and spans over OTLP when the OTEL_* environment asks for them.
    let telemetry = qupia_telemetry::init("qupia-gateway", args.log_json);
    let config = config(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let served = qupia_gateway::serve(config, listener, qupia_ops::terminated()).await;
    telemetry.shutdown();
    served?;
    Ok(())
}
