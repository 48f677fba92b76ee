//! A tower layer that counts and times gRPC calls by route and status code.
//!
//! The status is read from the response headers (a trailers-only response, as every
//! error from a unary call is) or from the trailers at the end of the body. A call
//! whose response is dropped before it has a status was cancelled by its client.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use tonic::Code;
use tower::{Layer, Service};

use crate::Metrics;

/// Counts and times every call of the service it wraps.
#[derive(Debug, Clone)]
pub struct GrpcMetricsLayer {
    metrics: Metrics,
}

impl GrpcMetricsLayer {
    pub(crate) fn new(metrics: Metrics) -> GrpcMetricsLayer {
        GrpcMetricsLayer { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
{
    type Response = http::Response<CountedBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call::start(self.metrics.clone(), request.uri().path());
        ResponseFuture { inner: self.inner.call(request), call: Some(call) }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's response, with its body wrapped to see the trailers.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        call: Option<Call>,
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut call) = this.call.take() else {
            // Polled after completion: a contract breach by the caller; the call is counted once.
            return Poll::Ready(result.map(|response| response.map(|inner| CountedBody { inner, call: None })));
        };
        Poll::Ready(match result {
            Ok(response) => {
                call.code = grpc_status(response.headers());
                Ok(response.map(|inner| CountedBody { inner, call: Some(call) }))
            }
            Err(error) => {
                call.code = Some(Code::Unknown);
                Err(error)
            }
        })
    }
}

pin_project_lite::pin_project! {
    /// A response body that records its call when the status is known.
    #[derive(Debug)]
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        call: Option<Call>,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = ready!(this.inner.poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(trailers), Some(call)) = (frame.trailers_ref(), this.call.as_mut()) {
                    call.code = grpc_status(trailers).or(call.code);
                    // The trailers end a gRPC response: record now, not when hyper drops us.
                    this.call.take();
                }
            }
            Some(Err(_)) => {
                if let Some(call) = this.call.as_mut() {
                    call.code = call.code.or(Some(Code::Unknown));
                }
            }
            None => {
                if let Some(call) = this.call.as_mut() {
                    call.code = call.code.or(Some(Code::Unknown));
                }
                this.call.take();
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// One call being measured; recorded exactly once, when dropped.
#[derive(Debug)]
struct Call {
    metrics: Metrics,
    path: String,
    started: Instant,
    code: Option<Code>,
}

impl Call {
    fn start(metrics: Metrics, path: &str) -> Call {
        Call { metrics, path: path.to_owned(), started: Instant::now(), code: None }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        // No status by now: the client went away before the call finished.
        let code = self.code.unwrap_or(Code::Cancelled);
        // An unknown route is answered UNIMPLEMENTED; its path is the client's choice,
        // so it must not become a label.
        let (service, method) = match split_path(&self.path) {
            Some(route) if code != Code::Unimplemented => route,
            _ => ("unknown", "unknown"),
        };
        self.metrics.record_call(service, method, code_name(code), self.started.elapsed());
    }
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/')).then_some((service, method))
}

fn grpc_status(headers: &HeaderMap) -> Option<Code> {
    headers.get("grpc-status").map(|value| Code::from_bytes(value.as_bytes()))
}

/// The canonical upper-case name of a status code, as other gRPC metrics spell it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_grpc_paths_and_refuses_others() {
        assert_eq!(
            split_path("/qupia.vault.v1.VaultService/Tokenize"),
            Some(("qupia.vault.v1.VaultService", "Tokenize"))
        );
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("/metrics"), None);
        assert_eq!(split_path(""), None);
    }

    #[test]
    fn an_unknown_route_is_not_a_label() {
        let metrics = Metrics::new();
        let mut call = Call::start(metrics.clone(), "/some.client.Chosen/Name");
        call.code = Some(Code::Unimplemented);
        drop(call);
        let text = metrics.render();
        assert!(!text.contains("Chosen"), "{text}");
        assert!(text.contains("service=\"unknown\",method=\"unknown\",code=\"UNIMPLEMENTED\"} 1"), "{text}");
    }
}
