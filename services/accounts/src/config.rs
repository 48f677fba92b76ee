//! The accounts service's configuration.

use qupia_transport::{ServiceIdentity, TlsMode};

/// Everything the accounts service needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The service's own database (account ids and tokens): `sqlite:///path/accounts.db?mode=rwc`
    /// or `postgres://user@host/db`.
    pub database_url: String,
    /// Connections in the PostgreSQL pool (SQLite always uses one).
    pub max_connections: u32,
    pub tls: TlsMode,
    /// The gateway's address (`host:port`) and the DNS name its certificate carries.
    pub gateway_addr: String,
    pub gateway_server_name: String,
    /// The identities that may call this service: the web front end and the
    /// operator's CLI. Anyone else gets PERMISSION_DENIED.
    pub callers: Vec<ServiceIdentity>,
    /// The largest document accepted at registration. Registration holds a person's
    /// documents in memory until all of it has been received and checked, so this also
    /// bounds the memory one registration takes (twice this, with an authorisation).
    pub max_document_bytes: usize,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
}

impl Config {
    /// The callers admitted by default.
    pub fn default_callers() -> Vec<ServiceIdentity> {
        vec![ServiceIdentity::for_service("default", "web"), ServiceIdentity::for_service("default", "qupiactl")]
    }

    /// A configuration with the defaults for everything but the essentials.
    pub fn new(database_url: String, tls: TlsMode, gateway_addr: String) -> Config {
        Config {
            database_url,
            max_connections: 16,
            tls,
            gateway_addr,
            gateway_server_name: "gateway".to_owned(),
            callers: Config::default_callers(),
            max_document_bytes: 20 * 1024 * 1024,
            ops: qupia_ops::OpsOptions::default(),
        }
    }
}
