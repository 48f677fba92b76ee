//! The vault's configuration.

use std::path::PathBuf;

use qupia_transport::{ServiceIdentity, TlsMode};

pub use crate::key_admin::KeyLifecycleOptions;

/// Request limits. A request over them is refused with INVALID_ARGUMENT before any
/// work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest encoded request accepted.
    pub max_request_bytes: usize,
    /// The most items in one batch call.
    pub max_batch_items: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_request_bytes: 1024 * 1024, max_batch_items: 1000 }
    }
}

/// Everything the vault needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite:///path/vault.db?mode=rwc` or `postgres://user@host/db`.
    pub database_url: String,
    /// Connections in the PostgreSQL pool (SQLite always uses one).
    pub max_connections: u32,
    /// The keyring file: created, mode 0600, if it does not exist.
    pub keyring_path: PathBuf,
    pub tls: TlsMode,
    /// The identities allowed to call the vault: the gateway's.
    pub trusted_callers: Vec<ServiceIdentity>,
    pub limits: Limits,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
    /// The erasure ledger's database, kept apart from the vault database so that a
    /// restore of the latter cannot roll it back. `None`: a SQLite file beside the
    /// keyring (development); production names a separate PostgreSQL database.
    pub erasure_ledger_url: Option<String>,
    /// Rates, batch size and the encryption alarm of key administration.
    pub key_lifecycle: KeyLifecycleOptions,
}

impl Config {
    /// The erasure ledger's URL: the configured one, or `erasure-ledger.db` beside the keyring.
    pub fn erasure_ledger_url(&self) -> String {
        match &self.erasure_ledger_url {
            Some(url) => url.clone(),
            None => {
                let dir = self.keyring_path.parent().filter(|d| !d.as_os_str().is_empty());
                let path = dir.map_or_else(
                    || PathBuf::from(crate::erasure_ledger::DEFAULT_FILE_NAME),
                    |d| d.join(crate::erasure_ledger::DEFAULT_FILE_NAME),
                );
                let path = std::path::absolute(&path).unwrap_or(path);
                format!("sqlite://{}?mode=rwc", path.display())
            }
        }
    }
}
