//! The `qupia-marketing` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use qupia_marketing::{Config, EmailSender, SmsSender, SmtpConfig, SmtpCredentials, SmtpTls};
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};
use secrecy::SecretString;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum EmailSenderKind {
    /// Log each message's campaign, person token and channel; deliver nothing.
    Log,
    /// Deliver through the SMTP relay of the smtp_* keys.
    Smtp,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SmsSenderKind {
    Log,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SmtpTlsKind {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, clap::Parser)]
#[command(name = "qupia-marketing", version, about = "Qupia's marketing service: audiences, campaigns, statistics")]
struct Args {
    #[arg(long, env = "QUPIA_MARKETING_LISTEN", default_value = "127.0.0.1:7104")]
    listen: String,
    /// Database URL: sqlite:///path/marketing.db?mode=rwc or postgres://user@host/db.
    #[arg(long, env = "QUPIA_MARKETING_DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "QUPIA_MARKETING_MAX_CONNECTIONS", default_value_t = 8)]
    max_connections: u32,
    /// The gateway's address.
    #[arg(long, env = "QUPIA_MARKETING_GATEWAY_ADDR", default_value = "127.0.0.1:7102")]
    gateway_addr: String,
    /// The DNS name in the gateway's certificate.
    #[arg(long, env = "QUPIA_MARKETING_GATEWAY_SERVER_NAME", default_value = "gateway")]
    gateway_server_name: String,
    #[arg(long, env = "QUPIA_MARKETING_TLS_CA")]
    tls_ca: Option<PathBuf>,
    #[arg(long, env = "QUPIA_MARKETING_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    #[arg(long, env = "QUPIA_MARKETING_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// INSECURE: serve and call the gateway in plaintext, taking every caller to be this identity.
    #[arg(long, env = "QUPIA_MARKETING_INSECURE_DEV_CALLER", conflicts_with_all = ["tls_ca", "tls_cert", "tls_key"])]
    insecure_dev_caller: Option<String>,
    /// Identities that may call the marketing service (comma-separated).
    #[arg(
        long,
        env = "QUPIA_MARKETING_CALLERS",
        value_delimiter = ',',
        default_value = "spiffe://qupia/ns/default/sa/qupiactl"
    )]
    callers: Vec<String>,
    /// Where e-mail campaigns go.
    #[arg(long, env = "QUPIA_MARKETING_EMAIL_SENDER", value_enum, default_value = "log")]
    email_sender: EmailSenderKind,
    /// Where SMS campaigns go.
    #[arg(long, env = "QUPIA_MARKETING_SMS_SENDER", value_enum, default_value = "log")]
    sms_sender: SmsSenderKind,
    /// The SMTP relay's host name (with --email-sender smtp).
    #[arg(long, env = "QUPIA_MARKETING_SMTP_HOST")]
    smtp_host: Option<String>,
    #[arg(long, env = "QUPIA_MARKETING_SMTP_PORT", default_value_t = 587)]
    smtp_port: u16,
    /// none (plaintext), starttls (required), or tls (implicit TLS, usually port 465).
    #[arg(long, env = "QUPIA_MARKETING_SMTP_TLS", value_enum, default_value = "starttls")]
    smtp_tls: SmtpTlsKind,
    /// A CA certificate (PEM) to trust for the relay instead of the public roots.
    #[arg(long, env = "QUPIA_MARKETING_SMTP_CA")]
    smtp_ca: Option<PathBuf>,
    #[arg(long, env = "QUPIA_MARKETING_SMTP_USERNAME")]
    smtp_username: Option<String>,
    /// The SMTP password; prefer the environment or --smtp-password-file to a flag.
    #[arg(long, env = "QUPIA_MARKETING_SMTP_PASSWORD", hide_env_values = true, conflicts_with = "smtp_password_file")]
    smtp_password: Option<String>,
    /// A file holding the SMTP password (a mounted secret).
    #[arg(long, env = "QUPIA_MARKETING_SMTP_PASSWORD_FILE")]
    smtp_password_file: Option<PathBuf>,
    /// The From mailbox, e.g. "EDU Stream Plus <news@edustream.kz>".
    #[arg(long, env = "QUPIA_MARKETING_SMTP_FROM")]
    smtp_from: Option<String>,
    /// Seconds one SMTP exchange may take.
    #[arg(long, env = "QUPIA_MARKETING_SMTP_TIMEOUT_SECS", default_value_t = 30.0)]
    smtp_timeout_secs: f64,
    /// The unsubscribe page; {{unsubscribe}} renders as it with m=<message id> added.
    #[arg(long, env = "QUPIA_MARKETING_UNSUBSCRIBE_URL")]
    unsubscribe_url: Option<String>,
    /// Run a delivery worker in this process (false: serve the API only).
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_WORKER", default_value_t = true, action = clap::ArgAction::Set)]
    delivery_worker: bool,
    /// Messages revealed and sent per delivery round.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_BATCH_SIZE", default_value_t = 100)]
    delivery_batch_size: u32,
    /// Seconds between looks for due messages when nothing wakes the worker.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_POLL_INTERVAL_SECS", default_value_t = 1.0)]
    delivery_poll_interval_secs: f64,
    /// Attempts before a message that keeps failing transiently is failed.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_MAX_ATTEMPTS", default_value_t = 5)]
    delivery_max_attempts: u32,
    /// Seconds before the first retry; doubled after each attempt.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_RETRY_BACKOFF_SECS", default_value_t = 2.0)]
    delivery_retry_backoff_secs: f64,
    /// The longest wait between two attempts, in seconds.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_MAX_BACKOFF_SECS", default_value_t = 300.0)]
    delivery_max_backoff_secs: f64,
    /// Seconds a worker holds the messages it took before another may take them.
    #[arg(long, env = "QUPIA_MARKETING_DELIVERY_LEASE_SECS", default_value_t = 300.0)]
    delivery_lease_secs: f64,
    /// The longest a SendCampaign with wait waits, in seconds.
    #[arg(long, env = "QUPIA_MARKETING_SEND_WAIT_SECS", default_value_t = 60.0)]
    send_wait_secs: f64,
    /// The most person tokens one call may carry.
    #[arg(long, env = "QUPIA_MARKETING_MAX_TOKENS_PER_CALL", default_value_t = 10_000)]
    max_tokens_per_call: usize,
    /// Address of the plaintext ops HTTP server (/metrics, /livez, /readyz).
    #[arg(long, env = "QUPIA_MARKETING_OPS_LISTEN", default_value = "127.0.0.1:7114")]
    ops_listen: std::net::SocketAddr,
    /// Seconds to keep serving after reporting NOT_SERVING at shutdown, while load
    /// balancers deregister this instance.
    #[arg(long, env = "QUPIA_MARKETING_DEREGISTRATION_DELAY_SECS", default_value_t = 5.0)]
    deregistration_delay_secs: f64,
    /// Seconds in-flight calls get to finish once the service stops accepting.
    #[arg(long, env = "QUPIA_MARKETING_GRACE_PERIOD_SECS", default_value_t = 25.0)]
    grace_period_secs: f64,
    /// Seconds start-up waits for the database to accept connections.
    #[arg(long, env = "QUPIA_MARKETING_DATABASE_WAIT_SECS", default_value_t = 30.0)]
    database_wait_secs: f64,
    #[arg(long, env = "QUPIA_LOG_JSON")]
    log_json: bool,
    #[command(flatten)]
    config: qupia_config::ConfigFlags,
}

