//! The vault's configuration.

use std::path::PathBuf;
use std::time::Duration;

use qupia_crypto::Pkcs11Options;
use qupia_transport::{ServiceIdentity, TlsMode};

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
    /// Where the keys are: the keyring file or a PKCS#11 token.
    pub keys: KeyProviderConfig,
    pub tls: TlsMode,
    /// The identities allowed to call the vault: the gateway's.
    pub trusted_callers: Vec<ServiceIdentity>,
    pub limits: Limits,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
}

/// Where the vault's keys are.
#[derive(Debug, Clone)]
pub enum KeyProviderConfig {
    /// The keyring file (`keyring`): created, mode 0600, if it does not exist.
    Keyring { path: PathBuf },
    /// A PKCS#11 token (`pkcs11_module`, `pkcs11_token_label`, the PIN from
    /// `pkcs11_pin_file`, `pkcs11_key_label_prefix`): the KEKs never leave it. Start-up
    /// waits up to `wait` for the token to be present, as it waits for the database.
    Pkcs11 { options: Pkcs11Options, wait: Duration },
}

impl KeyProviderConfig {
    /// The keyring file at `path`.
    pub fn keyring(path: impl Into<PathBuf>) -> KeyProviderConfig {
        KeyProviderConfig::Keyring { path: path.into() }
    }

    /// The keyring file, when the keys are in one.
    pub fn keyring_path(&self) -> Option<&std::path::Path> {
        match self {
            KeyProviderConfig::Keyring { path } => Some(path),
            KeyProviderConfig::Pkcs11 { .. } => None,
        }
    }

    /// The provider's name as in `QUPIA_VAULT_KEY_PROVIDER`.
    pub fn kind(&self) -> &'static str {
        match self {
            KeyProviderConfig::Keyring { .. } => "keyring",
            KeyProviderConfig::Pkcs11 { .. } => "pkcs11",
        }
    }
}
