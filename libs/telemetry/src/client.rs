//! Client side: every outgoing call carries the caller's current span as `traceparent`, so
//! the callee's server span becomes its child.

use std::task::{Context, Poll};

use tonic::codegen::http;
use tower::{Layer, Service};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// A tonic channel whose calls carry the current trace context: the type typed clients are
/// built on, e.g. `VaultServiceClient<TracedChannel>`.
pub type TracedChannel = ClientTrace<tonic::transport::Channel>;

/// Wraps a channel (or any HTTP service) in [`ClientTrace`]. Built by [`client_layer`].
#[derive(Clone, Debug, Default)]
pub struct ClientTraceLayer {
    _private: (),
}

/// Wraps a channel (or any HTTP service) so each request carries the current trace context.
pub fn client_layer() -> ClientTraceLayer {
    ClientTraceLayer::default()
}

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

/// A service that writes the current span's `traceparent`/`tracestate` into each request.
///
/// It opens no span of its own: the callee's `grpc.server` span is the record of the call,
/// and a client span would only repeat its timing.
#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for ClientTrace<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // Typed clients call the channel while the caller's future is being polled, so the
        // current span here is the caller's (in a handler: its `grpc.server` span).
        let context = tracing::Span::current().context();
        crate::propagation::inject(&context, request.headers_mut());
        self.inner.call(request)
    }
}
