//! The vault's configuration.

use std::path::PathBuf;

use qupia_transport::{ServiceIdentity, TlsMode};

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
    /// The keyring file: created, mode 0600, if it does not exist.
    pub keyring_path: PathBuf,
    pub tls: TlsMode,
    /// The identities allowed to call the vault: the gateway's.
    pub trusted_callers: Vec<ServiceIdentity>,
    pub limits: Limits,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
}
