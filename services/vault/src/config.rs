//! The vault's configuration.

use std::path::PathBuf;
use std::time::Duration;

use qupia_crypto::Pkcs11Options;
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
    /// The largest document accepted, in bytes of content; an upload is refused as
    /// soon as it passes this. Each message of an upload is still at most
    /// `max_request_bytes`.
    pub max_document_bytes: u64,
    /// The most people one aggregate counts (its request may exceed
    /// `max_request_bytes`, up to this many subjects).
    pub max_aggregate_subjects: usize,
}

impl Limits {
    /// 20 MiB: a scan of an identity document at a readable resolution, with room.
    pub const DEFAULT_MAX_DOCUMENT_BYTES: u64 = 20 * 1024 * 1024;
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_request_bytes: 1024 * 1024,
            max_batch_items: 1000,
            max_document_bytes: Limits::DEFAULT_MAX_DOCUMENT_BYTES,
            max_aggregate_subjects: 100_000,
        }
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
    /// The erasure ledger's database, kept apart from the vault database so that a
    /// restore of the latter cannot roll it back. `None`: a SQLite file beside the
    /// keyring (development); production names a separate PostgreSQL database.
    pub erasure_ledger_url: Option<String>,
    /// Rates, batch size and the encryption alarm of key administration.
    pub key_lifecycle: KeyLifecycleOptions,
}

impl Config {
    /// The erasure ledger's URL: the configured one; or, in development, a SQLite file
    /// `erasure-ledger.db` beside the keyring file, or beside a SQLite vault database
    /// when the keys are in a PKCS#11 token. `None` when there is no such place (a
    /// PKCS#11 token and PostgreSQL): the URL must then be configured.
    pub fn erasure_ledger_url(&self) -> Option<String> {
        if let Some(url) = &self.erasure_ledger_url {
            return Some(url.clone());
        }
        let beside = match self.keys.keyring_path() {
            Some(keyring) => keyring.to_owned(),
            None => {
                let file = self.database_url.strip_prefix("sqlite://")?;
                PathBuf::from(file.split('?').next().unwrap_or(file))
            }
        };
        let dir = beside.parent().filter(|d| !d.as_os_str().is_empty());
        let path = dir.map_or_else(
            || PathBuf::from(crate::erasure_ledger::DEFAULT_FILE_NAME),
            |d| d.join(crate::erasure_ledger::DEFAULT_FILE_NAME),
        );
        let path = std::path::absolute(&path).unwrap_or(path);
        Some(format!("sqlite://{}?mode=rwc", path.display()))
    }
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
