//! The ops HTTP server: plaintext, on its own port, for the kubelet and Prometheus
//! (mTLS on the gRPC port keeps both away from there).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::task::JoinHandle;

use crate::{Error, Lifecycle, Metrics, OpsOptions};

/// What Prometheus is told `/metrics` holds.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Debug, Clone)]
struct OpsState {
    metrics: Metrics,
    lifecycle: Lifecycle,
}

/// A running ops server; it stops when dropped.
#[derive(Debug)]
pub struct OpsServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OpsServer {
    /// Starts the ops server if `options.listen` is set, and records its address in
    /// `options.bound`.
    pub async fn start(
        options: &OpsOptions,
        metrics: Metrics,
        lifecycle: Lifecycle,
    ) -> Result<Option<OpsServer>, Error> {
        let Some(addr) = options.listen else { return Ok(None) };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen { addr, source })?;
        options.bound.set(addr);
        let router = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .with_state(OpsState { metrics, lifecycle });
        tracing::info!(address = %addr, "ops server listening: /metrics, /livez, /readyz");
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                tracing::error!(%error, "the ops server failed");
            }
        });
        Ok(Some(OpsServer { addr, task }))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for OpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn metrics_text(State(state): State<OpsState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], state.metrics.render())
}

/// Alive as long as the process answers: a stuck dependency must not restart it.
async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<OpsState>) -> (StatusCode, &'static str) {
    if state.lifecycle.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not serving\n")
    }
}
