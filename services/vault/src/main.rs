//! The `qupia-vault` binary: reads its configuration, starts logging, serves until
//! SIGTERM or Ctrl-C.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use qupia_crypto::Pkcs11Options;
use qupia_transport::{ServiceIdentity, TlsFiles, TlsMode};
use qupia_vault::{Config, KeyLifecycleOptions, KeyProviderConfig, Limits};
use secrecy::SecretString;
use zeroize::Zeroizing;

/// The environment variable that may hold the PKCS#11 user PIN (instead of a file). Not
/// a flag: a command line is visible to every user of the machine.
const PIN_ENV: &str = "QUPIA_VAULT_PKCS11_PIN";

/// Where the key-encryption keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum KeyProviderKind {
    /// The keyring file (`--keyring`).
    Keyring,
    /// A PKCS#11 token (an HSM; SoftHSM2 for development).
    Pkcs11,
}

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
    /// Where the keys are: the keyring file or a PKCS#11 token.
    #[arg(long, env = "QUPIA_VAULT_KEY_PROVIDER", value_enum, default_value = "keyring")]
    key_provider: KeyProviderKind,
    /// The keyring file (created with mode 0600 if missing); with --key-provider keyring.
    #[arg(long, env = "QUPIA_VAULT_KEYRING")]
    keyring: Option<PathBuf>,
    /// The PKCS#11 module (shared library), e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, env = "QUPIA_VAULT_PKCS11_MODULE")]
    pkcs11_module: Option<PathBuf>,
    /// The label of the PKCS#11 token that holds the keys.
    #[arg(long, env = "QUPIA_VAULT_PKCS11_TOKEN_LABEL")]
    pkcs11_token_label: Option<String>,
    /// A file holding the token's user PIN (one trailing newline is ignored). The PIN may
    /// instead be given in the QUPIA_VAULT_PKCS11_PIN environment variable.
    #[arg(long, env = "QUPIA_VAULT_PKCS11_PIN_FILE")]
    pkcs11_pin_file: Option<PathBuf>,
    /// The start of every object label of this key set in the token (qupia-kek-v1, ...).
    #[arg(long, env = "QUPIA_VAULT_PKCS11_KEY_LABEL_PREFIX", default_value = Pkcs11Options::DEFAULT_KEY_LABEL_PREFIX)]
    pkcs11_key_label_prefix: String,
    /// Seconds start-up waits for the PKCS#11 token to be present.
    #[arg(long, env = "QUPIA_VAULT_KEY_PROVIDER_WAIT_SECS", default_value_t = 30.0)]
    key_provider_wait_secs: f64,
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
    /// The erasure ledger's database (sqlite: or postgres:), apart from the vault
    /// database; default: erasure-ledger.db beside the keyring.
    #[arg(long, env = "QUPIA_VAULT_ERASURE_LEDGER_URL")]
    erasure_ledger_url: Option<String>,
    /// Data keys the rewrap job moves per second, at most.
    #[arg(long, env = "QUPIA_VAULT_REWRAP_RATE", default_value_t = KeyLifecycleOptions::default().rewrap_rate_per_second)]
    rewrap_rate: u32,
    /// People the reindex job does per second, at most.
    #[arg(long, env = "QUPIA_VAULT_REINDEX_RATE", default_value_t = KeyLifecycleOptions::default().reindex_rate_per_second)]
    reindex_rate: u32,
    /// People per transaction of the rewrap and reindex jobs.
    #[arg(long, env = "QUPIA_VAULT_KEY_JOB_BATCH", default_value_t = KeyLifecycleOptions::default().job_batch_size)]
    key_job_batch: u32,
    /// Encryptions under one KEK version that raise the alarm (default 2^30).
    #[arg(long, env = "QUPIA_VAULT_KEK_ENCRYPTION_ALARM", default_value_t = KeyLifecycleOptions::default().encryption_alarm_threshold)]
    kek_encryption_alarm: u64,
    /// Seconds between saves of the encryption counts (a crash loses at most this long's).
    #[arg(long, env = "QUPIA_VAULT_ENCRYPTION_FLUSH_SECS", default_value_t = 5.0)]
    encryption_flush_secs: f64,
    /// Unwrapped data keys kept in memory for people read again soon (0: none).
    #[arg(long, env = "QUPIA_VAULT_DEK_CACHE_CAPACITY", default_value_t = KeyLifecycleOptions::default().dek_cache_capacity)]
    dek_cache_capacity: usize,
    /// Seconds an unwrapped data key is kept after its unwrap.
    #[arg(long, env = "QUPIA_VAULT_DEK_CACHE_TTL_SECS", default_value_t = KeyLifecycleOptions::default().dek_cache_ttl.as_secs_f64())]
    dek_cache_ttl_secs: f64,
    /// The largest document stored, in bytes; an upload is refused as soon as it passes it.
    #[arg(long, env = "QUPIA_VAULT_MAX_DOCUMENT_BYTES", default_value_t = Limits::DEFAULT_MAX_DOCUMENT_BYTES)]
    max_document_bytes: u64,
    /// The most people one statistics aggregate counts.
    #[arg(long, env = "QUPIA_VAULT_MAX_AGGREGATE_SUBJECTS", default_value_t = 100_000)]
    max_aggregate_subjects: usize,
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
        keys: key_provider(args)?,
        tls,
        trusted_callers,
        limits: Limits {
            max_document_bytes: args.max_document_bytes,
            max_aggregate_subjects: args.max_aggregate_subjects,
            ..Limits::default()
        },
        ops: ops_options(args)?,
        erasure_ledger_url: args.erasure_ledger_url.clone(),
        key_lifecycle: KeyLifecycleOptions {
            rewrap_rate_per_second: positive(args.rewrap_rate, "rewrap_rate")?,
            reindex_rate_per_second: positive(args.reindex_rate, "reindex_rate")?,
            job_batch_size: positive(args.key_job_batch, "key_job_batch")?,
            encryption_alarm_threshold: args.kek_encryption_alarm.max(1),
            encryption_flush_interval: std::time::Duration::try_from_secs_f64(args.encryption_flush_secs)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow::anyhow!("encryption_flush_secs: must be a positive number of seconds"))?,
            dek_cache_capacity: args.dek_cache_capacity,
            dek_cache_ttl: std::time::Duration::try_from_secs_f64(args.dek_cache_ttl_secs)
                .map_err(|_| anyhow::anyhow!("dek_cache_ttl_secs: must be a number of seconds, 0 or more"))?,
        },
    })
}

