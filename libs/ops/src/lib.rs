//! Operations shared by every Qupia service: a Prometheus registry with the gRPC and
//! domain metrics, the plaintext ops HTTP port (`/metrics`, `/livez`, `/readyz`) that
//! Kubernetes probes, the shutdown sequence that drains in-flight calls, and the
//! bounded start-up wait for the database.
//!
//! Nothing here may carry a personal value, a token or a secret: metric labels are
//! `&'static str` or gRPC route names, and database URLs are logged redacted.

#![forbid(unsafe_code)]

mod grpc;
mod lifecycle;
mod metrics;
mod options;
mod server;
mod startup;

pub use grpc::{GrpcMetrics, GrpcMetricsLayer};
pub use lifecycle::{Lifecycle, StopAccepting, terminated};
pub use metrics::{CacheResult, DecisionResult, MessageOutcome, Metrics};
pub use options::{BoundAddr, OpsOptions};
pub use server::{OPENMETRICS_CONTENT_TYPE, OpsServer};
pub use startup::{Attempt, Unreachable, WaitError, redact_url, wait_for_database, wait_until_ready};

/// Why the ops machinery could not start what it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("ops_listen: cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Unreachable(#[from] Unreachable),
}
