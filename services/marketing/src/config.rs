//! The marketing service's configuration.

use std::path::PathBuf;
use std::time::Duration;

use qupia_transport::{ServiceIdentity, TlsMode};
use secrecy::SecretString;

/// How e-mail campaigns are delivered.
#[derive(Debug, Clone)]
pub enum EmailSender {
    /// Development: log the campaign id, person token and channel of each message,
    /// never its address or text, and count it as sent.
    Log,
    /// An SMTP relay.
    Smtp(SmtpConfig),
}

/// How SMS campaigns are delivered. Only the log sender exists today: an SMS
/// provider's client goes behind the `Sender` trait as another variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmsSender {
    Log,
}

/// How the connection to the SMTP relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plaintext: only for a relay on the same host or a test server.
    None,
    /// Plaintext first, then STARTTLS, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// Login for the SMTP relay.
#[derive(Debug, Clone)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: SecretString,
}

/// An SMTP relay and the envelope sender.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub credentials: Option<SmtpCredentials>,
    /// The From address, e.g. `EDU Stream Plus <news@edustream.kz>`.
    pub from: String,
    /// A CA certificate (PEM) to trust instead of the public roots.
    pub ca: Option<PathBuf>,
    /// How long one SMTP exchange may take.
    pub timeout: Duration,
}

/// How the delivery worker takes and retries messages.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Whether this process runs a delivery worker. Replicas that only serve the API
    /// leave it off; any number of worker replicas share the outbox through leases.
    pub worker: bool,
    /// Messages revealed and sent per round (one BatchReveal per campaign in it).
    pub batch_size: u32,
    /// How often the worker looks for due messages when nothing wakes it.
    pub poll_interval: Duration,
    /// Attempts before a message that keeps failing transiently is `failed`.
    pub max_attempts: u32,
    /// The wait before the first retry; it doubles with each attempt.
    pub retry_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// How long a worker holds the messages it took; a worker that died is replaced
    /// after this (the message may then be sent twice: delivery is at least once).
    pub lease: Duration,
    /// The longest a `SendCampaign` with `wait` waits for delivery to finish.
    pub send_wait: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> DeliveryOptions {
        DeliveryOptions {
            worker: true,
            batch_size: 100,
            poll_interval: Duration::from_secs(1),
            max_attempts: 5,
            retry_backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            lease: Duration::from_secs(300),
            send_wait: Duration::from_secs(60),
        }
    }
}

/// Everything the marketing service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The marketing database (audiences, campaigns, the outbox).
    pub database_url: String,
    pub max_connections: u32,
    pub tls: TlsMode,
    /// The gateway's address (`host:port`) and the DNS name its certificate carries.
    pub gateway_addr: String,
    pub gateway_server_name: String,
    /// The identities that may call this service.
    pub callers: Vec<ServiceIdentity>,
    pub email_sender: EmailSender,
    pub sms_sender: SmsSender,
    /// The unsubscribe page; `{{unsubscribe}}` renders as this URL with `m=<message id>`
    /// added. Templates that use the placeholder are refused while it is unset.
    pub unsubscribe_url: Option<String>,
    /// The most person tokens one call may carry.
    pub max_tokens_per_call: usize,
    pub delivery: DeliveryOptions,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
}

impl Config {
    /// A configuration with the defaults for everything but the essentials: the
    /// operator CLI as the only caller, log senders, no unsubscribe page.
    pub fn new(database_url: String, tls: TlsMode, gateway_addr: String) -> Config {
        Config {
            database_url,
            max_connections: 8,
            tls,
            gateway_addr,
            gateway_server_name: "gateway".to_owned(),
            callers: vec![ServiceIdentity::for_service("default", "qupiactl")],
            email_sender: EmailSender::Log,
            sms_sender: SmsSender::Log,
            unsubscribe_url: None,
            max_tokens_per_call: 10_000,
            delivery: DeliveryOptions::default(),
            ops: qupia_ops::OpsOptions::default(),
        }
    }
}