fn positive(value: u32, key: &str) -> anyhow::Result<u32> {
    if value == 0 { anyhow::bail!("{key}: must be at least 1") } else { Ok(value) }
}

/// The key provider from the flags. Errors name the setting, never the PIN.
fn key_provider(args: &Args) -> anyhow::Result<KeyProviderConfig> {
    match args.key_provider {
        KeyProviderKind::Keyring => {
            let Some(path) = &args.keyring else {
                anyhow::bail!("keyring: required when key_provider is keyring (--keyring or QUPIA_VAULT_KEYRING)")
            };
            Ok(KeyProviderConfig::keyring(path))
        }
        KeyProviderKind::Pkcs11 => {
            let required = |value: Option<&str>, key: &str, flag: &str| match value {
                Some(value) if !value.is_empty() => Ok(value.to_owned()),
                _ => Err(anyhow::anyhow!("{key}: required when key_provider is pkcs11 ({flag})")),
            };
            let module = args.pkcs11_module.as_deref().and_then(Path::to_str);
            let module = required(module, "pkcs11_module", "--pkcs11-module or QUPIA_VAULT_PKCS11_MODULE")?;
            let token_label = required(
                args.pkcs11_token_label.as_deref(),
                "pkcs11_token_label",
                "--pkcs11-token-label or QUPIA_VAULT_PKCS11_TOKEN_LABEL",
            )?;
            let wait = Duration::try_from_secs_f64(args.key_provider_wait_secs)
                .map_err(|_| anyhow::anyhow!("key_provider_wait_secs: must be a non-negative number of seconds"))?;
            let options = Pkcs11Options {
                module: PathBuf::from(module),
                token_label,
                pin: pin(args.pkcs11_pin_file.as_deref())?,
                key_label_prefix: args.pkcs11_key_label_prefix.clone(),
            };
            Ok(KeyProviderConfig::Pkcs11 { options, wait })
        }
    }
}

/// The PKCS#11 user PIN, from the file if one is named, else from the environment.
fn pin(file: Option<&Path>) -> anyhow::Result<SecretString> {
    let text = match file {
        Some(path) => Zeroizing::new(
            std::fs::read_to_string(path)
                .map_err(|err| anyhow::anyhow!("pkcs11_pin_file: cannot read {}: {err}", path.display()))?,
        ),
        None => match std::env::var(PIN_ENV) {
            Ok(pin) => Zeroizing::new(pin),
            Err(_) => anyhow::bail!(
                "pkcs11_pin_file: required when key_provider is pkcs11 (--pkcs11-pin-file, QUPIA_VAULT_PKCS11_PIN_FILE or {PIN_ENV})"
            ),
        },
    };
    // Files usually end in a newline that is not part of the PIN.
    let pin = text.strip_suffix('\n').map(|pin| pin.strip_suffix('\r').unwrap_or(pin)).unwrap_or(&text);
    if pin.is_empty() {
        anyhow::bail!("pkcs11_pin_file: the PIN is empty");
    }
    Ok(SecretString::from(pin))
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
