//! Server side: one `grpc.server` span per call, a child of the caller's trace context.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tonic::codegen::{Bytes, http};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Traces every call of the services it wraps. Built by [`server_layer`].
#[derive(Clone, Debug, Default)]
pub struct ServerTraceLayer {
    _private: (),
}

/// Traces every call: `Server::builder().layer(server_layer())`.
pub fn server_layer() -> ServerTraceLayer {
    ServerTraceLayer::default()
}

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

/// Runs each call inside a `grpc.server` span. See [`server_layer`].
#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for ServerTrace<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = server_span(&request);
        // Entered for the synchronous part of the call too, so whatever the inner service
        // does before returning its future already belongs to the request's trace.
        let response = span.in_scope(|| self.inner.call(request));
        Box::pin(async move {
            match response.instrument(span.clone()).await {
                Ok(response) => Ok(finish(response, span)),
                Err(error) => {
                    span.record("otel.status_code", "error");
                    Err(error)
                }
            }
        })
    }
}

/// Opens the span for one call. Only the method path and the trace context are read from
/// the request: every other header, and the body, may hold personal values.
fn server_span<B>(request: &http::Request<B>) -> tracing::Span {
    let (service, method) = rpc_names(request.uri().path());
    let span = tracing::info_span!(
        "grpc.server",
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    // Fails only when no OpenTelemetry layer is installed; the call then runs untraced,
    // which is what a process without `init` asked for.
    let _ = span.set_parent(crate::propagation::extract(request.headers()));
    span
}

/// Service and method from a gRPC path `/package.Service/Method`.
///
/// The span is opened before routing, so the path is whatever the caller sent; anything
/// that is not a plain proto name is replaced, so a caller cannot smuggle a value into a
/// span through a made-up path.
fn rpc_names(path: &str) -> (&str, &str) {
    const UNKNOWN: &str = "unknown";
    let is_proto_name = |name: &str| {
        !name.is_empty()
            && name.len() <= 128
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
    };
    match path.strip_prefix('/').and_then(|rest| rest.split_once('/')) {
        Some((service, method)) if is_proto_name(service) && is_proto_name(method) => (service, method),
        _ => (UNKNOWN, UNKNOWN),
    }
}

/// Records the status when the response already carries it (trailers-only: every error a
/// handler returns); otherwise the status arrives in the trailers, so the span travels with
/// the body and is closed when the body is done.
fn finish<B>(response: http::Response<B>, span: tracing::Span) -> http::Response<tonic::body::Body>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    if let Some(code) = grpc_status(&parts.headers) {
        record_status(&span, code);
        return http::Response::from_parts(parts, tonic::body::Body::new(body));
    }
    let body = TracedBody { inner: tonic::body::Body::new(body), span: Some(span) };
    http::Response::from_parts(parts, tonic::body::Body::new(body))
}

fn grpc_status(headers: &http::HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

fn record_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", i64::from(code));
    // The OpenTelemetry gRPC conventions: for a server, only these codes are its own fault;
    // NOT_FOUND, PERMISSION_DENIED and the like are correct answers, not errors.
    let server_fault = matches!(
        tonic::Code::from_i32(code),
        tonic::Code::Unknown
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unimplemented
            | tonic::Code::Internal
            | tonic::Code::Unavailable
            | tonic::Code::DataLoss
    );
    if server_fault {
        span.record("otel.status_code", "error");
    }
}

/// A response body that records the trailers' `grpc-status` on its span and keeps the span
/// open until the last frame, so streamed responses are timed in full.
struct TracedBody {
    inner: tonic::body::Body,
    span: Option<tracing::Span>,
}

impl Body for TracedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = &mut *self;
        // A streaming handler produces its messages while the body is polled.
        let entered = this.span.as_ref().map(tracing::Span::enter);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(span), Some(code)) = (&this.span, frame.trailers_ref().and_then(grpc_status)) {
                    record_status(span, code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(span) = &this.span {
                    span.record("otel.status_code", "error");
                }
            }
            Poll::Ready(None) | Poll::Pending => {}
        }
        drop(entered);
        if matches!(polled, Poll::Ready(None)) {
            // Closes the span now rather than whenever hyper drops the body.
            this.span = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_names_come_from_the_path() {
        assert_eq!(rpc_names("/qupia.vault.v1.VaultService/Reveal"), ("qupia.vault.v1.VaultService", "Reveal"));
    }

    #[test]
    fn a_path_that_is_not_a_proto_name_is_not_recorded() {
        assert_eq!(rpc_names("/alice@example.com/x"), ("unknown", "unknown"));
        assert_eq!(rpc_names("/svc/method/extra"), ("unknown", "unknown"));
        assert_eq!(rpc_names("/"), ("unknown", "unknown"));
        assert_eq!(rpc_names(""), ("unknown", "unknown"));
        assert_eq!(rpc_names(&format!("/{}/M", "a".repeat(200))), ("unknown", "unknown"));
    }

    #[test]
    fn status_is_read_from_grpc_status() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("5"));
        assert_eq!(grpc_status(&headers), Some(5));
    }
}
