//! How a service runs its ops port, its shutdown and its start-up wait.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The operational settings every service shares.
#[derive(Debug, Clone)]
pub struct OpsOptions {
    /// Where the plaintext ops HTTP server listens; `None` runs none.
    pub listen: Option<SocketAddr>,
    /// How long the service keeps serving after it reports NOT_SERVING, so load
    /// balancers and endpoint controllers stop routing to it before it stops accepting.
    pub deregistration_delay: Duration,
    /// How long in-flight calls may take to finish once the service stops accepting;
    /// calls still running then are cut off.
    pub grace_period: Duration,
    /// How long start-up waits for the database to accept connections.
    pub database_wait: Duration,
    /// Filled with the ops server's address once it listens (useful with port 0).
    pub bound: BoundAddr,
}

impl Default for OpsOptions {
    /// Production defaults, with no ops server: the binaries set `listen`.
    fn default() -> OpsOptions {
        OpsOptions {
            listen: None,
            deregistration_delay: Duration::from_secs(5),
            grace_period: Duration::from_secs(25),
            database_wait: Duration::from_secs(30),
            bound: BoundAddr::default(),
        }
    }
}

impl OpsOptions {
    /// The options a binary's flags give: the ops address and three durations in
    /// seconds. The error names the flag whose value is not a finite, non-negative
    /// number.
    pub fn from_flags(
        listen: SocketAddr,
        deregistration_delay_secs: f64,
        grace_period_secs: f64,
        database_wait_secs: f64,
    ) -> Result<OpsOptions, String> {
        let seconds = |value: f64, key: &str| {
            Duration::try_from_secs_f64(value).map_err(|_| format!("{key}: must be a non-negative number of seconds"))
        };
        Ok(OpsOptions {
            listen: Some(listen),
            deregistration_delay: seconds(deregistration_delay_secs, "deregistration_delay_secs")?,
            grace_period: seconds(grace_period_secs, "grace_period_secs")?,
            database_wait: seconds(database_wait_secs, "database_wait_secs")?,
            bound: BoundAddr::default(),
        })
    }

    /// For tests and the development runner: an ops server on an ephemeral port, no
    /// deregistration delay, and short waits.
    pub fn ephemeral() -> OpsOptions {
        OpsOptions {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            deregistration_delay: Duration::ZERO,
            grace_period: Duration::from_secs(10),
            database_wait: Duration::from_secs(10),
            bound: BoundAddr::default(),
        }
    }
}

/// The address a server actually bound, shared between the configuration's clones.
#[derive(Debug, Clone, Default)]
pub struct BoundAddr(Arc<Mutex<Option<SocketAddr>>>);

impl BoundAddr {
    pub fn get(&self) -> Option<SocketAddr> {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn set(&self, addr: SocketAddr) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(addr);
    }
}
