//! The gateway's configuration.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use qupia_transport::{ServiceIdentity, TlsMode};

/// A per-caller request rate: a steady rate with a burst allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> RateLimit {
        RateLimit { per_second: 500, burst: 1000 }
    }
}

/// Who may do what besides revealing (revealing is the purpose policy's business).
#[derive(Debug, Clone)]
pub struct Roles {
    /// May tokenize, rectify and erase people (the accounts service).
    pub writers: Vec<ServiceIdentity>,
    /// May record and read consents (the accounts service, the operator CLI).
    pub consent_managers: Vec<ServiceIdentity>,
    /// May publish policy versions, read the access log, explain any caller's
    /// decisions and administer keys (the security team's CLI).
    pub security: Vec<ServiceIdentity>,
    /// May file, approve and act on disclosure requests of state bodies (policy clause
    /// 3.4). A request is filed by one and approved by another; the purpose policy
    /// decides what legal_disclosure may reveal to them, within the request's scope.
    pub disclosure_officers: Vec<ServiceIdentity>,
}

impl Default for Roles {
    fn default() -> Roles {
        let id = |service| ServiceIdentity::for_service("default", service);
        Roles {
            writers: vec![id("accounts")],
            consent_managers: vec![id("accounts"), id("qupiactl")],
            security: vec![id("qupiactl")],
            disclosure_officers: vec![id("officer-a"), id("officer-b")],
        }
    }
}

/// Everything the gateway needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The gateway's own database (consents, policy versions).
    pub database_url: String,
    pub max_connections: u32,
    pub tls: TlsMode,
    /// The vault's address (`host:port`) and the DNS name its certificate carries.
    pub vault_addr: String,
    pub vault_server_name: String,
    /// The purpose policy (Cedar); `None` = the shipped default.
    pub policy_path: Option<PathBuf>,
    /// How often the policy file is checked for changes (SIGHUP reloads at once).
    pub policy_reload_interval: Duration,
    pub roles: Roles,
    pub rate_limit: RateLimit,
    /// Per-caller overrides of `rate_limit`.
    pub rate_limits: BTreeMap<ServiceIdentity, RateLimit>,
    /// The most tokens in one batch call.
    pub max_batch_items: usize,
    /// The ops port, the shutdown timings and the start-up wait.
    pub ops: qupia_ops::OpsOptions,
    /// The smallest group an aggregate reports (k); smaller groups are suppressed.
    /// At least 2, or the gateway refuses to start.
    pub statistics_min_group_size: u32,
    /// Kazakhstan's non-working days, for subject-request due dates; `None` = the shipped file.
    pub holidays_path: Option<PathBuf>,
}

impl Config {
    /// A configuration with the defaults for everything but the essentials.
    pub fn new(database_url: String, tls: TlsMode, vault_addr: String) -> Config {
        Config {
            database_url,
            max_connections: 16,
            tls,
            vault_addr,
            vault_server_name: "vault".to_owned(),
            policy_path: None,
            policy_reload_interval: Duration::from_secs(5),
            roles: Roles::default(),
            rate_limit: RateLimit::default(),
            rate_limits: BTreeMap::new(),
            max_batch_items: 1000,
            ops: qupia_ops::OpsOptions::default(),
            statistics_min_group_size: 5,
            holidays_path: None,
        }
    }
}
