//! The shutdown sequence: report NOT_SERVING, keep serving while load balancers
//! deregister the pod, stop accepting, drain in-flight calls within a grace period.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::OpsOptions;

/// A service's readiness, as `/readyz` and the gRPC health service report it.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    ready: Arc<AtomicBool>,
    health: HealthReporter,
    /// The services marked SERVING, to mark NOT_SERVING at shutdown.
    services: Arc<Mutex<Vec<&'static str>>>,
}

/// Resolves when the server should stop accepting and drain: pass it to
/// `serve_with_incoming_shutdown`.
#[derive(Debug)]
pub struct StopAccepting(oneshot::Receiver<()>);

impl Future for StopAccepting {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender means the lifecycle is gone: stop as well.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

impl Lifecycle {
    /// Not ready until `run` starts serving.
    pub fn new(health: HealthReporter) -> Lifecycle {
        Lifecycle { ready: Arc::new(AtomicBool::new(false)), health, services: Arc::default() }
    }

    /// Marks `S` SERVING in the gRPC health service.
    pub async fn serving<S: NamedService>(&self) {
        self.services.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(S::NAME);
        self.health.set_serving::<S>().await;
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Reports NOT_SERVING everywhere: on `/readyz`, for the whole server (`""`) and
    /// for every service marked serving.
    async fn report_not_serving(&self) {
        self.ready.store(false, Ordering::SeqCst);
        let services = self.services.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        self.health.set_service_status("", ServingStatus::NotServing).await;
        for service in services {
            self.health.set_service_status(service, ServingStatus::NotServing).await;
        }
    }

    /// Runs the server that `serve` starts until `signal` resolves, then shuts it
    /// down in order. `serve` must stop accepting when its `StopAccepting` resolves
    /// and then return once in-flight calls have finished.
    pub async fn run<F, Fut, E>(
        &self,
        options: &OpsOptions,
        signal: impl Future<Output = ()>,
        serve: F,
    ) -> Result<(), E>
    where
        F: FnOnce(StopAccepting) -> Fut,
        Fut: Future<Output = Result<(), E>>,
    {
        let (stop, stopped) = oneshot::channel();
        let serving = serve(StopAccepting(stopped));
        tokio::pin!(serving);
        tokio::pin!(signal);
        self.ready.store(true, Ordering::SeqCst);
        tokio::select! {
            result = &mut serving => {
                self.ready.store(false, Ordering::SeqCst);
                return result;
            }
            () = &mut signal => {}
        }

        tracing::info!(
            deregistration_delay = ?options.deregistration_delay,
            "shutdown began: reporting NOT_SERVING and serving on while load balancers deregister"
        );
        self.report_not_serving().await;
        tokio::select! {
            result = &mut serving => return result,
            () = tokio::time::sleep(options.deregistration_delay) => {}
        }

        tracing::info!(grace_period = ?options.grace_period, "no longer accepting connections: draining in-flight calls");
        let _ = stop.send(());
        match tokio::time::timeout(options.grace_period, &mut serving).await {
            Ok(result) => {
                tracing::info!("in-flight calls drained");
                result
            }
            Err(_) => {
                tracing::warn!(grace_period = ?options.grace_period, "the grace period ended with calls still in flight: cutting them off");
                Ok(())
            }
        }
    }
}

/// Resolves when the process is asked to stop: SIGTERM (what Kubernetes sends) or
/// Ctrl-C. A binary passes this as the shutdown future of its service's `serve`.
pub async fn terminated() {
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            // Without a SIGTERM handler, Ctrl-C still stops the process cleanly.
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown signal received");
}