fn seconds(value: f64, key: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).map_err(|_| anyhow::anyhow!("{key}: must be a non-negative number of seconds"))
}

fn smtp(args: &Args) -> anyhow::Result<SmtpConfig> {
    let host = args.smtp_host.clone().ok_or_else(|| anyhow::anyhow!("smtp_host: is required for the smtp sender"))?;
    let from = args.smtp_from.clone().ok_or_else(|| anyhow::anyhow!("smtp_from: is required for the smtp sender"))?;
    let password = match (&args.smtp_password, &args.smtp_password_file) {
        (Some(password), _) => Some(SecretString::from(password.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("smtp_password_file: cannot read {}: {e}", path.display()))?;
            Some(SecretString::from(text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        (None, None) => None,
    };
    let credentials = match (&args.smtp_username, password) {
        (Some(username), Some(password)) => Some(SmtpCredentials { username: username.clone(), password }),
        (None, None) => None,
        _ => anyhow::bail!("smtp_username and smtp_password go together"),
    };
    Ok(SmtpConfig {
        host,
        port: args.smtp_port,
        tls: match args.smtp_tls {
            SmtpTlsKind::None => SmtpTls::None,
            SmtpTlsKind::Starttls => SmtpTls::StartTls,
            SmtpTlsKind::Tls => SmtpTls::Tls,
        },
        credentials,
        from,
        ca: args.smtp_ca.clone(),
        timeout: seconds(args.smtp_timeout_secs, "smtp_timeout_secs")?,
    })
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
    let mut config = Config::new(args.database_url.clone(), tls, args.gateway_addr.clone());
    config.max_connections = args.max_connections;
    config.gateway_server_name = args.gateway_server_name.clone();
    config.callers = args
        .callers
        .iter()
        .map(|v| ServiceIdentity::parse(v).map_err(|e| anyhow::anyhow!("callers: {e}")))
        .collect::<anyhow::Result<_>>()?;
    config.email_sender = match args.email_sender {
        EmailSenderKind::Log => EmailSender::Log,
        EmailSenderKind::Smtp => EmailSender::Smtp(smtp(args)?),
    };
    config.sms_sender = match args.sms_sender {
        SmsSenderKind::Log => SmsSender::Log,
    };
    config.unsubscribe_url = args.unsubscribe_url.clone();
    config.max_tokens_per_call = args.max_tokens_per_call;
    let delivery = &mut config.delivery;
    delivery.worker = args.delivery_worker;
    delivery.batch_size = args.delivery_batch_size;
    delivery.poll_interval = seconds(args.delivery_poll_interval_secs, "delivery_poll_interval_secs")?;
    delivery.max_attempts = args.delivery_max_attempts;
    delivery.retry_backoff = seconds(args.delivery_retry_backoff_secs, "delivery_retry_backoff_secs")?;
    delivery.max_backoff = seconds(args.delivery_max_backoff_secs, "delivery_max_backoff_secs")?;
    delivery.lease = seconds(args.delivery_lease_secs, "delivery_lease_secs")?;
    delivery.send_wait = seconds(args.send_wait_secs, "send_wait_secs")?;
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
    // Defaults, then the file (--config or QUPIA_MARKETING_CONFIG), then the environment, then flags.
    let parsed = qupia_config::parse::<Args>("QUPIA_MARKETING_CONFIG");
    if parsed.dump_requested() {
        print!("{}", parsed.dump());
        return Ok(());
    }
    let args = parsed.settings;
    // Logs, and spans over OTLP when the OTEL_* environment asks for them.
    let telemetry = qupia_telemetry::init("qupia-marketing", args.log_json);
    let config = config(&args)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let served = qupia_marketing::serve(config, listener, qupia_ops::terminated()).await;
    telemetry.shutdown();
    served?;
    Ok(())
}
